//! Counters: what came in, what was bad, what each node did. Exact numbers
//! live here; logs are rate-limited and only sample them.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::sinks::SinkSnapshot;
use crate::streams::NodeSnapshot;

/// Counted by every source (UDP today).
#[derive(Default, Debug)]
pub struct IngestStats {
    pub datagrams: AtomicU64,
    /// Datagrams with at least one bad part.
    pub bad_datagrams: AtomicU64,
    /// Events decoded (received): each is processed, refused, or left
    /// unprocessed by a forced stop.
    pub events: AtomicU64,
    /// Objects or fragments that could not become events.
    pub bad_events: AtomicU64,
    /// Riemann protocol messages (TCP frames and UDP datagrams).
    pub messages: AtomicU64,
    /// Riemann messages that were invalid, oversized or cut short.
    pub bad_messages: AtomicU64,
    /// Riemann TCP connections accepted.
    pub connections: AtomicU64,
    /// Queries answered.
    pub queries: AtomicU64,
    /// Times a source had to wait because the pipeline was full.
    pub pipeline_full: AtomicU64,
    /// Events decoded but refused: beyond a datagram's limit
    /// (`--max-datagram-events`).
    pub refused: AtomicU64,
    /// Datagrams the kernel dropped because the socket's receive buffer was
    /// full (SO_RXQ_OVFL): the pipeline was not keeping up.
    pub kernel_drops: AtomicU64,
    /// What the Riemann TCP listener refused or cut off.
    pub tcp: TcpStats,
    /// What the HTTP listener (`--http`) served, refused or dropped.
    pub http: HttpStats,
}

/// The HTTP listener's counters; those that refuse or drop also get a
/// rate-limited warning.
#[derive(Default, Debug)]
pub struct HttpStats {
    /// Requests answered (an upgrade to a WebSocket counts once).
    pub requests: AtomicU64,
    /// Requests answered with an error status (bad query, unknown path,
    /// over a limit; a request line or headers too long: 414, 431).
    pub bad_requests: AtomicU64,
    /// Connections closed at once: --http-max-connections were open.
    pub refused_connections: AtomicU64,
    /// Subscriptions refused: --http-max-subscribers were open.
    pub subscribers_refused: AtomicU64,
    /// Subscribers disconnected for falling behind, for not reading what
    /// they are sent (a write failed or stalled past --idle-timeout), or,
    /// over a WebSocket, for not answering a keep-alive ping in time.
    pub subscribers_dropped: AtomicU64,
    /// Subscriptions closed after --idle-timeout with nothing sent to them
    /// but keep-alives, so idle subscribers cannot hold every slot.
    pub subscribers_idle: AtomicU64,
    /// Events sent to subscribers.
    pub subscription_events: AtomicU64,
    /// TLS handshakes that failed (as [`TcpStats::tls_failures`]).
    pub tls_failures: AtomicU64,
    /// Requests refused for a missing or wrong token (`--http-token-file`).
    pub unauthorized: AtomicU64,
}

impl HttpStats {
    /// Values now; `subscribers` is how many are open.
    pub fn snapshot(&self, subscribers: usize) -> HttpSnapshot {
        let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        HttpSnapshot {
            http_requests: get(&self.requests),
            http_bad_requests: get(&self.bad_requests),
            http_refused_connections: get(&self.refused_connections),
            http_subscribers: subscribers as u64,
            http_subscribers_refused: get(&self.subscribers_refused),
            http_subscribers_dropped: get(&self.subscribers_dropped),
            http_subscribers_idle: get(&self.subscribers_idle),
            http_subscription_events: get(&self.subscription_events),
            http_tls_failures: get(&self.tls_failures),
            http_unauthorized: get(&self.unauthorized),
        }
    }
}

/// [`HttpStats`]' values; flattened into the stats JSON.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HttpSnapshot {
    pub http_requests: u64,
    pub http_bad_requests: u64,
    pub http_refused_connections: u64,
    /// Open now (a gauge).
    pub http_subscribers: u64,
    pub http_subscribers_refused: u64,
    pub http_subscribers_dropped: u64,
    pub http_subscribers_idle: u64,
    pub http_subscription_events: u64,
    pub http_tls_failures: u64,
    pub http_unauthorized: u64,
}

