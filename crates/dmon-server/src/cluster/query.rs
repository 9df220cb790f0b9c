//! One view of the cluster: every node registers itself in the
//! [`NODES_BUCKET`] KV bucket and answers queries, stats and stream
//! counters over core NATS request/reply; an asker (`dmon query
//! --cluster`, the shell in cluster mode) scatters a request, gathers the
//! answers until every registered node replied or a timeout, and merges.
//!
//! Core NATS, not JetStream: a question nobody hears is simply not
//! answered, which the asker reports by node name.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{ClusterError, Connection};
use crate::codec::json;
use crate::event::{now_secs, Event};
use crate::log_limit::LogLimiter;
use crate::pipeline::Pipeline;
use crate::query::Query;
use crate::stats::{ComponentCounters, ComponentReport};

/// The membership bucket: key = node name (sanitised), value = [`Member`].
pub const NODES_BUCKET: &str = "dmon_nodes";

/// How long a registration lasts unless renewed (every third of it): a
/// node killed outright stops being expected by askers after this.
pub const NODE_TTL: Duration = Duration::from_secs(10);

pub const QUERY_SUBJECT: &str = "dmon.cluster.query";
pub const STATS_SUBJECT: &str = "dmon.cluster.stats";
pub const STREAMS_SUBJECT: &str = "dmon.cluster.streams";

/// Default of `dmon query --cluster`'s `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Searches run at once per node; more wait (each runs off the async
/// workers, on the index's snapshot).
const MAX_SEARCHES: usize = 4;

/// Requests answered (queries, stats, streams), and those answered with an
/// error (a bad or over-limit query, a reply too large for NATS).
pub static ANSWERED: AtomicU64 = AtomicU64::new(0);
pub static ERRORS: AtomicU64 = AtomicU64::new(0);
/// Registration renewals that failed (NATS unreachable); each is retried
/// at the next renewal.
pub static RENEW_FAILURES: AtomicU64 = AtomicU64::new(0);

/// `dmon stats`' `cluster_queries_answered`, `cluster_query_errors`,
/// `cluster_query_renew_failures`: the responder's counters.
struct ResponderCounters;

impl ComponentCounters for ResponderCounters {
    fn report(&self) -> ComponentReport {
        ComponentReport::counts(&[
            ("cluster_queries_answered", &ANSWERED),
            ("cluster_query_errors", &ERRORS),
            ("cluster_query_renew_failures", &RENEW_FAILURES),
        ])
    }
}

static NATS_LOG: LogLimiter = LogLimiter::per(1, Duration::from_secs(10));
static QUERY_LOG: LogLimiter = LogLimiter::new(5);

/// A node as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// "gateway", "worker", "standby" or "node".
    pub role: String,
    pub partitions: Vec<u32>,
    /// Unix time the node started.
    pub started: f64,
}

/// The KV key for a node name: KV keys allow `[-/_=.a-zA-Z0-9]`, and no
/// leading or trailing dot.
pub fn key_of(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() {
        "_".into()
    } else {
        key
    }
}

/// The query limits a node applies to cluster queries (those of
/// `--max-query-bytes`, `--max-query-terms`, `--max-query-results`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_query_bytes: usize,
    pub max_query_terms: usize,
    pub max_query_results: usize,
}

/// A node's registration and its answering tasks; [`Responder::stop`]
/// deregisters it.
pub struct Responder {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: async_nats::jetstream::kv::Store,
    key: String,
}

struct Shared {
    name: String,
    pipeline: Arc<Pipeline>,
    limits: Limits,
    client: async_nats::Client,
    searches: Semaphore,
}

