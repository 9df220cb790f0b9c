//! Clustering through a real NATS JetStream server (`nats-server -js`,
//! installed by ./test.sh): the stream, the cluster's settings, and the
//! wire format, as nodes meet them.

use crate::common;

use common::nats::Nats;
use dmon::cluster::{self, decode_batch, encode_batch, subject, STREAM};
use dmon::event::Event;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_first_node_sets_the_partition_count_and_others_must_agree() {
    let nats = Nats::start();
    runtime().block_on(async {
        let a = cluster::connect(&nats.url(), "a", &Default::default())
            .await
            .unwrap();
        let stream = a.prepare(16).await.unwrap();
        assert_eq!(stream.cached_info().config.name, STREAM);
        // Again, and from another node: the same stream, no error.
        let b = cluster::connect(&nats.url(), "b", &Default::default())
            .await
            .unwrap();
        b.prepare(16).await.unwrap();
        let e = b.prepare(8).await.unwrap_err().to_string();
        assert!(e.contains("the cluster has 16 partitions"), "{e}");
        assert!(e.contains("--partition-count"), "{e}");

        // A batch published to a partition's subject is stored, and reads
        // back as the events published.
        let events = vec![Event {
            host: Some("web1".into()),
            service: Some("cpu".into()),
            time: Some(dmon::event::Number::Int(1_700_000_000)),
            ..Event::default()
        }];
        let ack =
            a.js.publish(subject(3), encode_batch(&events).into())
                .await
                .unwrap()
                .await
                .unwrap();
        assert_eq!(ack.stream, STREAM);
        let mut stream = a.js.get_stream(STREAM).await.unwrap();
        let stored = stream
            .get_last_raw_message_by_subject(&subject(3))
            .await
            .unwrap();
        assert_eq!(decode_batch(&stored.payload, 0.0).unwrap(), events);
        assert_eq!(stream.info().await.unwrap().state.messages, 1);

        // A durable pull consumer of that partition gets it; once
        // acknowledged, the work queue drops it.
        use futures_util::StreamExt;
        let consumer = stream
            .get_or_create_consumer(
                "dmon-p3",
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("dmon-p3".into()),
                    filter_subject: subject(3),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut messages = consumer.fetch().max_messages(10).messages().await.unwrap();
        let message = messages.next().await.unwrap().unwrap();
        assert_eq!(decode_batch(&message.payload, 0.0).unwrap(), events);
        message.double_ack().await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 0);
    });
}

#[test]
fn a_node_says_clearly_when_nats_is_not_there() {
    let url = common::nats::nowhere();
    let e = runtime()
        .block_on(cluster::connect(&url, "x", &Default::default()))
        .err()
        .expect("no server")
        .to_string();
    assert!(e.starts_with(&format!("NATS {url}: connecting:")), "{e}");
}
