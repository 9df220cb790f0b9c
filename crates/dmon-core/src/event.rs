//! The event: what hosts and services send, and what flows through streams.
//!
//! Fields follow Riemann's. Every field is optional; `time` is filled with the
//! receive time by the decoder when a sender leaves it out.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use smol_str::SmolStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Riemann's default time-to-live for events that carry none, in seconds.
pub const DEFAULT_TTL: f64 = 60.0;

/// A number that remembers whether it was sent as an integer or a float, so
/// that an event looks the same on the way out as on the way in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One monitoring event. Strings are `SmolStr`: the short ones (host,
/// service, state, tags) live inline, so decoding and copying them allocates
/// nothing, and the long ones are shared. Tags and attributes are shared
/// too: nodes that derive an event (`average`, `with_`, folds…) copy it and
/// change a field, and a copy then costs a few pointer increments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub host: Option<SmolStr>,
    pub service: Option<SmolStr>,
    pub state: Option<SmolStr>,
    pub description: Option<SmolStr>,
    /// Unix seconds.
    pub time: Option<Number>,
    /// Seconds after `time` at which the event is stale.
    pub ttl: Option<f64>,
    pub metric: Option<Number>,
    pub tags: Tags,
    pub attributes: Attributes,
}

/// The tags of every event dmon makes about itself: one allocation, shared,
/// which is also how [`Event::is_dmons_own`] knows them (an event from
/// outside, or one a node derived with new tags, never has these very tags).
pub static OWN_TAGS: LazyLock<Tags> = LazyLock::new(|| [SmolStr::new_static("dmon")].into());

impl Event {
    /// Whether this is one of dmon's events about itself (or a copy of
    /// one, such as the index's expired copy), as opposed to one that
    /// merely says `tagged "dmon"`: a sender's events may, and a JSON round
    /// trip (a cluster checkpoint) makes one of dmon's events an ordinary
    /// one.
    pub fn is_dmons_own(&self) -> bool {
        self.tags.same_as(&OWN_TAGS)
    }

    /// About how many bytes holding this event keeps alive: the `Arc`'d
    /// struct, its long (heap) strings, its tags and attributes. Shared
    /// parts are charged in full, so a budget built on it errs on the safe
    /// side.
    pub fn retained_bytes(&self) -> usize {
        // SmolStr keeps up to 23 bytes inline; longer ones are on the heap.
        fn text(s: &str) -> usize {
            if s.len() > 23 {
                s.len()
            } else {
                0
            }
        }
        let strings = [&self.host, &self.service, &self.state, &self.description]
            .into_iter()
            .flatten()
            .map(|s| text(s))
            .sum::<usize>();
        let tags = self
            .tags
            .iter()
            .map(|t| std::mem::size_of::<SmolStr>() + text(t))
            .sum::<usize>();
        let attributes = self
            .attributes
            .iter()
            .map(|(k, v)| 2 * std::mem::size_of::<SmolStr>() + text(k) + text(v))
            .sum::<usize>();
        // The Arc's two counters beside the struct.
        2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Event>()
            + strings
            + tags
            + attributes
    }
}

/// An event's tags: shared and immutable, so that copying an event copies
/// a pointer, and no tags allocate nothing. Reads go through the slice (`tags.iter()`, `tags.len()`);
/// changing them builds new ones (`tags.to_vec()`, then `.into()`).
#[derive(Clone, Default)]
pub struct Tags(Option<Arc<[SmolStr]>>);

impl Tags {
    pub const fn new() -> Tags {
        Tags(None)
    }

