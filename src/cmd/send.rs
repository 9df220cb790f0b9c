//! `dmon send`: events to a running dmon over UDP, for scripts and checks.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;

use super::RiemannTarget;
use crate::client::send_datagrams;
use crate::codec::json;
use crate::event::{Event, Number};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  dmon send host=web1 service=cpu state=warning metric=2.5 tags=prod,eu
  dmon send '{\"host\":\"web1\",\"service\":\"cpu\",\"metric\":2.5}'
  cat events.ndjson | dmon send

All key=value arguments together make one event: metric, time and ttl are
numbers, tags is a comma-separated list, unknown keys become attributes.")]
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
    #[command(flatten)]
    pub target: RiemannTarget,
    /// JSON objects, or key=value fields of one event. Without any, NDJSON is read from stdin.
    #[arg(value_name = "EVENT")]
    pub events: Vec<String>,
}

pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let mut events = Vec::new();
    let mut bad = 0usize;
    let mut report = |what: String, r: Result<Event, String>| match r {
        Ok(e) => events.push(e),
        Err(err) => {
            bad += 1;
            eprintln!("dmon send: {what}: {err}");
        }
    };
    if args.events.is_empty() {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            if !line.trim().is_empty() {
                report(
                    format!("stdin line {}", n + 1),
                    json::decode_event(&line).map_err(|e| e.to_string()),
                );
            }
        }
    } else {
        let (pairs, objects): (Vec<&String>, Vec<&String>) = args
            .events
            .iter()
            .partition(|a| !a.trim_start().starts_with('{'));
        for obj in objects {
            report(
                format!("argument {obj}"),
                json::decode_event(obj).map_err(|e| e.to_string()),
            );
        }
        if !pairs.is_empty() {
            report("key=value arguments".into(), event_from_pairs(&pairs));
        }
    }
    if args.riemann {
        let mut client = args.target.connect()?;
        client
            .send_events(&events)
            .with_context(|| format!("sending to {}", args.target.riemann_tcp))?;
        eprintln!(
            "dmon send: {} event(s) acknowledged by {}",
            events.len(),
            args.target.riemann_tcp
        );
    } else {
        let sent = send_datagrams(args.udp, &events)
            .with_context(|| format!("sending to {}", args.udp))?;
        eprintln!(
            "dmon send: sent {} event(s) in {sent} datagram(s) to {}",
            events.len(),
            args.udp
        );
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
