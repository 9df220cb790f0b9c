"""Riemann's folds_test.clj, ported deftest by deftest, in Riemann's order
(quotient-sloppy, modes and mode, added later, last).

Run with `dmon test tests/riemann/`. Each test names its Riemann deftest in
its docstring and asserts what Riemann asserts, except where dmon documents
a difference (src/streams/folds.rs, `dmon catalog folds.NAME`):

- The folds computing a metric return a copy of the *last* event of the
  list where Riemann's return a copy of the first; those cases assert dmon's
  result and say so.
- A `nil` among the events is None (what `project` gives for a test nothing
  matched): the folds leave it out, except `difference` and `quotient`
  (first against the rest), as Riemann's.

Riemann deftests not ported here, and why:
- sorted-sample-extract-test, sorted-sample-test: no dmon fold (dmon's
  `percentiles` stream does that job, with its own tests).
"""
import math
from functools import reduce
from operator import add, mul, sub, truediv

from dmon import folds
from dmon.streams import *
from dmon.testing import run

from riemann_port import plain


def events(*maps):
    return [None if m is None else Event(m) for m in maps]


def fields(event):
    """An event as a dict comparable with Riemann's maps, which here have no
    time (dmon may give an event the clock's)."""
    return plain(event, keep_time=False)


def check_fold_common(fold, operator):
    """Riemann's `test-fold-common`: fold = the first event with the metric
    reduced by `operator`. dmon: the *last* event (documented)."""
    cases = [
        [{"metric": 1, "a": "true"}],
        [{"metric": 1, "a": "true"}, {"metric": 2, "b": "true"}],
        [{"metric": 1, "a": "true"}, {"metric": 2, "b": "true"}, {"metric": 7, "c": "true"}],
        [{"metric": 1, "a": "true"}, {"metric": 2, "b": "true"}, {"metric": 7, "c": "true"},
         {"metric": 7, "d": "true"}],
    ]
    for es in cases:
        got = fields(fold(events(*es)))
        want = fields({**es[-1], "metric": reduce(operator, [e["metric"] for e in es])})
        assert got == want


def check_fold(fold, operator, empty):
    """Riemann's `test-fold`, for a fold equivalent to `operator`; `empty` is
    `(operator)`, the operator of no arguments."""
    assert fold([]) is None
    # (fold [{:service "foo" :metric nil} {}]) is {:service "foo" :metric 0}
    # in Riemann; dmon's is built from the last event, {} (documented).
    got = fields(fold(events({"service": "foo", "metric": None}, {})))
    assert got == fields({"metric": empty})
    assert fold([None]) is None
    # Riemann: (assoc (first es) :metric (reduce operator (keep :metric es)));
    # dmon: the last event there is (documented).
    for es in [[{"a": "true"}],
               [{"a": "true", "metric": 2}, None],
               [{"a": "true", "metric": 2}, None, {"b": "true", "metric": 7}, {"c": "true"}]]:
        present = [e for e in es if e is not None]
        kept = [e["metric"] for e in present if e.get("metric") is not None]
        got = fields(fold(events(*es)))
        want = fields({**present[-1], "metric": reduce(operator, kept, empty)})
        assert got == want
    check_fold_common(fold, operator)


NIL = "An event or metric was nil."


def check_fold_all(fold, operator):
    """Riemann's `test-fold-all`, for a fold whose first argument is
    mandatory."""
    assert fold([]) is None
    # (fold [{:service "foo"} {:metric 2}]) is {:service "foo" :metric nil
    # :description "An event or metric was nil."} in Riemann; dmon's is
    # built from the last event (documented), whose metric is removed.
    got = fields(fold(events({"service": "foo"}, {"metric": 2})))
    assert got == fields({"description": NIL})
    # A missing first event: nothing to fold.
    assert fold(events(None, {"service": "foo"})) is None
    # A missing event later: the nil description, on the last (missing)
    # event where Riemann's is on the first ({:service "foo"}).
    got = fields(fold(events({"service": "foo", "metric": 2}, None)))
    assert got == fields({"description": NIL})
    check_fold_common(fold, operator)


def test_sum_test():
    """sum-test"""
    check_fold(folds.sum, add, 0)


def test_product_test():
    """product-test"""
    check_fold(folds.product, mul, 1)


def test_difference_test():
    """difference-test"""
    check_fold_all(folds.difference, sub)


def test_quotient_test():
    """quotient-test"""
    check_fold_all(folds.quotient, truediv)
    # "exceptions": Riemann keeps the first event ({:service "hi"}); dmon
    # the last (documented).
    got = fields(folds.quotient(events({"service": "hi", "metric": 1}, {"metric": 2}, {"metric": 0})))
    assert got == fields({"description": "Can't divide by zero"})
    got = fields(folds.quotient(events({"service": "hi", "metric": 2}, {"service": "bar"})))
    assert got == fields({"service": "bar", "description": NIL})


