"""Tests of examples/streams.py: run them with `dmon test examples/` (or
pytest, with the dmon package installed).

`run(tree, events, until=...)` feeds the events through fresh copies of the
streams on a virtual clock that follows the events' `time`; nothing is
printed, mailed or indexed for real: the outputs are captured on the
result (`.printed`, `.mailed`, `.index`, ...).
"""
from dmon.testing import run

import streams


def cpu(host, metric, t, state="ok", **fields):
    return {"host": host, "service": "cpu", "state": state, "metric": metric, "time": t, **fields}


def test_warnings_are_mailed_one_mail_each():
    out = run(streams.stream, [
        cpu("web1", 0.5, 1),
        cpu("web1", 2.5, 2, state="warning"),
        cpu("web2", 0.7, 3),
        cpu("web2", 3.0, 4, state="warning"),
    ])
    assert [[(e.host, e.metric) for e in mail] for mail in out.mailed] == [
        [("web1", 2.5)],
        [("web2", 3.0)],
    ]


def test_high_average_is_printed_once_the_running_mean_passes_1_85():
    # Running means: 1.0, 1.5, 2.0, 2.25
    out = run(streams.average_stream, [cpu("web1", m, t) for t, m in enumerate([1, 2, 3, 3], 1)])
    assert [e.metric for e in out.printed_events] == [2.0, 2.25]
    assert out.printed[0].startswith("high average: ")


def test_dmon_own_events_stay_out_of_the_average():
    out = run(streams.average_stream, [
        cpu("web1", 1, 1),
        {"host": "dmon-host", "service": "dmon queue depth", "metric": 1000, "time": 2, "tags": ["dmon"]},
        cpu("web1", 1.5, 3),
    ])
    assert out.printed == []


def test_the_index_keeps_the_latest_event_per_host_and_service():
    out = run(streams.index_stream, [
        cpu("web1", 0.1, 1, ttl=600),
        cpu("web1", 0.9, 2, ttl=600),
        cpu("web2", 0.4, 3, ttl=600),
    ])
    assert sorted((e.host, e.metric) for e in out.index) == [("web1", 0.9), ("web2", 0.4)]


def test_an_event_leaves_the_index_after_its_ttl_and_comes_back_expired():
    out = run(streams.index_stream, [cpu("web1", 0.1, 100, ttl=10)], until=200)
    assert out.index == []
    assert [e.state for e in out.indexed] == ["ok", "expired"]


def test_the_whole_module_runs_every_root():
    out = run(streams, [cpu("web1", 5, 1, state="warning", ttl=60)])
    assert len(out.mailed) == 1
    assert [e.metric for e in out.printed_events] == [5.0]
    assert [e.host for e in out.index] == ["web1"]
