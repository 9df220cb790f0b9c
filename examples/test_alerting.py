"""Tests of examples/alerting.py: run them with `dmon test examples/` (or
pytest, with the dmon package installed).

Minutes of traffic run in milliseconds: the clock is virtual, following the
events' `time`, and `until=` moves it on after the last event so windows
and rates report. Mail is captured, never sent.
"""
from collections import Counter

from dmon.testing import run

import alerting


def errors(host, per_minute, minutes):
    """`per_minute` error events from `host`, evenly spread, for `minutes`."""
    step = 60 / per_minute
    return [
        {"host": host, "service": "requests", "state": "error", "metric": 1, "time": i * step}
        for i in range(per_minute * minutes)
    ]


def by_time(*streams):
    return sorted((e for s in streams for e in s), key=lambda e: e["time"])


def test_a_host_above_half_an_error_a_second_is_mailed():
    # web1: 40 errors a minute (0.67/s); web2: 10 (0.17/s), under the bar.
    out = run(alerting.error_rate_stream, by_time(errors("web1", 40, 1), errors("web2", 10, 1)), until=61)
    assert [[(e.host, e.service, e.state) for e in mail] for mail in out.mailed] == [
        [("web1", "error rate", "critical")]
    ]
    assert round(out.mailed[0][0].metric, 2) == 0.67


def test_mail_is_throttled_to_five_an_hour_for_each_host():
    events = by_time(errors("web1", 40, 10), errors("web3", 60, 10))
    out = run(alerting.error_rate_stream, events, until=10 * 60 + 1)
    assert Counter(mail[0].host for mail in out.mailed) == {"web1": 5, "web3": 5}


def test_a_host_under_the_bar_is_never_mailed():
    out = run(alerting.error_rate_stream, errors("web2", 29, 10), until=10 * 60 + 1)
    assert out.mailed == []


def api(state, t):
    return {"host": "web1", "service": "api", "state": state, "time": t, "ttl": 3600}


def test_an_api_check_is_mailed_when_its_state_changes_and_only_then():
    states = ["ok", "ok", "critical", "critical", "critical", "ok", "ok"]
    out = run(alerting.state_change_stream, [api(s, 10 * i) for i, s in enumerate(states)])
    assert [mail[0].state for mail in out.mailed] == ["critical", "ok"]


def test_latency_percentiles_per_service_each_minute():
    # 100 latencies, 1 to 100 ms, over the first 50 seconds.
    events = [
        {"host": "web1", "service": "api latency", "metric": m, "time": (m - 1) / 2}
        for m in range(1, 101)
    ]
    out = run(alerting.latency_stream, events, until=61)
    points = {e.service: e.metric for e in out.index}
    # Nearest rank: the event at index floor(100 * point) of the sorted metrics.
    assert points == {"api latency 0.5": 51, "api latency 0.95": 96, "api latency 0.99": 100}
    assert len(out.printed) == 3 and all(line.startswith("latency: ") for line in out.printed)


def test_the_whole_module_on_a_quiet_minute_sends_nothing():
    quiet = [{"host": "web1", "service": "requests", "state": "ok", "metric": 1, "time": t} for t in range(60)]
    out = run(alerting, quiet, until=61)
    assert out.mailed == [] and out.printed == []
    assert out.errors == 0
