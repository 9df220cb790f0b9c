"""Riemann's deftests of fixed-offset-time-window, fold-interval(-metric), top,
interpolate-constant, predict-linear and clock-skew (riemann/test/riemann/
streams_test.clj), ported case by case. Run with `dmon test tests/riemann/`.

Riemann's `run-stream-intervals` takes events and the seconds to advance after
each; here the same schedule is written with `at(t)`, t the running total.
"""
from dmon.streams import *
from dmon.testing import run, at

# Riemann's bit-bucket: a stream that keeps nothing.
bit_bucket = sfilter(lambda e: False)


def window_times(events, **kwargs):
    """The times of each window's events, one string per window."""
    tree = fixed_offset_time_window(2, smap(lambda es: {"description": " ".join(f"{e.time:g}" for e in es)}, printer()), **kwargs)
    return [e.description for e in run(tree, [{"time": t} for t in events]).events]


def test_fixed_offset_time_window():
    """streams_test.clj: fixed-offset-time-window-test"""
    # Zero-time windows.
    try:
        fixed_offset_time_window(0)
    except ValueError:
        pass
    else:
        raise AssertionError("a zero-width window was accepted")
    # n-width windows
    assert window_times([]) == []
    assert window_times([1]) == []
    assert window_times([1, 2, 3, 4, 5, 6]) == ["1", "2 3", "4 5"]
    # With a gap. Riemann gives [[1], [], []]: dmon forwards no empty
    # windows (fixed_offset_time_window's documented difference).
    assert window_times([1, 7]) == ["1"]
    # With out-of-order events. Riemann drops events older than the current
    # window ([[5], [6], [8, 8, 9]]); dmon's late events join the current
    # window instead (the documented difference of fixed time windows).
    assert window_times([5, 1, 2, 6, 3, 8, 4, 8, 5, 9, 11]) == ["5 1 2", "6 3", "8 4 8 5 9"]


FOLD_INTERVAL_EVENTS = [
    {"metric": 2}, at(0.1),
    {"metric": 4}, at(0.3),
    {"metric": 2}, at(0.6),
    {"metric": 4}, at(1.6),
    {"metric": 100}, at(1.7),
    {"metric": 100},
]


def test_fold_interval():
    """streams_test.clj: fold-interval-test"""
    out = run(fold_interval(1, "metric", sum, printer()), FOLD_INTERVAL_EVENTS, until=2.7)
    assert [e.metric for e in out.events] == [12, 200]


def test_fold_interval_metric():
    """streams_test.clj: fold-interval-metric-test"""
    out = run(fold_interval_metric(1, sum, printer()), FOLD_INTERVAL_EVENTS, until=2.7)
    assert [e.metric for e in out.events] == [12, 200]


def e(service, metric):
    return {"service": service, "metric": metric}


def expire(event):
    """Riemann's expire: the service and state "expired" (and the time now)."""
    return {"service": event["service"], "state": "expired"}


def shown(events):
    return [(e.service, e.metric, e.state) for e in events]


def tops(k, events, *expected):
    got = shown(run(top(k, "metric", printer()), events).events)
    want = [(x["service"], x.get("metric"), x.get("state")) for x in expected]
    assert got == want, f"{got} != {want}"


def a(m):
    return e("a", m)


def b(m):
    return e("b", m)


def c(m):
    return e("c", m)


def d(m):
    return e("d", m)


def test_top():
    """streams_test.clj: top-test"""
    # A single event
    tops(1, [a(1)], a(1))
    # Repeating the same service
    tops(1, [a(1), a(2), a(1), a(3)], a(1), a(2), a(1), a(3))
    # Displacing a smaller event
    tops(2, [a(1), b(2), c(3), a(1), b(2)], a(1), b(2), c(3), expire(a(1)), b(2))
    # Allowing in a smaller event when there's room
    tops(2, [a(2), b(2), c(1), a(5), c(1), a(0), c(1)],
         a(2), b(2), expire(c(1)), a(5), expire(c(1)), a(0), c(1))
    # Ignoring smaller events
    tops(2, [a(1), b(2), c(3), d(1), a(2), b(None), d(2)],
         a(1), b(2), c(3), expire(d(1)), expire(a(2)), expire(b(None)), d(2))
    # Events without metrics
    tops(1, [a(None), b(1), a(None)], expire(a(None)), b(1), expire(a(None)))
    # Events without metrics displace previous events
    tops(1, [b(2), b(None), a(1)], b(2), expire(b(None)), a(1))
    # Expiring a nonexistent event
    tops(2, [expire(a(2))], expire(a(2)))
    # Expiring an existing event
    tops(1, [a(2), expire(a(1)), b(1)], a(2), expire(a(1)), b(1))
    # Ring
    tops(2, [a(1), b(2), c(3), d(4), a(2), b(3), c(4), d(5)],
         a(1), b(2), c(3), d(4), expire(a(2)), expire(b(3)), c(4), d(5))
    # Demotion: Riemann's (top 1 :metric index bit-bucket true) is dmon's
    # demote= stream.
    out = run(top(1, "metric", printer(), demote=bit_bucket), [a(1), b(2)])
    assert shown(out.events) == [("a", 1, None), ("a", None, "expired"), ("b", 2, None)]


