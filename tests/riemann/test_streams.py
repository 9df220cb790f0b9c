"""Riemann's streams_test.clj, ported deftest by deftest, in Riemann's order.

Run with `dmon test tests/riemann/`. Each test names its Riemann deftest in
its docstring and asserts what Riemann asserts. Riemann's test helpers
(run-stream, run-stream-intervals, ...) are in riemann_port.py, which says
how they map onto dmon's run(). Besides:

- Riemann streams take any value; dmon streams take events, so a test
  feeding numbers feeds events with those metrics, and keywords (`:a`)
  become strings.
- dmon gives an event without a time the clock's time; Riemann leaves it
  without one. An expected event without `:time` is compared without the
  time (`shaped`).
- Riemann's `{:tags []}` and `{}` are one event in dmon (no tags).

Riemann deftests ported in the files beside this one, with the functions
added after the rest:
- smapcat-test, sflatten-test, exception-stream-test, pipe-test, the
  `:pairs?` part of changed-test and the map part of match-test: in
  test_streams_composition.py;
- interpolate-constant-test, fold-interval-test, fold-interval-metric-test,
  top-test, fixed-offset-time-window-test, predict-linear-test and
  clock-skew-test: in test_streams_time.py.

Riemann deftests not ported, and why:
- smap*-test: no dmon `smap*`; dmon's `smap` drops None, as Riemann's `smap`
  (ported in test_smap_test).
- execute-on-test: Clojure executors; dmon streams run on one thread per
  tree and start none.
- where*-return-value, and the "return values"/"return value" parts of
  tagged-all-test, tagged-any-test and where-test: a Clojure stream
  function's return value; a dmon stream returns nothing to its caller.
- The "evaluates children once" parts of where*-test, where-test and
  splitp-test, and "functions as values" of where-test: Clojure macro
  evaluation; dmon's children are built once, by Python, before any event.
- by-builder-test: the `by-builder` macro's bindings have no dmon form
  (dmon's `by` with a key function is by-single/by-multiple, ported).
- part-time-simple-test: no dmon `part-time-simple` (an internal of
  Riemann's windows, not a stream function in dmon).
"""
import random
import re

from dmon.streams import *
from dmon.testing import run, at

from riemann_port import (approx_equal, assert_stream, check_stream_intervals, collect, em, evs,
                          metrics, plain, run_stream, run_stream_intervals)


# --- streams_test.clj ----------------------------------------------------------


def test_smap_test():
    """smap-test"""
    # "increment"
    assert metrics(run_stream(lambda c: smap(lambda e: e.replace(metric=e.metric + 1), c),
                              em(6, 3, -1))) == [7, 4, 0]
    # "ignores nil values": f returning None forwards nothing (Riemann's
    # inputs [1 nil false 3] through identity; dmon inputs are events, so the
    # None comes from f).
    out = run_stream(lambda c: smap(lambda e: None if e.service == "nil" else e, c),
                     [{"metric": 1}, {"service": "nil"}, {"metric": 0}, {"metric": 3}])
    assert metrics(out) == [1, 0, 3]


def test_sdo_test():
    """sdo-test"""
    vals1, vals2 = [], []
    run(sdo(collect(vals1), collect(vals2)), em(1, 2, 3), start=0)
    assert metrics(vals1) == [1, 2, 3]
    assert metrics(vals2) == [1, 2, 3]
    run(sdo(collect(vals1)), em(4, 5, 6), start=0)
    assert metrics(vals1) == [1, 2, 3, 4, 5, 6]
    run(sdo(), em(6, 7, 8), start=0)
    assert metrics(vals1) == [1, 2, 3, 4, 5, 6]
    assert metrics(vals2) == [1, 2, 3]


def metric_sum(acc, e):
    return {"metric": acc["metric"] + e["metric"]}


def test_sreduce_test():
    """sreduce-test"""
    # "explicit value"
    assert metrics(run_stream(lambda c: sreduce(metric_sum, c, init={"metric": 1}),
                              em(1, 2, 3))) == [2, 4, 7]
    # "implicit value"
    assert metrics(run_stream(lambda c: sreduce(metric_sum, c), em(1, 2, 3, 4))) == [3, 6, 10]


def test_counter_test():
    """counter-test"""
    # "passes through events without metrics"
    inputs = [{}, {"state": "expired"}, {"service": "foo"}]
    assert_stream(run_stream(lambda c: counter(c), inputs), inputs)
    # "counts"
    assert_stream(run_stream(lambda c: counter(c), [{"metric": 2}, {}, {"metric": 3}]),
                  [{"metric": 2}, {}, {"metric": 5}])
    assert_stream(run_stream(lambda c: counter(c, init=100), [{"metric": 2}, {}, {"metric": 3}]),
                  [{"metric": 102}, {}, {"metric": 105}])
    # "resets"
    assert_stream(run_stream(lambda c: counter(c, init=100),
                             [{"metric": 1}, {"metric": 200, "tags": ["reset"]}, {"metric": 5}]),
                  [{"metric": 101}, {"metric": 200, "tags": ["reset"]}, {"metric": 205}])


def test_match_test():
    """match-test (without its map pattern: another helper's)"""
    # Regular strings
    assert_stream(run_stream(lambda c: match("service", "foo", c),
                             [{}, {"service": "bar"}, {"service": "foo"}]),
                  [{"service": "foo"}])
    # Sets (a list in dmon)
    assert_stream(run_stream(lambda c: match("metric", [0, 2], c),
                             [{}, {"metric": 1}, {"metric": 2}]),
                  [{"metric": 2}])
    # Regexen
    assert_stream(run_stream(lambda c: match("state", re.compile(r"^mi").search, c),
                             [{}, {"state": "migas"}, {"state": "other breakfast foods"}]),
                  [{"state": "migas"}])
    # Functions: (match identity 2) over 1 2 3
    assert metrics(run_stream(lambda c: match(lambda e: e.metric, 2, c), em(1, 2, 3))) == [2]
    # Nils
    assert_stream(run_stream(lambda c: match("host", None, c),
                             [{}, {"host": None}, {"host": "foo"}]),
                  [{}, {"host": None}])


