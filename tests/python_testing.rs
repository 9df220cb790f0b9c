//! `dmon.testing.run` against the real embedded interpreter: outputs
//! captured in order, time under control, the given trees left untouched,
//! coroutines pushing into the run's context, and clear errors. Each test
//! runs Python assertions; a failing `assert` fails the test with its
//! traceback. (No server is bound: `run` needs none.)

use std::ffi::CString;

use dmon::python;
use pyo3::prelude::*;
use pyo3::types::PyDict;

fn run(code: &str) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| python::init().unwrap());
    Python::attach(|py| {
        let ns = PyDict::new(py);
        let code = CString::new(code).unwrap();
        if let Err(e) = py.run(&code, Some(&ns), None) {
            let tb = e
                .traceback(py)
                .and_then(|t| t.format().ok())
                .unwrap_or_default();
            panic!("python failed: {tb}{e}");
        }
    })
}

#[test]
fn outputs_come_back_in_order_and_mail_is_captured() {
    run(r#"
from dmon.streams import *
from dmon.testing import run
tree = average(2, where("metric > 5", printer("high: "), email("ops@example.com")), index())
out = run(tree, [
    {"host": "a", "metric": 9, "time": 1},
    {"host": "a", "metric": 1, "time": 2},   # average 5: not high
    {"host": "a", "metric": 20, "time": 3},  # average 10
])
assert [(kind, [e.metric for e in evs]) for _, kind, evs in out.outputs] == [
    ("printer", [9.0]), ("email", [9.0]), ("index", [9.0]),
    ("index", [5.0]),
    ("printer", [10.0]), ("email", [10.0]), ("index", [10.0]),
], out.outputs
assert out.printed == ['high: {"host":"a","time":1,"metric":9.0}', 'high: {"host":"a","time":3,"metric":10.0}'], out.printed
assert [[e.metric for e in mail] for mail in out.mailed] == [[9.0], [10.0]]
assert [e.metric for e in out.index] == [10.0]
assert out.counts == {'printer("high: ")': 2, 'email("ops@example.com")': 2, 'index()': 3}, out.counts
assert len(out) == 7 and [e.metric for e in out][:2] == [9.0, 9.0]
assert out.errors == 0
"#);
}

#[test]
fn time_follows_events_and_until_flushes_windows() {
    run(r#"
from dmon.streams import *
from dmon.testing import run
tree = rate(5, printer())
events = [{"host": "a", "metric": 10, "time": t} for t in (1, 2, 3, 4)]
assert run(tree, events).printed == []          # the interval ends at 6
out = run(tree, events, until=6)
assert [e.metric for e in out.printed_events] == [8.0] and out.now == 6
# at(t) moves the clock between events: the first interval reports alone.
from dmon.testing import at
out = run(tree, events[:2] + [at(6)] + [{"host": "a", "metric": 50, "time": 7}], until=11)
assert [e.metric for e in out.printed_events] == [4.0, 10.0], out.printed
# With until, time ends there, as at a clean shutdown: the rate reports the
# interval it is in (at the interval's end), a window forwards what it holds.
out = run(tree, events, until=4.5)
assert [(e.time, e.metric) for e in out.printed_events] == [(6, 8.0)], out.printed
out = run(fixed_time_window(60, smap(folds.count, printer())), events, until=10)
assert [e.metric for e in out.printed_events] == [4], out.printed
assert run(fixed_time_window(60, smap(folds.count, printer())), events).printed == []
# Index expiry follows the virtual clock too.
out = run(index(), [{"host": "a", "service": "x", "ttl": 10, "time": 100}], until=200)
# The expired event comes back through the roots, as in the server.
assert out.index == [] and [e.state for e in out.indexed] == [None, "expired"], out.indexed
out = run(index(), [{"host": "a", "service": "x", "ttl": 10, "time": 100}], until=105)
assert [e.host for e in out.index] == ["a"]
"#);
}

#[test]
fn the_given_tree_is_copied_fresh_for_each_run() {
    run(r#"
from dmon.streams import *
from dmon.testing import run
tree = average(2, printer())
first = run(tree, [{"metric": 10, "time": 1}])
second = run(tree, [{"metric": 20, "time": 1}])
# Each run starts from empty state: no 10 left over in the second average.
assert [e.metric for e in second.printed_events] == [20.0], second.printed
assert tree.counters()["in"] == 0
"#);
}

#[test]
fn watched_nodes_report_what_they_emitted() {
    run(r#"
from dmon.streams import *
from dmon.testing import run
avg = average(2, index())
tree = where("metric > 1", avg)
out = run(tree, [{"host": "a", "metric": m, "time": t} for t, m in ((1, 2), (2, 0), (3, 4))], watch=[avg])
assert [e.metric for e in out.leaving(avg)] == [2.0, 3.0]
try:
    out.leaving(tree)
except ValueError as e:
    assert "was not watched" in str(e)
else:
    raise AssertionError("leaving() of an unwatched node")
try:
    run(tree, [], watch=[printer()])
except ValueError as e:
    assert "not a node of the tree" in str(e)
else:
    raise AssertionError("watching a node outside the tree")
"#);
}

#[test]
fn coroutines_send_into_the_run_and_a_module_runs_all_its_roots() {
    run(r#"
import types
from dmon.streams import *
from dmon.testing import run

@stream
def doubled(*targets):
    while True:
        e = yield
        send(e.replace(metric=e.metric * 2), *targets)

out = run(doubled(printer("d: ")), [{"metric": 3, "time": 5}])
assert [e.metric for e in out.printed_events] == [6], out.printed

module = types.ModuleType("mystreams")
exec('from dmon.streams import *\nprint_stream = printer("p: ")\nindex_stream = index()\nhelper = 1', module.__dict__)
out = run(module, [{"host": "h", "metric": 1, "time": 1}])
assert sorted(out.counts) == ['index()', 'printer("p: ")'], out.counts
# A plain primed generator cannot be copied: the run says so per event
# and the generator itself is never driven by it.
def plain(*targets):
    while True:
        e = yield
        send(e, *targets)
gen = plain(printer("g: "))
next(gen)
out = run(gen, [{"metric": 1, "time": 1}])
assert out.errors == 1 and out.printed == [], out
assert gen.gi_frame is not None
out = run([printer("x: "), printer("y: ")], [{"metric": 1}])
assert out.printed == ['x: {"time":0.0,"metric":1}', 'y: {"time":0.0,"metric":1}'], out.printed
"#);
}

#[test]
fn errors_in_user_python_are_counted_and_bad_arguments_are_clear() {
    run(r#"
from dmon.streams import *
from dmon.testing import run
out = run(where(lambda e: 1 / 0, printer()), [{"metric": 1, "time": 1}, {"metric": 2, "time": 2}])
assert out.errors == 2 and out.printed == [] and "2 errors" in repr(out), repr(out)
for bad, message in ((lambda: run(printer(), 5), "must be a list"),
                     (lambda: run(types_module, []), "has no streams")):
    try:
        bad()
    except (TypeError, ValueError) as e:
        assert message in str(e), str(e)
    else:
        raise AssertionError(message)
"#
    .replace("types_module", "__import__('types').ModuleType('empty')")
    .as_str());
}
