//! `dmon send`: events to a running dmon over UDP or Riemann TCP, for
//! scripts and checks; NDJSON on stdin is sent as it is read, in batches.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use prost::Message as _;

use super::RiemannTarget;
use crate::client::{ClientError, Datagrams, RiemannClient};
use crate::codec::json;
use crate::codec::riemann::{to_proto, Msg, ProtoEvent};
use crate::event::{Event, Number};

/// Most events in one Riemann message by default (`--batch`).
pub const DEFAULT_BATCH: usize = 1_000;

/// Most bytes of events in one Riemann message: frames up to 64 KiB are
/// not counted against the server's budget for large frames, and are far
/// under its default `--max-frame` (8 MiB).
const BATCH_BYTES: usize = 64 * 1024;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  dmon send host=web1 service=cpu state=warning metric=2.5 tags=prod,eu
  dmon send '{\"host\":\"web1\",\"service\":\"cpu\",\"metric\":2.5}'
  cat events.ndjson | dmon send
  cat events.ndjson | dmon send --riemann --riemann-tcp 127.0.0.1:5555

All key=value arguments together make one event: metric, time and ttl are
numbers, tags is a comma-separated list, unknown keys become attributes.

NDJSON on stdin is sent as it is read, in pieces the receiver accepts:
datagrams of at most 64 KiB and 1000 events, or Riemann messages of at
most 64 KiB and --batch events, each acknowledged before the next. At the
end, one line on stderr says how many events went out (and, with
--riemann, how many the server refused).")]
pub struct SendArgs {
    /// Where dmon receives JSON datagrams.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DMON_UDP",
        default_value = "127.0.0.1:7689"
    )]
    pub udp: SocketAddr,
    /// Send over Riemann's TCP protocol to --riemann-tcp instead, and wait for
    /// the server's acknowledgement (exit status 1 if it refuses).
    #[arg(long)]
    pub riemann: bool,
    /// With --riemann: most events in one message (lower it for a server
    /// whose --max-events-per-message or --max-frame is smaller).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH, requires = "riemann", value_parser = at_least_one)]
    pub batch: usize,
    #[command(flatten)]
    pub target: RiemannTarget,
    /// JSON objects, or key=value fields of one event. Without any, NDJSON is read from stdin.
    #[arg(value_name = "EVENT")]
    pub events: Vec<String>,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let mut out = if args.riemann {
        Out::Riemann(Batches::connect(&args.target, args.batch)?)
    } else {
        let to = args.udp;
        let datagrams = Datagrams::new(to).with_context(|| format!("sending to {to}"))?;
        Out::Udp {
            datagrams,
            to,
            events: 0,
        }
    };
    let mut bad = 0usize;
    let mut take = |out: &mut Out, what: &dyn Fn() -> String, r: Result<Event, String>| match r {
        Ok(e) => out.push(&e),
        Err(err) => {
            bad += 1;
            eprintln!("dmon send: {}: {err}", what());
            Ok(())
        }
    };
    if args.events.is_empty() {
        let stdin = std::io::stdin();
        // Someone typing, or who forgot a pipe: say what is awaited.
        if stdin.is_terminal() {
            eprintln!(
                "dmon send: reading events from stdin (one JSON object per line; Ctrl-D to end)"
            );
        }
        for (n, line) in stdin.lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            if !line.trim().is_empty() {
                take(
                    &mut out,
                    &|| format!("stdin line {}", n + 1),
                    json::decode_event(&line).map_err(|e| e.to_string()),
                )?;
            }
        }
    } else {
        let (pairs, objects): (Vec<&String>, Vec<&String>) = args
            .events
            .iter()
            .partition(|a| !a.trim_start().starts_with('{'));
        for obj in objects {
            take(
                &mut out,
                &|| format!("argument {obj}"),
                json::decode_event(obj).map_err(|e| e.to_string()),
            )?;
        }
        if !pairs.is_empty() {
            take(
                &mut out,
                &|| "key=value arguments".into(),
                event_from_pairs(&pairs),
            )?;
        }
    }
    let refused = out.finish()?;
    Ok(if bad == 0 && refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where the events go, as they are read.
enum Out {
    Riemann(Batches),
    Udp {
        datagrams: Datagrams,
        to: SocketAddr,
        events: usize,
    },
}

impl Out {
    fn push(&mut self, event: &Event) -> anyhow::Result<()> {
        match self {
            Out::Riemann(batches) => batches.push(event),
            Out::Udp {
                datagrams,
                to,
                events,
            } => {
                *events += 1;
                datagrams
                    .push(event)
                    .with_context(|| format!("sending to {to}"))
            }
        }
    }

    /// Sends what is left and says what went out; returns how many events
    /// were refused.
    fn finish(self) -> anyhow::Result<usize> {
        match self {
            Out::Riemann(mut batches) => {
                batches.flush()?;
                let mut said = format!(
                    "dmon send: {} event(s) acknowledged by {} in {} message(s)",
                    batches.acknowledged, batches.addr, batches.messages
                );
                if batches.refused > 0 {
                    said.push_str(&format!("; {} refused", batches.refused));
                }
                eprintln!("{said}");
                Ok(batches.refused)
            }
            Out::Udp {
                datagrams,
                to,
                events,
            } => {
                let sent = datagrams
                    .finish()
                    .with_context(|| format!("sending to {to}"))?;
                eprintln!("dmon send: sent {events} event(s) in {sent} datagram(s) to {to}");
                Ok(0)
            }
        }
    }
}

/// Events going to a Riemann TCP server in messages of at most `max`
/// events and [`BATCH_BYTES`], each acknowledged before the next is sent.
struct Batches {
    client: RiemannClient,
    addr: SocketAddr,
    /// To connect again after a refusal.
    target: RiemannTarget,
    max: usize,
    batch: Vec<ProtoEvent>,
    bytes: usize,
    acknowledged: usize,
    refused: usize,
    messages: usize,
    /// The last refusal said, so a reason that repeats for every message
    /// is said once.
    last_refusal: Option<String>,
}

impl Batches {
    /// Connects at once, so an unreachable server fails before stdin is
    /// read.
    fn connect(target: &RiemannTarget, max: usize) -> anyhow::Result<Batches> {
        Ok(Batches {
            client: target.connect()?,
            addr: target.riemann_tcp,
            target: target.clone(),
            max,
            batch: Vec::new(),
            bytes: 0,
            acknowledged: 0,
            refused: 0,
            messages: 0,
            last_refusal: None,
        })
    }

    fn push(&mut self, event: &Event) -> anyhow::Result<()> {
        let proto = to_proto(event);
        // The event's bytes, its field tag and its length prefix.
        let len = proto.encoded_len() + 6;
        if !self.batch.is_empty()
            && (self.batch.len() >= self.max || self.bytes + len > BATCH_BYTES)
        {
            self.flush()?;
        }
        self.bytes += len;
        self.batch.push(proto);
        Ok(())
    }

    /// Sends the batch and waits for its acknowledgement. A refusal is
    /// counted and said, and sending goes on; a broken connection ends it.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let msg = Msg {
            events: std::mem::take(&mut self.batch),
            ..Msg::default()
        };
        let n = msg.events.len();
        self.bytes = 0;
        self.messages += 1;
        match self.client.request(&msg) {
            Ok(_) => self.acknowledged += n,
            Err(ClientError::Refused(why)) => {
                self.refused += n;
                if self.last_refusal.as_ref() != Some(&why) {
                    eprintln!("dmon send: {} refused {n} event(s): {why}", self.addr);
                    self.last_refusal = Some(why);
                }
                // The server may have closed the connection after refusing
                // (an over-long frame does): go on over a new one.
                self.client = self.target.connect()?;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "sending to {} ({} event(s) acknowledged before)",
                    self.addr, self.acknowledged
                )))
            }
        }
        Ok(())
    }
}