def test_untag_test():
    """untag-test"""
    inputs = [{},
              {"service": "a", "tags": []},
              {"service": "a", "tags": ["foo"]},
              {"service": "b", "tags": ["foo", "bar", "baz"]}]
    # "single tag"
    assert_stream(run_stream(lambda c: untag("foo", c), inputs),
                  [{"tags": []},
                   {"service": "a", "tags": []},
                   {"service": "a", "tags": []},
                   {"service": "b", "tags": ["bar", "baz"]}])
    # "multiple tags"
    assert_stream(run_stream(lambda c: untag(["foo", "bar"], c), inputs),
                  [{"tags": []},
                   {"service": "a", "tags": []},
                   {"service": "a", "tags": []},
                   {"service": "b", "tags": ["baz"]}])


def test_tag_test():
    """tag-test"""
    # Single tag
    assert_stream(run_stream(lambda c: tag("foo", c),
                             [{}, {"service": "a", "tags": ["foo"]},
                              {"service": "b", "tags": ["bar", "baz"]}]),
                  [{"tags": ["foo"]}, {"service": "a", "tags": ["foo"]},
                   {"service": "b", "tags": ["foo", "bar", "baz"]}])
    # Multiple tags
    assert_stream(run_stream(lambda c: tag(["foo", "bar"], c),
                             [{}, {"service": "a", "tags": ["foo"]},
                              {"service": "b", "tags": ["foo", "baz"]}]),
                  [{"tags": ["foo", "bar"]}, {"service": "a", "tags": ["foo", "bar"]},
                   {"service": "b", "tags": ["foo", "bar", "baz"]}])


def test_tagged_all_test():
    """tagged-all-test (its "return values": Clojure only)"""
    assert_stream(run_stream(lambda c: tagged_all(["kitten", "cat"], c),
                             [{"tags": ["kitten", "cat"]}, {"tags": ["kitten", "cat", "meow"]},
                              {"tags": ["dog", "cat"]}, {"tags": ["cat"]}, {"tags": []}, {}]),
                  [{"tags": ["kitten", "cat"]}, {"tags": ["kitten", "cat", "meow"]}])
    assert_stream(run_stream(lambda c: tagged_all("meow", c),
                             [{"tags": ["meow", "bark"]}, {"tags": ["meow"]}, {"tags": ["bark"]}, {}]),
                  [{"tags": ["meow", "bark"]}, {"tags": ["meow"]}])


def test_tagged_any_test():
    """tagged-any-test (its "return values": Clojure only)"""
    assert_stream(run_stream(lambda c: tagged_any(["kitten", "cat"], c),
                             [{"tags": ["kitten", "cat"]}, {"tags": ["cat", "dog"]},
                              {"tags": ["kitten"]}, {"tags": ["dog"]}, {"tags": []}, {}]),
                  [{"tags": ["kitten", "cat"]}, {"tags": ["cat", "dog"]}, {"tags": ["kitten"]}])
    assert_stream(run_stream(lambda c: tagged_any("meow", c),
                             [{"tags": ["meow", "bark"]}, {"tags": ["meow"]}, {"tags": ["bark"]}, {}]),
                  [{"tags": ["meow", "bark"]}, {"tags": ["meow"]}])


def above(threshold):
    """Riemann's `sup`: a predicate, threshold < metric."""
    return lambda e: threshold < e.metric


def test_split_star_test():
    """split*-test (dmon's split takes predicates, as split*)"""
    # "with one branch": (split* identity) over [true false nil 2]; the
    # truthy metrics pass.
    assert metrics(run_stream(lambda c: split((lambda e: e.metric, c)),
                              [{"metric": 1}, {}, {"metric": 2}])) == [1, 2]
    # "with a default stream"
    res = []
    run(split((above(10), with_("state", "critical", collect(res))),
              (above(5), with_("state", "warn", collect(res))),
              with_("state", "ok", collect(res))),
        em(15, 8, 2), start=0)
    assert_stream(res, [{"metric": 15, "state": "critical"}, {"metric": 8, "state": "warn"},
                        {"metric": 2, "state": "ok"}])
    # "with no default stream"
    res = []
    run(split((above(10), with_("state", "critical", collect(res))),
              (above(5), with_("state", "warn", collect(res)))),
        em(15, 8, 2), start=0)
    assert_stream(res, [{"metric": 15, "state": "critical"}, {"metric": 8, "state": "warn"}])


def test_split_test():
    """split-test (Riemann's implicit rewrites are dmon's query strings)"""
    # "with a default stream"
    res = []
    run(split(("metric > 10", with_("state", "critical", collect(res))),
              ("metric > 5", with_("state", "warn", collect(res))),
              with_("state", "ok", collect(res))),
        em(15, 8, 2), start=0)
    assert_stream(res, [{"metric": 15, "state": "critical"}, {"metric": 8, "state": "warn"},
                        {"metric": 2, "state": "ok"}])
    # "evaluates streams once": one stateful child sees every event (a
    # counter stands for Riemann's closure over an atom).
    res = []
    run(split(("true", counter(collect(res)))), em(1, 1, 1), start=0)
    assert metrics(res) == [1, 2, 3]


def test_splitp_test():
    """splitp-test (its "evaluates child streams once": Clojure only)"""
    # "basics": (splitp <= metric 10 ...) tests (<= 10 metric)
    res = []
    run(splitp("<=", "metric",
               (10, with_("state", "crit", collect(res))),
               (5, with_("state", "warn", collect(res))),
               with_("state", "ok", collect(res))),
        em(15, 8, 2), start=0)
    assert_stream(res, [{"metric": 15, "state": "crit"}, {"metric": 8, "state": "warn"},
                        {"metric": 2, "state": "ok"}])
    # "Without a default": Riemann throws IllegalArgumentException; dmon's
    # splitp counts the event as an error of the node (documented).
    res = []
    r = run(splitp("=", "metric", (0, collect(res))), [{"metric": 1}], start=0)
    assert res == []
    assert r.errors == 1


