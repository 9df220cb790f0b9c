//! JSON events: the UDP datagram format and the printer's line format.
//!
//! A datagram holds one object, an array of objects, or newline-delimited
//! objects (a line may hold an array: a list of events, as in the shell's
//! `inject([...])`). Decoding takes a fast path that parses typed events
//! directly; only when that fails does it re-parse with recovery, so that one
//! bad element costs that element and not its neighbours. Errors outside an
//! array name the line they are on (`line 3: key must be a string at column
//! 15`), counted in the whole text; the shell's `paste()` decodes the same way.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use smol_str::SmolStr;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use super::sharing;
use crate::event::{Attributes, Event, Number};

/// The largest JSON datagram: the largest UDP payload IPv4 can carry.
pub const MAX_DATAGRAM: usize = 65_507;

/// Why one part of a datagram could not become an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes every event in `buf`, appending good events to `events` and one
/// error per bad part to `errors`. Events without a time get `now`.
pub fn decode(buf: &[u8], now: f64, events: &mut Vec<Event>, errors: &mut Vec<DecodeError>) {
    let start = events.len();
    let body = trim_start(buf);
    if body.is_empty() {
        errors.push(DecodeError("empty datagram".into()));
        return;
    }
    // Validating UTF-8 once up front spares serde_json a check per string.
    let fast_ok = match std::str::from_utf8(body) {
        Ok(text) if body[0] == b'[' => decode_array_fast(text, events),
        Ok(text) => decode_objects_fast(text, events),
        Err(_) => false,
    };
    if !fast_ok {
        events.truncate(start);
        // serde_json rejects lone surrogate escapes (`"\ud800"`); lenient
        // decoders read them as U+FFFD, and so do we, paying for the
        // rewrite only when the strict parse has failed.
        if let Some(fixed) = replace_lone_surrogates(body) {
            return decode(&fixed, now, events, errors);
        }
        if body[0] == b'[' {
            decode_array_recovering(body, events, errors);
        } else {
            decode_objects_recovering(body, events, errors);
        }
    }
    for e in &mut events[start..] {
        if e.time.is_none() {
            e.time = Some(Number::Float(now));
        }
    }
}

/// Decodes one JSON object into an event (no receive time is filled in).
pub fn decode_event(text: &str) -> Result<Event, DecodeError> {
    serde_json::from_str::<Event>(text).or_else(|e| {
        match replace_lone_surrogates(text.as_bytes()).map(String::from_utf8) {
            Some(Ok(fixed)) => serde_json::from_str::<Event>(&fixed),
            _ => Err(e),
        }
        .map_err(|e| DecodeError(e.to_string()))
    })
}

/// `text` with each `\uXXXX` escape of a surrogate that is not half of a
/// pair rewritten as `\ufffd`; `None` if there is none.
fn replace_lone_surrogates(text: &[u8]) -> Option<Vec<u8>> {
    fn escape_at(text: &[u8], i: usize) -> Option<u16> {
        let hex = text.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            i += 1;
            continue;
        }
        let lone = match escape_at(text, i) {
            Some(0xD800..=0xDBFF) => {
                if matches!(escape_at(text, i + 6), Some(0xDC00..=0xDFFF)) {
                    i += 12;
                    continue;
                }
                true
            }
            Some(0xDC00..=0xDFFF) => true,
            // Any other escape, `\\` included: skip both characters.
            _ => false,
        };
        if !lone {
            i += 2;
            continue;
        }
        let buf = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
        buf.extend_from_slice(&text[copied..i]);
        buf.extend_from_slice(b"\\ufffd");
        i += 6;
        copied = i;
    }
    let mut buf = out?;
    buf.extend_from_slice(&text[copied..]);
    Some(buf)
}

/// The event as one line of compact JSON, absent fields left out.
pub fn encode(event: &Event) -> String {
    serde_json::to_string(event).expect("an event always serializes")
}

fn trim_start(buf: &[u8]) -> &[u8] {
    let n = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    &buf[n..]
}

