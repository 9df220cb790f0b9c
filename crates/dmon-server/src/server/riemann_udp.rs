//! Riemann's UDP protocol (default `127.0.0.1:5555`): one protobuf `Msg`
//! per datagram, no reply. Clients switch to TCP above 16 KiB; up to 64 KiB
//! is accepted.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::source::{BoundSource, Source, SourceKind};
use super::udp::{bind, limit_events, BoundUdp};
use crate::codec::riemann::{from_proto, Msg};
use crate::event::{now_secs, Event};
use crate::log_limit::LogLimiter;
use crate::pipeline::Pipeline;
use crate::warn_limited;
use prost::Message;

static BAD_INPUT_LOG: LogLimiter = LogLimiter::new(10);

/// Riemann over UDP (`--riemann-udp`).
pub static KIND: SourceKind = SourceKind {
    name: "riemann-udp",
    label: "Riemann UDP",
    flag: "--riemann-udp",
    can_be_off: true,
    suspect: "another dmon or Riemann?",
    announce: "Listening for Riemann UDP on:",
    ready: false,
};

/// The Riemann UDP listener, as configured; it receives as JSON UDP does
/// ([`super::udp::BoundUdp`]), decoding protobuf instead.
pub struct RiemannUdp {
    pub addr: Option<SocketAddr>,
}

impl Source for RiemannUdp {
    fn kind(&self) -> &'static SourceKind {
        &KIND
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    fn bind(self: Box<Self>, addr: SocketAddr) -> io::Result<Box<dyn BoundSource>> {
        Ok(Box::new(BoundUdp {
            socket: bind(addr)?,
            max_datagram: MAX_DATAGRAM,
            ingest,
        }))
    }
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
