//! Self-instrumentation: every interval dmon makes events about itself.
//! By default they go straight into the index ([`crate::pipeline::Work::Own`]),
//! where queries, the dashboard and `/metrics` see them, and not through the
//! user's roots: a root written for the hosts it watches would otherwise
//! alert on, mail about and forward dmon's own rates. With
//! `--self-events-to-streams` they go through the roots instead, as
//! Riemann's do, for those who alert on them.
//!
//! Each event has `host` = this machine's name, the tag `dmon`, state "ok",
//! and a ttl of twice the interval (so `index()` drops them soon after dmon
//! stops). Services:
//!
//! | service | metric |
//! |---|---|
//! | `dmon ingest rate` | events received per second, all sources |
//! | `dmon json udp rate`, `dmon riemann rate` | datagrams / Riemann messages per second |
//! | `dmon processed rate` | events run through the roots per second |
//! | `dmon bad input rate` | bad datagrams, events and messages per second |
//! | `dmon refused rate` | events refused by a limit (per datagram, per message) per second |
//! | `dmon ingest latency 0.5`, `0.95`, `0.99` | seconds from a source asking the pipeline for room to its events having been through the roots (upper bound of a 12 % bucket) |
//! | `dmon queue depth` | events waiting in the pipeline now |
//! | `dmon dropped kernel`, `dmon dropped mail`, `dmon dropped sinks`, `dmon dropped taps` | what each lost during the interval: datagrams the kernel dropped because dmon fell behind, mail that did not fit the mail queue, events `forward` and `graphite` dropped (queue full), events a slow `tap()` missed |
//! | `dmon dropped` | all of the above, together |
//! | `dmon index size` | events in the index |
//! | `dmon memory SHARE`, `… refused` | per share of `--memory-limit` (`messages`, `pipeline`, `replies`, `subscribers`, `sinks`, `recorder`, `recent`): bytes held now, and charges refused during the interval |
//! | `dmon node PATH rate` | events into that node per second |
//! | `dmon sink KIND TARGET sent rate`, `… queue depth`, `… dropped`, `… retried` | per sink (`email`, `forward`, `graphite` and its `host:port`): items sent per second, items waiting now, items dropped and attempts retried during the interval |

use smol_str::SmolStr;

use crate::event::{Event, Number, OWN_TAGS};
use crate::latency::{self, Snapshot};
use crate::stats::Stats;

/// Turns successive counter snapshots into events about dmon.
pub struct Instrumenter {
    host: SmolStr,
    interval: f64,
    previous: Option<(Stats, Snapshot)>,
}

impl Instrumenter {
    pub fn new(host: impl Into<SmolStr>, interval_secs: f64) -> Self {
        Instrumenter {
            host: host.into(),
            interval: interval_secs,
            previous: None,
        }
    }

    /// This machine's name, for `host` (`localhost` if it has none).
    pub fn hostname() -> String {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }

    /// The events for `stats` and the ingest latencies, taken at `now`
    /// (unix seconds), against the previous call's. The first call only
    /// remembers: rates need two.
    pub fn events(&mut self, stats: &Stats, latencies: &Snapshot, now: f64) -> Vec<Event> {
        let Some((before, latencies_before)) =
            self.previous.replace((stats.clone(), latencies.clone()))
        else {
            return Vec::new();
        };
        let elapsed = stats.uptime_secs - before.uptime_secs;
        if elapsed <= 0.0 {
            return Vec::new();
        }
        let rate = |now_count: u64, then: u64| now_count.saturating_sub(then) as f64 / elapsed;
        let delta = |now_count: u64, then: u64| now_count.saturating_sub(then) as f64;
        let bad = |s: &Stats| s.bad_datagrams + s.bad_events + s.bad_messages;
        let refused = |s: &Stats| s.refused + s.tcp.refused_events;
        // The mailer has its own line.
        let sink_drops = |s: &Stats| -> u64 {
            s.sinks
                .iter()
                .filter(|k| k.kind != "email")
                .map(|k| k.dropped)
                .sum()
        };
        let dropped = [
            ("kernel", delta(stats.kernel_drops, before.kernel_drops)),
            ("mail", delta(stats.mails_dropped, before.mails_dropped)),
            ("sinks", delta(sink_drops(stats), sink_drops(&before))),
            ("taps", delta(stats.tap_drops, before.tap_drops)),
        ];
        let mut out = vec![
            self.event("dmon ingest rate", rate(stats.events, before.events), now),
            self.event(
                "dmon json udp rate",
                rate(stats.datagrams, before.datagrams),
                now,
            ),
            self.event(
                "dmon riemann rate",
                rate(stats.messages, before.messages),
                now,
            ),
            self.event(
                "dmon processed rate",
                rate(stats.processed, before.processed),
                now,
            ),
            self.event("dmon bad input rate", rate(bad(stats), bad(&before)), now),
            self.event(
                "dmon refused rate",
                rate(refused(stats), refused(&before)),
                now,
            ),
            self.event("dmon queue depth", stats.queued as f64, now),
            self.event("dmon dropped", dropped.iter().map(|(_, n)| n).sum(), now),
            self.event("dmon index size", stats.indexed as f64, now),
        ];
        for (what, n) in dropped {
            out.push(self.event(&format!("dmon dropped {what}"), n, now));
        }
        for q in ["0.5", "0.95", "0.99"] {
            let point = q.parse().expect("a quantile");
            if let Some(secs) = latency::quantile(&latencies_before, latencies, point) {
                out.push(self.event(&format!("dmon ingest latency {q}"), secs, now));
            }
        }
        for (i, (share, held, refused)) in stats.memory.shares.iter().enumerate() {
            let name = format!("dmon memory {}", share.name());
            let then = before.memory.shares.get(i).map_or(0, |s| s.2);
            out.push(self.event(&name, *held as f64, now));
            out.push(self.event(&format!("{name} refused"), delta(*refused, then), now));
        }
        for sink in &stats.sinks {
            let then = before
                .sinks
                .iter()
                .find(|s| s.kind == sink.kind && s.target == sink.target)
                .cloned()
                .unwrap_or_default();
            let name = format!("dmon sink {} {}", sink.kind, sink.target);
            out.extend([
                self.event(
                    &format!("{name} sent rate"),
                    rate(sink.sent, then.sent),
                    now,
                ),
                self.event(&format!("{name} queue depth"), sink.waiting as f64, now),
                self.event(
                    &format!("{name} dropped"),
                    delta(sink.dropped, then.dropped),
                    now,
                ),
                self.event(
                    &format!("{name} retried"),
                    delta(sink.retried, then.retried),
                    now,
                ),
            ]);
        }
        for node in &stats.nodes {
            let then = before
                .nodes
                .iter()
                .find(|n| n.path == node.path)
                .map_or(0, |n| n.events_in);
            out.push(self.event(
                &format!("dmon node {} rate", node.path),
                rate(node.events_in, then),
                now,
            ));
        }
        out
    }