fn decode_array_fast(body: &str, events: &mut Vec<Event>) -> bool {
    let mut de = serde_json::Deserializer::from_str(body);
    let ok = ArraySeed {
        out: events,
        on_item: |s: &mut Vec<Event>, e: Event| s.push(e),
        item: PhantomData,
    }
    .deserialize(&mut de)
    .is_ok();
    ok && de.end().is_ok()
}

fn decode_objects_fast(body: &str, events: &mut Vec<Event>) -> bool {
    for item in serde_json::Deserializer::from_str(body).into_iter::<Event>() {
        match item {
            Ok(e) => events.push(e),
            Err(_) => return false,
        }
    }
    true
}

fn decode_array_recovering<'b>(
    body: &'b [u8],
    events: &mut Vec<Event>,
    errors: &mut Vec<DecodeError>,
) {
    let mut raws: Vec<&'b RawValue> = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ArraySeed {
        out: &mut raws,
        on_item: |s: &mut Vec<&'b RawValue>, r: &'b RawValue| s.push(r),
        item: PhantomData,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    for (i, raw) in raws.iter().enumerate() {
        match decode_event(raw.get()) {
            Ok(e) => events.push(e),
            Err(err) => errors.push(DecodeError(format!("array element {i}: {err}"))),
        }
    }
    if let Err(err) = parsed {
        errors.push(DecodeError(format!(
            "array after element {}: {err}",
            raws.len()
        )));
    }
}

fn decode_objects_recovering(body: &[u8], events: &mut Vec<Event>, errors: &mut Vec<DecodeError>) {
    let mut pos = 0;
    while pos < body.len() {
        let rest = trim_start(&body[pos..]);
        pos = body.len() - rest.len();
        let line = 1 + body[..pos].iter().filter(|&&b| b == b'\n').count();
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<&RawValue>();
        match stream.next() {
            None => break,
            Some(Ok(raw)) if raw.get().starts_with('[') => {
                let first_error = errors.len();
                decode_array_recovering(raw.get().as_bytes(), events, errors);
                for err in &mut errors[first_error..] {
                    err.0 = format!("line {line}: {}", err.0);
                }
                pos += stream.byte_offset();
            }
            Some(Ok(raw)) => {
                match serde_json::from_str::<Event>(raw.get()) {
                    Ok(e) => events.push(e),
                    Err(err) => errors.push(located(&err, line)),
                }
                pos += stream.byte_offset();
            }
            Some(Err(err)) => {
                errors.push(located(&err, line));
                // Resynchronise at the next line: NDJSON keeps one object per line.
                match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => pos += nl + 1,
                    None => break,
                }
            }
        }
    }
}

/// serde_json's error with its line counted from `first_line` (the line
/// where the parsed text starts) and put first: `line 3: … at column 15`.
fn located(err: &serde_json::Error, first_line: usize) -> DecodeError {
    let text = err.to_string();
    let reason = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(reason, _)| reason);
    DecodeError(match err.line() {
        0 => format!("line {first_line}: {reason}"),
        n => format!(
            "line {}: {reason} at column {}",
            first_line + n - 1,
            err.column()
        ),
    })
}

/// Visits a JSON array, handing each element to `on_item` as it is parsed so
/// that elements before a syntax error are kept.
struct ArraySeed<'a, S, T, F> {
    out: &'a mut S,
    on_item: F,
    item: PhantomData<fn() -> T>,
}

impl<'de, 'a, S, T, F> DeserializeSeed<'de> for ArraySeed<'a, S, T, F>
where
    T: de::Deserialize<'de>,
    F: FnMut(&mut S, T),
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'a, S, T, F> Visitor<'de> for ArraySeed<'a, S, T, F>
where
    T: de::Deserialize<'de>,
    F: FnMut(&mut S, T),
{
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of event objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<T>()? {
            (self.on_item)(self.out, item);
        }
        Ok(())
    }
}

// ---- typed decoding of one event ------------------------------------------------