def test_mean_test():
    """mean-test"""
    assert fields(folds.mean(events({"metric": 2}, {"metric": 4}, {"metric": 6}))) == {"metric": 4.0}
    assert fields(folds.mean(events({"metric": 2}, {"metric": 4}, {"metric": None}, {"metric": 6}))) == {
        "metric": 4.0}
    assert fields(folds.mean(events({"metric": 2}, {"metric": 4}, {"metric": None}, {"metric": 6}, None))) == {
        "metric": 4.0}
    assert folds.mean([]) is None
    # "avoid divide by zero when only events with nil metrics"
    assert folds.mean(events({"metric": None})) is None


def test_std_dev_test():
    """std-dev-test"""
    metrics = [600, 470, 170, 430, 300]
    assert math.floor(folds.std_dev(events(*[{"metric": m} for m in metrics])).metric) == 147.0
    with_nil = [{"metric": 600}, {"metric": None}] + [{"metric": m} for m in metrics[1:]]
    assert math.floor(folds.std_dev(events(*with_nil)).metric) == 147.0


def count_at(now, evs):
    """folds.count(evs) computed inside a run at virtual time `now` (Riemann's
    `(advance! 1)` before its counts)."""
    out = []
    run(smap(lambda e: out.append(folds.count(evs))), [{"time": now}], start=0)
    return out[0]


def test_count_test_synthetic_event():
    """count-test: (count nil), the synthetic event"""
    # (count nil) is (event {:metric 0}), whose time is now: 1
    got = plain(count_at(1, []))
    assert got == {"metric": 0.0, "time": 1}


def test_count_test():
    """count-test: counts of events"""
    # Riemann: {:metric 2 :time 5}, from the first event; dmon counts into
    # the last event (documented), {:time 3}.
    got = plain(count_at(1, events({"metric": 5, "time": 5}, {"metric": 3, "time": 3})))
    assert got == {"metric": 2.0, "time": 3}
    assert fields(count_at(1, events({"metric": 2}, {"metric": 3}))) == {"metric": 2.0}
    # Riemann: {:metric 3}, the first event's fields; dmon the last's.
    got = plain(count_at(1, events({"metric": 2}, {"metric": 3, "state": "expired"},
                                   {"metric": 4, "ttl": 1, "time": -3})))
    assert got == {"metric": 3.0, "ttl": 1.0, "time": -3}


def test_minimum_test():
    """minimum-test (Riemann's (minimum nil) as the empty list)"""
    assert folds.minimum([]) is None
    assert folds.minimum(events({"metric": None})) is None
    assert fields(folds.minimum(events({"metric": 2}))) == {"metric": 2.0}
    assert fields(folds.minimum(events({"metric": 2}, {"metric": 5}, {"metric": -4}, {"metric": 0}))) == {
        "metric": -4.0}


def test_maximum_test():
    """maximum-test (Riemann's (maximum nil) as the empty list)"""
    assert folds.maximum([]) is None
    assert folds.maximum(events({"metric": None})) is None
    assert fields(folds.maximum(events({"metric": 2}))) == {"metric": 2.0}
    assert fields(folds.maximum(events({"metric": 2}, {"metric": 5}, {"metric": -4}, {"metric": 0}))) == {
        "metric": 5.0}


def test_quotient_sloppy():
    """folds_test.clj quotient-sloppy-test."""
    assert folds.quotient_sloppy(events({"metric": 2}, {"metric": -3})) == Event({"metric": -2 / 3})
    # dmon's folds give the last event with the new metric (Riemann: the
    # first, so Riemann keeps :a true in these two).
    zero = folds.quotient_sloppy(events({"metric": 0, "a": "true"}, {"metric": 0}))
    assert zero == Event({"metric": 0})
    one_by_zero = folds.quotient_sloppy(events({"metric": 1, "a": "true"}, {"metric": 0}))
    assert one_by_zero == Event({"metric": 0})
    first_kept = folds.quotient_sloppy(events({"metric": 0}, {"metric": 0, "a": "true"}))
    assert first_kept == Event({"metric": 0, "a": "true"})


def test_modes():
    """folds_test.clj modes-test."""
    assert [e.metric for e in folds.modes(events(*({"metric": m} for m in [1, 2, 3, 4, 2])))] == [2]
    two = folds.modes(events(*({"metric": m} for m in [1, 2, 3, 3, 4, 2])))
    assert {e.metric for e in two} == {3, 2}
    assert not folds.modes([])


def test_mode():
    """folds_test.clj mode-test."""
    assert folds.mode(events(*({"metric": m} for m in [1, 2, 3, 4, 2]))) == Event({"metric": 2})
    assert folds.mode(events(*({"metric": m} for m in [1, 2, 3, 3, 4, 2]))).metric in {2, 3}
    assert folds.mode([]) is None
