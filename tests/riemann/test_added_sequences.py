"""Riemann's deftests of smapcat, sflatten, changed (:pairs?) and match
(map patterns), ported from riemann/streams_test.clj.

Riemann's `test-stream` collects what a stream emits; here a `printer()` at
the end, or `watch=`, does. Riemann's bare numbers are events with that
metric.
"""
import re

from dmon import folds
from dmon.streams import *
from dmon.testing import run


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