def test_where_star_test():
    """where*-test (dmon's where with a predicate; `expired` for where* expired?)"""
    assert metrics(run_stream(lambda c: when(lambda e: e.metric, c),
                              [{"metric": 1}, {}, {"metric": 2}])) == [1, 2]
    assert_stream(run_stream(lambda c: expired(c), [{"time": -1, "ttl": 0.5}, {"time": 0, "ttl": 1}]),
                  [{"time": -1, "ttl": 0.5}])
    # Complex closure with else clause
    good, bad = [], []
    run(where(lambda e: e.service == "good" or 2 < e.metric, collect(good), else_=collect(bad)),
        [{"service": "good", "metric": 0}, {"service": "bad", "metric": 0}, {"metric": 1},
         {"service": "bad", "metric": 1}, {"service": "bad", "metric": 3}], start=0)
    assert_stream(good, [{"service": "good", "metric": 0}, {"service": "bad", "metric": 3}])
    assert_stream(bad, [{"service": "bad", "metric": 0}, {"metric": 1},
                        {"service": "bad", "metric": 1}])


TAG_EVENTS = [{}, {"tags": []}, {"tags": ["blah"]}, {"tags": ["foo"]}, {"tags": ["foo", "bar"]}]


def test_where_test():
    """where-test"""
    # "field": (or (state "ok" "good") (= "weird" state))
    r = run_stream(lambda c: where('state = "ok" or state = "good" or state = "weird"', c),
                   [{"state": "ok"}, {"state": "good"}, {"state": "weird"}, {"state": "error"}])
    assert_stream(r, [{"state": "ok"}, {"state": "good"}, {"state": "weird"}])
    # "event binding": (= event 2) over 1 2 3 2
    assert metrics(run_stream(lambda c: where(lambda e: e.metric == 2, c), em(1, 2, 3, 2))) == [2, 2]
    # "regex": (service #"^foo")
    assert_stream(run_stream(lambda c: where(lambda e: e.service is not None
                                             and re.search(r"^foo", e.service), c),
                             [{}, {"service": "foo"}, {"service": "food"}]),
                  [{"service": "foo"}, {"service": "food"}])
    # "functions": (and metric (even? metric))
    assert_stream(run_stream(lambda c: where(lambda e: e.metric is not None and e.metric % 2 == 0, c),
                             [{}, {"metric": 1}, {"metric": 2}]),
                  [{"metric": 2}])
    # "using sets as predicates"
    assert_stream(run_stream(lambda c: where(lambda e: e.service in {"service1", "service2"}, c),
                             [{"service": "service1"}, {"service": "service2"},
                              {"service": "service-doesnt-match"}]),
                  [{"service": "service1"}, {"service": "service2"}])
    # "variable"
    regex = re.compile("cat")
    assert_stream(run_stream(lambda c: where(lambda e: regex.search(e.service), c),
                             [{"service": "kitten"}, {"service": "cats"}]),
                  [{"service": "cats"}])
    # "tagged (one tag)", "tagged-all (one tag)", "tagged-any (one tag)"
    for query in ['tagged "foo"', 'tagged "foo"', 'tagged "foo"']:
        assert_stream(run_stream(lambda c: where(query, c), TAG_EVENTS),
                      [{"tags": ["foo"]}, {"tags": ["foo", "bar"]}])
    # "tagged (multiple tags)", "tagged-all (multiple tags)": every tag
    for query in ['tagged "foo" and tagged "bar"'] * 2:
        assert_stream(run_stream(lambda c: where(query, c),
                                 TAG_EVENTS + [{"tags": ["foo", "bar", "baz"]}]),
                      [{"tags": ["foo", "bar"]}, {"tags": ["foo", "bar", "baz"]}])
    # "tagged-any (multiple tags)"
    assert_stream(run_stream(lambda c: where('tagged "foo" or tagged "bar"', c),
                             TAG_EVENTS + [{"tags": ["baz", "bar"]}]),
                  [{"tags": ["foo"]}, {"tags": ["foo", "bar"]}, {"tags": ["baz", "bar"]}])
    # "else"
    a, b = [], []
    run(where(lambda e: e.service is not None and re.search("a", e.service),
              collect(a), else_=collect(b)),
        [{"service": "cat"}, {"service": "dog"}, {"service": None}, {"service": "badger"}], start=0)
    assert [e.service for e in a] == ["cat", "badger"]
    assert [e.service for e in b] == ["dog", None]


def test_default_kv():
    """default-kv"""
    out = run_stream(lambda c: default("service", "foo", c),
                     [{"service": None}, {"service": "foo"}, {"service": "bar", "test": "baz"}])
    assert_stream(out, [{"service": "foo"}, {"service": "foo"}, {"service": "bar", "test": "baz"}])


def test_default_map():
    """default-map"""
    out = run_stream(lambda c: default({"service": "foo", "state": None}, c),
                     [{"service": None}, {"service": "foo"},
                      {"service": "bar", "host": "baz", "state": "evil"}])
    assert [(e.service, e.state) for e in out[:2]] == [("foo", None), ("foo", None)]
    assert (out[2].service, out[2].host, out[2].state) == ("bar", "baz", "evil")


def test_with_kv():
    """with-kv"""
    out = run_stream(lambda c: with_("service", "foo", c),
                     [{"service": None}, {"service": "foo"}, {"service": "bar", "test": "baz"}])
    assert_stream(out, [{"service": "foo"}, {"service": "foo"}, {"service": "foo", "test": "baz"}])
    # A list (here from a window): dmon's with_ takes a list's events one by
    # one (documented: only smap, sdo, windows' consumers and outputs take
    # lists whole), where Riemann's `with` maps over the list and forwards a
    # list.
    out = run_stream(lambda c: fixed_event_window(1, with_("service", "foo", c)),
                     [{"service": "bar", "test": "baz"}])
    assert_stream(out, [{"service": "foo", "test": "baz"}])