impl HttpSnapshot {
    /// Whether the HTTP listener did anything at all.
    pub fn any(&self) -> bool {
        *self != HttpSnapshot::default()
    }
}

/// What the Riemann TCP listener refused or closed to protect itself; each
/// also gets a rate-limited warning naming the limit.
#[derive(Default, Debug)]
pub struct TcpStats {
    /// Events in messages refused whole (over --max-events-per-message, or
    /// too large decoded for the frame memory budget).
    pub refused_events: AtomicU64,
    /// Connections closed at once: --max-connections were open.
    pub refused_connections: AtomicU64,
    /// Connections closed after --idle-timeout without a complete frame, or
    /// without reading a reply.
    pub idle_closed: AtomicU64,
    /// Times accepting failed (e.g. out of file descriptors).
    pub accept_failures: AtomicU64,
    /// Queries refused: too long, too many terms, too many results, or too
    /// large a reply.
    pub refused_queries: AtomicU64,
    /// TLS handshakes that failed: a plain-text client, a client
    /// certificate missing or refused, a handshake not finished in time.
    pub tls_failures: AtomicU64,
}

impl TcpStats {
    pub fn snapshot(&self) -> TcpSnapshot {
        let get = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        TcpSnapshot {
            refused_events: get(&self.refused_events),
            refused_connections: get(&self.refused_connections),
            idle_closed: get(&self.idle_closed),
            accept_failures: get(&self.accept_failures),
            refused_queries: get(&self.refused_queries),
            riemann_tls_failures: get(&self.tls_failures),
        }
    }
}

/// [`TcpStats`]' values; flattened into the stats JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TcpSnapshot {
    pub refused_events: u64,
    pub refused_connections: u64,
    pub idle_closed: u64,
    pub accept_failures: u64,
    pub refused_queries: u64,
    pub riemann_tls_failures: u64,
}

/// A part of the server that keeps counters of its own (a cluster gateway,
/// worker or query responder, `--state-dir`): the pipeline reports what
/// each one it was given ([`crate::pipeline::Pipeline::add_counters`])
/// says, without knowing what it is.
pub trait ComponentCounters: Send + Sync {
    fn report(&self) -> ComponentReport;
}

/// A component whose counters are statics (one per process).
impl<T: ComponentCounters> ComponentCounters for &'static T {
    fn report(&self) -> ComponentReport {
        T::report(self)
    }
}

/// What one component reports: fields of `dmon stats`' object (and so of
/// `/metrics`), and perhaps a row of the summary table.
#[derive(Debug, Clone, Default)]
pub struct ComponentReport {
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub row: Option<(&'static str, String)>,
}

impl ComponentReport {
    /// The fields of `snapshot`, a struct that serializes as an object.
    pub fn of(snapshot: &impl Serialize) -> Self {
        let fields = match serde_json::to_value(snapshot) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        ComponentReport { fields, row: None }
    }

    /// Counters by name, each read now.
    pub fn counts(counters: &[(&str, &AtomicU64)]) -> Self {
        let fields = counters
            .iter()
            .map(|(name, c)| {
                (
                    (*name).to_owned(),
                    c.load(std::sync::atomic::Ordering::Relaxed).into(),
                )
            })
            .collect();
        ComponentReport { fields, row: None }
    }

