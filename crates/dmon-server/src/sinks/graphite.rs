//! `graphite`: metrics to carbon, in its plaintext protocol over TCP, one
//! `path value time` line per event.
//!
//! The path comes from the event as Riemann's `graphite-path-percentiles`
//! makes it: the host's dot-separated parts reversed, then the service with
//! spaces as dots and a trailing decimal such as `0.95` made `95`
//! (`web1.example.com` + `api latency 0.95` →
//! `com.example.web1.api.latency.95`); or from a template of the user's
//! ([`GraphitePath`]). The value is the metric; the time, the event's in
//! whole seconds (when it is sent, for an event without one). Events
//! without a metric are not sent, as in Riemann. The node only queues the
//! event; the sink's worker makes the lines.
//!
//! Fields come from any peer, so nothing in them may break a line: within
//! a field, whitespace, control characters and `/` (a directory to carbon)
//! become `_`, and empty path components are left out (a host `..` adds
//! nothing). Plaintext has no acknowledgement: a batch that fails to write
//! is sent again on a new connection after a backoff, and a point carbon
//! gets twice is stored once.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Failure, Policy, Retry, Sink};
use crate::event::{Event, Number};

pub const DEFAULT_PORT: u16 = 2003;
/// Points waiting for carbon at most; more are dropped.
pub const CAPACITY: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(5);

const POLICY: Policy = Policy {
    capacity: CAPACITY,
    batch: 1000,
    linger: Duration::from_millis(10),
    retry: Retry::Backoff {
        first: Duration::from_millis(100),
        // Riemann's graphite client reconnects every 5 s.
        max: Duration::from_secs(5),
    },
};

/// Riemann's default path: `graphite-path-percentiles`.
pub const DEFAULT_PATH: &str = "{host_reversed}.{service}";

/// A point for carbon: the event and the path of the node that sent it
/// (nodes with different paths share one connection); the worker makes
/// the line.
pub type Point = (Arc<Event>, &'static GraphitePath);

impl super::Weigh for Point {
    fn weight(&self) -> usize {
        self.0.retained_bytes()
    }
}

/// How an event's graphite path is made: text with placeholders.
/// `{host}` is the host as it is, `{host_reversed}` its dot-separated parts
/// reversed, `{service}` the service with spaces as dots and a trailing
/// `0.95` as `95`; any other `{name}` is that field (`state`,
/// `description`) or attribute, as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphitePath {
    template: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Host,
    HostReversed,
    Service,
    Field(String),
}

impl Default for GraphitePath {
    fn default() -> Self {
        GraphitePath::parse(DEFAULT_PATH).expect("the default path parses")
    }
}

impl GraphitePath {
    /// Parses a template; fails on unbalanced braces, an empty placeholder,
    /// or text that cannot be part of a path (whitespace, `/`).
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'{' => {
                    if i > 0 {
                        parts.push(Part::Text(rest[..i].to_owned()));
                    }
                    let close = rest[i..]
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in path {template:?}"))?;
                    let name = &rest[i + 1..i + close];
                    parts.push(match name {
                        "host" => Part::Host,
                        "host_reversed" => Part::HostReversed,
                        "service" => Part::Service,
                        "" => return Err(format!("empty `{{}}` in path {template:?}")),
                        n if n.contains(['{', ' ']) => {
                            return Err(format!("bad placeholder {{{n}}} in path {template:?}"))
                        }
                        n => Part::Field(n.to_owned()),
                    });
                    rest = &rest[i + close + 1..];
                }
                Some(_) => return Err(format!("unopened `}}` in path {template:?}")),
                None => {
                    parts.push(Part::Text(rest.to_owned()));
                    rest = "";
                }
            }
        }
        let text = parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t),
            _ => None,
        });
        for t in text {
            if t.chars().any(|c| c != clean(c)) {
                return Err(format!(
                    "path {template:?} holds whitespace, a control character or `/`"
                ));
            }
        }
        if parts.iter().all(|p| matches!(p, Part::Text(_))) {
            return Err(format!(
                "path {template:?} has no placeholder: every event would have the same path"
            ));
        }
        Ok(GraphitePath {
            template: template.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The one shared copy of the path for `template` (Riemann's for
    /// `None`): points carry it as a plain reference, which costs no
    /// reference count whose cache line the event path and the worker
    /// would pass back and forth. One is kept per template ever written.
    pub fn interned(template: Option<&str>) -> Result<&'static GraphitePath, String> {
        static PATHS: Mutex<Vec<&'static GraphitePath>> = Mutex::new(Vec::new());
        let template = template.unwrap_or(DEFAULT_PATH);
        let mut paths = PATHS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = paths.iter().find(|p| p.template == template) {
            return Ok(p);
        }
        let path: &'static GraphitePath = Box::leak(Box::new(GraphitePath::parse(template)?));
        paths.push(path);
        Ok(path)
    }

    /// The path for `e`; empty when every part of it is.
    pub fn render(&self, e: &Event) -> String {
        let mut out = Vec::new();
        self.render_into(e, &mut out);
        String::from_utf8(out).expect("a path is made of whole characters")
    }

    /// Appends the path for `e` to `out`: its parts joined, with
    /// [`clean`] characters and no empty component.
    fn render_into(&self, e: &Event, out: &mut Vec<u8>) {
        let mut path = PathWriter {
            out,
            start: 0,
            dot: false,
        };
        path.start = path.out.len();
        for part in &self.parts {
            match part {
                Part::Text(t) => path.push_str(t),
                Part::Host => path.push_str(e.host.as_deref().unwrap_or("")),
                Part::HostReversed => {
                    let host = e.host.as_deref().unwrap_or("");
                    for (i, p) in host.rsplit('.').enumerate() {
                        if i > 0 {
                            path.separate();
                        }
                        path.push_str(p);
                    }
                }
                Part::Service => {
                    let service = percentiles(e.service.as_deref().unwrap_or(""));
                    path.push_service(&service);
                }
                Part::Field(name) => {
                    let value = match name.as_str() {
                        "state" => e.state.as_deref(),
                        "description" => e.description.as_deref(),
                        _ => e.attributes.get(name),
                    };
                    path.push_str(value.unwrap_or(""));
                }
            }
        }
    }
}

/// Writes a path: a `.` separates components, and only between two
/// non-empty ones.
struct PathWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Where this path starts in `out`.
    start: usize,
    /// A separator is due before the next character.
    dot: bool,
}

