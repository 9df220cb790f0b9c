"""Riemann's deftests of the folds quotient-sloppy, modes and mode, ported
from riemann/folds_test.clj."""
from dmon import folds
from dmon.streams import Event


def evs(*maps):
    return [Event(m) for m in maps]


def test_quotient_sloppy():
    """folds_test.clj quotient-sloppy-test."""
    assert folds.quotient_sloppy(evs({"metric": 2}, {"metric": -3})) == Event({"metric": -2 / 3})
    # dmon's folds give the last event with the new metric (Riemann: the
    # first, so Riemann keeps :a true in these two).
    zero = folds.quotient_sloppy(evs({"metric": 0, "a": "true"}, {"metric": 0}))
    assert zero == Event({"metric": 0})
    one_by_zero = folds.quotient_sloppy(evs({"metric": 1, "a": "true"}, {"metric": 0}))
    assert one_by_zero == Event({"metric": 0})
    first_kept = folds.quotient_sloppy(evs({"metric": 0}, {"metric": 0, "a": "true"}))
    assert first_kept == Event({"metric": 0, "a": "true"})


def test_modes():
    """folds_test.clj modes-test."""
    assert [e.metric for e in folds.modes(evs(*({"metric": m} for m in [1, 2, 3, 4, 2])))] == [2]
    two = folds.modes(evs(*({"metric": m} for m in [1, 2, 3, 3, 4, 2])))
    assert {e.metric for e in two} == {3, 2}
    assert not folds.modes([])


def test_mode():
    """folds_test.clj mode-test."""
    assert folds.mode(evs(*({"metric": m} for m in [1, 2, 3, 4, 2]))) == Event({"metric": 2})
    assert folds.mode(evs(*({"metric": m} for m in [1, 2, 3, 3, 4, 2]))).metric in {2, 3}
    assert folds.mode([]) is None
