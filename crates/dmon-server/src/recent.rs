//! The recent-traffic ring: the events received in the last few minutes,
//! with their receive times, so a candidate stream can be tried on real
//! traffic before it goes live (the shell's `try_stream`).
//!
//! Bounded three times: by age (`--recent-minutes`), by count
//! (`--recent-max-events`) and by bytes (its share of `--memory-limit`, each event
//! charged what holding it keeps alive: [`Event::retained_bytes`]), so
//! memory stays bounded whatever the rate and however large the events;
//! when a cap is reached the oldest events go first, and are counted as
//! dropped. The pipeline pushes each batch under one lock, not each event.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::codec::json;
use crate::event::Event;
use crate::streams::capture::Output;
use crate::streams::lock;

/// Minutes of traffic kept, by default.
pub const DEFAULT_MINUTES: f64 = 5.0;

/// Most events kept, by default, whatever the rate.
pub const DEFAULT_MAX_EVENTS: usize = 200_000;

/// An event as it was received, and when (the pipeline clock's seconds).
#[derive(Clone, Debug)]
pub struct Received {
    pub at: f64,
    pub event: Arc<Event>,
    /// What keeping it costs ([`Event::retained_bytes`]).
    bytes: usize,
}

/// The ring. Off (keeping nothing) until [`Recent::configure`]d.
#[derive(Debug, Default)]
pub struct Recent {
    on: AtomicBool,
    /// Seconds kept, as f64 bits.
    window: AtomicU64,
    max_events: AtomicUsize,
    max_bytes: AtomicUsize,
    events: Mutex<VecDeque<Received>>,
    /// The bytes the events held now cost (changed under `events`' lock).
    bytes: AtomicUsize,
    /// Events pushed out by the count cap before their time was up.
    dropped: AtomicU64,
}

