"""Riemann's test helpers (riemann.test, riemann.streams-test), over dmon's
`run()`, for the ports of Riemann's tests in this directory.

- `(run-stream s inputs)` / `test-stream`: `run_stream(make, inputs)`: the
  clock starts at 0 and follows event times, as Riemann's `advance!` to each
  event's `:time`; what reached the child is returned (`(append out)` is
  `collect(out)`).
- `run-stream-intervals` / `test-stream-intervals`: `run_stream_intervals`
  and `check_stream_intervals`, the intervals becoming `at(t)` steps at their
  running sums, the run ending at the last one (`until=`).
- dmon gives an event without a time the clock's time; Riemann leaves it
  without one. An expected map without `:time` is compared without the
  time (`shaped`).
"""
from dmon.streams import Event, smap
from dmon.testing import at, run


def collect(out):
    """Riemann's `(append out)`: a child recording what reaches it (an event,
    or a list of events from a window)."""
    return smap(lambda x: out.append(x))


def run_stream(make, inputs):
    """Riemann's `run-stream`: `make(child)` builds the stream over `child`;
    returns what reached the child."""
    out = []
    run(make(collect(out)), inputs, start=0)
    return out


def steps(inputs_and_intervals):
    """Riemann's `run-stream-intervals` inputs (event, interval, event, ...)
    as run() inputs with at() steps; returns them and the final time."""
    items = []
    now = 0
    pairs = [inputs_and_intervals[i:i + 2] for i in range(0, len(inputs_and_intervals), 2)]
    for pair in pairs:
        items.append(pair[0])
        if len(pair) == 2 and pair[1] is not None:
            now = now + pair[1]
            items.append(at(now))
    return items, now


def run_stream_intervals(make, inputs_and_intervals):
    """Riemann's `run-stream-intervals`: the clock starts at 0, each interval
    advances it, and the outputs are taken after the last advance."""
    out = []
    items, end = steps(inputs_and_intervals)
    run(make(collect(out)), items, start=0, until=end)
    return out


def plain(event, keep_time=True):
    """An event as a dict comparable with Riemann's maps: metrics as floats
    (Riemann's 1 and 1.0 meet in `=` on its tests' values), no empty tags."""
    d = Event(event).to_dict()
    if isinstance(d.get("metric"), int):
        d["metric"] = float(d["metric"])
    if not keep_time:
        d.pop("time", None)
    return d


def shaped(actual, expected):
    """`actual` (events, lists of them, None) as plain dicts, each without
    its time where the expected map has none (dmon stamps the clock's)."""
    if isinstance(actual, list):
        like = expected if isinstance(expected, list) else []
        return [shaped(a, like[i] if i < len(like) else None) for i, a in enumerate(actual)]
    if actual is None:
        return None
    # Without an expected map to follow (an extra event), the time is shown.
    keep_time = not isinstance(expected, dict) or "time" in expected
    return plain(actual, keep_time)


def expect(expected):
    """Riemann's expected maps as plain dicts (see plain)."""
    if isinstance(expected, list):
        return [expect(e) for e in expected]
    if expected is None:
        return None
    return plain(expected)


def assert_stream(actual, expected):
    """Riemann's `(is (= expected actual))` over outputs."""
    got, want = shaped(actual, expected), expect(expected)
    assert got == want


def check_stream_intervals(make, inputs_and_intervals, expected):
    """Riemann's `test-stream-intervals`."""
    assert_stream(run_stream_intervals(make, inputs_and_intervals), expected)


def em(*metrics):
    """Riemann's `em`: events with the given metrics."""
    return [{"metric": m} for m in metrics]


def evs(base, *metrics):
    """Riemann's `evs`: copies of `base` with the given metrics."""
    return [{**base, "metric": m} for m in metrics]


def metrics(events):
    return [e.metric for e in events]


def approx_equal(x, y, tol=0.01):
    """Riemann's `approx-equal`: equal, or a ratio within `tol` of 1."""
    if x == y:
        return True
    if y == 0:
        return False
    return 1 - tol < x / y < 1 + tol
