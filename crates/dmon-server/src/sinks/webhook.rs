//! `webhook`: events POSTed to an HTTP endpoint as JSON — each event its own
//! request, or, with a batch size, up to that many events in one JSON
//! array; or a body made from a template of the user's (Slack's
//! `{"text": …}`, PagerDuty's events).
//!
//! A template is JSON with placeholders: `{name}` (letters, digits and `_`
//! only, so JSON's own braces stand as they are) becomes that field of the
//! event. A string field (`host`, `service`, `state`, `description`, an
//! attribute) is put in JSON-escaped, without quotes, to sit inside a JSON
//! string: a field can never break out of it. `metric`, `time` and `ttl` are
//! numbers, `null` when absent; `tags` is the tags joined by `, `. A missing
//! field is empty. Templates are checked at start-up: one that does not
//! make JSON is refused.
//!
//! A 2xx answer is success; 5xx, 408, 429 and connection failures are
//! retried with backoff on a new connection; any other 4xx gives the batch
//! up (counted as failed): the endpoint refused what it holds.

use std::hash::BuildHasher;
use std::time::Duration;

use super::{http_agent, http_post, Encoded, Failure, Policy, Retry, Sink};
use crate::event::{Event, Number};

/// Requests waiting at most; more events are dropped.
pub const CAPACITY: usize = 1000;

const RETRY: Retry = Retry::Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// What the node hands over: the event's JSON, or its rendered template.
pub type Body = Encoded;

/// A body template: text and `{field}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parses `text`; fails unless it makes JSON for any event.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('{') {
            literal.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(after[..name_len].to_owned()));
                rest = &after[name_len + 1..];
            } else {
                literal.push('{');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        let template = Template {
            text: text.to_owned(),
            parts,
        };
        // Every field set, then none: both must make JSON.
        let full = Event {
            host: Some("h".into()),
            service: Some("s".into()),
            state: Some("ok".into()),
            description: Some("d".into()),
            time: Some(Number::Int(1)),
            ttl: Some(1.0),
            metric: Some(Number::Float(1.5)),
            tags: ["t"].into(),
            attributes: Default::default(),
        };
        for e in [full, Event::default()] {
            let mut out = Vec::new();
            template.render(&e, &mut out);
            if let Err(err) = serde_json::from_slice::<serde_json::Value>(&out) {
                return Err(format!(
                    "template {text:?} does not make JSON ({err}): e.g. {}",
                    String::from_utf8_lossy(&out)
                ));
            }
        }
        Ok(template)
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends the body for `e` to `out`.
    pub fn render(&self, e: &Event, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Field(name) => match name.as_str() {
                    "host" => push_escaped(out, e.host.as_deref().unwrap_or("")),
                    "service" => push_escaped(out, e.service.as_deref().unwrap_or("")),
                    "state" => push_escaped(out, e.state.as_deref().unwrap_or("")),
                    "description" => push_escaped(out, e.description.as_deref().unwrap_or("")),
                    "metric" => push_number(out, e.metric.map(Number::as_f64), e.metric),
                    "time" => push_number(out, e.time.map(Number::as_f64), e.time),
                    "ttl" => push_number(out, e.ttl, None),
                    "tags" => push_escaped(out, &e.tags.join(", ")),
                    other => push_escaped(out, e.attributes.get(other).map_or("", |v| v)),
                },
            }
        }
    }
}

/// `s` as the inside of a JSON string.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    serde_json::to_writer(&mut *out, s).expect("a str always serializes");
    // Drop the quotes serde_json put around it.
    out.pop();
    out.remove(start);
}

/// A JSON number, or `null` for none (or a NaN or infinity, which JSON
/// cannot hold).
fn push_number(out: &mut Vec<u8>, x: Option<f64>, exact: Option<Number>) {
    match (exact, x) {
        (Some(Number::Int(i)), _) => {
            out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes())
        }
        (_, Some(f)) if f.is_finite() => {
            out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes())
        }
        _ => out.extend_from_slice(b"null"),
    }
}

/// Appends the body for `e`: the template's, or the event as JSON.
pub fn push_body(out: &mut Vec<u8>, e: &Event, template: Option<&Template>) {
    match template {
        Some(t) => t.render(e, out),
        None => serde_json::to_writer(out, e).expect("an event always serializes"),
    }
}

/// An HTTP endpoint.
pub struct WebhookSink {
    url: String,
    headers: Vec<(String, String)>,
    /// Events per request, in a JSON array; `None`: one event per request,
    /// as it is.
    batch: Option<usize>,
    /// A batch's body, reused.
    buf: Vec<u8>,
}

