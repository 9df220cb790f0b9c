//! `influxdb`: points to InfluxDB 1.x in its line protocol, batched, over
//! HTTP (`POST {url}/write?db=…&precision=…`).
//!
//! As Riemann's `influxdb` (0.9 API) makes them: the measurement is the
//! service (or a fixed name), the tags are chosen fields of the event, and
//! the fields are `value` (the metric, always a float: one series never
//! mixes types) plus the event's other text — `state`, `description` and
//! attributes not taken as tags — as strings. Events without a finite
//! metric, or without a measurement, are not sent. The time is the event's
//! (or now), in the chosen precision.
//!
//! Fields come from any peer, so nothing in them may break a line: in the
//! measurement, tag keys and values and field keys, commas and spaces (and
//! `=`, but in the measurement) are escaped, and control characters and
//! backslashes, which the protocol cannot escape there, become `_`; string
//! field values escape `"` and `\`, and their control characters become
//! spaces. Empty tag values, which InfluxDB refuses, are left out.

use std::time::Duration;

use super::{http_agent, http_post, Encoded, Failure, Policy, Retry, Sink};
use crate::event::{Event, Number};

/// Points waiting at most; more are dropped.
pub const CAPACITY: usize = 10_000;

const POLICY: Policy = Policy {
    capacity: CAPACITY,
    batch: 1000,
    // One request carries what came within this of the first point.
    linger: Duration::from_millis(50),
    retry: Retry::Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(5),
    },
};

/// Riemann's tags, and the state: the fields most queries group by.
pub const DEFAULT_TAGS: [&str; 3] = ["host", "service", "state"];

/// A point: its line, made on the event path.
pub type Point = Encoded;

/// Fields that cannot be tags: numbers and lists.
const NOT_TAGS: [&str; 4] = ["metric", "time", "ttl", "tags"];

/// The time's unit, as InfluxDB's `precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    S,
    Ms,
    Us,
    Ns,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "s" => Ok(Precision::S),
            "ms" => Ok(Precision::Ms),
            "us" | "u" => Ok(Precision::Us),
            "ns" | "n" => Ok(Precision::Ns),
            _ => Err(format!(
                "`precision` must be \"s\", \"ms\", \"us\" or \"ns\", not {s:?}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::S => "s",
            Precision::Ms => "ms",
            Precision::Us => "u",
            Precision::Ns => "ns",
        }
    }

    /// `t` seconds in this unit: whole seconds truncated, as Riemann's
    /// `(long time)`; finer units rounded, past a float's noise.
    fn convert(self, t: f64) -> i64 {
        match self {
            Precision::S => t as i64,
            Precision::Ms => (t * 1e3).round() as i64,
            Precision::Us => (t * 1e6).round() as i64,
            Precision::Ns => (t * 1e9).round() as i64,
        }
    }
}

/// How events become points: the node's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    /// `None`: the service.
    pub measurement: Option<String>,
    /// Sorted by key, as InfluxDB stores them best.
    tags: Vec<String>,
    pub precision: Precision,
}