impl Recent {
    /// A ring that keeps nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Keeps `window_secs` of traffic, at most `max_events` events holding
    /// at most `max_bytes`; a window of 0 (or a cap of 0) turns the ring
    /// off and empties it.
    pub fn configure(&self, window_secs: f64, max_events: usize, max_bytes: usize) {
        let on = window_secs > 0.0 && window_secs.is_finite() && max_events > 0 && max_bytes > 0;
        self.window.store(
            if on { window_secs } else { 0.0 }.to_bits(),
            Ordering::Relaxed,
        );
        self.max_events.store(max_events, Ordering::Relaxed);
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.on.store(on, Ordering::Relaxed);
        let mut events = lock(&self.events);
        if on {
            self.shrink_to_cap(&mut events, max_events, max_bytes);
        } else {
            *events = VecDeque::new();
            self.bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the ring keeps anything (one relaxed load: the pipeline asks
    /// before each batch).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Seconds of traffic kept; 0 when off.
    pub fn window_secs(&self) -> f64 {
        f64::from_bits(self.window.load(Ordering::Relaxed))
    }

    pub fn max_events(&self) -> usize {
        self.max_events.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// The bytes the events held now cost.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        lock(&self.events).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events pushed out by the count or byte cap so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Adds a batch received at `now`, then forgets what is older than the
    /// window and what is beyond the caps (oldest first).
    pub fn push(&self, now: f64, batch: &[Arc<Event>]) {
        if !self.is_on() || batch.is_empty() {
            return;
        }
        let (max, max_bytes) = (self.max_events(), self.max_bytes());
        // Of a batch larger than a whole cap, only its last events that fit
        // could stay: the others are dropped without entering.
        let mut entering = Vec::with_capacity(batch.len().min(max));
        let mut entering_bytes = 0;
        for e in batch.iter().rev() {
            let bytes = e.retained_bytes();
            if entering.len() == max || entering_bytes + bytes > max_bytes {
                break;
            }
            entering_bytes += bytes;
            entering.push(Received {
                at: now,
                event: Arc::clone(e),
                bytes,
            });
        }
        let skip = batch.len() - entering.len();
        let mut events = lock(&self.events);
        if skip > 0 {
            self.dropped.fetch_add(skip as u64, Ordering::Relaxed);
        }
        self.forget_before(&mut events, now - self.window_secs());
        self.shrink_to_cap(
            &mut events,
            max - entering.len(),
            max_bytes - entering_bytes,
        );
        self.bytes.fetch_add(entering_bytes, Ordering::Relaxed);
        events.extend(entering.into_iter().rev());
    }

    /// Forgets what is older than the window at `now` (on the pipeline's
    /// tick, so a quiet server does not hold old events).
    pub fn trim(&self, now: f64) {
        if !self.is_on() {
            return;
        }
        let mut events = lock(&self.events);
        self.forget_before(&mut events, now - self.window_secs());
    }

    /// The events received at `since` or later, oldest first.
    pub fn since(&self, since: f64) -> Vec<Received> {
        let events = lock(&self.events);
        // Receive times only go back if the wall clock does: filter rather
        // than search, so such events are not missed.
        events.iter().filter(|r| r.at >= since).cloned().collect()
    }

    /// One series' metrics received at `since` or later, oldest first:
    /// (receive time, metric). Events without a finite metric are left out.
    pub fn series(&self, host: &str, service: &str, since: f64) -> Vec<(f64, f64)> {
        let events = lock(&self.events);
        events
            .iter()
            .filter(|r| r.at >= since)
            .filter(|r| {
                r.event.host.as_deref() == Some(host) && r.event.service.as_deref() == Some(service)
            })
            .filter_map(|r| {
                let m = r.event.metric?.as_f64();
                m.is_finite().then_some((r.at, m))
            })
            .collect()
    }

    /// The series of the events received at `since` or later that `keep`
    /// accepts, each (host, service) with its finite metrics, oldest first
    /// (for the dashboard's sparklines). Bounded both ways: the
    /// `max_series` series most recently heard from, each with its last
    /// `max_points` points; `truncated` says whether series were left out.
    /// The ring is copied under its lock and filtered outside it, so a slow
    /// filter does not hold up the pipeline's pushes.
    pub fn series_matching(
        &self,
        since: f64,
        max_series: usize,
        max_points: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> SeriesSet {
        let received = self.since(since);
        let mut series: Vec<Series> = Vec::new();
        let mut at: HashMap<(Option<&str>, Option<&str>), usize> = HashMap::new();
        let mut truncated = false;
        // Newest first: the series kept are those heard from last, and each
        // keeps its newest points.
        for r in received.iter().rev() {
            let Some(metric) = r.event.metric.map(|m| m.as_f64()) else {
                continue;
            };
            if !metric.is_finite() || !keep(&r.event) {
                continue;
            }
            let key = (r.event.host.as_deref(), r.event.service.as_deref());
            let i = match at.get(&key) {
                Some(&i) => i,
                None if series.len() < max_series => {
                    at.insert(key, series.len());
                    series.push(Series {
                        host: key.0.map(str::to_owned),
                        service: key.1.map(str::to_owned),
                        points: Vec::new(),
                    });
                    series.len() - 1
                }
                None => {
                    truncated = true;
                    continue;
                }
            };
            if series[i].points.len() < max_points {
                series[i].points.push((r.at, metric));
            }
        }
        for s in &mut series {
            s.points.reverse();
        }
        series.sort_by(|a, b| (&a.host, &a.service).cmp(&(&b.host, &b.service)));
        SeriesSet { series, truncated }
    }

    /// The `n` series with the most events received at `since` or later,
    /// busiest first (ties by host and service), with their last metric.
    pub fn busiest(&self, since: f64, n: usize) -> Vec<SeriesCount> {
        // (host, service) → (events, last metric)
        type Key<'a> = (Option<&'a str>, Option<&'a str>);
        let mut counts: HashMap<Key, (u64, Option<f64>)> = HashMap::new();
        let events = lock(&self.events);
        for r in events.iter().filter(|r| r.at >= since) {
            let key = (r.event.host.as_deref(), r.event.service.as_deref());
            let entry = counts.entry(key).or_default();
            entry.0 += 1;
            if let Some(m) = r.event.metric {
                entry.1 = Some(m.as_f64());
            }
        }
        let mut rows: Vec<SeriesCount> = counts
            .into_iter()
            .map(|((host, service), (events, last_metric))| SeriesCount {
                host: host.map(str::to_owned),
                service: service.map(str::to_owned),
                events,
                last_metric,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then_with(|| (&a.host, &a.service).cmp(&(&b.host, &b.service)))
        });
        rows.truncate(n);
        rows
    }

    fn forget_before(&self, events: &mut VecDeque<Received>, oldest: f64) {
        while events.front().is_some_and(|r| r.at < oldest) {
            self.pop_oldest(events);
        }
    }

    /// Drops the oldest events until at most `keep` remain, holding at most
    /// `keep_bytes`, counting them.
    fn shrink_to_cap(&self, events: &mut VecDeque<Received>, keep: usize, keep_bytes: usize) {
        let mut over = 0;
        while events.len() > keep || self.bytes() > keep_bytes {
            if self.pop_oldest(events).is_none() {
                break;
            }
            over += 1;
        }
        if over > 0 {
            self.dropped.fetch_add(over, Ordering::Relaxed);
        }
    }

    fn pop_oldest(&self, events: &mut VecDeque<Received>) -> Option<Received> {
        let oldest = events.pop_front()?;
        self.bytes.fetch_sub(oldest.bytes, Ordering::Relaxed);
        Some(oldest)
    }
}

/// One (host, service) series' traffic in the ring ([`Recent::busiest`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesCount {
    pub host: Option<String>,
    pub service: Option<String>,
    pub events: u64,
    pub last_metric: Option<f64>,
}

/// One (host, service)'s recent metrics ([`Recent::series_matching`]):
/// (receive time, metric), oldest first.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Series {
    pub host: Option<String>,
    pub service: Option<String>,
    pub points: Vec<(f64, f64)>,
}

/// The series [`Recent::series_matching`] found, sorted by host and service.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SeriesSet {
    pub series: Vec<Series>,
    /// Some matching series were left out: more than the cap.
    pub truncated: bool,
}

/// Differences kept per side by [`compare`]; the totals count them all.
pub const MAX_DIFFERENCES: usize = 100;

/// Events per output node, candidate beside live.
#[derive(Clone, Debug, PartialEq)]
pub struct CountRow {
    pub node: String,
    pub kind: String,
    pub candidate: u64,
    pub live: u64,
}

/// An event one side sent to an output and the other did not.
#[derive(Clone, Debug)]
pub struct Difference {
    pub node: String,
    pub kind: String,
    pub event: Arc<Event>,
}

/// A candidate's dry run beside the live streams' on the same events.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Every output node of either side (those given first), each once.
    pub rows: Vec<CountRow>,
    /// The first [`MAX_DIFFERENCES`] events only the candidate sent, in
    /// the order it sent them; the totals count all.
    pub only_candidate: Vec<Difference>,
    pub only_candidate_total: u64,
    pub only_live: Vec<Difference>,
    pub only_live_total: u64,
}

/// Compares what two dry runs sent to their outputs. Two outputs of the
/// same kind are the same destination: an event is a difference when the
/// other side did not send an equal event (field for field) to an output
/// of that kind as many times, so a renamed printer prefix is no
/// difference, and a changed threshold is.
///
/// `nodes` are the output nodes of the trees, `(describe, kind)`: the
/// table has a row for each even when nothing reached it.
pub fn compare(
    candidate: &[Output<'_>],
    live: &[Output<'_>],
    nodes: &[(String, &str)],
) -> Comparison {
    let mut rows: Vec<CountRow> = Vec::new();
    let row = |rows: &mut Vec<CountRow>, node: &str, kind: &str| match rows
        .iter()
        .position(|r| r.node == node)
    {
        Some(i) => i,
        None => {
            rows.push(CountRow {
                node: node.to_owned(),
                kind: kind.to_owned(),
                candidate: 0,
                live: 0,
            });
            rows.len() - 1
        }
    };
    for (node, kind) in nodes {
        row(&mut rows, node, kind);
    }
    for (side, outputs) in [(0, candidate), (1, live)] {
        for o in outputs {
            let at = row(&mut rows, o.node, o.kind);
            let n = o.events.len() as u64;
            if side == 0 {
                rows[at].candidate += n;
            } else {
                rows[at].live += n;
            }
        }
    }
    let (only_candidate, only_candidate_total) = unmatched(candidate, live);
    let (only_live, only_live_total) = unmatched(live, candidate);
    Comparison {
        rows,
        only_candidate,
        only_candidate_total,
        only_live,
        only_live_total,
    }
}

/// An event's fields, as a 64-bit hash of its JSON: a million events' keys
/// stay small, and two different events share one with a chance of about
/// 1 in 10^7 even then.
fn identity(event: &Event) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json::encode(event).hash(&mut h);
    h.finish()
}

/// The events of `mine` that `theirs` did not send to an output of the
/// same kind (each of theirs matches one of mine): the first few, and
/// how many in all.
fn unmatched(mine: &[Output<'_>], theirs: &[Output<'_>]) -> (Vec<Difference>, u64) {
    let mut available: HashMap<(&str, u64), u64> = HashMap::new();
    for o in theirs {
        for e in o.events {
            *available.entry((o.kind, identity(e))).or_default() += 1;
        }
    }
    let (mut first, mut total) = (Vec::new(), 0);
    for o in mine {
        for e in o.events {
            match available.get_mut(&(o.kind, identity(e))) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    total += 1;
                    if first.len() < MAX_DIFFERENCES {
                        first.push(Difference {
                            node: o.node.to_owned(),
                            kind: o.kind.to_owned(),
                            event: Arc::clone(e),
                        });
                    }
                }
            }
        }
    }
    (first, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, VirtualClock};
    use crate::testing::ev;