impl Responder {
    /// Registers `member` and starts answering, on the current runtime.
    pub async fn start(
        conn: &Connection,
        member: Member,
        pipeline: Arc<Pipeline>,
        limits: Limits,
    ) -> Result<Responder, ClusterError> {
        let store = conn.bucket(NODES_BUCKET, Some(NODE_TTL)).await?;
        let key = key_of(&member.name);
        let value = Bytes::from(serde_json::to_vec(&member).unwrap_or_default());
        store
            .put(&key, value.clone())
            .await
            .map_err(|e| conn.error(format!("registering in {NODES_BUCKET}"), e))?;
        pipeline.add_counters(Arc::new(ResponderCounters));
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            name: member.name.clone(),
            pipeline,
            limits,
            client: conn.client.clone(),
            searches: Semaphore::new(MAX_SEARCHES),
        });
        let mut tasks = Vec::new();
        for subject in [QUERY_SUBJECT, STATS_SUBJECT, STREAMS_SUBJECT] {
            let sub = conn
                .client
                .subscribe(subject)
                .await
                .map_err(|e| conn.error(format!("subscribing to {subject}"), e))?;
            tasks.push(tokio::spawn(answer_loop(
                Arc::clone(&shared),
                sub,
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(renew_loop(
            store.clone(),
            key.clone(),
            value,
            conn.url.clone(),
            stopped,
        )));
        // Subscriptions reach the server before an asker can expect us.
        let _ = conn.client.flush().await;
        Ok(Responder {
            stop,
            tasks,
            store,
            key,
        })
    }

    /// Stops answering and deregisters (askers stop expecting this node
    /// at once rather than after the ttl).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
        }
        let deleted = tokio::time::timeout(Duration::from_secs(2), self.store.delete(&self.key));
        if !matches!(deleted.await, Ok(Ok(()))) {
            tracing::warn!(
                "could not deregister from {NODES_BUCKET}; askers expect this node until its registration lapses"
            );
        }
    }
}

/// Rewrites the registration every third of its ttl; a failure (NATS
/// down) is logged, rate-limited, and retried at the next tick.
async fn renew_loop(
    store: async_nats::jetstream::kv::Store,
    key: String,
    value: Bytes,
    url: String,
    mut stopped: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(NODE_TTL / 3);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped.changed() => return,
        }
        if let Err(e) = store.put(&key, value.clone()).await {
            RENEW_FAILURES.fetch_add(1, Ordering::Relaxed);
            crate::warn_limited!(
                NATS_LOG,
                "NATS {url}: renewing this node's registration: {e}"
            );
        }
    }
}

async fn answer_loop(
    shared: Arc<Shared>,
    mut sub: async_nats::Subscriber,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return },
            _ = stopped.changed() => return,
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let shared = Arc::clone(&shared);
        // Each request on its own task: a slow search delays only itself.
        tokio::spawn(async move {
            let body = match msg.subject.as_str() {
                QUERY_SUBJECT => answer_query(&shared, &msg.payload).await,
                subject => answer_counters(&shared, subject == STATS_SUBJECT).await,
            };
            let body = match body {
                Ok(body) => body,
                Err(why) => error_reply(&shared, why),
            };
            let max = shared.client.server_info().max_payload;
            let body = if body.len() > max {
                error_reply(
                    &shared,
                    format!(
                        "the reply would be {} bytes, more than NATS' max_payload of {max}; narrow the query",
                        body.len()
                    ),
                )
            } else {
                ANSWERED.fetch_add(1, Ordering::Relaxed);
                body
            };
            if let Err(e) = shared.client.publish(reply, Bytes::from(body)).await {
                crate::warn_limited!(NATS_LOG, "NATS: answering a cluster request: {e}");
            }
        });
    }
}

fn error_reply(shared: &Shared, why: String) -> String {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    crate::warn_limited!(QUERY_LOG, "cluster request refused: {why}");
    serde_json::json!({"node": shared.name, "error": why}).to_string()
}

