#!/usr/bin/env python3
"""Writes the seed corpus, fuzz/corpus/<target>/, from inputs dmon's tests use.

Run from anywhere: `python3 fuzz/make_corpus.py`. Each seed is one file named
after its content's hash, as libFuzzer names the inputs it adds, so rerunning
adds nothing twice. Riemann frames are encoded here with a minimal protobuf
writer (field numbers from src/codec/riemann.rs) so nothing needs installing.
"""

import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

JSON = [
    b'{"host": "web1", "service": "cpu", "state": "critical", "metric": 2.5}',
    b'{"host": "web1", "service": "cpu", "state": "critical", "description": "load too high",'
    b' "metric": 2.5, "ttl": 60, "tags": ["prod"], "attributes": {"region": "eu-west"}}',
    b'[{"host": "a", "metric": 1}, {"host": "b", "metric": 2}]',
    b'{"host": "a", "metric": 1}\n{"host": "b", "metric": 2}\n',
    b'[{"host": "a"}, 5, {"host": "b"}]',
    b'{"host": "a"}\n{bad json}\n{"host": "c"}',
    b'{"host": 5}',
    b'{"metric": 1e400, "time": 1700000000.25}',
    b'{"metric": -9223372036854775808, "time": 1700000000}',
    b'{"host": "h\\u00e9\\ud83d\\ude00", "tags": [], "attributes": {}}',
    b'   \n\t[]',
    b'{"host": "x", "extra": [1, {"a": null}], "ttl": null}',
    b'[[{"host": "nested"}]]',
    b'\xff\xfe{"host": "x"}',
]

QUERIES = [
    'state = "error rate" and (not host =~ "www.%")',
    'host = nil or host = "db1" or metric = 5',
    "metric > 1 and metric < 10",
    "metric = 5L",
    "metric > -Infinity",
    "metric != NaN",
    'tagged "prod" and tagged "web"',
    'host ~= "^www\\\\d"',
    'host ~= "(?i)DB"',
    'description =~ "a.b*c"',
    'dc =~ "eu-%"',
    "count = 3.0",
    "((((host = \"db1\"))))",
    'host = "\\u00e9\\ud83d\\ude00\\n"',
    "true",
    "not not tagged \"prod\"",
    "metric >",
    "host = ",
]


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def ln(field, data):
    if isinstance(data, str):
        data = data.encode()
    return key(field, 2) + varint(len(data)) + data


def vint(field, n):
    return key(field, 0) + varint(n)


def sint(field, n):
    return vint(field, (n << 1) ^ (n >> 63))


def f32(field, x):
    return key(field, 5) + struct.pack("<f", x)


def f64(field, x):
    return key(field, 1) + struct.pack("<d", x)


def event(host=None, service=None, state=None, description=None, tags=(), attributes=(),
          time=None, time_micros=None, ttl=None, metric_sint64=None, metric_d=None,
          metric_f=None):
    out = b""
    if time is not None:
        out += vint(1, time)
    for field, value in ((2, state), (3, service), (4, host), (5, description)):
        if value is not None:
            out += ln(field, value)
    for tag in tags:
        out += ln(7, tag)
    if ttl is not None:
        out += f32(8, ttl)
    for k, v in attributes:
        out += ln(9, (ln(1, k) if k is not None else b"") + (ln(2, v) if v is not None else b""))
    if time_micros is not None:
        out += vint(10, time_micros)
    if metric_sint64 is not None:
        out += sint(13, metric_sint64)
    if metric_d is not None:
        out += f64(14, metric_d)
    if metric_f is not None:
        out += f32(15, metric_f)
    return out


def msg(*events, query=None, ok=None, error=None):
    out = b""
    if ok is not None:
        out += vint(2, int(ok))
    if error is not None:
        out += ln(3, error)
    if query is not None:
        out += ln(5, ln(1, query))
    for e in events:
        out += ln(6, e)
    return out


RIEMANN = [
    msg(event(host="web1", service="cpu", state="critical", metric_d=2.5)),
    msg(event(host="web1", service="cpu", state="ok", description="fine", tags=["prod", "web"],
              attributes=[("region", "eu-west")], time=1700000000, ttl=60.0, metric_f=0.1)),
    msg(event(host="a", metric_sint64=-5), event(host="b", metric_sint64=1 << 62)),
    msg(event(host="", service="", ttl=float("inf"), metric_d=float("nan"))),
    msg(event(host=b"\xff\xfe bad utf-8", service="disk /", time_micros=1700000000123456)),
    msg(event(attributes=[(None, "no key"), ("no value", None)])),
    msg(query='state = "critical"'),
    msg(query="true"),
    msg(ok=True),
    msg(ok=False, error="no such query"),
    msg(),
    msg(*[event(host=f"h{i}", service="s", metric_sint64=i) for i in range(20)]),
    # A legacy state (field 4) beside an event: accepted and ignored.
    ln(4, ln(4, "old") + ln(2, "ok")) + msg(event(host="x")),
    msg(event(host="x"))[:-1],  # cut short
]


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for seed in seeds:
        if isinstance(seed, str):
            seed = seed.encode()
        with open(os.path.join(d, hashlib.sha1(seed).hexdigest()), "wb") as f:
            f.write(seed)


if __name__ == "__main__":
    write("json", JSON)
    write("query", QUERIES)
    write("riemann", RIEMANN)