    /// Whether both are the very same tags (one allocation, shared), not
    /// merely equal ones: no tags are never the same.
    pub fn same_as(&self, other: &Tags) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Deref for Tags {
    type Target = [SmolStr];
    #[inline]
    fn deref(&self) -> &[SmolStr] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl From<Vec<SmolStr>> for Tags {
    fn from(tags: Vec<SmolStr>) -> Tags {
        Tags((!tags.is_empty()).then(|| tags.into()))
    }
}

impl<T: Into<SmolStr>, const N: usize> From<[T; N]> for Tags {
    fn from(tags: [T; N]) -> Tags {
        tags.into_iter().collect()
    }
}

/// Copies of the tags (cheap: short ones are inline, long ones shared),
/// for a decoder that reuses its buffer.
impl From<&[SmolStr]> for Tags {
    fn from(tags: &[SmolStr]) -> Tags {
        Tags((!tags.is_empty()).then(|| tags.into()))
    }
}

impl<T: Into<SmolStr>> FromIterator<T> for Tags {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Tags {
        let mut tags = iter.into_iter().map(Into::into).peekable();
        // Collected straight into the shared slice: one allocation when
        // the length is known (a Riemann message's tags), none when empty.
        Tags(tags.peek().is_some().then(|| tags.collect()))
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = &'a SmolStr;
    type IntoIter = std::slice::Iter<'a, SmolStr>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Tags {
    fn eq(&self, other: &Tags) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// An event's attributes: pairs sorted by key, each key once, shared and
/// immutable like [`Tags`]. A sorted slice rather than a `BTreeMap`: one
/// allocation of 48 bytes a pair (short strings inline) instead of a
/// ~550-byte tree node and two `String`s, and a lookup among a handful of
/// pairs is as fast. Changing them ([`insert`](Self::insert),
/// [`remove`](Self::remove)) builds new ones.
#[derive(Clone, Default)]
pub struct Attributes(Option<Arc<[(SmolStr, SmolStr)]>>);

impl Attributes {
    pub const fn new() -> Attributes {
        Attributes(None)
    }

    /// The pairs, sorted by key.
    #[inline]
    pub fn pairs(&self) -> &[(SmolStr, SmolStr)] {
        self.0.as_deref().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.pairs().binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_smol(key).map(SmolStr::as_str)
    }

    /// The value as it is stored, for a copy that shares its text.
    pub fn get_smol(&self, key: &str) -> Option<&SmolStr> {
        let i = self.position(key).ok()?;
        Some(&self.pairs()[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// `(key, value)` in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.pairs().iter().map(|(k, _)| k.as_str())
    }

    /// Sets `key` to `value`, as a map's insert does. Copies the pairs:
    /// to set many, collect them instead.
    pub fn insert(&mut self, key: impl Into<SmolStr>, value: impl Into<SmolStr>) {
        let (key, value) = (key.into(), value.into());
        let mut pairs = self.pairs().to_vec();
        match self.position(&key) {
            Ok(i) => pairs[i].1 = value,
            Err(i) => pairs.insert(i, (key, value)),
        }
        self.0 = Some(pairs.into());
    }

    /// Removes `key`, if present; copies the other pairs.
    pub fn remove(&mut self, key: &str) {
        if let Ok(i) = self.position(key) {
            let mut pairs = self.pairs().to_vec();
            pairs.remove(i);
            *self = Attributes::from(pairs);
        }
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// Pairs in any order; of a key given twice the last value stays, as with
/// a map's inserts one after the other.
impl From<Vec<(SmolStr, SmolStr)>> for Attributes {
    fn from(mut pairs: Vec<(SmolStr, SmolStr)>) -> Attributes {
        sort_keeping_last(&mut pairs);
        Attributes((!pairs.is_empty()).then(|| pairs.into()))
    }
}

impl Attributes {
    /// As `From<Vec<…>>`, leaving `pairs` empty but with its capacity, for
    /// a decoder that reuses its buffer: the shared slice is then the only
    /// allocation.
    /// Sorts `pairs` by key, keeping of a key given twice the last value:
    /// what attributes made from them would hold.
    pub fn normalize(pairs: &mut Vec<(SmolStr, SmolStr)>) {
        sort_keeping_last(pairs);
    }

    pub fn from_buffer(pairs: &mut Vec<(SmolStr, SmolStr)>) -> Attributes {
        sort_keeping_last(pairs);
        let attributes = Attributes((!pairs.is_empty()).then(|| pairs.as_slice().into()));
        pairs.clear();
        attributes
    }
}

/// Sorts pairs by key, keeping of a key given twice the last value.
fn sort_keeping_last(pairs: &mut Vec<(SmolStr, SmolStr)>) {
    if pairs.is_sorted_by(|a, b| a.0 < b.0) {
        return; // the common case, and no key twice
    }
    // Stable, so that of equal keys the later stays later.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    // `later` is removed after handing its value to `earlier`.
    pairs.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(&mut later.1, &mut earlier.1);
        }
        same
    });
}

impl<K: Into<SmolStr>, V: Into<SmolStr>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Attributes {
        Attributes::from(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect::<Vec<_>>(),
        )
    }
}

impl<K: Into<SmolStr>, V: Into<SmolStr>, const N: usize> From<[(K, V); N]> for Attributes {
    fn from(pairs: [(K, V); N]) -> Attributes {
        pairs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (SmolStr, SmolStr)>,
        fn(&'a (SmolStr, SmolStr)) -> (&'a str, &'a str),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `attributes["dc"]`, panicking when absent, as a map's index does.
impl std::ops::Index<&str> for Attributes {
    type Output = SmolStr;
    fn index(&self, key: &str) -> &SmolStr {
        self.get_smol(key)
            .unwrap_or_else(|| panic!("no attribute {key:?}"))
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Attributes) -> bool {
        self.pairs() == other.pairs()
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The identity of an event in the index: `(host, service)`.
pub type EventKey = (Option<SmolStr>, Option<SmolStr>);

/// The names of the fields every event has, in display order.
pub const FIELDS: [&str; 9] = [
    "host",
    "service",
    "state",
    "description",
    "time",
    "ttl",
    "metric",
    "tags",
    "attributes",
];

impl Event {
    pub fn key(&self) -> EventKey {
        (self.host.clone(), self.service.clone())
    }

    /// When this event goes stale: `time + ttl`, with Riemann's default ttl.
    pub fn deadline(&self) -> Option<f64> {
        self.time
            .map(|t| t.as_f64() + self.ttl.unwrap_or(DEFAULT_TTL))
    }

    /// Riemann's `expired?`, the one rule every node follows: state
    /// "expired", or `now - time > ttl` (strictly: an event is still alive
    /// at its deadline). An event without a time expires only by its state.
    pub fn is_expired(&self, now: f64) -> bool {
        self.state.as_deref() == Some("expired")
            || self
                .time
                .is_some_and(|t| now - t.as_f64() > self.ttl.unwrap_or(DEFAULT_TTL))
    }

    /// Dates `now` an event whose time is not finite or lies beyond
    /// `horizon`: its sender's clock is broken, and such an event would
    /// otherwise never expire (`time: 1e308`). Its ttl is kept, so it
    /// expires `ttl` seconds after `now`.
    #[inline]
    pub fn clamp_future(&mut self, horizon: f64, now: f64) {
        if let Some(t) = self.time {
            let t = t.as_f64();
            // NaN is not finite, so it is caught too.
            if t > horizon || !t.is_finite() {
                self.time = Some(Number::Float(now));
            }
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| &**t == tag)
    }

    /// The event `index` re-injects when this one expires: Riemann keeps only
    /// host and service, sets state "expired" and the current time.
    pub fn expired_copy(&self, now: f64) -> Event {
        Event {
            host: self.host.clone(),
            service: self.service.clone(),
            state: Some(SmolStr::new_static("expired")),
            time: Some(Number::Float(now)),
            ..Event::default()
        }
    }

    /// A one-line summary for mail subjects and logs: "host service state".
    /// Control characters are escaped, so a newline in a sender's `host`
    /// cannot forge a log line or a mail header.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for field in [&self.host, &self.service, &self.state]
            .into_iter()
            .flatten()
        {
            if !out.is_empty() {
                out.push(' ');
            }
            push_escaped(&mut out, field);
        }
        out
    }
}

/// Appends `text` with its control characters escaped (`\n`, `\r`,
/// `\u{1b}`), so text from a sender stays on one line wherever it is
/// written: a log, a mail header, a line of a mail body.
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// The current time as fractional unix seconds.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_uses_default_ttl_when_absent() {
        let mut e = Event {
            time: Some(Number::Int(100)),
            ..Event::default()
        };
        assert_eq!(e.deadline(), Some(160.0));
        e.ttl = Some(1.5);
        assert_eq!(e.deadline(), Some(101.5));
    }

    #[test]
    fn absurd_future_times_are_dated_now_and_expire() {
        let now = 1_000.0;
        let horizon = now + 86_400.0;
        for t in [1e308, f64::INFINITY, f64::NAN, horizon + 1.0] {
            let mut e = Event {
                time: Some(Number::Float(t)),
                ttl: Some(5.0),
                ..Event::default()
            };
            e.clamp_future(horizon, now);
            assert_eq!(e.time, Some(Number::Float(now)), "time {t}");
            assert_eq!(e.deadline(), Some(now + 5.0), "time {t}");
            let index = crate::index::Index::new();
            index.insert(&std::sync::Arc::new(e));
            assert_eq!(index.expire(now + 6.0).len(), 1, "time {t} never expires");
        }
        // A time within the horizon, or in the past, is the sender's to keep.
        for t in [Number::Int(999), Number::Float(horizon)] {
            let mut e = Event {
                time: Some(t),
                ..Event::default()
            };
            e.clamp_future(horizon, now);
            assert_eq!(e.time, Some(t));
        }
    }

    #[test]
    fn attributes_keep_the_last_value_of_a_key_sorted() {
        let a: Attributes = [("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("a", "5")].into();
        let pairs: Vec<(&str, &str)> = a.iter().collect();
        assert_eq!(pairs, [("a", "5"), ("b", "3"), ("c", "4")]);
        assert_eq!(a.get("b"), Some("3"));
        assert_eq!(a.get("d"), None);
        assert!(a.contains_key("c") && !a.contains_key(""));
        assert_eq!(format!("{a:?}"), r#"{"a": "5", "b": "3", "c": "4"}"#);
    }

    #[test]
    fn changing_attributes_leaves_copies_alone() {
        let mut a: Attributes = [("k", "v")].into();
        let copy = a.clone();
        a.insert("k", "w");
        a.insert("a", "x");
        assert_eq!(a.iter().collect::<Vec<_>>(), [("a", "x"), ("k", "w")]);
        assert_eq!(copy.get("k"), Some("v"));
        a.remove("a");
        a.remove("absent");
        a.remove("k");
        // Empty again means no allocation, and equal to a fresh one.
        assert!(a.is_empty() && a.0.is_none());
        assert_eq!(a, Attributes::new());
    }

    #[test]
    fn tags_read_as_a_slice_and_share_on_copy() {
        let t: Tags = ["a", "b"].into();
        assert_eq!(t.len(), 2);
        assert_eq!(t.iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let copy = t.clone();
        assert!(std::ptr::eq(t.as_ptr(), copy.as_ptr()));
        assert!(Tags::from(Vec::new()).0.is_none());
        assert_eq!(Tags::from(Vec::new()), Tags::new());
        assert_eq!(format!("{t:?}"), r#"["a", "b"]"#);
    }

    /// One million indexed events is the goal: every byte here is a MB there.
    #[test]
    fn an_event_stays_small() {
        assert_eq!(std::mem::size_of::<Event>(), 176);
    }

    #[test]
    fn expired_copy_keeps_only_identity() {
        let e = Event {
            host: Some("web1".into()),
            service: Some("cpu".into()),
            metric: Some(Number::Float(2.5)),
            ..Event::default()
        };
        let x = e.expired_copy(5.0);
        assert_eq!(x.key(), e.key());
        assert_eq!(x.state.as_deref(), Some("expired"));
        assert_eq!(x.metric, None);
    }

    #[test]
    fn summary_skips_absent_fields() {
        let e = Event {
            host: Some("web1".into()),
            state: Some("warning".into()),
            ..Event::default()
        };
        assert_eq!(e.summary(), "web1 warning");
    }

    #[test]
    fn summary_escapes_control_characters() {
        let e = Event {
            host: Some("web1\n2026-11-27T00:00:00Z  WARN forged".into()),
            service: Some("cpu\t\u{1b}[31m".into()),
            ..Event::default()
        };
        assert_eq!(
            e.summary(),
            "web1\\n2026-11-27T00:00:00Z  WARN forged cpu\\t\\u{1b}[31m"
        );
    }
}