    /// With `text` as its summary row, labelled `label`.
    pub fn with_row(mut self, label: &'static str, text: String) -> Self {
        self.row = Some((label, text));
        self
    }
}

/// A snapshot of every counter: `dmon stats: {json}` when `serve` exits, a
/// short table ([`Stats::summary`]) when the shell does.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub uptime_secs: f64,
    pub datagrams: u64,
    pub bad_datagrams: u64,
    pub events: u64,
    pub bad_events: u64,
    pub messages: u64,
    pub bad_messages: u64,
    pub connections: u64,
    pub queries: u64,
    pub pipeline_full: u64,
    #[serde(flatten)]
    pub tcp: TcpSnapshot,
    #[serde(flatten)]
    pub http: HttpSnapshot,
    pub refused: u64,
    pub kernel_drops: u64,
    /// Events received and waiting in the pipeline now.
    pub queued: u64,
    /// Events received but never processed: left queued by a forced stop
    /// (a second Ctrl-C or SIGTERM). 0 after a clean stop.
    pub unprocessed: u64,
    /// How long the dispatch thread has been inside one root right now
    /// (0 when idle), and that root's path.
    pub dispatch_busy_secs: f64,
    pub dispatch_busy_in: Option<String>,
    /// Events run through the roots, expired ones included.
    pub processed: u64,
    pub expired: u64,
    pub indexed: u64,
    pub mails_queued: u64,
    pub mails_sent: u64,
    pub mail_failures: u64,
    pub mails_dropped: u64,
    /// Events a `tap()` observer missed because it was too slow.
    pub tap_drops: u64,
    /// Events in the recent-traffic ring now (`--recent-minutes`), and
    /// those its cap (`--recent-max-events`) pushed out early.
    pub recent_events: u64,
    /// What the recent events hold, in bytes (its share of `--memory-limit`).
    pub recent_bytes: u64,
    pub recent_dropped: u64,
    /// What each share of `--memory-limit` holds and refused.
    #[serde(flatten)]
    pub memory: crate::memory::MemoryStats,
    /// Every sink (the mailer, each `forward` and `graphite` target):
    /// queued, sent, retried, failed, dropped, waiting, connections.
    pub sinks: Vec<SinkSnapshot>,
    pub nodes: Vec<NodeSnapshot>,
    /// What the components with counters of their own report (a cluster
    /// gateway, worker or query responder, `--state-dir`): fields of the
    /// stats object, by name.
    #[serde(flatten)]
    pub components: serde_json::Map<String, serde_json::Value>,
    /// Their rows of [`Stats::summary`], as (label, text).
    #[serde(skip)]
    pub component_rows: Vec<(&'static str, String)>,
}

impl Stats {
    /// Adds what a component reports.
    pub fn add(&mut self, report: ComponentReport) {
        self.components.extend(report.fields);
        self.component_rows.extend(report.row);
    }

    /// A short table for people, printed when the shell exits.
    pub fn summary(&self) -> String {
        let errors: u64 = self.nodes.iter().map(|n| n.errors).sum();
        let rows = [
            ("uptime", format!("{:.1} s", self.uptime_secs)),
            (
                "received",
                format!(
                    "{} datagrams ({} bad), {} Riemann messages ({} bad), {} events ({} bad)",
                    self.datagrams,
                    self.bad_datagrams,
                    self.messages,
                    self.bad_messages,
                    self.events,
                    self.bad_events
                ),
            ),
            (
                "riemann",
                format!(
                    "{} connections ({} refused, {} closed idle, {} accept failures), \
                     {} queries ({} refused), {} events refused",
                    self.connections,
                    self.tcp.refused_connections,
                    self.tcp.idle_closed,
                    self.tcp.accept_failures,
                    self.queries,
                    self.tcp.refused_queries,
                    self.tcp.refused_events
                ),
            ),
            (
                "http",
                format!(
                    "{} requests ({} bad), {} connections refused, {} subscribers \
                     ({} refused, {} dropped, {} idle), {} events sent",
                    self.http.http_requests,
                    self.http.http_bad_requests,
                    self.http.http_refused_connections,
                    self.http.http_subscribers,
                    self.http.http_subscribers_refused,
                    self.http.http_subscribers_dropped,
                    self.http.http_subscribers_idle,
                    self.http.http_subscription_events
                ),
            ),
            (
                "processed",
                format!(
                    "{} events ({} expired), {} in the index, {} node errors",
                    self.processed, self.expired, self.indexed, errors
                ),
            ),
            (
                "mail",
                format!(
                    "{} queued, {} sent, {} failed, {} dropped",
                    self.mails_queued, self.mails_sent, self.mail_failures, self.mails_dropped
                ),
            ),
            ("pipeline", self.pipeline_row()),
        ];
        let mut out = String::from("dmon stopped:");
        for (name, value) in rows {
            // HTTP is off by default: its row only once it served something.
            if name == "http" && !self.http.any() {
                continue;
            }
            out.push_str(&format!("\n  {name:<10} {value}"));
        }
        for (name, value) in &self.component_rows {
            out.push_str(&format!("\n  {name:<10} {value}"));
        }
        // The mailer has its row above.
        for s in self.sinks.iter().filter(|s| s.kind != "email") {
            out.push_str(&format!("\n  {:<10} {}: {}", s.kind, s.target, s.counts()));
        }
        out
    }