/// Builds one event from `key=value` arguments.
pub fn event_from_pairs(pairs: &[&String]) -> Result<Event, String> {
    let mut e = Event::default();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is neither a JSON object nor key=value"))?;
        let number = || -> Result<Number, String> {
            v.parse::<i64>()
                .map(Number::Int)
                .or_else(|_| v.parse::<f64>().map(Number::Float))
                .map_err(|_| format!("{k} must be a number, got {v:?}"))
        };
        match k {
            "host" => e.host = Some(v.into()),
            "service" => e.service = Some(v.into()),
            "state" => e.state = Some(v.into()),
            "description" => e.description = Some(v.into()),
            "metric" => e.metric = Some(number()?),
            "time" => e.time = Some(number()?),
            "ttl" => e.ttl = Some(number()?.as_f64()),
            "tags" => e.tags = v.split(',').filter(|t| !t.is_empty()).collect(),
            _ => {
                e.attributes.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_make_one_typed_event() {
        let args: Vec<String> = ["host=web1", "metric=2.5", "ttl=10", "tags=a,b", "dc=eu"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let refs: Vec<&String> = args.iter().collect();
        let e = event_from_pairs(&refs).unwrap();
        assert_eq!(e.host.as_deref(), Some("web1"));
        assert_eq!(e.metric, Some(Number::Float(2.5)));
        assert_eq!(e.ttl, Some(10.0));
        assert_eq!(e.tags.len(), 2);
        assert_eq!(e.attributes["dc"], "eu");
        let bad = ["metric=abc".to_string()];
        assert!(event_from_pairs(&[&bad[0]]).is_err());
    }
}
