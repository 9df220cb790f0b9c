"""Riemann's deftests of smapcat, sflatten, exception-stream, pipe, changed
(:pairs?) and match (map patterns), ported from riemann/streams_test.clj.

Riemann's `test-stream` collects what a stream emits; here a `printer()` at
the end, or `watch=`, does. Riemann's bare numbers are events with that
metric.
"""
import re

from dmon import folds
from dmon.streams import *
from dmon.testing import at, run


def em(*metrics):
    return [{"metric": m} for m in metrics]


def metrics(events):
    return [e.metric for e in events]


def printed(tree, events, **kwargs):
    return run(tree, events, **kwargs).printed_events


def test_smapcat():
    """streams_test.clj smapcat-test: "doubles"."""
    tree = smapcat(lambda e: [e, e], printer())
    assert metrics(printed(tree, em(0, 1, 2, 3))) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_sflatten():
    """streams_test.clj sflatten-test: [[0 1 2 3] [4 5 6 7]] gives 0 … 7."""
    # dmon's lists come from a window; the children of sflatten get single
    # events, so counting each thing received gives 1 every time.
    flat = sflatten(smap(folds.count, printer()))
    out = run(fixed_event_window(4, flat), em(0, 1, 2, 3, 4, 5, 6, 7), watch=[flat])
    assert metrics(out.leaving(flat)) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert metrics(out.printed_events) == [1] * 8


def test_exception_stream_direct_fn():
    """streams_test.clj exception-stream-test: "direct fn"."""
    seen = []

    def record_then_fail(e):
        seen.append(e)
        raise RuntimeError("foo")

    tree = exception_stream(printer(), smap(record_then_fail))
    out = run(tree, [{"host": "hi"}])
    assert [e.host for e in seen] == ["hi"]
    assert len(out.printed_events) == 1
    e = out.printed_events[0]
    # dmon names its own events "dmon …": Riemann's "riemann exception".
    assert e.service == "dmon exception"
    assert e.state == "error"
    assert e.time == 0
    assert re.search(".*RuntimeError.*", e.description)
    # Riemann's tag is the Java class, java.lang.RuntimeException.
    assert set(e.tags) == {"exception", "RuntimeError"}
    # Counted on the failing node still.
    assert out.errors == 1


def test_exception_stream_scheduled_fn():
    """streams_test.clj exception-stream-test: "scheduled fn"."""
    tree = exception_stream(printer(), rate(1, smap(lambda e: 1 / 0)))
    assert printed(tree, [{"metric": 2}]) == []
    after = printed(tree, [{"metric": 2}, at(1)])
    assert [e.state for e in after] == ["error"]


def test_exception_stream_exception_handling():
    """streams_test.clj exception-stream-test: "exception handling takes care of Exception"."""

    def fail(e):
        raise Exception(e.host)

    tree = exception_stream(printer(), sdo(smap(fail)))
    assert len(printed(tree, [{"host": "boo!"}])) == 1


def test_pipe_one_stage():
    """streams_test.clj pipe-test: "One stage"."""
    # Riemann's `(pipe !)` is the marker alone; dmon's one stage is itself.
    assert metrics(printed(pipe(printer()), em(1, 2, 3))) == [1, 2, 3]


def test_pipe_chained_stages():
    """streams_test.clj pipe-test: "Chained stages"."""
    tree = pipe(
        smap(lambda e: e.replace(metric=e.metric + 1)),
        smap(lambda e: e.replace(metric=e.metric * 2)),
        printer(),
    )
    assert metrics(printed(tree, em(1, 2, 3))) == [4, 6, 8]


def test_pipe_multiple_markers():
    """streams_test.clj pipe-test: "Multiple markers"."""
    # dmon's pipe appends the next stage as each stage's last child only
    # (for splitp, its default stream); branches join by sharing one stream.
    joined = printer()
    tree = splitp(
        "<",
        "metric",
        (0.9, with_("state", "critical", joined)),
        (0.5, with_("state", "warning", joined)),
        with_("state", "ok", joined),
    )
    out = printed(tree, em(0.1, 0.7, 1.0))
    assert [(e.metric, e.state) for e in out] == [(0.1, "ok"), (0.7, "warning"), (1.0, "critical")]


def test_pipe_rebinding_a_marker():
    """streams_test.clj pipe-test: "Rebinding a marker"."""
    # The marker is a Clojure symbol rebound with let; a dmon stage is a
    # value, so what remains is the stage's effect: smap(-).
    tree = pipe(smap(lambda e: e.replace(metric=-e.metric)), printer())
    assert metrics(printed(tree, em(-1, 0, 1))) == [1, 0, -1]


def test_changed_with_previous_event_and_arbitrary_fn():
    """streams_test.clj changed-test: "with previous event and arbitrary fn" (:pairs? true)."""
    states = ["ok", "bad", "bad", "ok", "ok", "evil", "bad"]
    pair_of = smap(lambda pair: {"state": f"{pair[0].state} {pair[1].state}"}, printer())
    tree = changed(lambda e: e.state, pair_of, init="ok", pairs=True)
    out = printed(tree, [{"state": s} for s in states])
    # (partition 2 1 [ok bad ok evil bad])
    assert [e.state for e in out] == ["ok bad", "bad ok", "ok evil", "evil bad"]


def test_match_maps():
    """streams_test.clj match-test: "Maps", (match identity {:state #"^mi", :host "other"})."""
    # A regex matches via a function; Riemann's regex is false on nil,
    # where re.search(None) raises: hence the guard.
    starts_mi = lambda s: s is not None and re.search("^mi", s)
    tree = match(lambda e: e, {"state": starts_mi, "host": "other"}, printer())
    out = printed(tree, [{}, {"state": "migas"}, {"state": "migas", "host": "other"}])
    assert [(e.state, e.host) for e in out] == [("migas", "other")]
