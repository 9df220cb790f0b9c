"""Tests of examples/first_alert.py, on a virtual clock: seconds of traffic
run at once, and mail is captured, never sent."""
from dmon.testing import run

import first_alert


def errors(host, n, start=0):
    """`n` error events from `host`, ten a second from `start`."""
    return [
        {"host": host, "service": "app", "state": "error", "metric": 1, "time": start + i / 10}
        for i in range(n)
    ]


def test_a_burst_of_errors_is_mailed_once_a_minute():
    # Two bursts of 20 errors in 2 s, 10 s apart: 4 errors/s over each 5 s
    # window, but the second mail falls within the minute and is held back.
    out = run(first_alert.errors_stream, errors("web1", 20) + errors("web1", 20, start=10), until=30)
    assert [[(e.host, e.metric) for e in mail] for mail in out.mailed] == [[("web1", 4.0)]]


def test_a_few_errors_mail_nobody():
    out = run(first_alert.errors_stream, errors("web2", 5), until=30)
    assert out.mailed == []