impl<'de> de::Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut e = Event::default();
        // Gathered, then sorted once into the event's attributes.
        let (mut tags, mut attributes) = BUFFERS.take();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.as_str() {
                "host" => e.host = map.next_value_seed(StrField("host"))?,
                "service" => e.service = map.next_value_seed(StrField("service"))?,
                "state" => e.state = map.next_value_seed(StrField("state"))?,
                "description" => e.description = map.next_value_seed(StrField("description"))?,
                "time" => e.time = map.next_value_seed(NumField("time"))?,
                "ttl" => e.ttl = map.next_value_seed(NumField("ttl"))?.map(Number::as_f64),
                "metric" => e.metric = map.next_value_seed(NumField("metric"))?,
                "tags" => {
                    map.next_value_seed(TagsField(&mut tags))?;
                    e.tags = sharing::with_recent(|r| r.tags(&tags));
                    tags.clear();
                }
                "attributes" => map.next_value_seed(AttributesField(&mut attributes))?,
                other => {
                    if let Some(v) = map.next_value_seed(AttrValue)? {
                        attributes.push((SmolStr::new(other), v));
                    }
                }
            }
        }
        if !attributes.is_empty() {
            e.attributes = sharing::with_recent(|r| r.attributes(&mut attributes));
        }
        BUFFERS.set((tags, attributes));
        Ok(e)
    }
}

