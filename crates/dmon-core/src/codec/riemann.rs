//! Riemann's protocol buffers (`proto.proto`, field numbers exactly), and
//! the mapping between its events and ours.
//!
//! Decoding is lenient, because real clients send junk (collectd: empty
//! host or service, `ttl = inf`, invalid UTF-8): strings are read as bytes
//! and converted lossily, non-finite numbers count as absent, and no field
//! can reject a whole message.

use bytes::Bytes;
use prost::Message;
use smol_str::SmolStr;

use super::sharing;
use crate::event::{Event, Number};

#[derive(Clone, PartialEq, Message)]
pub struct Msg {
    #[prost(bool, optional, tag = "2")]
    pub ok: Option<bool>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub error: Option<Bytes>,
    #[prost(message, repeated, tag = "4")]
    pub states: Vec<State>,
    #[prost(message, optional, tag = "5")]
    pub query: Option<Query>,
    #[prost(message, repeated, tag = "6")]
    pub events: Vec<ProtoEvent>,
}

/// Riemann's legacy state message; accepted on the wire and ignored.
#[derive(Clone, PartialEq, Message)]
pub struct State {
    #[prost(int64, optional, tag = "1")]
    pub time: Option<i64>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub state: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub service: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub host: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub description: Option<Bytes>,
    #[prost(bool, optional, tag = "6")]
    pub once: Option<bool>,
    #[prost(bytes = "bytes", repeated, tag = "7")]
    pub tags: Vec<Bytes>,
    #[prost(float, optional, tag = "8")]
    pub ttl: Option<f32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoEvent {
    #[prost(int64, optional, tag = "1")]
    pub time: Option<i64>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub state: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub service: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub host: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub description: Option<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "7")]
    pub tags: Vec<Bytes>,
    #[prost(float, optional, tag = "8")]
    pub ttl: Option<f32>,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<Attribute>,
    #[prost(int64, optional, tag = "10")]
    pub time_micros: Option<i64>,
    #[prost(sint64, optional, tag = "13")]
    pub metric_sint64: Option<i64>,
    #[prost(double, optional, tag = "14")]
    pub metric_d: Option<f64>,
    #[prost(float, optional, tag = "15")]
    pub metric_f: Option<f32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Query {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub string: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Attribute {
    // `required` in proto.proto; optional here so a client that omits it
    // costs that attribute, not the message.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub key: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub value: Option<Bytes>,
}

/// An f32 as the decimal a client most likely meant (0.1f32 becomes 0.1,
/// not 0.10000000149011612).
fn widen(f: f32) -> f64 {
    if f.fract() == 0.0 {
        return f as f64; // exact, and the common case (ttl)
    }
    f.to_string().parse().unwrap_or(f as f64)
}

impl Msg {
    /// A reply acknowledging a message.
    pub fn acknowledged() -> Msg {
        Msg {
            ok: Some(true),
            ..Msg::default()
        }
    }

    /// A reply refusing a message, with the reason.
    pub fn refused(reason: impl Into<String>) -> Msg {
        Msg {
            ok: Some(false),
            error: Some(Bytes::from(reason.into())),
            ..Msg::default()
        }
    }

    /// The query text, if this message asks one.
    pub fn query_text(&self) -> Option<String> {
        self.query
            .as_ref()
            .map(|q| String::from_utf8_lossy(q.string.as_deref().unwrap_or_default()).into_owned())
    }

    pub fn error_text(&self) -> Option<String> {
        self.error
            .as_deref()
            .map(|e| String::from_utf8_lossy(e).into_owned())
    }

    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// Our event from Riemann's. Metric: sint64, then double, then float; time:
/// `time_micros`, then `time`, then `now` (the receive time).
pub fn from_proto(p: &ProtoEvent, now: f64) -> Event {
    let metric = p
        .metric_sint64
        .map(Number::Int)
        .or_else(|| p.metric_d.filter(|d| d.is_finite()).map(Number::Float))
        .or_else(|| {
            p.metric_f
                .filter(|f| f.is_finite())
                .map(|f| Number::Float(widen(f)))
        });
    let time = match (p.time_micros, p.time) {
        (Some(us), _) if us > 0 => Number::Float(us as f64 / 1e6),
        (_, Some(s)) if s > 0 => Number::Int(s),
        _ => Number::Float(now),
    };
    // Tags, attributes and long texts shared with the events before
    // (see `sharing`): a client repeats them event after event.
    sharing::with_recent(|recent| {
        let mut text = |b: &[u8]| recent.text(&String::from_utf8_lossy(b));
        let host = p.host.as_deref().map(&mut text);
        let service = p.service.as_deref().map(&mut text);
        let state = p.state.as_deref().map(&mut text);
        let description = p.description.as_deref().map(&mut text);
        let tags: Vec<SmolStr> = p.tags.iter().map(|t| text(t)).collect();
        let mut pairs: Vec<(SmolStr, SmolStr)> = p
            .attributes
            .iter()
            .filter_map(|a| {
                let key = a.key.as_deref()?;
                Some((text(key), text(a.value.as_deref().unwrap_or_default())))
            })
            .collect();
        Event {
            host,
            service,
            state,
            description,
            time: Some(time),
            ttl: p.ttl.filter(|t| t.is_finite()).map(widen),
            metric,
            tags: recent.tags(&tags),
            attributes: recent.attributes(&mut pairs),
        }
    })
}

/// Riemann's event from ours. `metric_f` is always set (some clients read
/// only that), with `metric_sint64` for integers or `metric_d` for floats;
/// a fractional time also goes out as `time_micros`.
pub fn to_proto(e: &Event) -> ProtoEvent {
    let bytes = |s: &Option<SmolStr>| s.as_ref().map(|s| Bytes::copy_from_slice(s.as_bytes()));
    let (metric_sint64, metric_d) = match e.metric {
        Some(Number::Int(i)) => (Some(i), None),
        Some(Number::Float(f)) => (None, Some(f)),
        None => (None, None),
    };
    let (time, time_micros) = match e.time {
        Some(Number::Int(s)) => (Some(s), None),
        Some(Number::Float(s)) => (Some(s.floor() as i64), Some((s * 1e6).round() as i64)),
        None => (None, None),
    };
    ProtoEvent {
        time,
        state: bytes(&e.state),
        service: bytes(&e.service),
        host: bytes(&e.host),
        description: bytes(&e.description),
        tags: e
            .tags
            .iter()
            .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            .collect(),
        ttl: e.ttl.map(|t| t as f32),
        attributes: e
            .attributes
            .iter()
            .map(|(k, v)| Attribute {
                key: Some(Bytes::copy_from_slice(k.as_bytes())),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
            })
            .collect(),
        time_micros,
        metric_sint64,
        metric_d,
        metric_f: e.metric.map(|m| m.as_f64() as f32),
    }
}

/// Appends `e` as Riemann's `Event` message: the bytes `to_proto(e)`
/// encodes to, without building it (no copy of each string into its own
/// buffer): `forward` encodes every event it sends, on the event path.
pub fn encode_event(e: &Event, out: &mut Vec<u8>) {
    const VARINT: u32 = 0;
    const FIXED64: u32 = 1;
    const LEN: u32 = 2;
    const FIXED32: u32 = 5;
    let key = |tag: u32, wire: u32, out: &mut Vec<u8>| varint((tag << 3 | wire) as u64, out);
    let bytes = |tag: u32, b: &[u8], out: &mut Vec<u8>| {
        key(tag, LEN, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    };
    let (time, time_micros) = match e.time {
        Some(Number::Int(s)) => (Some(s), None),
        Some(Number::Float(s)) => (Some(s.floor() as i64), Some((s * 1e6).round() as i64)),
        None => (None, None),
    };
    if let Some(t) = time {
        key(1, VARINT, out);
        varint(t as u64, out);
    }
    for (tag, field) in [
        (2, &e.state),
        (3, &e.service),
        (4, &e.host),
        (5, &e.description),
    ] {
        if let Some(s) = field {
            bytes(tag, s.as_bytes(), out);
        }
    }
    for t in &e.tags {
        bytes(7, t.as_bytes(), out);
    }
    if let Some(ttl) = e.ttl {
        key(8, FIXED32, out);
        out.extend_from_slice(&(ttl as f32).to_le_bytes());
    }
    for (k, v) in &e.attributes {
        let len = |n: usize| 1 + varint_len(n as u64) + n;
        key(9, LEN, out);
        varint((len(k.len()) + len(v.len())) as u64, out);
        bytes(1, k.as_bytes(), out);
        bytes(2, v.as_bytes(), out);
    }
    if let Some(us) = time_micros {
        key(10, VARINT, out);
        varint(us as u64, out);
    }
    match e.metric {
        Some(Number::Int(i)) => {
            key(13, VARINT, out);
            varint(((i << 1) ^ (i >> 63)) as u64, out);
        }
        Some(Number::Float(f)) => {
            key(14, FIXED64, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        None => {}
    }
    if let Some(m) = e.metric {
        key(15, FIXED32, out);
        out.extend_from_slice(&(m.as_f64() as f32).to_le_bytes());
    }
}

/// Appends `event`, the bytes [`encode_event`] made, as one entry of a
/// `Msg`'s repeated `events` field (field 6, length-delimited): how
/// `forward`'s frames and the cluster's batches are built, event by event.
pub fn push_msg_event(out: &mut Vec<u8>, event: &[u8]) {
    varint(6 << 3 | 2, out);
    varint(event.len() as u64, out);
    out.extend_from_slice(event);
}

/// The bytes [`push_msg_event`] appends for an event of `len` bytes.
pub fn msg_event_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's repeated tags, attributes and long texts are shared
    /// between the events decoded (see `sharing`).
    #[test]
    fn repeated_values_are_shared_between_events() {
        let p = ProtoEvent {
            host: Some(Bytes::from_static(b"web1")),
            description: Some(Bytes::from_static(b"a description longer than 23 bytes")),
            tags: vec![Bytes::from_static(b"prod")],
            attributes: vec![Attribute {
                key: Some(Bytes::from_static(b"dc")),
                value: Some(Bytes::from_static(b"eu")),
            }],
            ..ProtoEvent::default()
        };
        let (a, b) = (from_proto(&p, 1.0), from_proto(&p, 1.0));
        assert_eq!(a, b);
        assert_eq!(&*a.tags, ["prod"]);
        assert_eq!(a.attributes.get("dc"), Some("eu"));
        assert!(std::ptr::eq(a.tags.as_ptr(), b.tags.as_ptr()));
        assert!(std::ptr::eq(
            a.attributes.pairs().as_ptr(),
            b.attributes.pairs().as_ptr()
        ));
        let (d1, d2) = (a.description.unwrap(), b.description.unwrap());
        assert!(std::ptr::eq(d1.as_ptr(), d2.as_ptr()));
    }

    #[test]
    fn metric_preference_and_time_micros() {
        let p = ProtoEvent {
            metric_sint64: Some(3),
            metric_d: Some(4.0),
            metric_f: Some(5.0),
            time: Some(100),
            time_micros: Some(100_500_000),
            ..ProtoEvent::default()
        };
        let e = from_proto(&p, 1.0);
        assert_eq!(e.metric, Some(Number::Int(3)));
        assert_eq!(e.time, Some(Number::Float(100.5)));
        let p = ProtoEvent {
            metric_d: Some(4.5),
            metric_f: Some(5.0),
            time: Some(100),
            ..ProtoEvent::default()
        };
        let e = from_proto(&p, 1.0);
        assert_eq!(e.metric, Some(Number::Float(4.5)));
        assert_eq!(e.time, Some(Number::Int(100)));
        let p = ProtoEvent {
            metric_f: Some(0.1),
            ..ProtoEvent::default()
        };
        let e = from_proto(&p, 7.0);
        assert_eq!(e.metric, Some(Number::Float(0.1)));
        assert_eq!(e.time, Some(Number::Float(7.0)));
    }

    #[test]
    fn junk_is_decoded_leniently() {
        let p = ProtoEvent {
            host: Some(Bytes::from_static(b"bad\xffhost")),
            service: Some(Bytes::new()),
            ttl: Some(f32::INFINITY),
            metric_d: Some(f64::NAN),
            attributes: vec![Attribute {
                key: None,
                value: Some(Bytes::from_static(b"v")),
            }],
            ..ProtoEvent::default()
        };
        let bytes = Msg {
            events: vec![p],
            ..Msg::default()
        }
        .encode_to_vec();
        let msg = Msg::decode(Bytes::from(bytes)).unwrap();
        let e = from_proto(&msg.events[0], 1.0);
        assert_eq!(e.host.as_deref(), Some("bad\u{fffd}host"));
        assert_eq!(e.service.as_deref(), Some(""));
        assert_eq!(e.ttl, None);
        assert_eq!(e.metric, None);
        assert!(e.attributes.is_empty());
    }

    #[test]
    fn encode_event_writes_what_prost_writes() {
        let events = [
            Event::default(),
            Event {
                host: Some("web1".into()),
                service: Some("é".repeat(100).into()),
                state: Some("ok".into()),
                description: Some("x".repeat(300).into()),
                time: Some(Number::Float(1_700_000_000.25)),
                ttl: Some(60.0),
                metric: Some(Number::Int(-3)),
                tags: ["a", ""].into(),
                attributes: [("k".to_string(), "v".repeat(200)), ("e".into(), "".into())].into(),
            },
            Event {
                time: Some(Number::Int(-5)),
                metric: Some(Number::Float(2.5)),
                ..Event::default()
            },
            Event {
                metric: Some(Number::Int(i64::MIN)),
                ..Event::default()
            },
        ];
        for e in &events {
            let mut out = Vec::new();
            encode_event(e, &mut out);
            assert_eq!(out, to_proto(e).encode_to_vec(), "{e:?}");
        }
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            varint(v, &mut b);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn round_trip_keeps_int_and_float_metrics() {
        for metric in [Number::Int(42), Number::Float(2.5)] {
            let e = Event {
                host: Some("h".into()),
                service: Some("s".into()),
                time: Some(Number::Int(1_700_000_000)),
                ttl: Some(30.0),
                metric: Some(metric),
                tags: ["a"].into(),
                attributes: [("k".to_string(), "v".to_string())].into(),
                ..Event::default()
            };
            let p = to_proto(&e);
            assert_eq!(p.metric_f, Some(metric.as_f64() as f32));
            assert_eq!(from_proto(&p, 0.0).metric, Some(metric));
            assert_eq!(from_proto(&p, 0.0), e);
        }
    }
}
