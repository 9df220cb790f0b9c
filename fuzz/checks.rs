//! What each fuzz target asserts about one input, shared by the targets
//! (`fuzz_targets/*.rs`, under libFuzzer) and by dmon-core's corpus test
//! (`crates/dmon-core/tests/fuzz_corpus.rs`), which replays every committed
//! input as an ordinary regression test on every `cargo test`.

use std::sync::OnceLock;

use dmon_core::codec::json;
use dmon_core::codec::riemann::{from_proto, to_proto, Msg, ProtoEvent};
use dmon_core::event::{Event, Number};
use dmon_core::query::Query;
use prost::Message;

/// The JSON datagram decoder (`json::decode`), as the UDP source calls it
/// on whatever a peer sends.
pub fn json(data: &[u8]) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    json::decode(data, 1.5, &mut events, &mut errors);
    for event in &events {
        assert!(event.time.is_some(), "a decoded event always has a time");
        // What the printer writes of an event reads back as an event.
        let line = json::encode(event);
        if let Err(e) = json::decode_event(&line) {
            panic!("{line:?} (encoded from {event:?}) does not decode: {e}");
        }
    }
}

/// Riemann's protocol: one frame's message, decoded as the TCP and UDP
/// sources do (`Msg::decode` on the bytes, then `from_proto` per event).
pub fn riemann(data: &[u8]) {
    let Ok(msg) = Msg::decode(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = msg.query_text();
    let _ = msg.error_text();
    for proto in &msg.events {
        let event = from_proto(proto, 1.5);
        assert!(event.time.is_some(), "a decoded event always has a time");
        // The reply path (`dmon query`) encodes events back.
        let back = to_proto(&event);
        let again = from_proto(&ProtoEvent::decode(&back.encode_to_vec()[..]).unwrap(), 1.5);
        assert_eq!(again.host, event.host);
        assert_eq!(again.service, event.service);
        assert_eq!(again.tags, event.tags);
    }
}

/// The query language: `Query::parse` on any text (a `dmon query` client
/// sends it over the Riemann port), then matching against a fixed event
/// with every field set.
pub fn query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = Query::parse(text) {
        let _ = query.matches(full_event());
        let _ = query.matches(&Event::default());
        assert_eq!(query.source(), text);
    }
}

fn full_event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| Event {
        host: Some("www1.example.com".into()),
        service: Some("api latency".into()),
        state: Some("error rate".into()),
        description: Some("a.b*c\nline2 é".into()),
        time: Some(Number::Int(100)),
        ttl: Some(60.0),
        metric: Some(Number::Float(97.5)),
        tags: ["prod", "web"].into(),
        attributes: [("dc", "eu-west"), ("count", "3"), ("ratio", "0.25")].into(),
    })
}