impl WebhookSink {
    pub fn new(url: &str, headers: &[(String, String)], batch: Option<usize>) -> Self {
        WebhookSink {
            url: url.to_owned(),
            headers: headers.to_vec(),
            batch,
            buf: Vec::new(),
        }
    }
}

impl Sink for WebhookSink {
    type Item = Body;
    type Conn = ureq::Agent;

    fn kind(&self) -> &'static str {
        "webhook"
    }
    /// The URL; nodes that frame or head their requests differently
    /// need sinks of their own, so those differences are part of it (header
    /// values only as a hash: they may be secrets).
    fn target(&self) -> String {
        let mut t = self.url.clone();
        if let Some(n) = self.batch {
            t.push_str(&format!(" batch={n}"));
        }
        if !self.headers.is_empty() {
            let hash = foldhash::fast::FixedState::with_seed(0).hash_one(&self.headers);
            let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
            t.push_str(&format!(
                " headers={} #{:08x}",
                names.join(","),
                hash as u32
            ));
        }
        t
    }
    fn policy(&self) -> Policy {
        Policy {
            capacity: CAPACITY,
            batch: self.batch.unwrap_or(100),
            // A batch waits a little for company; single events go at once.
            linger: match self.batch {
                Some(_) => Duration::from_millis(100),
                None => Duration::ZERO,
            },
            retry: RETRY,
        }
    }
    fn connect(&mut self) -> Result<ureq::Agent, Failure> {
        Ok(http_agent())
    }
    fn send(&mut self, agent: &mut ureq::Agent, batch: &[Body]) -> Result<(), Failure> {
        const JSON: &str = "application/json";
        if self.batch.is_some() {
            self.buf.clear();
            self.buf.push(b'[');
            for (i, body) in batch.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(body.as_bytes());
            }
            self.buf.push(b']');
            return http_post(agent, &self.url, &self.headers, JSON, &self.buf);
        }
        for (done, body) in batch.iter().enumerate() {
            http_post(agent, &self.url, &self.headers, JSON, body.as_bytes())
                .map_err(|f| f.after(done))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, e: &Event) -> String {
        let mut out = Vec::new();
        Template::parse(t).unwrap().render(e, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates_put_fields_inside_json_strings_escaped() {
        let mut e = Event {
            host: Some("web\"1\n".into()),
            service: Some("api}".into()),
            state: Some("critical".into()),
            metric: Some(Number::Float(2.5)),
            time: Some(Number::Int(1_700_000_000)),
            tags: ["a", "b"].into(),
            ..Event::default()
        };
        e.attributes.insert("region", "eu\\west");
        let t = r#"{"text": "{host} {service} is {state} ({metric}) [{tags}] {region}{nothing}", "v": {metric}, "t": {time}, "ttl": {ttl}, "o": {"x": 1}}"#;
        let body = render(t, &e);
        assert_eq!(
            body,
            r#"{"text": "web\"1\n api} is critical (2.5) [a, b] eu\\west", "v": 2.5, "t": 1700000000, "ttl": null, "o": {"x": 1}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["text"], "web\"1\n api} is critical (2.5) [a, b] eu\\west");
    }

    #[test]
    fn templates_that_do_not_make_json_are_refused() {
        for bad in [r#"{"text": {host}}"#, r#"{"a": "{host}""#, "plain {host}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert!(Template::parse(r#"{"text": "{host}", "n": {metric}}"#).is_ok());
    }

    #[test]
    fn without_a_template_the_body_is_the_event() {
        let e = Event {
            host: Some("h".into()),
            metric: Some(Number::Int(3)),
            ..Event::default()
        };
        let mut out = Vec::new();
        push_body(&mut out, &e, None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"host": "h", "metric": 3}));
    }

    #[test]
    fn targets_tell_framing_and_headers_apart() {
        let u = "http://127.0.0.1:9/hook";
        let h = |v: &str| vec![("Authorization".to_owned(), v.to_owned())];
        let a = WebhookSink::new(u, &[], None).target();
        let b = WebhookSink::new(u, &[], Some(10)).target();
        let c = WebhookSink::new(u, &h("Bearer x"), None).target();
        let d = WebhookSink::new(u, &h("Bearer y"), None).target();
        assert_eq!(a, u);
        assert_eq!(b, format!("{u} batch=10"));
        assert!(
            c.starts_with(&format!("{u} headers=Authorization #")),
            "{c}"
        );
        assert!(!c.contains("Bearer"), "{c}");
        assert_ne!(c, d);
    }
}