impl Points {
    pub fn new(
        measurement: Option<String>,
        tags: &[String],
        precision: Precision,
    ) -> Result<Self, String> {
        if measurement.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err("`measurement` must not be empty".into());
        }
        let mut sorted = tags.to_vec();
        sorted.sort();
        sorted.dedup();
        for t in &sorted {
            if t.is_empty() || t == "time" || NOT_TAGS.contains(&t.as_str()) {
                return Err(format!(
                    "{t:?} cannot be a tag: tags are text fields (host, service, state, description) or attributes"
                ));
            }
        }
        Ok(Points {
            measurement,
            tags: sorted,
            precision,
        })
    }

    /// The tags, sorted.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Appends the line for `e`; false, and nothing appended, for an event
    /// without a finite metric or a measurement. `now` is asked only for an
    /// event without a (finite) time.
    pub fn push_line(&self, out: &mut Vec<u8>, e: &Event, now: impl FnOnce() -> f64) -> bool {
        let value = match e.metric {
            Some(Number::Int(i)) => Some(Number::Int(i)),
            Some(Number::Float(f)) if f.is_finite() => Some(Number::Float(f)),
            _ => None,
        };
        let measurement = match &self.measurement {
            Some(m) => m.as_str(),
            None => e.service.as_deref().unwrap_or(""),
        };
        let (Some(value), false) = (value, measurement.is_empty()) else {
            return false;
        };
        push_name(out, measurement, b", ");
        for tag in &self.tags {
            let v = text_field(e, tag).unwrap_or("");
            if v.is_empty() {
                continue;
            }
            out.push(b',');
            push_name(out, tag, b", =");
            out.push(b'=');
            push_name(out, v, b", =");
        }
        out.extend_from_slice(b" value=");
        match value {
            // Written without `i`: a float to InfluxDB, as every other value.
            Number::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            Number::Float(f) => {
                out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes())
            }
        }
        let is_tag = |k: &str| self.tags.iter().any(|t| t == k);
        for (k, v) in [("state", &e.state), ("description", &e.description)] {
            if let Some(v) = v.as_deref().filter(|_| !is_tag(k)) {
                push_string_field(out, k, v);
            }
        }
        for (k, v) in &e.attributes {
            // `time` is refused as a field name; `value` is the metric's.
            if !k.is_empty() && k != "time" && k != "value" && !is_tag(k) {
                push_string_field(out, k, v);
            }
        }
        let time = match e.time.map(Number::as_f64) {
            Some(t) if t.is_finite() => t,
            _ => now(),
        };
        out.push(b' ');
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(self.precision.convert(time))
                .as_bytes(),
        );
        out.push(b'\n');
        true
    }
}

/// A text field or attribute, by name.
fn text_field<'e>(e: &'e Event, name: &str) -> Option<&'e str> {
    match name {
        "host" => e.host.as_deref(),
        "service" => e.service.as_deref(),
        "state" => e.state.as_deref(),
        "description" => e.description.as_deref(),
        _ => e.attributes.get(name),
    }
}

/// A measurement, key or tag value: `escape`d characters after a
/// backslash; backslashes and control characters, which cannot be escaped
/// there, as `_`.
fn push_name(out: &mut Vec<u8>, s: &str, escape: &[u8]) {
    for c in s.chars() {
        if c == '\\' || c.is_control() {
            out.push(b'_');
            continue;
        }
        if c.is_ascii() && escape.contains(&(c as u8)) {
            out.push(b'\\');
        }
        let mut utf8 = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
}

/// `,key="value"`.
fn push_string_field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b',');
    push_name(out, key, b", =");
    out.extend_from_slice(b"=\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => out.extend_from_slice(&[b'\\', c as u8]),
            c if c.is_control() => out.push(b' '),
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// A query string's value, percent-encoded.
fn query_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A user and password for an InfluxDB with `auth-enabled`. Its `Debug`
/// leaves the password out: it must not reach a log.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization` header: HTTP basic authentication, which
    /// InfluxDB 1.x takes as well as `u=`/`p=` in the query string (where
    /// the password would be in the URL, and so in logs).
    fn header(&self) -> (String, String) {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.username, self.password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        ("Authorization".to_owned(), format!("Basic {encoded}"))
    }
}

/// An InfluxDB 1.x database.
pub struct InfluxSink {
    /// `{url}/write?db=…&precision=…`.
    write_url: String,
    /// The `Authorization` header, with credentials.
    headers: Vec<(String, String)>,
    /// The batch's lines, reused.
    buf: Vec<u8>,
}

impl InfluxSink {
    pub fn new(
        url: &str,
        db: &str,
        precision: Precision,
        credentials: Option<&Credentials>,
    ) -> Self {
        let write_url = format!(
            "{}/write?db={}&precision={}",
            url.trim_end_matches('/'),
            query_value(db),
            precision.as_str()
        );
        InfluxSink {
            write_url,
            headers: credentials.map(Credentials::header).into_iter().collect(),
            buf: Vec::new(),
        }
    }
}

impl Sink for InfluxSink {
    type Item = Point;
    type Conn = ureq::Agent;