    fn batch(hosts: &[&str]) -> Vec<Arc<Event>> {
        hosts
            .iter()
            .map(|h| Arc::new(ev(&format!(r#"{{"host":"{h}"}}"#))))
            .collect()
    }

    fn hosts(got: &[Received]) -> Vec<String> {
        got.iter()
            .map(|r| r.event.host.as_deref().unwrap_or("").to_owned())
            .collect()
    }

    fn metric(host: &str, service: &str, m: &str) -> Arc<Event> {
        Arc::new(ev(&format!(
            r#"{{"host":"{host}","service":"{service}","metric":{m}}}"#
        )))
    }

    #[test]
    fn a_series_and_the_busiest_series_since_a_time() {
        let ring = Recent::off();
        ring.configure(300.0, 100, usize::MAX);
        ring.push(10.0, &[metric("a", "cpu", "1"), metric("b", "cpu", "5")]);
        ring.push(20.0, &[metric("a", "cpu", "2"), metric("a", "mem", "7")]);
        let mut infinite = Event::clone(&metric("a", "cpu", "0"));
        infinite.metric = Some(crate::event::Number::Float(f64::INFINITY));
        ring.push(30.0, &[metric("a", "cpu", "3"), Arc::new(infinite)]);
        // The infinite metric is no point of the series.
        assert_eq!(
            ring.series("a", "cpu", 0.0),
            [(10.0, 1.0), (20.0, 2.0), (30.0, 3.0)]
        );
        assert_eq!(ring.series("a", "cpu", 15.0), [(20.0, 2.0), (30.0, 3.0)]);
        assert!(ring.series("nobody", "cpu", 0.0).is_empty());
        let busiest = ring.busiest(15.0, 2);
        let rows: Vec<(Option<&str>, Option<&str>, u64)> = busiest
            .iter()
            .map(|r| (r.host.as_deref(), r.service.as_deref(), r.events))
            .collect();
        assert_eq!(
            rows,
            [(Some("a"), Some("cpu"), 3), (Some("a"), Some("mem"), 1)]
        );
        assert_eq!(busiest[1].last_metric, Some(7.0));
    }

    #[test]
    fn series_matching_groups_filters_and_bounds() {
        let ring = Recent::off();
        ring.configure(300.0, 100, usize::MAX);
        ring.push(10.0, &[metric("a", "cpu", "1"), metric("b", "cpu", "5")]);
        ring.push(20.0, &[metric("a", "cpu", "2"), metric("a", "mem", "7")]);
        let mut no_metric = Event::clone(&metric("a", "cpu", "0"));
        no_metric.metric = None;
        let mut nan = Event::clone(&metric("a", "cpu", "0"));
        nan.metric = Some(crate::event::Number::Float(f64::NAN));
        ring.push(
            30.0,
            &[metric("a", "cpu", "3"), Arc::new(no_metric), Arc::new(nan)],
        );
        ring.push(40.0, &[metric("c", "cpu", "9")]);
        let cpu = |e: &Event| e.service.as_deref() == Some("cpu");
        let key = |s: &Series| (s.host.clone().unwrap(), s.points.clone());

        let all = ring.series_matching(0.0, 10, 10, cpu);
        assert!(!all.truncated);
        assert_eq!(
            all.series.iter().map(key).collect::<Vec<_>>(),
            [
                ("a".into(), vec![(10.0, 1.0), (20.0, 2.0), (30.0, 3.0)]),
                ("b".into(), vec![(10.0, 5.0)]),
                ("c".into(), vec![(40.0, 9.0)]),
            ],
            "sorted by host, points oldest first, no missing or NaN metric"
        );
        assert_eq!(all.series[0].service.as_deref(), Some("cpu"));

        // Since a time; each series keeps its newest points.
        let newest = ring.series_matching(15.0, 10, 1, cpu);
        assert_eq!(
            newest.series.iter().map(key).collect::<Vec<_>>(),
            [
                ("a".into(), vec![(30.0, 3.0)]),
                ("c".into(), vec![(40.0, 9.0)])
            ]
        );

        // Capped in series: those heard from last are kept, and it says so.
        let capped = ring.series_matching(0.0, 2, 10, cpu);
        assert!(capped.truncated);
        let hosts: Vec<_> = capped.series.iter().map(|s| key(s).0).collect();
        assert_eq!(hosts, ["a", "c"]);

        assert_eq!(
            Recent::off().series_matching(0.0, 10, 10, |_| true),
            SeriesSet::default()
        );
    }

    #[test]
    fn off_keeps_nothing() {
        let ring = Recent::off();
        ring.push(1.0, &batch(&["a"]));
        assert!(!ring.is_on());
        assert_eq!(ring.len(), 0);
        assert!(ring.since(0.0).is_empty());
    }

    #[test]
    fn keeps_the_window_by_receive_time() {
        let clock = VirtualClock::starting_at(1000.0);
        let ring = Recent::off();
        ring.configure(60.0, 100, usize::MAX);
        ring.push(clock.now(), &batch(&["a", "b"]));
        clock.advance_by(30.0);
        ring.push(clock.now(), &batch(&["c"]));
        assert_eq!(hosts(&ring.since(0.0)), ["a", "b", "c"]);
        // Only what came at or after a time.
        assert_eq!(hosts(&ring.since(1030.0)), ["c"]);
        assert_eq!(ring.since(1030.0)[0].at, 1030.0);

        // 61 s after a and b: they age out on the next push.
        clock.advance_by(31.0);
        ring.push(clock.now(), &batch(&["d"]));
        assert_eq!(hosts(&ring.since(0.0)), ["c", "d"]);
        // Aging out is not a drop.
        assert_eq!(ring.dropped(), 0);

        // And on a tick, with no traffic.
        clock.advance_by(60.0);
        ring.trim(clock.now());
        assert_eq!(hosts(&ring.since(0.0)), ["d"]);
        clock.advance_by(1.0);
        ring.trim(clock.now());
        assert!(ring.is_empty());
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts_them() {
        let ring = Recent::off();
        ring.configure(300.0, 3, usize::MAX);
        ring.push(1.0, &batch(&["a", "b"]));
        ring.push(2.0, &batch(&["c", "d"]));
        assert_eq!(hosts(&ring.since(0.0)), ["b", "c", "d"]);
        assert_eq!(ring.dropped(), 1);
        // A batch larger than the cap: only its last events stay.
        ring.push(3.0, &batch(&["e", "f", "g", "h", "i"]));
        assert_eq!(hosts(&ring.since(0.0)), ["g", "h", "i"]);
        assert_eq!(ring.dropped(), 1 + 3 + 2);
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn the_byte_cap_drops_the_oldest_and_counts_them() {
        let one = batch(&["a"])[0].retained_bytes();
        let ring = Recent::off();
        ring.configure(300.0, 100, 3 * one);
        ring.push(1.0, &batch(&["a", "b"]));
        ring.push(2.0, &batch(&["c", "d"]));
        assert_eq!(hosts(&ring.since(0.0)), ["b", "c", "d"]);
        assert_eq!((ring.dropped(), ring.bytes()), (1, 3 * one));
        // A batch larger than the cap: only its last events stay.
        ring.push(3.0, &batch(&["e", "f", "g", "h", "i"]));
        assert_eq!(hosts(&ring.since(0.0)), ["g", "h", "i"]);
        assert_eq!((ring.dropped(), ring.bytes()), (1 + 3 + 2, 3 * one));
        // Aging out gives the bytes back.
        ring.trim(1000.0);
        assert_eq!((ring.len(), ring.bytes()), (0, 0));
    }

    #[test]
    fn reconfiguring_applies_the_new_bounds() {
        let ring = Recent::off();
        ring.configure(300.0, 10, usize::MAX);
        ring.push(1.0, &batch(&["a", "b", "c", "d"]));
        ring.configure(300.0, 2, usize::MAX);
        assert_eq!(hosts(&ring.since(0.0)), ["c", "d"]);
        assert_eq!(ring.dropped(), 2);
        ring.configure(0.0, 2, usize::MAX);
        assert!(!ring.is_on());
        assert!(ring.is_empty());
        ring.push(2.0, &batch(&["e"]));
        assert!(ring.is_empty());
    }

    fn out<'a>(node: &'a str, kind: &'static str, events: &'a [Arc<Event>]) -> Output<'a> {
        Output { node, kind, events }
    }

    fn metrics(ds: &[Difference]) -> Vec<(String, Option<f64>)> {
        ds.iter()
            .map(|d| (d.node.clone(), d.event.metric.map(|m| m.as_f64())))
            .collect()
    }

    #[test]
    fn compare_counts_per_output_and_finds_what_one_side_alone_sent() {
        let e = |m: u32| Arc::new(ev(&format!(r#"{{"host":"a","metric":{m},"time":1}}"#)));
        let (e3, e6, e7, e9) = (e(3), e(6), e(7), e(9));
        let cand_printed = [e6.clone(), e7.clone(), e9.clone()];
        let live_printed = [e7.clone(), e9.clone()];
        let live_indexed = [e3.clone(), e6.clone()];
        let cmp = compare(
            &[out("printer(\"hi: \")", "printer", &cand_printed)],
            &[
                out("printer(\"high: \")", "printer", &live_printed),
                out("index()", "index", &live_indexed),
            ],
            // An output nothing reached has its row too.
            &[("email(\"ops\")".into(), "email")],
        );
        let row = |node: &str, candidate, live| CountRow {
            node: node.into(),
            kind: node.split('(').next().unwrap().into(),
            candidate,
            live,
        };
        assert_eq!(
            cmp.rows,
            [
                row("email(\"ops\")", 0, 0),
                row("printer(\"hi: \")", 3, 0),
                row("printer(\"high: \")", 0, 2),
                row("index()", 0, 2),
            ]
        );
        // 7 and 9 were printed by both (another prefix is no difference);
        // 6 went to a printer only in the candidate, to the index only live.
        assert_eq!(
            metrics(&cmp.only_candidate),
            [("printer(\"hi: \")".into(), Some(6.0))]
        );
        assert_eq!(cmp.only_candidate_total, 1);
        assert_eq!(
            metrics(&cmp.only_live),
            [("index()".into(), Some(3.0)), ("index()".into(), Some(6.0))]
        );
        assert_eq!(cmp.only_live_total, 2);
    }

    #[test]
    fn compare_matches_repeats_one_for_one_and_keeps_the_first_few() {
        let e = Arc::new(ev(r#"{"host":"a","metric":1}"#));
        let many: Vec<Arc<Event>> = (0..MAX_DIFFERENCES + 5).map(|_| e.clone()).collect();
        let two = [e.clone(), e.clone()];
        let cmp = compare(
            &[out("index()", "index", &many)],
            &[out("index()", "index", &two)],
            &[],
        );
        assert_eq!(cmp.rows.len(), 1, "the same node on both sides is one row");
        assert_eq!(
            (cmp.rows[0].candidate, cmp.rows[0].live),
            (many.len() as u64, 2)
        );
        assert_eq!(cmp.only_candidate_total, many.len() as u64 - 2);
        assert_eq!(cmp.only_candidate.len(), MAX_DIFFERENCES);
        assert_eq!(cmp.only_live_total, 0);

        let same = compare(
            &[out("index()", "index", &two)],
            &[out("index()", "index", &two)],
            &[],
        );
        assert_eq!((same.only_candidate_total, same.only_live_total), (0, 0));
    }
}