    fn event(&self, service: &str, metric: f64, now: f64) -> Event {
        Event {
            host: Some(self.host.clone()),
            service: Some(service.into()),
            state: Some(SmolStr::new_static("ok")),
            time: Some(Number::Float(now)),
            ttl: Some(2.0 * self.interval),
            metric: Some(Number::Float(metric)),
            tags: OWN_TAGS.clone(),
            ..Event::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::NodeSnapshot;

    fn stats(uptime: f64, events: u64, node_in: u64) -> Stats {
        Stats {
            uptime_secs: uptime,
            events,
            datagrams: events,
            indexed: 7,
            memory: crate::memory::MemoryStats {
                limit: 1 << 30,
                shares: vec![(crate::memory::Share::Replies, 4096, events / 500)],
            },
            sinks: vec![crate::sinks::SinkSnapshot {
                kind: "forward".into(),
                target: "127.0.0.1:5555".into(),
                sent: events / 2,
                waiting: 7,
                ..Default::default()
            }],
            nodes: vec![NodeSnapshot {
                path: "a_stream/average".into(),
                kind: "average",
                describe: "average(2)".into(),
                events_in: node_in,
                events_out: 0,
                errors: 0,
                kept_state: false,
                detail: None,
            }],
            ..Stats::default()
        }
    }

    fn metric(events: &[Event], service: &str) -> f64 {
        events
            .iter()
            .find(|e| e.service.as_deref() == Some(service))
            .and_then(|e| e.metric)
            .unwrap_or_else(|| panic!("no {service}"))
            .as_f64()
    }

    #[test]
    fn rates_come_from_two_snapshots() {
        let mut i = Instrumenter::new("box", 10.0);
        let h = crate::latency::Histogram::default();
        assert!(i
            .events(&stats(1.0, 100, 50), &h.snapshot(), 1000.0)
            .is_empty());
        h.record(std::time::Duration::from_millis(2), 1000);
        let events = i.events(&stats(11.0, 1100, 250), &h.snapshot(), 1010.0);
        assert_eq!(metric(&events, "dmon ingest rate"), 100.0);
        assert_eq!(metric(&events, "dmon json udp rate"), 100.0);
        assert_eq!(metric(&events, "dmon index size"), 7.0);
        assert_eq!(metric(&events, "dmon memory replies"), 4096.0);
        assert_eq!(metric(&events, "dmon memory replies refused"), 2.0);
        assert_eq!(metric(&events, "dmon node a_stream/average rate"), 20.0);
        assert_eq!(metric(&events, "dmon dropped"), 0.0);
        assert_eq!(
            metric(&events, "dmon sink forward 127.0.0.1:5555 sent rate"),
            50.0
        );
        assert_eq!(
            metric(&events, "dmon sink forward 127.0.0.1:5555 queue depth"),
            7.0
        );
        let p99 = metric(&events, "dmon ingest latency 0.99");
        assert!((0.002..0.0023).contains(&p99), "{p99}");
        let e = &events[0];
        assert_eq!(e.host.as_deref(), Some("box"));
        assert_eq!(e.ttl, Some(20.0));
        assert!(e.has_tag("dmon"));
        assert_eq!(e.time, Some(Number::Float(1010.0)));
        // dmon's own by their very tags, not by what they say.
        assert!(events.iter().all(Event::is_dmons_own));
        assert!(Event::is_dmons_own(&Event {
            metric: None,
            ..e.clone()
        }));
        let lookalike = crate::testing::ev(r#"{"service":"dmon ingest rate","tags":["dmon"]}"#);
        assert!(!Event::is_dmons_own(&lookalike));
        assert!(!Event::is_dmons_own(&Event::default()));
    }
}