def test_with_map():
    """with-map"""
    inputs = [{"service": None}, {"service": "foo"},
              {"service": "bar", "test": "baz", "state": "evil"}]
    out = run_stream(lambda c: with_({"service": "foo", "state": None}, c), inputs)
    assert [(e.service, e.state) for e in out] == [("foo", None)] * 3
    out = run_stream(lambda c: with_({}, c), [{"service": "bar", "test": "baz"}])
    assert out[0].service == "bar"


@coroutine
def key_checker(seen, fields):
    """Riemann's by-tests' child: remembers the first value of `fields` it
    sees and records (first, this) for every event, one per fork."""
    first = None
    while True:
        e = yield
        values = tuple(e[f] for f in fields)
        if first is None:
            first = values
        seen.append((first, values))


def test_by_single():
    """by-single"""
    seen = []
    events = [{"host": h} for h in ["a", "a", "b", "a", "c", "b"]]
    run(by("host", key_checker(seen, ["host"])), events, start=0)
    assert len(seen) == len(events)
    assert all(first == this for first, this in seen)


def test_by_multiple():
    """by-multiple"""
    seen = []
    pairs = [("1", "a"), ("1", "b"), ("1", "a"), ("2", "a"), ("2", "a"), ("1", "a"), ("2", "a"),
             ("1", "b")]
    events = [{"host": h, "service": s} for h, s in pairs]
    run(by(["host", "service"], key_checker(seen, ["host", "service"])), events, start=0)
    assert len(seen) == len(events)
    assert all(first == this for first, this in seen)


BRANCHES_BUILT = []


@coroutine
def counted_branch(*targets):
    """A child that records each time a copy of it starts."""
    BRANCHES_BUILT.append(1)
    while True:
        e = yield
        send(e, *targets)


def test_by_evaluates_children_once_per_branch():
    """by-evaluates-children-once-per-branch"""
    s = by("metric", counted_branch())
    BRANCHES_BUILT.clear()
    run(s, em(1), start=0)
    assert len(BRANCHES_BUILT) == 1
    BRANCHES_BUILT.clear()
    run(s, em(1, 2), start=0)
    assert len(BRANCHES_BUILT) == 2
    BRANCHES_BUILT.clear()
    run(s, em(1, 2, 1), start=0)
    assert len(BRANCHES_BUILT) == 2


def test_fill_in_test():
    """fill-in-test"""
    assert run_stream_intervals(lambda c: fill_in(0.01, {"metric": 0}, c), []) == []
    # Quick succession
    quick = [x for e in em(1, 2, 3) for x in (e, None)][:-1]
    assert metrics(run_stream_intervals(lambda c: fill_in(0.01, {"metric": 0}, c), quick)) == [1, 2, 3]
    # With a gap and expiry
    out = run_stream_intervals(lambda c: fill_in(0.05, {"metric": 0}, c),
                               [{"metric": 1}, 0.06,
                                {"metric": 2}, None,
                                {"metric": 3}, 0.08,
                                {"metric": 4, "state": "expired"}, 0.06,
                                {"metric": 5}])
    assert metrics(out) == [1, 0, 2, 3, 0, 4, 5]


def test_fill_in_last_test():
    """fill-in-last-test"""
    assert run_stream_intervals(lambda c: fill_in_last(0.01, {"metric": 0}, c), []) == []
    # Quick succession
    quick = [x for e in evs({"host": "foo", "service": "bar"}, 1, 2, 3) for x in (e, None)][:-1]
    out = run_stream_intervals(lambda c: fill_in_last(0.01, {"metric": 0}, c), quick)
    assert metrics(out) == [1, 2, 3]
    assert [e.host for e in out] == ["foo", "foo", "foo"]
    assert [e.service for e in out] == ["bar", "bar", "bar"]
    # With a gap and expiry
    out = run_stream_intervals(lambda c: fill_in_last(0.05, {"metric": 0}, c),
                               [{"host": "a", "metric": 1}, 0.06,
                                {"host": "b", "metric": 2}, None,
                                {"host": "c", "metric": 3}, 0.08,
                                {"host": "d", "metric": 4, "state": "expired"}, 0.06,
                                {"host": "e", "metric": 5}])
    assert metrics(out) == [1, 0, 2, 3, 0, 4, 5]
    assert [e.host for e in out] == ["a", "a", "b", "c", "c", "d", "e"]


def test_ddt_immediate_test():
    """ddt-immediate-test"""
    assert run_stream(lambda c: ddt(c), []) == []
    # Ignore stream without metrics
    assert run_stream(lambda c: ddt(c), [{}, {}, {}, {}]) == []
    # Do nothing the first time
    assert run_stream(lambda c: ddt(c), [{"metric": 1, "time": 0}]) == []
    # Differentiate
    assert_stream(run_stream(lambda c: ddt(c),
                             [{"metric": 0, "time": 0}, {"metric": 0, "time": 1},
                              {"metric": 2, "time": 2}, {"metric": -4, "time": 4}]),
                  [{"metric": 0, "time": 1}, {"metric": 2, "time": 2}, {"metric": -3, "time": 4}])


def test_ddt_interval_test_quick_burst():
    """ddt-interval-test: "Quick burst without crossing interval\""""
    out = run_stream_intervals(lambda c: ddt(0.1, c),
                               [{"metric": 1}, None, {"metric": 2}, None, {"metric": 3}])
    assert metrics(out) == []


def test_ddt_interval_test_one_event_per_interval():
    """ddt-interval-test: "1 event per interval\""""
    # Documented difference (dmon.testing.run): an event moves run()'s clock
    # to its time before it is sent. Riemann's run-stream-intervals sends
    # {:time 1} at clock 0.99, before the report at 1, which then gives
    # [{:time 1 :metric 1} {:time 2 :metric -5}]; here the report at 1 comes
    # first and sees no new event (0), the one at 2 sees (1, 0) after (0, -1).
    check_stream_intervals(lambda c: ddt(1, c),
                           [{"time": 0, "metric": -1}, 0.99,
                            {"time": 1, "metric": 0}, 1,
                            {"time": 2, "metric": -5}, 1],
                           [{"time": 1, "metric": 0}, {"time": 2, "metric": 1}])


