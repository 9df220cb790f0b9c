//! `forward`: events to another dmon or a Riemann server, over Riemann's
//! protocol on TCP.
//!
//! Events go in messages of up to [`BATCH`] events, each acknowledged
//! before the next is sent; a batch that fails (no connection, no ack, a
//! reset) is sent again, whole or from its first unacknowledged message,
//! after a backoff, on a new connection. Delivery is at-least-once for
//! everything that fits the queue: a receiver that processed a message but
//! died before acknowledging it gets it twice.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use super::{Failure, Policy, Retry, Sink};
use crate::client::{ClientError, RiemannClient};
use crate::codec::riemann::{to_proto, Msg};
use crate::event::Event;

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
}

impl ForwardSink {
    pub fn new(host: &str, port: u16) -> Self {
        ForwardSink {
            host: host.to_owned(),
            port,
        }
    }
}

impl Sink for ForwardSink {
    type Item = Arc<Event>;
    type Conn = RiemannClient;

    fn kind(&self) -> &'static str {
        "forward"
    }
    fn target(&self) -> String {
        super::target(&self.host, self.port)
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<RiemannClient, Failure> {
        let addr = super::resolve(&self.host, self.port)?;
        RiemannClient::connect(addr, TIMEOUT)
            .map_err(|e| Failure::retry(format!("cannot connect: {e}")))
    }
    fn send(&mut self, client: &mut RiemannClient, batch: &[Arc<Event>]) -> Result<(), Failure> {
        let mut done = 0;
        while done < batch.len() {
            let (msg, n) = message(&batch[done..]);
            match client.request(&msg) {
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

/// The message for the first events of `events`, up to [`MESSAGE_BYTES`]
/// (at least one event), and how many it holds.
fn message(events: &[Arc<Event>]) -> (Msg, usize) {
    let mut msg = Msg::default();
    let mut bytes = 0;
    for e in events {
        let p = to_proto(e);
        let len = p.encoded_len() + 8;
        if !msg.events.is_empty() && bytes + len > MESSAGE_BYTES {
            break;
        }
        bytes += len;
        msg.events.push(p);
    }
    let n = msg.events.len();
    (msg, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_events_are_split_into_messages_under_the_limit() {
        let big = Arc::new(Event {
            description: Some("x".repeat(300_000).into()),
            ..Event::default()
        });
        let events = vec![big; 7];
        let (first, n) = message(&events);
        assert_eq!(n, 3);
        assert!(first.encoded_len() <= MESSAGE_BYTES);
        let huge = Arc::new(Event {
            description: Some("x".repeat(2 * MESSAGE_BYTES).into()),
            ..Event::default()
        });
        assert_eq!(message(&[huge]).1, 1, "one event always goes");
    }
}