/// `{node, events: [...]}`: the index's matches, within the query limits.
async fn answer_query(shared: &Arc<Shared>, payload: &[u8]) -> Result<String, String> {
    let limits = shared.limits;
    if payload.len() > limits.max_query_bytes {
        return Err(format!(
            "query of {} bytes; the limit is {} (--max-query-bytes)",
            payload.len(),
            limits.max_query_bytes
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| "the query is not UTF-8".to_owned())?
        .to_owned();
    let Ok(_searching) = shared.searches.acquire().await else {
        return Err("node is shutting down".into());
    };
    let pipeline = Arc::clone(&shared.pipeline);
    // Parsing (regexes compile) and searching run off the async workers.
    let found = tokio::task::spawn_blocking(move || {
        let query = Query::parse(&text).map_err(|e| e.to_string())?;
        if query.terms() > limits.max_query_terms {
            return Err(format!(
                "query has {} terms; the limit is {} (--max-query-terms)",
                query.terms(),
                limits.max_query_terms
            ));
        }
        let found = pipeline.context().index.search(|e| query.matches(e));
        if found.len() > limits.max_query_results {
            return Err(format!(
                "query matches {} events; the limit is {} (--max-query-results); narrow the query",
                found.len(),
                limits.max_query_results
            ));
        }
        let events: Vec<String> = found.iter().map(|e| json::encode(e)).collect();
        Ok(events.join(","))
    })
    .await
    .map_err(|e| format!("query failed: {e}"))??;
    Ok(format!(
        "{{\"node\":{},\"events\":[{found}]}}",
        serde_json::to_string(&shared.name).unwrap_or_default()
    ))
}

/// `{node, stats}` or `{node, nodes}`: the counters, taken off the async
/// workers (a node's counters wait for its lock).
async fn answer_counters(shared: &Arc<Shared>, all: bool) -> Result<String, String> {
    let pipeline = Arc::clone(&shared.pipeline);
    let name = shared.name.clone();
    tokio::task::spawn_blocking(move || {
        let stats = pipeline.stats();
        let body = if all {
            serde_json::json!({"node": name, "stats": stats})
        } else {
            serde_json::json!({"node": name, "nodes": stats.nodes})
        };
        body.to_string()
    })
    .await
    .map_err(|e| format!("counters failed: {e}"))
}

/// The registered nodes, by name.
pub async fn members(conn: &Connection) -> Result<Vec<Member>, ClusterError> {
    let store = conn.bucket(NODES_BUCKET, Some(NODE_TTL)).await?;
    let mut keys = store
        .keys()
        .await
        .map_err(|e| conn.error(format!("listing {NODES_BUCKET}"), e))?;
    let mut found = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| conn.error(format!("listing {NODES_BUCKET}"), e))?;
        if let Ok(Some(value)) = store.get(&key).await {
            if let Ok(member) = serde_json::from_slice::<Member>(&value) {
                found.push(member);
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// One node's answer: its name and the reply's JSON.
#[derive(Debug)]
pub struct Answer {
    pub node: String,
    pub body: serde_json::Value,
}

/// What a scatter-gather collected: the answers in arrival order, and the
/// registered nodes that did not answer in time.
#[derive(Debug, Default)]
pub struct Gathered {
    pub answers: Vec<Answer>,
    pub missing: Vec<String>,
}

/// Publishes `payload` on `subject` and gathers the replies until every
/// registered node answered or `timeout` passed.
pub async fn ask(
    conn: &Connection,
    subject: &str,
    payload: Bytes,
    timeout: Duration,
) -> Result<Gathered, ClusterError> {
    let deadline = Instant::now() + timeout;
    let expected = members(conn).await?;
    let inbox = conn.client.new_inbox();
    // Subscribed before asking, so no early answer is lost.
    let mut sub = conn
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| conn.error("subscribing to the reply inbox", e))?;
    conn.client
        .publish_with_reply(subject.to_owned(), inbox, payload)
        .await
        .map_err(|e| conn.error(format!("asking {subject}"), e))?;
    let _ = conn.client.flush().await;
    let mut gathered = Gathered::default();
    let mut waiting: Vec<String> = expected.into_iter().map(|m| m.name).collect();
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(msg)) = tokio::time::timeout(left, sub.next()).await else {
            break;
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
            continue;
        };
        let node = body["node"].as_str().unwrap_or("?").to_owned();
        waiting.retain(|n| *n != node);
        gathered.answers.push(Answer { node, body });
    }
    let _ = sub.unsubscribe().await;
    gathered.missing = waiting;
    Ok(gathered)
}

/// A node's part in a cluster query.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeResult {
    Events(usize),
    Error(String),
    Missing,
}

/// A cluster query's merged events and what each node did.
#[derive(Debug, Default)]
pub struct Merged {
    pub events: Vec<Event>,
    pub nodes: Vec<(String, NodeResult)>,
}

impl Merged {
    /// One line per node: `NAME: answered: N events`, `NAME: error: …`,
    /// `NAME: did not answer`.
    pub fn report(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(name, r)| match r {
                NodeResult::Events(n) => format!(
                    "{name}: answered: {n} event{}",
                    if *n == 1 { "" } else { "s" }
                ),
                NodeResult::Error(e) => format!("{name}: error: {e}"),
                NodeResult::Missing => format!("{name}: did not answer"),
            })
            .collect()
    }
}

/// Asks every node for the events matching `text` and merges them.
pub async fn query(
    conn: &Connection,
    text: &str,
    timeout: Duration,
) -> Result<Merged, ClusterError> {
    let gathered = ask(conn, QUERY_SUBJECT, Bytes::from(text.to_owned()), timeout).await?;
    Ok(merge(gathered, now_secs()))
}

