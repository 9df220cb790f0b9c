//! Riemann's UDP protocol (default `127.0.0.1:5555`): one protobuf `Msg`
//! per datagram, no reply. Clients switch to TCP above 16 KiB; up to 64 KiB
//! is accepted.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::udp::forward;
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
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let socket = UdpSocket::from_std(socket)?;
    let mut buf = vec![0u8; 64 * 1024 + 1];
    let mut stopping = false;
    loop {
        let mut batch = Vec::new();
        if !stopping {
            let received = tokio::select! {
                _ = shutdown.changed() => { stopping = true; None }
                r = socket.recv_from(&mut buf) => Some(r),
            };
            match received {
                Some(Ok((n, peer))) => ingest(&pipeline, &buf[..n], peer, &mut batch),
                Some(Err(e)) => tracing::warn!("riemann udp receive failed: {e}"),
                None => {}
            }
        }
        while batch.len() < 1024 {
            match socket.try_recv_from(&mut buf) {
                Ok((n, peer)) => ingest(&pipeline, &buf[..n], peer, &mut batch),
                Err(_) => break,
            }
        }
        if stopping && batch.is_empty() {
            return Ok(());
        }
        if !forward(&pipeline, &tx, batch).await {
            return Ok(());
        }
    }
}

fn ingest(pipeline: &Pipeline, datagram: &[u8], peer: SocketAddr, batch: &mut Vec<Event>) {
    let stats = &pipeline.ingest;
    stats.messages.fetch_add(1, Ordering::Relaxed);
    if datagram.len() > 64 * 1024 {
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
            batch.extend(msg.events.iter().map(|e| from_proto(e, now)));
            stats
                .events
                .fetch_add(msg.events.len() as u64, Ordering::Relaxed);
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