impl PathWriter<'_> {
    fn push(&mut self, c: char) {
        if c == '.' {
            self.separate();
            return;
        }
        if self.dot {
            self.out.push(b'.');
            self.dot = false;
        }
        let mut utf8 = [0; 4];
        self.out
            .extend_from_slice(clean(c).encode_utf8(&mut utf8).as_bytes());
    }

    /// Text whose dots separate components.
    fn push_str(&mut self, s: &str) {
        self.push_text(s, false);
    }

    /// A service: spaces separate components too.
    fn push_service(&mut self, s: &str) {
        self.push_text(s, true);
    }

    fn push_text(&mut self, s: &str, spaces_separate: bool) {
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            // Runs of characters that stand as they are, at once.
            let plain = rest
                .bytes()
                .position(|b| !b.is_ascii_graphic() || b == b'.' || b == b'/')
                .unwrap_or(rest.len());
            if plain > 0 {
                if self.dot {
                    self.out.push(b'.');
                    self.dot = false;
                }
                self.out.extend_from_slice(&rest.as_bytes()[..plain]);
                rest = &rest[plain..];
                continue;
            }
            self.push(if spaces_separate && c == ' ' { '.' } else { c });
            rest = &rest[c.len_utf8()..];
        }
    }

    fn separate(&mut self) {
        self.dot = self.out.len() > self.start;
    }
}

/// A character as it may stand in a path.
fn clean(c: char) -> char {
    if c.is_whitespace() || c.is_control() || c == '/' {
        '_'
    } else {
        c
    }
}

/// Riemann's `graphite-path-percentiles`: a service ending in a decimal
/// (`api latency 0.95`) ends in its digits instead (`api latency 95`), the
/// whole part left out when it is 0 (`1.5` → `15`).
fn percentiles(service: &str) -> Cow<'_, str> {
    let digits = |s: &str| s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let frac = digits(service);
    let before = &service[..service.len() - frac];
    let Some(before) = before.strip_suffix('.').filter(|_| frac > 0) else {
        return Cow::Borrowed(service);
    };
    let whole = digits(before);
    if whole == 0 {
        return Cow::Borrowed(service);
    }
    let (head, whole) = before.split_at(before.len() - whole);
    let frac = &service[service.len() - frac..];
    let whole = if whole == "0" { "" } else { whole };
    Cow::Owned(format!("{head}{whole}{frac}"))
}

/// Appends the plaintext line for `e` (`path value time\n`); false, and
/// nothing appended, for an event without a finite metric or a path.
/// `now` is asked only for an event without a (finite) time.
pub fn push_line(
    out: &mut Vec<u8>,
    e: &Event,
    path: &GraphitePath,
    now: impl FnOnce() -> f64,
) -> bool {
    let start = out.len();
    path.render_into(e, out);
    if out.len() == start {
        return false;
    }
    out.push(b' ');
    match e.metric {
        Some(Number::Int(i)) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        Some(Number::Float(f)) if f.is_finite() => {
            out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes())
        }
        _ => {
            out.truncate(start);
            return false;
        }
    }
    let time = match e.time.map(Number::as_f64) {
        Some(t) if t.is_finite() => t,
        _ => now(),
    };
    out.push(b' ');
    // Whole seconds, truncated, as Riemann's `(int time)`.
    out.extend_from_slice(itoa::Buffer::new().format(time as i64).as_bytes());
    out.push(b'\n');
    true
}