def test_ddt_interval_test_n_events_per_interval():
    """ddt-interval-test: "n events per interval\""""
    # The same difference as above: each event arrives at its own time, so
    # the report at 1 is taken between (0, -1) and (0.5, 100), and the one at
    # 2 between (0.5, 100) and (1, 1). Riemann's, with (1, 1) and (2, -3)
    # sent before their reports: [{:time 1 :metric 2} {:time 2 :metric -4}].
    check_stream_intervals(lambda c: ddt(1, c),
                           [{"time": 0, "metric": -1}, 0.01,
                            {"time": 0.5, "metric": 100}, 0.5,
                            {"time": 1, "metric": 1}, 0.5,
                            {"time": 1.5, "metric": None}, 0.5,  # Ignored
                            {"time": 2, "metric": -3}, 0.5],
                           [{"time": 1, "metric": 202}, {"time": 2, "metric": -198}])


def test_ddt_interval_test_emits_zeroes():
    """ddt-interval-test: "emits zeroes when no events arrive in an interval\""""
    check_stream_intervals(lambda c: ddt(2, c),
                           [{"time": 0, "metric": 0}, 1,
                            {"time": 1, "metric": 1}, 2,
                            {"time": 3, "metric": 2}, 3],
                           [{"time": 2, "metric": 1}, {"time": 4, "metric": 0.5},
                            {"time": 6, "metric": 0}])


def test_rate_slow_even():
    """rate-slow-even"""
    interval, intervals, gen_rate = 1, 5, 10
    total = gen_rate * intervals
    gen_period = interval / gen_rate
    inputs, now = [], 0
    for k in range(1, total + 1):
        # Riemann's times are exact ratios (k/10); rounding keeps them so.
        now = round(k * gen_period, 9)
        inputs.append({"metric": 1, "time": now})
    out = []
    run(rate(interval, collect(out)), inputs, start=0, until=round(now + gen_period, 9))
    o = metrics(out)
    # All events recorded
    assert approx_equal(total, sum(o)), o
    # Middle events should have the correct rate.
    assert all(approx_equal(gen_rate, m) for m in o[1:-1])
    # First and last events should be complementary
    first_last = o[0] + o[-1]
    assert approx_equal(2 * gen_rate, first_last) or approx_equal(gen_rate, first_last)


def test_rate_threaded():
    """rate-threaded (one thread: dmon's run feeds one tree in order)"""
    interval, total = 2.5, 10000
    out = []
    run(rate(interval, collect(out)), [{"metric": 1, "time": 0}] * total, start=0, until=interval)
    assert out[-1].metric == total / interval


def test_rate_without_input():
    """rate-without-input"""
    check_stream_intervals(lambda c: rate(1, c),
                           [{"metric": 1, "service": "foo"}, 0.5,
                            {"metric": 1, "service": "bar"}, 0.5,
                            {"metric": 1, "service": "baz", "ttl": 3}, 3,
                            {"state": "expired"}],
                           [{"time": 1, "metric": 2, "service": "bar"},
                            {"time": 2, "metric": 1, "service": "baz", "ttl": 3},
                            {"time": 3, "metric": 0, "service": "baz", "ttl": 2},
                            {"time": 4, "metric": 0, "service": "baz", "ttl": 1}])


def test_rate_expiration():
    """rate-expiration"""
    check_stream_intervals(lambda c: rate(1, c), [{"time": 0, "metric": 1, "ttl": 3}, 5],
                           [{"time": 1, "metric": 1, "ttl": 3},
                            {"time": 2, "metric": 0, "ttl": 2},
                            {"time": 3, "metric": 0, "ttl": 1}])


def states(*names):
    return [{"state": s} for s in names]


def test_changed_test():
    """changed-test (without `:pairs?`: another helper's)"""
    # ":state"
    assert_stream(run_stream(lambda c: changed("state", c),
                             states("ok", "bad", "bad", "ok", "ok", "ok", "evil", "bad")),
                  states("ok", "bad", "ok", "evil", "bad"))
    # ":state with :init"
    assert_stream(run_stream(lambda c: changed("state", c, init="ok"),
                             states("ok", "bad", "bad", "ok", "ok", "evil", "bad")),
                  states("bad", "ok", "evil", "bad"))


def raise_error(event):
    raise Exception("boo!")


def test_changed_with_exception_test():
    """changed-with-exception-test"""
    r = run(changed("state", smap(raise_error)), [{"state": "critical"}], start=0)
    assert r.errors == 1


@coroutine
def state_checker(seen):
    while True:
        e = yield
        seen.append(e)


def test_changed_state_test():
    """changed-state-test"""
    seen = []
    events = [{"host": h, "service": s, "state": st}
              for h, s, st in [("1", "1", "1"), ("2", "1", "1"), ("1", "1", "1"), ("1", "1", "2"),
                               ("2", "1", "2"), ("2", "2", "1"), ("2", "1", "1")]]
    run(changed_state(state_checker(seen)), events, start=0)
    assert len(seen) == 6
    # Riemann's child is one copy per host and service (changed-state is
    # `(by [:host :service] (changed :state ...))`); dmon's changed_state is
    # one node with a map (documented), so its child sees every key: the
    # per-key checks group by key.
    by_key = {}
    for e in seen:
        by_key.setdefault((e.host, e.service), []).append(e.state)
    for key, key_states in by_key.items():
        assert all(a != b for a, b in zip(key_states, key_states[1:])), key


def test_over_test():
    """over-test"""
    assert metrics(run_stream(lambda c: over(1.5, c), em(0.5, 1, 1.5, 2, 2.5))) == [2, 2.5]


def test_under_test():
    """under-test"""
    assert metrics(run_stream(lambda c: under(1.5, c), em(0.5, 1, 1.5, 2, 2.5))) == [0.5, 1]