def interpolated(interval, steps):
    return [e.metric for e in run(interpolate_constant(interval, printer()), steps).events]


def test_interpolate_constant():
    """streams_test.clj: interpolate-constant-test"""
    assert interpolated(0.01, []) == []
    # Should forward a single state
    assert interpolated(0.1, [{"metric": 1}, at(0.05)]) == [1]
    # Should forward first state and ignore immediate successors
    assert interpolated(0.1, [{"metric": 1}, at(0.05), {"metric": 2}, {"metric": 3}]) == [1]
    # Should fill in missing states regularly
    assert interpolated(0.1, [{"metric": 1}, at(0.22), {"metric": 2}, at(0.44),
                              {"metric": 3}, at(0.66), {"metric": 4}]) == [1, 1, 1, 2, 2, 3, 3]
    # Should forward final "expired" state.
    assert interpolated(0.1, [{"metric": 1}, at(0.22), {"metric": 2}, at(0.44),
                              {"metric": 3}, at(0.66), {"metric": 4, "state": "expired"}]) == [1, 1, 1, 2, 2, 3, 3, 4]
    # Should not fill during expired times.
    assert interpolated(0.05, [{"metric": 1, "state": "expired"}, at(0.12),
                               {"metric": 2}, at(0.24),
                               {"metric": 3, "state": "expired"}, at(0.36)]) == [1, 2, 2, 2, 3]


def predicted(tree, points):
    out = run(tree, [{"metric": m, "time": t} for m, t in points])
    return [(e.metric, e.time) for e in out.events]


def test_predict_linear():
    """streams_test.clj: predict-linear-test"""
    assert predicted(predict_linear(10, 600, printer()), [(1, 1)]) == []
    ramp = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert predicted(predict_linear(5, 60, printer()), ramp) == [(62, 2), (63, 3), (64, 4), (65, 5)]
    assert predicted(predict_linear(2, 86400, printer()), [(100, 0), (50, 43200)]) == [(-50, 43200)]
    assert predicted(predict_linear(2, 60, printer()), [(100, 0), (100, 1)]) == [(100, 1)]
    # Riemann's third number (rebuild interval) is dmon's rebuild= keyword.
    assert predicted(predict_linear(5, 60, printer(), rebuild=60), ramp) == [(62, 2), (63, 3), (64, 4), (65, 5)]
    assert predicted(predict_linear(2, 60, printer(), rebuild=60),
                     [(100, 0), (100, 1), (500, 2)]) == [(100, 1), (100, 2)]


def test_clock_skew():
    """streams_test.clj: clock-skew-test"""
    # The events' times are the hosts' skewed clocks. run()'s clock moves to
    # an event's time when that is later, so the run starts at 1000, past
    # every event time, and the events get a ttl that keeps them alive;
    # skews depend only on clock differences, so Riemann's metrics hold.
    def host(t, name):
        return {"time": t, "host": name, "ttl": 1e6}

    out = run(clock_skew(printer()), [
        host(1, "foo"), at(1001),
        host(3, "bar"), at(1002),
        host(9, "baz"), at(1003),
        host(1, "foo"), at(1004),
        host(100, "foo"),
    ], start=1000)
    assert [(e.time, e.host, e.metric) for e in out.events] == [
        (1, "foo", 0), (3, "bar", 0), (9, "baz", 5), (1, "foo", -4), (100, "foo", 89),
    ]