/// A carbon line receiver.
pub struct GraphiteSink {
    host: String,
    port: u16,
    /// The batch's lines, reused.
    buf: Vec<u8>,
}

impl GraphiteSink {
    pub fn new(host: &str, port: u16) -> Self {
        GraphiteSink {
            host: host.to_owned(),
            port,
            buf: Vec::new(),
        }
    }
}

impl Sink for GraphiteSink {
    type Item = Point;
    type Conn = TcpStream;

    fn kind(&self) -> &'static str {
        "graphite"
    }
    fn target(&self) -> String {
        super::target(&self.host, self.port)
    }
    fn policy(&self) -> Policy {
        POLICY
    }
    fn connect(&mut self) -> Result<TcpStream, Failure> {
        let addr = super::resolve(&self.host, self.port)?;
        let conn = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| Failure::retry(format!("cannot connect: {e}")))?;
        conn.set_write_timeout(Some(TIMEOUT))
            .map_err(Failure::retry)?;
        Ok(conn)
    }
    fn send(&mut self, conn: &mut TcpStream, batch: &[Point]) -> Result<(), Failure> {
        // Carbon never writes, so the first write into a connection it
        // closed would still succeed and the batch be lost: look first.
        if closed_by_peer(conn) {
            return Err(Failure::retry("carbon closed the connection"));
        }
        self.buf.clear();
        let now = crate::event::now_secs();
        for (e, path) in batch {
            push_line(&mut self.buf, e, path, || now);
        }
        conn.write_all(&self.buf)
            .map_err(|e| Failure::retry(format!("write failed: {e}")))
    }
}

/// Whether the peer has closed `conn` (or it failed), without blocking.
fn closed_by_peer(conn: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into `byte`, from a socket we own.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(host: Option<&str>, service: Option<&str>) -> Event {
        Event {
            host: host.map(Into::into),
            service: service.map(Into::into),
            metric: Some(Number::Float(2.5)),
            time: Some(Number::Float(1_700_000_000.9)),
            ..Event::default()
        }
    }

    fn path(host: Option<&str>, service: Option<&str>) -> String {
        GraphitePath::default().render(&event(host, service))
    }

    /// As riemann.graphite's graphite-path-percentiles.
    #[test]
    fn the_default_path_is_riemanns() {
        assert_eq!(
            path(Some("web1.example.com"), Some("cpu user")),
            "com.example.web1.cpu.user"
        );
        assert_eq!(
            path(Some("web1"), Some("api latency 0.95")),
            "web1.api.latency.95"
        );
        assert_eq!(path(Some("h"), Some("x 0.5")), "h.x.5");
        assert_eq!(path(Some("h"), Some("x 1.5")), "h.x.15");
        assert_eq!(path(Some("h"), Some("v1.2.3")), "h.v1.23");
        assert_eq!(path(Some("h"), Some("disk 99")), "h.disk.99");
        assert_eq!(path(Some("h"), Some("ends.")), "h.ends");
        assert_eq!(path(None, Some("cpu")), "cpu");
        assert_eq!(path(Some("h"), None), "h");
        assert_eq!(path(None, None), "");
    }

    #[test]
    fn fields_cannot_break_a_line_or_leave_the_tree() {
        assert_eq!(
            path(Some("a b\nc.d"), Some("x\ty 1 1\nz")),
            "d.a_b_c.x_y.1.1_z"
        );
        assert_eq!(path(Some("../../etc"), Some("cpu")), "_etc._.cpu");
        assert_eq!(path(Some(".."), Some("..")), "");
    }

    #[test]
    fn templates() {
        let p = GraphitePath::parse("servers.{host}.{region}.{service}").unwrap();
        let mut e = event(Some("web1.example.com"), Some("cpu"));
        e.attributes.insert("region", "eu west");
        assert_eq!(p.render(&e), "servers.web1.example.com.eu_west.cpu");
        e.attributes.clear();
        assert_eq!(p.render(&e), "servers.web1.example.com.cpu");
        for bad in ["{host", "host}", "a {}", "a b.{host}", "x/{host}", "fixed"] {
            assert!(GraphitePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_are_path_value_and_whole_seconds() {
        let p = GraphitePath::default();
        let mut out = Vec::new();
        assert!(push_line(
            &mut out,
            &event(Some("a.b"), Some("s")),
            &p,
            || 5.0
        ));
        let mut e = event(Some("a"), Some("n"));
        e.metric = Some(Number::Int(3));
        e.time = None;
        assert!(push_line(&mut out, &e, &p, || 1_700_000_001.7));
        e.metric = None;
        assert!(!push_line(&mut out, &e, &p, || 5.0));
        e.metric = Some(Number::Float(f64::NAN));
        assert!(!push_line(&mut out, &e, &p, || 5.0));
        e.metric = Some(Number::Float(1e21));
        assert!(push_line(&mut out, &e, &p, || 7.0));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b.a.s 2.5 1700000000\na.n 3 1700000001\na.n 1e+21 7\n"
        );
    }
}