def test_ewma_timeless_test():
    """ewma-timeless-test"""
    assert metrics(run_stream(lambda c: ewma_timeless(0, c), em(1, 10, 20, -100, 4))) == [0, 0, 0, 0, 0]
    assert metrics(run_stream(lambda c: ewma_timeless(1, c), em(5, 13, 1, -10, 3))) == [5, 13, 1, -10, 3]
    assert metrics(run_stream(lambda c: ewma_timeless(0.5, c), em(1, 1, 1, 1, 1))) == [
        1 / 2, 3 / 4, 7 / 8, 15 / 16, 31 / 32]


def test_ewma_test():
    """ewma-test"""
    seconds = 50
    converging = [{"metric": 1, "time": n + 1} for n in range(seconds)]
    for halflife, settled, zero_times in [(1, 10, [1, 2]), (2, 15, [2, 4]), (5, 40, [5, 10])]:
        # Generate enough events to allow the means to converge
        out = run_stream(lambda c: ewma(halflife, c), converging)
        assert all(approx_equal(1, m) for m in metrics(out[settled:])), halflife
        # Verify halflives with spaced out :metric 0 events
        out = run_stream(lambda c: ewma(halflife, c),
                         converging + [{"metric": 0, "time": seconds + t} for t in zero_times])
        assert approx_equal(1 / 2, out[-2].metric), halflife
        assert approx_equal(1 / 4, out[-1].metric), halflife
    # Verify that metrics are weighted by :time, regardless of order of arrival
    check_stream_intervals(lambda c: ewma(1, c),
                           [{"metric": 1, "time": 0}, 1, {"metric": 1, "time": 2}, 1,
                            {"metric": 1, "time": 1}, 1],
                           [{"metric": 0.5, "time": 0}, {"metric": 0.625, "time": 2},
                            {"metric": 0.875, "time": 2}])


def test_throttle_test():
    """throttle-test"""
    out = run_stream_intervals(lambda c: throttle(3, 2, c),
                               [{"state": "1"}, 0,
                                {"state": "2"}, 0,
                                {"state": "3"}, 1,  # t = 0
                                {"state": "4"}, 1,  # t = 1
                                {"state": "5"}, 1,  # t = 2
                                {"state": "expired"}, 0,  # t = 3
                                {"state": "expired"}, 0,  # t = 3
                                {"state": "expired"}, 2,  # t = 3
                                {"state": "expired"}, 100])  # t = 5
    assert [e.state for e in out] == ["1", "2", "3", "5", "expired", "expired", "expired"]


def labels(out):
    """Rollup/batch outputs by service: a list stays a list."""
    return [[e.service for e in x] if isinstance(x, list) else x.service for x in out]


def named(*items):
    """Riemann's bare values (:a, 1) as events with that service, and its
    intervals as they are."""
    return [x if isinstance(x, (int, float)) and not isinstance(x, bool) and i % 2 else
            (x if isinstance(x, dict) else {"service": str(x)})
            for i, x in enumerate(items)]


def test_rollup_test():
    """rollup-test"""
    # dmon's rollup forwards the first n events of a period one by one, as
    # events (documented), where Riemann forwards each as a one-event list:
    # Riemann's [:a] is dmon's "a" below; held lists are lists in both.
    # "single output event per interval"
    out = run_stream_intervals(lambda c: rollup(1, 2, c),
                               named("a", 0, "b", 0, "c", 2, "d", 0, "e", 0, "f", 2))
    assert labels(out) == ["a", ["b", "c"], ["d", "e", "f"]]
    # "basic rollups"
    out = run_stream_intervals(lambda c: rollup(2, 1, c),
                               named(1, 0, 2, 0, 3, 1, 4, 0, 5, 0, 6, 0, 7, 1, "foo", 10))
    assert labels(out) == ["1", "2", ["3"], "4", ["5", "6", "7"], "foo"]
    # "expired events"
    e = {"service": "e", "state": "expired"}
    out = run_stream_intervals(lambda c: rollup(2, 3, c), named(1, 0, e, 0, "a", 1, "b", 1, "c", 1))
    assert labels(out) == ["1", "e", ["a", "b", "c"]]
    out = run_stream_intervals(lambda c: rollup(2, 2, c), named(e, 0, e, 0, e, 1, e, 1))
    assert labels(out) == ["e", "e", ["e", "e"]]


def test_batch_test():
    """batch-test"""
    # "nothing"
    assert run_stream_intervals(lambda c: batch(2, 3, c), []) == []
    # "incomplete batches"
    out = run_stream_intervals(lambda c: batch(2, 3, c), named("a", 3, "b", 1, "c", 2, "d", 3))
    got = labels(out)
    assert got == [["a"], ["b", "c"], ["d"]]
    # "overflowing batches"
    out = run_stream_intervals(lambda c: batch(2, 3, c),
                               named("a", 1, "b", 1, "c", 1, "d", 1, "e", 1, "f", 1))
    got = labels(out)
    assert got == [["a", "b"], ["c"], ["d", "e"], ["f"]]


def as_set(events):
    return sorted((sorted(plain(e).items()) for e in events), key=repr)


def test_coalesce_test():
    """coalesce-test"""
    a1 = {"service": "a", "state": "one", "time": 0}
    b1 = {"service": "b", "state": "one", "time": 0}
    a2 = {"service": "a", "state": "two", "time": 3, "ttl": 2}
    c1 = {"service": "c", "state": "one", "time": 0}
    b2 = {"service": "b", "state": "two", "time": 0}
    # Riemann sends a2 (time 3) at 2.1 and looks at 3.1, after the flush at
    # 3. dmon's run() moves the clock to an event's time before sending it,
    # so a2 arrives at 3, after that flush: the look is at 4.1, after the
    # next one.
    script = [a1, at(1.1), b1, at(2.1), a2, at(4.1), c1, at(6.1), b2, at(7.1)]

    def last_list(n):
        """The last list coalesce forwarded, after the first n steps of the
        script (Riemann looks at `out` between its advances)."""
        out = []
        run(coalesce(collect(out)), script[:n], start=0)
        return out[-1]

    for n, want in [(2, [a1]), (4, [a1, b1]), (6, [a2, b1]),
                    # a2 arrived at 3, expired at 5, and the final expiry
                    # flush happens at 6: it is in the list once.
                    (8, [a2, b1, c1]),
                    (10, [b2, c1])]:
        got = last_list(n)
        assert as_set(got) == as_set(want), (n, got)


