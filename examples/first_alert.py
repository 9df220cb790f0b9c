"""The README's first alert: mail ops when a host logs more than one error
a second over 5 seconds, at most one mail a minute for each host.

    cargo run --release -- --streams examples/first_alert.py --smtp log

`examples/test_first_alert.py` checks it: `dmon test examples/test_first_alert.py`.
"""
from dmon.streams import *

errors_stream = where(
    'state = "error"',
    by("host",
       rate(5,
            where("metric > 1",
                  throttle(1, 60, email("ops@example.com", subject="more than 1 error/s"))))))