    fn kind(&self) -> &'static str {
        "influxdb"
    }
    /// The write URL: one sink per server, database and precision.
    fn target(&self) -> String {
        self.write_url.clone()
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<ureq::Agent, Failure> {
        Ok(http_agent())
    }
    fn send(&mut self, agent: &mut ureq::Agent, batch: &[Point]) -> Result<(), Failure> {
        self.buf.clear();
        for line in batch {
            self.buf.extend_from_slice(line.as_bytes());
        }
        http_post(
            agent,
            &self.write_url,
            &self.headers,
            "text/plain",
            &self.buf,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_as_basic_auth_and_stay_out_of_debug() {
        let c = Credentials {
            username: "dmon".into(),
            password: "s3cret".into(),
        };
        // base64 of "dmon:s3cret".
        assert_eq!(
            c.header(),
            ("Authorization".into(), "Basic ZG1vbjpzM2NyZXQ=".into())
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    fn line(points: &Points, e: &Event) -> String {
        let mut out = Vec::new();
        points.push_line(&mut out, e, || 99.0);
        String::from_utf8(out).unwrap()
    }

    fn default_points() -> Points {
        let tags: Vec<String> = DEFAULT_TAGS.iter().map(|t| t.to_string()).collect();
        Points::new(None, &tags, Precision::S).unwrap()
    }

    #[test]
    fn lines_are_riemanns_points() {
        let mut e = Event {
            host: Some("web1".into()),
            service: Some("api latency".into()),
            state: Some("ok".into()),
            description: Some("fine".into()),
            metric: Some(Number::Float(2.5)),
            time: Some(Number::Float(1_700_000_000.9)),
            ..Event::default()
        };
        e.attributes.insert("region", "eu");
        assert_eq!(
            line(&default_points(), &e),
            "api\\ latency,host=web1,service=api\\ latency,state=ok value=2.5,description=\"fine\",region=\"eu\" 1700000000\n"
        );
        let p = Points::new(Some("dmon".into()), &["region".into()], Precision::Ms).unwrap();
        e.metric = Some(Number::Int(3));
        e.time = None;
        assert_eq!(
            line(&p, &e),
            "dmon,region=eu value=3,state=\"ok\",description=\"fine\" 99000\n"
        );
    }

    #[test]
    fn events_without_metric_or_measurement_make_no_line() {
        let p = default_points();
        let mut e = Event {
            service: Some("s".into()),
            ..Event::default()
        };
        assert_eq!(line(&p, &e), "");
        e.metric = Some(Number::Float(f64::NAN));
        assert_eq!(line(&p, &e), "");
        e.metric = Some(Number::Float(1.0));
        e.service = None;
        assert_eq!(line(&p, &e), "");
    }

    #[test]
    fn fields_cannot_break_a_line() {
        let mut e = Event {
            host: Some("a,b=c d\\\n".into()),
            service: Some("x,y=z".into()),
            description: Some("say \"hi\"\\\nbye".into()),
            metric: Some(Number::Float(1.0)),
            time: Some(Number::Int(5)),
            ..Event::default()
        };
        e.attributes.insert("k ey,=", "v");
        e.attributes.insert("time", "no");
        e.attributes.insert("value", "no");
        e.attributes.insert("", "no");
        assert_eq!(
            line(&default_points(), &e),
            "x\\,y=z,host=a\\,b\\=c\\ d__,service=x\\,y\\=z value=1.0,description=\"say \\\"hi\\\"\\\\ bye\",k\\ ey\\,\\==\"v\" 5\n"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(Points::new(Some(" ".into()), &[], Precision::S).is_err());
        for bad in ["metric", "time", "tags", ""] {
            assert!(
                Points::new(None, &[bad.into()], Precision::S).is_err(),
                "{bad}"
            );
        }
        assert!(Precision::parse("h").is_err());
        assert_eq!(Precision::parse("ms").unwrap().convert(1.25), 1250);
        let s = InfluxSink::new("http://127.0.0.1:8086/", "my db&x", Precision::S, None);
        assert_eq!(
            s.target(),
            "http://127.0.0.1:8086/write?db=my%20db%26x&precision=s"
        );
    }
}