def xs(*pairs):
    return [{"x": str(x), "time": t} for x, t in pairs]


def test_stable_test():
    """stable-test (:x values as strings: dmon attributes are strings)"""
    # Doesn't emit until dt seconds have passed.
    assert run_stream(lambda c: stable(3, "x", c), xs((1, 0), (1, 1), (1, 2))) == []
    # Constant values are emitted after dt seconds
    assert_stream(run_stream(lambda c: stable(3, "x", c), xs((1, 0), (1, 1), (1, 3))),
                  xs((1, 0), (1, 1), (1, 3)))
    # Ignores spikes
    assert_stream(run_stream(lambda c: stable(3, "x", c),
                             xs((0, 0), (0, 3), (1, 4), (1, 5), (0, 6), (0, 9))),
                  xs((0, 0), (0, 3), (0, 6), (0, 9)))
    # Ignores flapping
    assert_stream(run_stream(lambda c: stable(3, "x", c),
                             xs((0, 0), (0, 10), (1, 11), (0, 11), (1, 12), (5, 13), (2, 14),
                                (2, 17))),
                  xs((0, 0), (0, 10), (2, 14), (2, 17)))
    # Triggers after dt seconds of stability, even without new events.
    e0, e1, e2 = xs((0, 0), (1, 1), (2, 11))
    assert_stream(run_stream_intervals(lambda c: stable(10, "x", c), [e0, 1, e1, 10, e2, 1]),
                  xs((1, 1)))
    # Triggers after dt seconds with new events.
    e0, e1, e2, e3 = xs((0, 0), (0, 1), (0, 5), (1, 11))
    assert_stream(run_stream_intervals(lambda c: stable(10, "x", c), [e0, 1, e1, 4, e2, 6, e3, 1]),
                  xs((0, 0), (0, 1), (0, 5)))


FOO_BAR = ('service = "foo"', 'service = "bar"')


def test_project_test_empty():
    """project-test: Empty -> empty"""
    assert run_stream(lambda c: project(*FOO_BAR, c), []) == []


def test_project_test_nothing_to_project_to():
    """project-test: Without anything to project to, does nothing"""
    # Documented difference: dmon refuses a project() without tests when it
    # is built (a stream that can never forward is a mistake); Riemann's
    # accepts it and forwards nothing.
    try:
        run_stream(lambda c: project(c), em(1, 2, 3))
    except ValueError as e:
        assert "needs at least one test" in str(e)
    else:
        raise AssertionError("project() without tests was accepted")


def test_project_test_basic():
    """project-test: Basic test: ignores non-matching events, updates state properly"""
    out = run_stream(lambda c: project(*FOO_BAR, c),
                     [{"service": "cat"}, {"service": "foo", "a": "1"}, {"service": "foo", "a": "2"},
                      {"service": "meow"}, {"service": "bar", "b": "3"},
                      {"service": "foo", "b": "4"}])
    assert_stream(out, [[{"service": "foo", "a": "1"}, None],
                        [{"service": "foo", "a": "2"}, None],
                        [{"service": "foo", "a": "2"}, {"service": "bar", "b": "3"}],
                        [{"service": "foo", "b": "4"}, {"service": "bar", "b": "3"}]])


def test_project_test_initially_expired():
    """project-test: Passes on initially expired events correctly"""
    out = run_stream(lambda c: project(*FOO_BAR, c),
                     [{"service": "foo", "state": "expired"}, {"service": "foo", "state": "expired"},
                      {"service": "cat"}])
    assert_stream(out, [[{"service": "foo", "time": 0, "state": "expired"}, None],
                        [{"service": "foo", "time": 0, "state": "expired"}, None]])


def test_project_test_expires_existing():
    """project-test: Expires existing events"""
    out = run_stream(lambda c: project(*FOO_BAR, c),
                     [{"service": "foo", "state": "ok"}, {"service": "bar", "state": "ok"},
                      {"service": "bar", "state": "expired"}, {"service": "foo", "state": "expired"},
                      {"service": "bar", "state": "expired"}])
    assert_stream(out, [[{"service": "foo", "state": "ok"}, None],
                        [{"service": "foo", "state": "ok"}, {"service": "bar", "state": "ok"}],
                        [{"service": "foo", "state": "ok"},
                         {"service": "bar", "state": "expired", "time": 0}],
                        [{"service": "foo", "state": "expired", "time": 0}, None],
                        [None, {"service": "bar", "state": "expired", "time": 0}]])


def test_project_test_expiration():
    """project-test: Expiration test: expires own events when the time comes"""
    check_stream_intervals(lambda c: project(*FOO_BAR, c),
                           [{"service": "foo", "state": "ok", "time": 0, "ttl": 1}, 2,
                            {"service": "bar", "state": "ok"}, 1,
                            {"service": "bar", "state": "ok2"}],
                           [[{"service": "foo", "state": "ok", "time": 0, "ttl": 1}, None],
                            [{"service": "foo", "state": "expired", "time": 2},
                             {"service": "bar", "state": "ok"}],
                            [None, {"service": "bar", "state": "ok2"}]])


def test_adjust_test():
    """adjust-test"""
    # (adjust [:state str " 2"]): Clojure's str of nil is ""
    out = run_stream(lambda c: adjust("state", lambda s: ("" if s is None else s) + " 2", c),
                     [{}, {"state": "hey", "service": "bar"}])
    assert_stream(out, [{"state": " 2"}, {"state": "hey 2", "service": "bar"}])
    out = run_stream(lambda c: adjust(lambda e: e.replace(metric=len(e.tags)), c),
                     [{"service": "a", "tags": []}, {"service": "a", "tags": ["foo", "bar"]}])
    assert_stream(out, [{"service": "a", "tags": [], "metric": 0},
                        {"service": "a", "tags": ["foo", "bar"], "metric": 2}])


def refused(make):
    """Whether building the stream raises (dmon refuses bad arguments when
    the tree is built)."""
    try:
        make()
    except (ValueError, TypeError):
        return True
    return False