    fn pipeline_row(&self) -> String {
        let mut row = format!(
            "{} queued, {} refused, {} kernel drops, {} unprocessed",
            self.queued, self.refused, self.kernel_drops, self.unprocessed
        );
        if let Some(path) = &self.dispatch_busy_in {
            row.push_str(&format!(
                "; busy {:.1} s in {path}",
                self.dispatch_busy_secs
            ));
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_add_fields_and_rows() {
        let mut stats = Stats::default();
        assert!(!stats.summary().contains("state"));
        #[derive(Serialize)]
        struct Saves {
            state_saves: u64,
        }
        let report =
            ComponentReport::of(&Saves { state_saves: 12 }).with_row("state", "12 saves".into());
        stats.add(report);
        assert!(stats.summary().ends_with("\n  state      12 saves"));
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["state_saves"], 12);
        assert!(json.get("component_rows").is_none());
    }

    #[test]
    fn the_http_row_shows_once_http_served() {
        let mut stats = Stats::default();
        assert!(!stats.summary().contains("http"));
        stats.http.http_requests = 3;
        stats.http.http_subscribers_dropped = 1;
        assert!(stats.summary().contains(
            "\n  http       3 requests (0 bad), 0 connections refused, 0 subscribers (0 refused, 1 dropped, 0 idle), 0 events sent\n"
        ));
    }

    #[test]
    fn summary_is_a_short_table() {
        let stats = Stats {
            uptime_secs: 12.34,
            datagrams: 5,
            bad_datagrams: 1,
            events: 7,
            bad_events: 1,
            messages: 0,
            bad_messages: 0,
            connections: 0,
            queries: 0,
            pipeline_full: 0,
            tcp: TcpSnapshot {
                refused_connections: 2,
                idle_closed: 1,
                ..TcpSnapshot::default()
            },
            refused: 2,
            kernel_drops: 3,
            queued: 4,
            unprocessed: 0,
            dispatch_busy_secs: 1.25,
            dispatch_busy_in: Some("slow/when".into()),
            processed: 6,
            expired: 0,
            indexed: 3,
            mails_queued: 1,
            mails_sent: 0,
            mail_failures: 1,
            mails_dropped: 0,
            ..Stats::default()
        };
        let table = "dmon stopped:\n  uptime     12.3 s\n  received   5 datagrams (1 bad), 0 Riemann messages (0 bad), 7 events (1 bad)\n  riemann    0 connections (2 refused, 1 closed idle, 0 accept failures), 0 queries (0 refused), 0 events refused\n  processed  6 events (0 expired), 3 in the index, 0 node errors\n  mail       1 queued, 0 sent, 1 failed, 0 dropped\n  pipeline   4 queued, 2 refused, 3 kernel drops, 0 unprocessed; busy 1.2 s in slow/when";
        assert_eq!(stats.summary(), table);
        // A row per sink but the mailer, which has its own.
        let sink = |kind: &str| SinkSnapshot {
            kind: kind.into(),
            target: "127.0.0.1:5555".into(),
            sent: 10,
            retried: 2,
            dropped: 1,
            waiting: 3,
            ..SinkSnapshot::default()
        };
        let stats = Stats {
            sinks: vec![sink("email"), sink("forward")],
            ..stats
        };
        assert_eq!(
            stats.summary(),
            format!("{table}\n  forward    127.0.0.1:5555: 10 sent, 2 retried, 0 failed, 1 dropped, 3 waiting")
        );
    }
}
