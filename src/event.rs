//! The event: what hosts and services send, and what flows through streams.
//!
//! Fields follow Riemann's. Every field is optional; `time` is filled with the
//! receive time by the decoder when a sender leaves it out.

use std::collections::BTreeMap;
use std::fmt;

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
/// nothing, and the long ones are shared.
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
    pub tags: Vec<SmolStr>,
    pub attributes: BTreeMap<String, String>,
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
