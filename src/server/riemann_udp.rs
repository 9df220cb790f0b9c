//! Riemann's UDP protocol (default `127.0.0.1:5555`): one protobuf `Msg`
//! per datagram, no reply. Clients switch to TCP above 16 KiB; up to 64 KiB
//! is accepted.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, watch};

use super::udp::{limit_events, receive};
use crate::codec::riemann::{from_proto, Msg};
use crate::event::{now_secs, Event};
use crate::log_limit::LogLimiter;
use crate::pipeline::{Pipeline, Work};
use crate::warn_limited;

static BAD_INPUT_LOG: LogLimiter = LogLimiter::new(10);

/// Receives on a socket from [`super::udp::bind`] until `shutdown` fires,
/// then drains what already arrived.
pub async fn run(
    socket: std::net::UdpSocket,
    pipeline: Arc<Pipeline>,
    tx: mpsc::Sender<Work>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    receive(socket, pipeline, tx, shutdown, MAX_DATAGRAM, ingest).await
}

/// Clients switch to TCP above 16 KiB; this much is accepted.
const MAX_DATAGRAM: usize = 64 * 1024;

fn ingest(pipeline: &Pipeline, datagram: &[u8], peer: SocketAddr, batch: &mut Vec<Event>) {
    let stats = &pipeline.ingest;
    stats.messages.fetch_add(1, Ordering::Relaxed);
    if datagram.len() > MAX_DATAGRAM {
        stats.bad_messages.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            BAD_INPUT_LOG,
            "riemann udp {peer}: datagram over 64 KiB dropped"
        );
        return;
    }
    match Msg::decode(datagram) {
        Ok(msg) => {
            let now = now_secs();
            let before = batch.len();
            batch.extend(msg.events.iter().map(|e| from_proto(e, now)));
            stats
                .events
                .fetch_add(msg.events.len() as u64, Ordering::Relaxed);
            limit_events(pipeline, batch, before, peer, "riemann udp message");
        }
        Err(e) => {
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                BAD_INPUT_LOG,
                "riemann udp {peer}: invalid message ({} bytes): {e}",
                datagram.len()
            );
        }
    }
}
