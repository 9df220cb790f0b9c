"""The usual alerting, as Riemann configs do it, with native stream functions.

    dmon shell --streams examples/alerting.py --smtp 127.0.0.1:2525

tests/alerting.rs runs this module in-process on a virtual clock.
"""
from dmon.streams import *

OPS = "ops@example.com"

# Per host, the rate of error events over each minute; above 0.5/s (30
# errors a minute) mail ops, at most 5 mails an hour for each host.
error_rate_stream = where(
    'state = "error"',
    by("host",
       rate(60,
            with_({"service": "error rate", "state": "critical"},
                  where("metric > 0.5",
                        throttle(5, 3600, email(OPS, subject="error rate above 0.5/s")))))))

# Mail when an API check changes state (ok -> critical, and back).
state_change_stream = where('service = "api"', changed_state(email(OPS)))

# The 50th, 95th and 99th percentile latency per service, each minute,
# into the index.
latency_stream = where(
    'service =~ "% latency"',
    by("service", percentiles(60, [0.5, 0.95, 0.99], index(), printer("latency: "))))

index_stream = index()
