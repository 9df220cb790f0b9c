//! `forward`: events to another dmon or a Riemann server, over Riemann's
//! protocol on TCP. The node only queues the event; the sink's worker
//! encodes it (Riemann's `Event`, written directly) into a message.
//!
//! Events go in messages of up to [`BATCH`] events, each acknowledged
//! before the next is sent; a batch that fails (no connection, no ack, a
//! reset) is sent again, whole or from its first unacknowledged message,
//! after a backoff, on a new connection. Delivery is at-least-once for
//! everything that fits the queue: a receiver that processed a message but
//! died before acknowledging it gets it twice.
//!
//! With a [`ClientTls`] (`forward(..., tls_ca=...)`) the connection is
//! TLS; a handshake that fails (an untrusted certificate, a plain-text
//! receiver) is a failed connection like any other: logged, counted as a
//! retry, tried again.

use std::time::Duration;

use std::sync::Arc;

use super::{Failure, Policy, Retry, Sink};
use crate::client::{ClientError, RiemannClient};
use crate::codec::riemann::{encode_event, msg_event_len, push_msg_event};
use crate::event::Event;
use crate::tls::ClientTls;

pub const DEFAULT_PORT: u16 = 5555;
/// Events waiting for the target at most; more are dropped.
pub const CAPACITY: usize = 10_000;
/// Most events in one batch.
pub const BATCH: usize = 500;
/// Most bytes in one message, well under a receiver's `--max-frame`
/// (8 MiB by default), so a batch of large events still goes.
const MESSAGE_BYTES: usize = 1 << 20;
/// For connecting, and for each acknowledgement.
const TIMEOUT: Duration = Duration::from_secs(5);

const POLICY: Policy = Policy {
    capacity: CAPACITY,
    batch: BATCH,
    linger: Duration::from_millis(10),
    retry: Retry::Backoff {
        first: Duration::from_millis(100),
        // Riemann's clients reconnect every 5 s.
        max: Duration::from_secs(5),
    },
};

/// A Riemann TCP server to forward to.
pub struct ForwardSink {
    host: String,
    port: u16,
    tls: Option<ClientTls>,
    /// The message being sent, and one event of it, reused.
    buf: Vec<u8>,
    one: Vec<u8>,
}

impl ForwardSink {
    pub fn new(host: &str, port: u16, tls: Option<ClientTls>) -> Self {
        ForwardSink {
            host: host.to_owned(),
            port,
            tls,
            buf: Vec::new(),
            one: Vec::new(),
        }
    }
}

impl Sink for ForwardSink {
    type Item = Arc<Event>;
    type Conn = RiemannClient;

    fn kind(&self) -> &'static str {
        "forward"
    }
    /// `host:port`, or `tls://host:port`: a TLS and a plain-text forward
    /// to the same port are two sinks, not one sharing a connection.
    fn target(&self) -> String {
        let target = super::target(&self.host, self.port);
        match self.tls {
            Some(_) => format!("tls://{target}"),
            None => target,
        }
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<RiemannClient, Failure> {
        let addr = super::resolve(&self.host, self.port)?;
        RiemannClient::connect_with(addr, TIMEOUT, self.tls.as_ref())
            .map_err(|e| Failure::retry(format!("cannot connect: {e}")))
    }
    fn send(&mut self, client: &mut RiemannClient, batch: &[Arc<Event>]) -> Result<(), Failure> {
        let mut done = 0;
        while done < batch.len() {
            let n = frame(&batch[done..], &mut self.buf, &mut self.one);
            let sent = client.send_frame(&self.buf).map_err(ClientError::from);
            match sent.and_then(|()| client.read_reply()) {
                Ok(_) => done += n,
                // The receiver read the message and refused it (a limit of
                // its own): sending it again would be refused again. The
                // rest of the batch is given up with it.
                Err(ClientError::Refused(why)) => {
                    return Err(Failure::fatal(format!("events refused: {why}")).after(done))
                }
                Err(e) => return Err(Failure::retry(e).after(done)),
            }
        }
        Ok(())
    }
    fn give_up_message(&self, _: &[Arc<Event>], _: u32, failure: &Failure) -> String {
        format!("forward {}: {}", self.target(), failure.message)
    }
}

/// Puts into `out` the frame (the length, then the `Msg` with its repeated
/// `events` field) for the first of `events`, up to [`MESSAGE_BYTES`] (at
/// least one event), each encoded through `one`; returns how many it
/// holds. The length is written last, in place: the frame is sent as it
/// is, not copied behind a length.
fn frame(events: &[Arc<Event>], out: &mut Vec<u8>, one: &mut Vec<u8>) -> usize {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    let mut n = 0;
    for e in events {
        one.clear();
        encode_event(e, one);
        if n > 0 && out.len() + msg_event_len(one.len()) > MESSAGE_BYTES {
            break;
        }
        push_msg_event(out, one);
        n += 1;
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::codec::riemann::{to_proto, Msg};
    use prost::Message;

    #[test]
    fn messages_hold_the_events_and_stay_under_the_limit() {
        let small: Vec<Arc<Event>> = (0..3)
            .map(|i| {
                Arc::new(Event {
                    host: Some(format!("h{i}").into()),
                    ..Event::default()
                })
            })
            .collect();
        let (mut out, mut one) = (Vec::new(), Vec::new());
        assert_eq!(frame(&small, &mut out, &mut one), 3);
        let msg = Msg {
            events: small.iter().map(|e| to_proto(e)).collect(),
            ..Msg::default()
        };
        let body = msg.encode_to_vec();
        assert_eq!(out[..4], (body.len() as u32).to_be_bytes());
        assert_eq!(out[4..], body);

        let big = Arc::new(Event {
            description: Some("x".repeat(300_000).into()),
            ..Event::default()
        });
        assert_eq!(frame(&vec![big; 7], &mut out, &mut one), 3);
        assert!(out.len() <= MESSAGE_BYTES);
        assert_eq!(Msg::decode(&out[4..]).unwrap().events.len(), 3);
        let huge = Arc::new(Event {
            description: Some("x".repeat(2 * MESSAGE_BYTES).into()),
            ..Event::default()
        });
        assert_eq!(
            frame(&[huge], &mut out, &mut one),
            1,
            "one event always goes"
        );
    }
}