/// A map key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// An optional string field; `null` means absent.
struct StrField(&'static str);

impl<'de> DeserializeSeed<'de> for StrField {
    type Value = Option<SmolStr>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrField {
    type Value = Option<SmolStr>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string for `{}`", self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(sharing::text(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An optional number field, keeping integers as integers.
struct NumField(&'static str);

impl<'de> DeserializeSeed<'de> for NumField {
    type Value = Option<Number>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumField {
    type Value = Option<Number>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a number for `{}`", self.0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Number::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(match i64::try_from(v) {
            Ok(i) => Number::Int(i),
            Err(_) => Number::Float(v as f64),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Number::Float(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

thread_local! {
    /// Where an event's tags and attributes are gathered while it is
    /// decoded, reused from one event to the next: their shared slices are
    /// then the only allocations. Lost (and made again) on an error.
    static BUFFERS: Cell<Buffers> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Tags, and attributes' key/value pairs.
type Buffers = (Vec<SmolStr>, Vec<(SmolStr, SmolStr)>);

/// `tags`: a list of strings, or null (no tags).
struct TagsField<'a>(&'a mut Vec<SmolStr>);

impl<'de> DeserializeSeed<'de> for TagsField<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TagsField<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings for `tags`")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(tag) = seq.next_element_seed(StrField("tags"))? {
            self.0.extend(tag);
        }
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// `attributes`: an object whose values become strings.
struct AttributesField<'a>(&'a mut Vec<(SmolStr, SmolStr)>);

impl<'de> DeserializeSeed<'de> for AttributesField<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttributesField<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object for `attributes`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if let Some(v) = map.next_value_seed(AttrValue)? {
                self.0.push((SmolStr::new(key.as_str()), v));
            }
        }
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An attribute value: strings as they are, other scalars as their JSON text,
/// null as absent. Nested objects and arrays keep their JSON text too.
struct AttrValue;

impl<'de> DeserializeSeed<'de> for AttrValue {
    type Value = Option<SmolStr>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttrValue {
    type Value = Option<SmolStr>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(sharing::text(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(SmolStr::new_static(if v { "true" } else { "false" })))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(smol_str::format_smolstr!("{v}")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(smol_str::format_smolstr!("{v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(smol_str::format_smolstr!("{v}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v: serde_json::Value =
            de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Some(v.to_string().into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v: serde_json::Value =
            de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Some(v.to_string().into()))
    }
}

// ---- encoding ----------------------------------------------------------------------

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Number::Int(i) => s.serialize_i64(i),
            Number::Float(f) => s.serialize_f64(f),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in [
            ("host", &self.host),
            ("service", &self.service),
            ("state", &self.state),
            ("description", &self.description),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, &**v)?;
            }
        }
        if let Some(t) = &self.time {
            m.serialize_entry("time", t)?;
        }
        if let Some(t) = &self.ttl {
            m.serialize_entry("ttl", t)?;
        }
        if let Some(v) = &self.metric {
            m.serialize_entry("metric", v)?;
        }
        if !self.tags.is_empty() {
            let tags: Vec<&str> = self.tags.iter().map(|t| &**t).collect();
            m.serialize_entry("tags", &tags)?;
        }
        if !self.attributes.is_empty() {
            m.serialize_entry("attributes", &AttributesOut(&self.attributes))?;
        }
        m.end()
    }
}

/// Attributes as a JSON object, in key order.
struct AttributesOut<'a>(&'a Attributes);

impl Serialize for AttributesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (Vec<Event>, Vec<DecodeError>) {
        let (mut ev, mut er) = (Vec::new(), Vec::new());
        decode(input.as_bytes(), 42.0, &mut ev, &mut er);
        (ev, er)
    }

    /// What a sender repeats is decoded once and shared (`sharing`):
    /// a million indexed events from one client hold one copy of it.
    #[test]
    fn repeated_tags_attributes_and_long_texts_are_shared() {
        let line = r#"{"host":"a","description":"the same long description, event after event","tags":["prod","web"],"attributes":{"dc":"eu"}}"#;
        let (first, second) = (decode_event(line).unwrap(), decode_event(line).unwrap());
        assert_eq!(first, second);
        assert!(std::ptr::eq(first.tags.as_ptr(), second.tags.as_ptr()));
        let (a, b) = (first.attributes.pairs(), second.attributes.pairs());
        assert!(std::ptr::eq(a.as_ptr(), b.as_ptr()));
        let (d1, d2) = (first.description.unwrap(), second.description.unwrap());
        assert!(std::ptr::eq(d1.as_ptr(), d2.as_ptr()));
        // A different list is its own.
        let other = decode_event(r#"{"tags":["prod"]}"#).unwrap();
        assert_eq!(&*other.tags, ["prod"]);
    }

    #[test]
    fn a_repeated_attribute_keeps_its_last_value() {
        let (ev, er) = run(
            r#"{"dc":"a","attributes":{"dc":"b","x":1,"y":"z"},"dc":"c","attributes":{"y":null}}"#,
        );
        assert!(er.is_empty(), "{er:?}");
        let pairs: Vec<(&str, &str)> = ev[0].attributes.iter().collect();
        assert_eq!(pairs, [("dc", "c"), ("x", "1"), ("y", "z")]);
    }

    #[test]
    fn one_object_with_every_field() {
        let (ev, er) = run(
            r#"{"host":"web1","service":"cpu","state":"ok","description":"d","time":7,"ttl":10,"metric":2.5,"tags":["a","b"],"attributes":{"dc":"eu"},"team":"ops","n":3}"#,
        );
        assert!(er.is_empty(), "{er:?}");
        let e = &ev[0];
        assert_eq!(e.host.as_deref(), Some("web1"));
        assert_eq!(e.time, Some(Number::Int(7)));
        assert_eq!(e.ttl, Some(10.0));
        assert_eq!(e.metric, Some(Number::Float(2.5)));
        assert_eq!(e.tags.len(), 2);
        assert_eq!(e.attributes["dc"], "eu");
        assert_eq!(e.attributes["team"], "ops");
        assert_eq!(e.attributes["n"], "3");
    }

    #[test]
    fn lone_surrogate_escapes_become_replacement_characters() {
        let (ev, er) = run(
            r#"[{"host":"a\ud800b"},{"service":"\udc00","description":"\ud83d\ude00 \\ud800"}]"#,
        );
        assert!(er.is_empty(), "{er:?}");
        assert_eq!(ev[0].host.as_deref(), Some("a\u{fffd}b"));
        assert_eq!(ev[1].service.as_deref(), Some("\u{fffd}"));
        // A pair is one character; an escaped backslash is not an escape.
        assert_eq!(ev[1].description.as_deref(), Some("\u{1f600} \\ud800"));
        // Two high halves in a row: both lone. Objects per line too.
        let (ev, er) = run("{\"host\":\"\\uD800\\uD800\"}\n{\"host\":\"ok\"}");
        assert!(er.is_empty(), "{er:?}");
        assert_eq!(ev[0].host.as_deref(), Some("\u{fffd}\u{fffd}"));
        assert_eq!(ev[1].host.as_deref(), Some("ok"));
        assert_eq!(
            decode_event(r#"{"host":"\ud800"}"#)
                .unwrap()
                .host
                .as_deref(),
            Some("\u{fffd}")
        );
        // Nothing to replace: the text is left alone.
        assert_eq!(replace_lone_surrogates(br#"{"a":"\ud83d\ude00\n"}"#), None);
    }

    #[test]
    fn missing_time_gets_receive_time() {
        let (ev, _) = run(r#"{"host":"a"}"#);
        assert_eq!(ev[0].time, Some(Number::Float(42.0)));
    }

    #[test]
    fn array_and_ndjson_and_pretty_object() {
        assert_eq!(run(r#"[{"host":"a"},{"host":"b"}]"#).0.len(), 2);
        assert_eq!(run("{\"host\":\"a\"}\n{\"host\":\"b\"}\n").0.len(), 2);
        assert_eq!(run("{\n  \"host\": \"a\"\n}\n").0.len(), 1);
    }

    #[test]
    fn wrong_type_names_the_field_and_keeps_neighbours() {
        let (ev, er) = run(r#"[{"host":"a","metric":"abc"},{"host":"b","metric":1}]"#);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].host.as_deref(), Some("b"));
        assert_eq!(er.len(), 1);
        assert!(er[0].0.contains("`metric`"), "{}", er[0]);
        assert!(er[0].0.contains("element 0"), "{}", er[0]);
    }

    #[test]
    fn truncated_array_keeps_complete_elements() {
        let (ev, er) = run(r#"[{"host":"a","metric":1},{"host":"b""#);
        assert_eq!(ev.len(), 1);
        assert_eq!(er.len(), 1);
    }

    #[test]
    fn bad_ndjson_line_is_skipped() {
        let (ev, er) = run("{\"host\":\"a\"}\n{nope\n{\"host\":\"c\"}\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(er.len(), 1);
    }

    #[test]
    fn errors_name_their_line_in_the_whole_text() {
        let text = concat!(
            "{\"host\":\"p1\"}\n",
            "{\"host\":\"p2\"}\n",
            "{\"host\":\"p3\", bad json}\n",
            "{\"host\":\"p4\",\n \"metric\": \"x\"}\n",
            "{\"host\":\"p5\"}\n",
        );
        let (ev, er) = run(text);
        let hosts: Vec<_> = ev.iter().map(|e| e.host.as_deref().unwrap()).collect();
        assert_eq!(hosts, ["p1", "p2", "p5"]);
        let reasons: Vec<&str> = er.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "line 3: key must be a string at column 15",
                // The object starts on line 4; its bad value is on line 5.
                "line 5: invalid type: string \"x\", expected a number for `metric` at column 14",
            ]
        );
    }

    #[test]
    fn a_line_holding_an_array_is_a_list_of_events() {
        let (ev, er) = run("{\"host\":\"a\"}\n[{\"host\":\"b\"},{\"host\":\"c\",\"metric\":\"x\"},{\"host\":\"d\"}]\n");
        let hosts: Vec<_> = ev.iter().map(|e| e.host.as_deref().unwrap()).collect();
        assert_eq!(hosts, ["a", "b", "d"]);
        assert_eq!(er.len(), 1);
        assert!(
            er[0].0.starts_with("line 2: array element 1: "),
            "{}",
            er[0]
        );
    }

    #[test]
    fn garbage_and_non_objects_are_errors() {
        assert_eq!(run("\x00\x01garbage").1.len(), 1);
        assert_eq!(run("5").1.len(), 1);
        assert_eq!(run("   ").1.len(), 1);
        assert_eq!(run(r#"{"tags":"x"}"#).1.len(), 1);
    }

    #[test]
    fn encode_round_trips() {
        let (ev, _) = run(
            r#"{"host":"h","metric":3,"ttl":1.5,"time":9,"tags":["t"],"attributes":{"k":"v"}}"#,
        );
        let text = encode(&ev[0]);
        assert_eq!(
            text,
            r#"{"host":"h","time":9,"ttl":1.5,"metric":3,"tags":["t"],"attributes":{"k":"v"}}"#
        );
        assert_eq!(decode_event(&text).unwrap(), ev[0]);
    }
}