def test_moving_event_window_test():
    """moving-event-window-test"""
    # Zero-width windows: Riemann forwards empty lists; dmon refuses n = 0
    # (documented: zero-width windows refused).
    assert refused(lambda: moving_event_window(0))
    # n-width windows
    assert [metrics(w) for w in run_stream(lambda c: moving_event_window(2, c), em(1, 2, 3))] == [
        [1], [1, 2], [2, 3]]


def test_fixed_event_window_test():
    """fixed-event-window-test"""
    # Zero-width windows: Riemann forwards nothing; dmon refuses n = 0
    # (documented: zero-width windows refused).
    assert refused(lambda: fixed_event_window(0))
    # n-width windows
    assert run_stream(lambda c: fixed_event_window(2, c), em(1)) == []
    assert [metrics(w) for w in run_stream(lambda c: fixed_event_window(2, c), em(1, 2))] == [[1, 2]]
    assert [metrics(w) for w in run_stream(lambda c: fixed_event_window(2, c), em(1, 2, 3, 4, 5))] == [
        [1, 2], [3, 4]]


def test_runs_test_zero_width():
    """runs-test: Zero-width runs"""
    # Documented difference: dmon refuses runs(0) when it is built, as it
    # refuses zero-width windows; Riemann's forwards nothing.
    try:
        runs(0, "state", printer())
    except ValueError as e:
        assert "`n` must be a whole number ≥ 1, not 0" in str(e)
    else:
        raise AssertionError("runs(0) was accepted")


def test_runs_test():
    """runs-test: n-width runs (states as strings; Riemann's string metrics as numbers)"""
    assert run_stream(lambda c: runs(3, "state", c), states("1", "2", "2")) == []
    out = run_stream(lambda c: runs(3, "state", c),
                     [{"state": "1"}, {"state": "1"}, {"metric": 0.5, "state": "2"},
                      {"metric": 0.6, "state": "2"}, {"state": "3"}, {"state": "4", "metric": 5.0},
                      {"state": "4", "metric": 5.1}, {"state": "4", "metric": 5.2}])
    assert_stream(out, [{"state": "4", "metric": 5.2}])


def times(windows):
    return [[e.time for e in w] for w in windows]


def test_moving_time_window_test():
    """moving-time-window-test"""
    # Zero-second windows: Riemann forwards nothing; dmon refuses dt = 0
    # (documented: zero-width windows refused).
    assert refused(lambda: moving_time_window(0))
    # n-width windows
    assert run_stream(lambda c: moving_time_window(2, c), []) == []
    assert times(run_stream(lambda c: moving_time_window(2, c), [{"time": 1}])) == [[1]]
    assert times(run_stream(lambda c: moving_time_window(2, c),
                            [{"time": t} for t in [1, 2, 3, 4]])) == [[1], [1, 2], [2, 3], [3, 4]]
    # With out-of-order events
    assert times(run_stream(lambda c: moving_time_window(2, c),
                            [{"time": t} for t in [5, 1, 2, 6, 3, 8, 4, 8, 5, 9]])) == [
        [5], [5, 6], [8], [8, 8], [8, 8, 9]]


def test_fixed_time_window_test():
    """fixed-time-window-test"""
    # Zero-time windows
    assert refused(lambda: fixed_time_window(0))
    # n-width windows
    assert run_stream(lambda c: fixed_time_window(2, c), []) == []
    assert run_stream(lambda c: fixed_time_window(2, c), [{"time": 1}]) == []
    assert times(run_stream(lambda c: fixed_time_window(2, c),
                            [{"time": t} for t in [1, 2, 3, 4, 5]])) == [[1, 2], [3, 4]]
    # With a gap: Riemann forwards [[{:time 1}] [] []]; dmon forwards no
    # empty windows (documented).
    assert times(run_stream(lambda c: fixed_time_window(2, c), [{"time": 1}, {"time": 7}])) == [[1]]
    # With out-of-order events: Riemann drops the late events, giving
    # [[5 6] [8 8] [9]]; in dmon a late event joins the current window
    # (documented).
    assert times(run_stream(lambda c: fixed_time_window(2, c),
                            [{"time": t} for t in [5, 1, 2, 6, 3, 8, 4, 8, 5, 9, 11]])) == [
        [5, 1, 2, 6, 3], [8, 4, 8, 5], [9]]


def test_apdex_test():
    """apdex-test (Riemann's shuffle with a fixed seed)"""
    mixed = ([{"state": "ok"}] * 5 + [{"state": "warning"}] * 7 + [{"state": "expired"}] * 3
             + [{"state": "fail"}])
    random.Random(0).shuffle(mixed)
    inputs = [x for e in mixed for x in (e, 0)][:-1] + [0, {"state": "final"}, 3]
    check_stream_intervals(lambda c: apdex(1, 'state = "ok"', 'state = "warning"', c), inputs,
                           [{"state": "final", "metric": (5 + 7 / 2) / (5 + 7 + 2)}])


# Riemann's expiry tests: four events by state, then four by time (the
# first at 0, the clock advanced to 10, the others after).
BY_STATE = states("expired", "ok", "warning", "expired")
BY_TIME = [{"time": 0, "ttl": 10}, at(10), {"time": 1, "ttl": 5}, {"time": 6, "ttl": 2},
           {"time": 10, "ttl": 2}]


def test_not_expired_test():
    """not-expired-test"""
    # "state expired"
    assert_stream(run_stream(lambda c: not_expired(c), BY_STATE), states("ok", "warning"))
    # "expired time"
    assert_stream(run_stream(lambda c: not_expired(c), BY_TIME),
                  [{"time": 0, "ttl": 10}, {"time": 10, "ttl": 2}])


def test_expired_test():
    """expired-test"""
    # "state expired"
    assert_stream(run_stream(lambda c: expired(c), BY_STATE), states("expired", "expired"))
    # "expired time"
    assert_stream(run_stream(lambda c: expired(c), BY_TIME),
                  [{"time": 1, "ttl": 5}, {"time": 6, "ttl": 2}])
