//! The `dmon.streams` Python API against the real embedded interpreter: the
//! Event type, node construction errors, and root discovery. Each test runs
//! Python assertions; a failing `assert` fails the test with its traceback.
//! Pushes from Python threads into a running server run against the real
//! binary.

use std::ffi::CString;
use std::sync::Arc;

use dmon::console::LineSink;
use dmon::python::{self, loader};
use dmon::sinks::email::Mailer;
use dmon::sinks::senders::server_context;
use pyo3::prelude::*;
use pyo3::types::PyDict;

struct Collect(std::sync::Mutex<Vec<String>>);
impl LineSink for Collect {
    fn write_line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
}

/// Starts Python once per test process, bound to a context whose printed
/// lines are collected.
fn console() -> &'static Arc<Collect> {
    static CONSOLE: std::sync::OnceLock<Arc<Collect>> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| {
        python::init().unwrap();
        let console = Arc::new(Collect(Default::default()));
        let mailer = Mailer::start("127.0.0.1:1".parse().unwrap());
        python::bind_context(Arc::new(server_context(mailer, console.clone()))).unwrap();
        console
    })
}

fn run(code: &str) -> Py<PyDict> {
    console();
    Python::attach(|py| {
        let ns = PyDict::new(py);
        let code = CString::new(code).unwrap();
        if let Err(e) = py.run(&code, Some(&ns), None) {
            panic!("python failed: {}", python_error(py, e));
        }
        ns.unbind()
    })
}

fn python_error(py: Python<'_>, e: PyErr) -> String {
    let tb = e
        .traceback(py)
        .and_then(|t| t.format().ok())
        .unwrap_or_default();
    format!("{tb}{e}")
}