/// Merges the answers: events sorted by host and service; the same
/// (host, service) from two nodes (a takeover in progress) is the one with
/// the latest time.
pub fn merge(gathered: Gathered, now: f64) -> Merged {
    let mut latest: HashMap<(Option<String>, Option<String>), Event> = HashMap::new();
    let mut nodes = Vec::new();
    for answer in gathered.answers {
        if let Some(e) = answer.body["error"].as_str() {
            nodes.push((answer.node, NodeResult::Error(e.to_owned())));
            continue;
        }
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        if let Some(list) = answer.body.get("events") {
            json::decode(list.to_string().as_bytes(), now, &mut events, &mut errors);
        }
        nodes.push((answer.node, NodeResult::Events(events.len())));
        for e in events {
            let key = (
                e.host.as_deref().map(str::to_owned),
                e.service.as_deref().map(str::to_owned),
            );
            let time = |e: &Event| e.time.map_or(f64::NEG_INFINITY, |t| t.as_f64());
            match latest.get(&key) {
                Some(kept) if time(kept) >= time(&e) => {}
                _ => {
                    latest.insert(key, e);
                }
            }
        }
    }
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    nodes.extend(
        gathered
            .missing
            .into_iter()
            .map(|n| (n, NodeResult::Missing)),
    );
    let sorted: BTreeMap<_, _> = latest.into_iter().collect();
    Merged {
        events: sorted.into_values().collect(),
        nodes,
    }
}

/// Each node's `dmon stats` JSON (`streams`: only its stream node
/// counters), as `(node, Some(json))`, and `(node, None)` for those that did
/// not answer; `first` (this node) first, then by name.
pub async fn counters(
    conn: &Connection,
    streams: bool,
    timeout: Duration,
    first: Option<&str>,
) -> Result<Vec<(String, Option<Box<RawValue>>)>, ClusterError> {
    let (subject, field) = if streams {
        (STREAMS_SUBJECT, "nodes")
    } else {
        (STATS_SUBJECT, "stats")
    };
    let gathered = ask(conn, subject, Bytes::new(), timeout).await?;
    let mut out: Vec<(String, Option<Box<RawValue>>)> = gathered
        .answers
        .into_iter()
        .map(|a| {
            let body = a
                .body
                .get(field)
                .and_then(|v| RawValue::from_string(v.to_string()).ok());
            (a.node, body)
        })
        .collect();
    out.sort_by(|a, b| {
        (Some(a.0.as_str()) != first, &a.0).cmp(&(Some(b.0.as_str()) != first, &b.0))
    });
    out.extend(gathered.missing.into_iter().map(|n| (n, None)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Number;

    fn answer(node: &str, events: &[(&str, &str, i64)]) -> Answer {
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|(h, s, t)| serde_json::json!({"host": h, "service": s, "time": t}))
            .collect();
        Answer {
            node: node.into(),
            body: serde_json::json!({"node": node, "events": events}),
        }
    }

    #[test]
    fn merge_sorts_and_keeps_the_latest_of_a_series() {
        let gathered = Gathered {
            answers: vec![
                answer("b", &[("web2", "cpu", 10), ("web1", "mem", 5)]),
                answer("a", &[("web1", "cpu", 7), ("web2", "cpu", 12)]),
                Answer {
                    node: "c".into(),
                    body: serde_json::json!({"node": "c", "error": "bad"}),
                },
            ],
            missing: vec!["d".into()],
        };
        let merged = merge(gathered, 0.0);
        let got: Vec<(String, String, Option<Number>)> = merged
            .events
            .iter()
            .map(|e| {
                (
                    e.host.as_deref().unwrap().to_owned(),
                    e.service.as_deref().unwrap().to_owned(),
                    e.time,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("web1".into(), "cpu".into(), Some(Number::Int(7))),
                ("web1".into(), "mem".into(), Some(Number::Int(5))),
                ("web2".into(), "cpu".into(), Some(Number::Int(12))),
            ]
        );
        assert_eq!(
            merged.report(),
            vec![
                "a: answered: 2 events",
                "b: answered: 2 events",
                "c: error: bad",
                "d: did not answer"
            ]
        );
    }

    #[test]
    fn keys_are_kv_safe() {
        assert_eq!(key_of("host-1:4242"), "host-1_4242");
        assert_eq!(key_of("a.b c"), "a_b_c");
        assert_eq!(key_of(""), "_");
    }
}