#[test]
fn event_reads_like_the_seed_namedtuple_and_a_dict() {
    run(r#"
from dmon.streams import Event
e = Event(host="web1", service="cpu", state="warning", metric=2, ttl=10, tags=["a"], region="eu")
assert e['state'] == "warning" and e.state == "warning"
assert e.metric == 2 and isinstance(e.metric, int)
assert e.ttl == 10.0
assert e.tags == ["a"]
assert e.region == "eu" and e['region'] == "eu" and e.attributes == {"region": "eu"}
assert e.description is None and e['description'] is None
assert e.get('description', 'none') == 'none'
assert e.get('metric', 0) == 2
assert e.get('missing') is None
try:
    e['missing']
    raise AssertionError("KeyError expected")
except KeyError:
    pass
try:
    e.missing
    raise AssertionError("AttributeError expected")
except AttributeError:
    pass
assert "region" in e and "host" in e and "missing" not in e
"#);
}

#[test]
fn replace_copies_and_compares_by_value() {
    run(r#"
from dmon.streams import Event
e = Event(host="web1", metric=1.5)
f = e.replace(metric=3.0, state="ok")
assert e.metric == 1.5, "the original is unchanged"
assert f.metric == 3.0 and f.state == "ok" and f.host == "web1"
assert e._replace(metric=3.0, state="ok") == f
assert e != f and e == Event(host="web1", metric=1.5)
assert e.replace(host=None).host is None
assert f.to_dict() == {"host": "web1", "state": "ok", "metric": 3.0}
assert repr(f) == "Event(host='web1', state='ok', metric=3.0)", repr(f)
assert Event({"host": "x", "tags": ["t"]}).tags == ["t"]
assert Event('{"host": "j", "metric": 4}').metric == 4
"#);
}

#[test]
fn wrong_types_raise_clear_errors() {
    run(r#"
from dmon.streams import *
def raises(exc, f, text):
    try:
        f()
    except exc as e:
        assert text in str(e), str(e)
    else:
        raise AssertionError(f"{exc} expected")
raises(TypeError, lambda: Event(metric="abc"), "`metric` must be a number")
raises(TypeError, lambda: Event(host=5), "`host` must be a str")
raises(TypeError, lambda: Event(tags="a"), "`tags` must be a list")
raises(TypeError, lambda: when(5, printer()), "callable predicate")
raises(TypeError, lambda: average(2, 42), "child streams come last, and must be streams")
raises(TypeError, lambda: average(2, printer(), 42), "42 comes after a child stream")
raises(TypeError, lambda: average("two"), "`places` must be a number, not \"two\" (str)")
raises(ValueError, lambda: where("metric >"), "where(test, *children, else_=None): \"metric >\"")
raises(TypeError, lambda: printer("a", nope=1), "unexpected keyword argument `nope`")
raises(ValueError, lambda: email("not an address"), "invalid mail address")
raises(ValueError, lambda: email(), "at least one recipient")
"#);
}

#[test]
fn native_nodes_and_coroutines_compose_both_ways() {
    run(r#"
from dmon.streams import *
seen = []
@stream
def tagger(*targets):
    while True:
        e = yield
        send(e.replace(tags=["seen"]), *targets)

def collector():
    while True:
        e = yield
        seen.append(e)
sink = collector(); next(sink)

# coroutine inside a native node, native node as the coroutine's target
root = when(lambda e: e.metric > 1, tagger(average(1, printer("avg: ")), sink))
root.send(Event(host="a", metric=0.5))
root.send(Event(host="b", metric=3))
root.send({"host": "c", "metric": 5})
assert [e.host for e in seen] == ["b", "c"], seen
assert seen[0].tags == ["seen"]
def counts(node):
    c = node.counters()
    return (c["in"], c["out"], c["errors"])
assert counts(root) == (3, 2, 0), root.counters()
# What a coroutine sends on is its output.
assert counts(root.children[0]) == (2, 4, 0), root.children[0].counters()
assert root.kind == "when" and root.children[0].kind == "coroutine"
"#);
    let lines = console().0.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.starts_with("avg: ")
            && l.contains(r#""host":"b""#)
            && l.contains(r#""metric":3.0"#)),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("avg: ")
            && l.contains(r#""host":"c""#)
            && l.contains(r#""metric":4.0"#)),
        "{lines:?}"
    );
}

#[test]
fn errors_in_user_code_are_counted_on_their_node() {
    run(r#"
from dmon.streams import *
bad = when(lambda e: 1 / 0, printer())
bad.send(Event(host="a"))
bad.send(Event(host="b"))
c = bad.counters()
assert (c["in"], c["out"], c["errors"]) == (2, 0, 2), c

@stream
def finished(*targets):
    e = yield
node = finished()
node.send(Event(host="a"))
assert node.counters()["errors"] == 1
"#);
}

#[test]
fn roots_are_stream_valued_names_containing_stream() {
    let ns = run(r#"
from dmon.streams import *
import dmon.streams
from dmon import streams
def make_stream(): return printer()
class StreamHelper: pass
stream_threshold = 5
_private_stream = printer()
def gen():
    while True:
        yield
raw_stream = gen(); next(raw_stream)
main_stream = printer("a")
other = printer("not a root")
"#);
    Python::attach(|py| {
        let roots = loader::roots_of(ns.bind(py)).unwrap();
        let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["raw_stream", "main_stream"]);
        assert_eq!(roots[0].node.kind(), "coroutine");
    });
}

/// Every registered stream function is in `dmon.streams`, with the
/// registry's signature and docstring; nothing else is exported.
#[test]
fn dmon_streams_is_generated_from_the_registry() {
    run(r#"
import inspect, pydoc
import dmon.streams as ds
from dmon import folds
names = [n for _, family in ds._catalog for n in family]
assert len(names) == len(set(names)), names
assert sorted(ds.__all__) == sorted(names + ["Event", "Stream", "send", "coroutine", "stream", "StreamFunction", "folds"]), ds.__all__
assert ds.stream is ds.coroutine
for name in names:
    f = getattr(ds, name)
    first = f.__doc__.split("\n\n")[0]
    assert first.startswith(name + "(") and first.endswith(")"), first
    declared = inspect.signature(eval(f"lambda {first[len(name) + 1:-1]}: None"))
    assert inspect.signature(f) == declared, (name, inspect.signature(f), declared)
    assert "\nExample:\n    " in f.__doc__, f.__doc__
    assert f.__module__ == "dmon.streams", f
doc = pydoc.render_doc(ds.where)
assert "where(test, *children, else_=None)" in doc and "Example:" in doc, doc
for name in folds.__all__:
    assert getattr(folds, name).__doc__.startswith(f"{name}(events)"), name
"#);
}

/// `by` gives each key its own copy of a `@stream` coroutine (a new
/// generator, with its own local state) and of native nodes; user
/// functions and folds plug into native nodes.
#[test]
fn by_forks_coroutines_and_native_nodes_per_key() {
    run(r#"
from dmon.streams import *
from dmon import folds
seen = []
def collector():
    while True:
        e = yield
        seen.append((e.host, e.metric))
sink = collector(); next(sink)

@stream
def numbered(*targets):
    n = 0
    while True:
        e = yield
        n += 1
        send(e.replace(metric=n), *targets)

root = by("host", numbered(sink))
for h in ["a", "b", "a", "a", "b"]:
    root.send(Event(host=h))
assert seen == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)], seen
c = root.counters()
assert (c["in"], c["errors"], c["detail"]) == (5, 0, "forks 2"), c

# A window's list through a native fold, and a user function.
seen.clear()
means = fixed_event_window(3, smap(folds.mean, sink))
for m in [1, 2, 6, 10]:
    means.send(Event(host="w", metric=m))
assert seen == [("w", 3.0)], seen
seen.clear()
biggest = fixed_event_window(2, smap(lambda events: max(events, key=lambda e: e.metric), sink))
for m in [5, 1, 2, 7]:
    biggest.send(Event(host="x", metric=m))
assert seen == [("x", 5), ("x", 7)], seen

# match: a set (or list) of values means any of them.
seen.clear()
web = match("host", {"web1", "web2"}, sink)
for h in ["web1", "db1", "web2"]:
    web.send(Event(host=h, metric=0))
assert [h for h, _ in seen] == ["web1", "web2"], seen
"#);
}
