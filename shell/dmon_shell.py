"""The Python side of dmon's shell: helpers in the namespace, and the glue
for the plain, IPython and bpython shells.

Embedded in the dmon binary; `setup(server, namespace)` fills the namespace.
`server` is the Rust handle to the live server (or to a remote one).
"""

import ast
import code
import collections
import json
import linecache
import os
import socket
import subprocess
import sys
import threading
import time

from dmon.streams import *  # noqa: F401,F403  (the shell's namespace has them all)
from dmon.streams import Event, Stream
from dmon.streams import index as _index_node  # the node; `index` here is the helper
from dmon.streams import send as _streams_send  # the stream send; `send` here is the helper

_server = None
_ns = None
_color = sys.stdout.isatty() and "NO_COLOR" not in os.environ

RED, GREEN, YELLOW, BLUE, DIM, BOLD, RESET = (
    ("\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[2m", "\x1b[1m", "\x1b[0m")
    if _color
    else ("",) * 7
)


def _paint(color, text):
    return f"{color}{text}{RESET}" if color else text


_noted_fields = set()


def _note_unknown_fields(fields):
    """Says once per name that a keyword is not an event field (it becomes an
    attribute, as an unknown JSON key does), so `hostname=` is not a silent typo."""
    import difflib
    for name in fields:
        if name in Event._fields or name in _noted_fields:
            continue
        _noted_fields.add(name)
        close = difflib.get_close_matches(name, Event._fields, n=1)
        hint = f"; did you mean {close[0]}=?" if close else ""
        print(_paint(DIM, f"note: {name}= is not an event field, so it becomes an attribute{hint}"))


def _events_from(args, fields):
    """Events from inject()/send() arguments; bad JSON lines are reported and skipped."""
    events = []
    for a in args:
        if isinstance(a, (list, tuple)):
            events.extend(_events_from(a, {}))
        elif isinstance(a, str):
            events.extend(_decode_json(a))
        else:
            events.append(Event(a))
    if fields:
        _note_unknown_fields(fields)
        events.append(Event(**fields))
    return events


def _decode_json(text):
    """Events from JSON text as a datagram is decoded (an object, an array,
    NDJSON whose lines may be arrays); each bad line is reported once."""
    events, errors = _server.decode_json(text)
    for err in errors:
        print(_paint(RED, err))
    return events


def _count(n, what="event"):
    return f"{n} {what}{'' if n == 1 else 's'}"


def _report(text):
    """How inject(), send(), paste() and tap() say what they did: one printed line."""
    # Under bpython, lines the streams printed meanwhile wait for a repaint:
    # show them first, so they come before the count, as in the other shells.
    while _bpython_wake is not None and _bpython_pending and \
            threading.current_thread() is threading.main_thread():
        print(_bpython_pending.popleft())
    print(_paint(DIM, text))


def inject(*events, **fields):
    """inject(event | dict | JSON string | list | **fields): run events through the streams now."""
    evs = _events_from(events, fields)
    _server.inject(evs)
    _report(f"{_count(len(evs))} injected")


def paste():
    """paste(): paste JSON events (objects, arrays, NDJSON); a blank line or Ctrl-D ends, Ctrl-C cancels."""
    print(_paint(DIM, "paste JSON events; end with a blank line or Ctrl-D, Ctrl-C cancels"))
    lines = []
    try:
        while True:
            try:
                line = input()
            except EOFError:
                break
            if not line.strip():
                if lines and _incomplete("\n".join(lines)):
                    continue
                break
            lines.append(line)
    except KeyboardInterrupt:
        print()  # input() leaves the cursor after the ^C
        _report("paste cancelled; nothing injected")
        return
    evs = _decode_json("\n".join(lines))
    _server.inject(evs)
    _report(f"{_count(len(evs))} injected")


def _incomplete(text):
    """Whether a pretty-printed object is still open (a blank line inside it
    does not end the paste)."""
    try:
        json.loads(text)
        return False
    except json.JSONDecodeError as e:
        return e.msg.startswith(("Expecting", "Unterminated")) and e.pos >= len(text.rstrip())


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr = None


def event(**fields):
    """event(**fields): the JSON datagram for an event, for sock.sendto(event(...), addr)."""
    return Event(**fields).to_json().encode()


def send(*events, **fields):
    """send(event | dict | JSON | list | **fields): send events over the real UDP socket to the server.

    send(e, *targets) with stream targets passes e on to them, as dmon.streams.send
    does inside coroutines, so coroutines typed at the prompt work too."""
    if len(events) >= 2 and not fields and all(hasattr(t, "send") for t in events[1:]):
        return _streams_send(*events)
    evs = _events_from(events, fields)
    for e in evs:
        sock.sendto(e.to_json().encode(), addr)
    _report(f"{_count(len(evs))} sent to {addr[0]}:{addr[1]}")


def record(path=None, format="ndjson"):
    """record(path, format="ndjson"): write every event the server receives to a file, for dmon replay; record() stops."""
    if path is None:
        done = _server.record_stop()
        _report(done if done is not None else "not recording")
        return
    path = os.fspath(path)
    previous = _server.record_start(path, format)
    if previous is not None:
        _report(previous)
    _report(f"recording every event received to {path} ({format}); record() stops")


def stats(as_json=False):
    """stats(as_json=False): received, decoded, bad, mail and other sinks, per-node counters, uptime (as_json: the JSON line).

    In cluster mode, a section per node of the cluster, this node first."""
    if _server.in_cluster():
        for i, (node, body) in enumerate(_server.cluster_counters(False)):
            if as_json:
                print(json.dumps({"node": node, "stats": None if body is None else json.loads(body)}))
            elif _cluster_section(node, body):
                _print_stats(json.loads(body), local=i == 0)
        return
    if as_json:
        print(_server.stats_json())
        return
    _print_stats(json.loads(_server.stats_json()), local=True)


def _cluster_section(node, body):
    """A node's section header; False when it did not answer."""
    if body is None:
        print(_paint(RED, f"== {node}: did not answer =="))
        return False
    print(_paint(BOLD, f"== {node} =="))
    return True


def _print_stats(s, local):
    lines = [
        f"uptime {s['uptime_secs']:.1f} s   datagrams {s['datagrams']} (bad {s['bad_datagrams']})   "
        f"events {s['events']} (bad {s['bad_events']})   processed {s['processed']}   "
        f"expired {s['expired']}   indexed {s['indexed']}",
        f"mail: queued {s['mails_queued']}  sent {s['mails_sent']}  "
        f"failed {s['mail_failures']}  dropped {s['mails_dropped']}",
        _recent_line(s) if local else
        f"recent: {_events(s['recent_events'])} kept, {_mib(s['recent_bytes'])}, "
        f"{s['recent_dropped']} dropped by the caps",
        _memory_line(s),
    ]
    if s.get("state_dir"):
        lines.append(_state_line(s))
    # forward(), graphite(): one line per target (the mailer has its line above).
    for k in s.get("sinks", []):
        if k["kind"] != "email":
            lines.append(
                f"{k['kind']} {k['target']}: sent {k['sent']}  retried {k['retried']}  "
                f"failed {k['failed']}  dropped {k['dropped']}  waiting {k['waiting']}"
            )
    print("\n".join(lines))
    _print_nodes(s["nodes"])


_SHARES = ("messages", "pipeline", "replies", "subscribers", "sinks", "recorder", "recent")


def _memory_line(s):
    """What each share of --memory-limit holds, and what it refused."""
    held = "  ".join(f"{k} {_mib(s[f'memory_{k}_bytes'])}" for k in _SHARES)
    refused = sum(s[f"memory_{k}_refused"] for k in _SHARES)
    return f"memory (limit {_mib(s['memory_limit_bytes'])}): {held}; refused {refused}"


def _recent_line(s):
    """The recent-traffic ring (what try_stream() replays): its size, bounds and drops."""
    window, cap, cap_bytes = _server.recent_bounds()
    if not window:
        return "recent: off (--recent-minutes 0), so try_stream() has nothing to replay"
    return (f"recent: {_events(s['recent_events'])} kept, {_mib(s['recent_bytes'])} "
            f"(last {_minutes(window / 60)}, at most {cap:,} and {_mib(cap_bytes)}), "
            f"{s['recent_dropped']} dropped by the caps")


def _state_line(s):
    """--state-dir: saves written and failed, the last one's size, corrupt files set aside."""
    line = (f"state: {s['state_saves']} saves to {s['state_dir']} ({s['state_save_failures']} failed, "
            f"last {_mib(s['state_save_bytes'])})")
    if s["state_corrupt"]:
        line += f", {s['state_corrupt']} unreadable state file set aside"
    return line


def _mib(n):
    return f"{n / (1 << 20):.1f} MiB"


def _events(n):
    return "1 event" if n == 1 else f"{n:,} events"


def _minutes(m):
    return "1 minute" if m == 1 else f"{m:g} minutes"


def _print_nodes(nodes):
    """One row per node: its path (the name logs use), how it was built, counters,
    live facts (a by's forks), and whether it kept its state at the last reload."""
    path_w = max((len(n["path"]) for n in nodes), default=0)
    desc_w = max((len(n["describe"]) for n in nodes), default=0)
    for n in nodes:
        err = _paint(RED, f"errors {n['errors']}") if n["errors"] else f"errors {n['errors']}"
        extra = ""
        if n.get("detail"):
            extra += "  " + _paint(YELLOW, n["detail"])
        if n.get("kept_state"):
            extra += "  " + _paint(DIM, "kept state")
        print(
            f"{_paint(BOLD, n['path'].ljust(path_w))}  {_paint(BLUE, n['describe'].ljust(desc_w))}  "
            f"{_paint(DIM, 'in')} {_paint(GREEN, n['in'])}  {_paint(DIM, 'out')} {_paint(GREEN, n['out'])}  {err}{extra}"
        )


def streams():
    """streams(): the stream tree, each node with events in / out / errors (in cluster mode, per dmon node)."""
    if _server.in_cluster():
        for node, body in _server.cluster_counters(True):
            if _cluster_section(node, body):
                _print_nodes(json.loads(body))
        return
    _print_nodes(json.loads(_server.stats_json())["nodes"])


def tap(node, n=None):
    """tap(node, n=None): show events leaving a node live, until Ctrl-C (or n events).

    `node` is a stream (tap(average_stream)), a path as streams() prints it
    (tap("average_stream/average/index")), or a glob of paths
    (tap("average_stream/*")); with several nodes, each line names its node."""
    if isinstance(node, Stream):
        taps = [(None, node)]
    elif isinstance(node, str):
        import fnmatch
        taps = [(p, s) for p, s in _server.nodes() if fnmatch.fnmatchcase(p, node)]
        if not taps:
            raise ValueError(f"tap(): no node's path matches {node!r}; streams() lists them")
    else:
        raise TypeError(f"tap() needs a stream or a path, like tap(average_stream) or tap(\"average_stream/*\"), not {node!r}")
    what = taps[0][1].kind if taps[0][0] is None else ", ".join(p for p, _ in taps)
    opened = [(path, _server.tap(s)) for path, s in taps]
    # Said once the taps are open: what leaves the nodes from now on shows.
    print(_paint(DIM, f"tapping {what}; Ctrl-C to stop"))
    seen = 0
    try:
        while n is None or seen < n:
            got = False
            for path, t in opened:
                e = t.next(0 if len(opened) > 1 else 0.1)
                if e is not None:
                    got = True
                    label = "tap: " if path is None or len(opened) == 1 else f"tap {path}: "
                    print(_paint(YELLOW, label) + e.to_json())
                    seen += 1
                    if seen == n:
                        break
            if not got and len(opened) > 1:
                time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        for _, t in opened:
            t.close()
    _report(f"{_count(seen)} seen")


def index(filter=None):
    """index(filter=None): the index as a table (host, service, state, metric, age, ttl); filter is a predicate.

    Without a filter this is also the index() stream node, so `index_stream = index()` works
    in the shell; shown at the prompt, an index node prints the table."""
    return _IndexNode(_index_node()) if filter is None else _IndexTable(filter)


def query(text):
    """query(text): the index's events matching a Riemann query, e.g. query('service =~ "cpu%"')
    (in cluster mode, every node's, merged)."""
    for warning in _server.query_warnings(text):  # once per query text
        print(_paint(YELLOW, f"warning: {warning}"))
    if _server.in_cluster():
        events, report = _server.cluster_query(text)
        return _IndexTable(events=events, report=report)
    return _IndexTable(events=_server.query_events(text))


class _IndexTable(list):
    """Events from the index; shown at the prompt as a table (in cluster mode,
    every node's, then what each node answered)."""

    def __init__(self, pred=None, events=None, report=None):
        if events is None:
            events, report = _all_events()
            events = [e for e in events if pred is None or pred(e)]
        super().__init__(events)
        self.report = report or []

    def __repr__(self):
        return _table(self, self.report)


def _all_events():
    """The index (in cluster mode, every node's, and a line per node)."""
    if _server.in_cluster():
        return _server.cluster_query("true")
    return _server.index_events(), []


class _IndexNode(Stream):
    """The index() stream node, shown at the prompt as the index's table."""

    def __repr__(self):
        return _table(*_all_events())


def _table(events, report=()):
    now = time.time()
    rows = [("host", "service", "state", "metric", "age", "ttl")]
    for e in events:
        rows.append((
            e.host or "", e.service or "", e.state or "",
            "" if e.metric is None else str(e.metric),
            f"{now - e.time:.1f}s" if e.time is not None else "",
            "" if e.ttl is None else f"{e.ttl:g}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    out = []
    for i, r in enumerate(rows):
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        out.append(_paint(BOLD, line) if i == 0 else line)
    out.append(_paint(DIM, f"{_count(len(events))} in the index"))
    out.extend(_paint(RED if line.endswith("did not answer") else DIM, line) for line in report)
    return "\n".join(out)


_BARS = "▁▂▃▄▅▆▇█"


def _sparkline(points, start, end, width):
    """One character per time slice of [start, end]: the slice's mean metric,
    scaled between the lowest and highest slice; a space where nothing came."""
    slices = [[] for _ in range(width)]
    span = max(end - start, 1e-9)
    for t, m in points:
        slices[min(width - 1, max(0, int((t - start) / span * width)))].append(m)
    means = [sum(s) / len(s) if s else None for s in slices]
    known = [m for m in means if m is not None]
    lo, hi = min(known), max(known)
    top = len(_BARS) - 1
    return "".join(
        " " if m is None else _BARS[top // 2 if hi == lo else round((m - lo) / (hi - lo) * top)]
        for m in means
    )


def spark(host, service, minutes=5, width=60):
    """spark(host, service, minutes=5, width=60): a sparkline of a series' metrics received in the last minutes.

    Reads the recent-traffic ring (--recent-minutes), so it shows what was
    received, one character per time slice: spark("web1", "cpu")."""
    if not (isinstance(width, int) and 1 <= width <= 500):
        raise ValueError(f"spark(): width must be an int from 1 to 500, not {width!r}")
    now, points = _server.series(host, service, minutes * 60)
    if not points:
        _report(f"spark: no metric from {host} {service} in the last {minutes:g} min")
        return
    metrics = [m for _, m in points]
    print(f"{host} {service}, last {minutes:g} min: {_count(len(metrics), 'point')}, "
          f"min {min(metrics):g}, max {max(metrics):g}, last {metrics[-1]:g}")
    print(_sparkline(points, now - minutes * 60, now, width))


def _fit(text, width):
    """`text` cut from the left to `width` characters (a path's end says most)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


# Whether top() may move the cursor back up to redraw its view: not under
# bpython, whose screen is its own.
_redraw_in_place = True


def top(n=10, interval=2, rounds=None):
    """top(n=10, interval=2): the busiest nodes and series, redrawn every `interval` seconds until Ctrl-C.

    Nodes by events in per second (from their counters); series (host,
    service) by events received per second, with their last metric, from the
    recent-traffic ring. `rounds` stops after that many views."""
    if not interval > 0:
        raise ValueError(f"top(): interval must be a positive number of seconds, not {interval!r}")

    def node_counts():
        return {nd["path"]: nd["in"] for nd in json.loads(_server.stats_json())["nodes"]}

    # Each view covers the time since the last one started, measured: taking
    # the counters can wait for the event in flight, and a window counted
    # from after that wait would miss the events it waited for.
    started, before, shown, drawn = time.monotonic(), node_counts(), 0, 0
    # Said once the first window has begun: what arrives from now on counts.
    print(_paint(DIM, f"top: a view every {interval:g} s (Ctrl-C stops)"))
    try:
        while rounds is None or shown < rounds:
            time.sleep(interval)
            now = time.monotonic()
            span, started = now - started, now
            series = _server.busiest(span, n)
            after = node_counts()
            nodes = sorted(((after[p] - before.get(p, 0)) / span, p) for p in after)[::-1][:n]
            before = after
            shown += 1
            lines = [_paint(DIM, f"top: the last {span:.1f} s (Ctrl-C stops)"),
                     f"{'node':<64}{'events/s':>12}"]
            lines += [f"{_fit(p, 63):<64}{rate:>12.1f}" for rate, p in nodes]
            lines.append(f"{'series (host service)':<52}{'events/s':>12}{'last metric':>14}")
            for host, service, count, last in series:
                name = _fit(f"{host or '-'} {service or '-'}", 51)
                metric = "-" if last is None else f"{last:g}"
                lines.append(f"{name:<52}{count / span:>12.1f}{metric:>14}")
            if drawn and _redraw_in_place:
                # Up to the previous view's first line, and clear below: one
                # screen redrawn in place, as `vector top` does.
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J")
            print("\n".join(lines))
            drawn = len(lines)
    except KeyboardInterrupt:
        pass


def try_stream(candidate, minutes=5, against=None):
    """try_stream(candidate, minutes=5, against=None): dry-run a stream on the last minutes of traffic, beside the live streams.

    Runs a fresh copy of `candidate` over the events received in the last
    `minutes` (on a clock that follows their times; nothing is printed, mailed
    or indexed for real), and the same with a fresh copy of the live streams —
    all of them, or the one `against` names ("average_stream"). Shows the
    events per output for each, then the first events one sent and the other
    did not. Returns a TryResult whose attributes hold the same data. To make
    the candidate live, bind it: `x_stream = candidate`."""
    data = _server.try_stream(candidate, minutes, against)
    names = [k for k, v in _ns.items() if v is candidate and not k.startswith("_")]
    return TryResult(data, names[0] if names else None)


class TryResult:
    """What try_stream() found; shown at the prompt as its report.

    events, first, last (receive times), against, live_streams; counts: a list of
    (output, candidate, live); only_candidate / only_live: the first (output,
    event) pairs only that side sent, with only_candidate_total / only_live_total;
    errors: (candidate's, live's) node errors; same: no differences."""

    SHOWN = 5
    WIDTH = 80

    def __init__(self, data, name=None):
        self.events = data["events"]
        self.first, self.last = data["first"], data["last"]
        self.minutes, self.kept_minutes = data["minutes"], data["kept_minutes"]
        self.against = data["against"]
        self.live_streams = data["live_streams"]
        self.counts = [(node, c, l) for node, _kind, c, l in data["rows"]]
        self._kinds = {node: kind for node, kind, _c, _l in data["rows"]}
        self.only_candidate = [(node, e) for node, _kind, e in data["only_candidate"]]
        self.only_live = [(node, e) for node, _kind, e in data["only_live"]]
        self.only_candidate_total = data["only_candidate_total"]
        self.only_live_total = data["only_live_total"]
        self.errors = tuple(data["errors"])
        self.name = name

    @property
    def same(self):
        return self.only_candidate_total == 0 and self.only_live_total == 0

    def count(self, output):
        """(candidate, live) events that reached the output described so: 'printer("hi: ")'."""
        for node, c, l in self.counts:
            if node == output:
                return (c, l)
        raise KeyError(f"no output {output}; the outputs are {', '.join(n for n, _, _ in self.counts)}")

    def _fit(self, text):
        return text if len(text) <= self.WIDTH else text[:self.WIDTH - 1] + "…"

    def report(self):
        span = f"{_clock(self.first)}–{_clock(self.last)} ({_duration(self.last - self.first)})"
        out = [_paint(BOLD, self._fit(f"try_stream: {_count(self.events)} received {span}"))]
        if self.against is not None:
            out.append(self._fit(f"candidate vs {self.against}"))
        elif self.live_streams == ["against"]:  # (a root's name has "stream" in it)
            out.append("candidate vs the stream given as against")
        else:
            live = ", ".join(self.live_streams) or "(none)"
            out.append(self._fit(f"candidate vs the live streams: {live}"))
        if self.minutes > self.kept_minutes:
            out.append(_paint(YELLOW, f"(only the last {_minutes(self.kept_minutes)} are kept: "
                                      "--recent-minutes)"))
        col = 9
        node_w = min(max([len("output")] + [len(n) for n, _, _ in self.counts]),
                     self.WIDTH - 2 * (col + 2))
        out.append(_paint(DIM, f"{'output':<{node_w}}  {'candidate':>{col}}  {'live':>{col}}"))
        for node, c, l in self.counts:
            name = node if len(node) <= node_w else node[:node_w - 1] + "…"
            out.append(f"{name:<{node_w}}  {c:>{col}}  {l:>{col}}")
        if not self.counts:
            out.append(_paint(DIM, "(no output nodes on either side)"))
        if self.same:
            out.append(_paint(GREEN, "no differences: the candidate sent what the live streams sent"))
        else:
            out.append(
                f"differences: {self.only_candidate_total} only from the candidate (+), "
                f"{self.only_live_total} only from live (-); the first:")
            merged = [("+", GREEN, n, e) for n, e in self.only_candidate] + \
                     [("-", RED, n, e) for n, e in self.only_live]
            merged.sort(key=lambda d: d[3].time if d[3].time is not None else float("inf"))
            for sign, color, node, e in merged[:self.SHOWN]:
                line = self._fit(f"{sign} {self._kinds.get(node, node):<7} {e.to_json()}")
                out.append(_paint(color, line[0]) + line[1:])
        failed = [f"the candidate's nodes failed {self.errors[0]} times"] if self.errors[0] else []
        failed += [f"the live streams' {self.errors[1]} times"] if self.errors[1] else []
        if failed:
            out.append(_paint(RED, f"{' and '.join(failed)} (logs() shows why)"))
        expr = self.name or "<candidate>"
        out.append(_paint(DIM, self._fit(f"to make it live: x_stream = {expr}")))
        if self.against:
            out.append(_paint(DIM, self._fit(f"or, to replace {self.against}: {self.against} = {expr}")))
        return "\n".join(out)

    __repr__ = report
    __str__ = report


def trace(event=None, **fields):
    """trace(event | dict | **fields): one event's path, node by node: trace(host="web1", metric=0.97)

    Runs the event through a copy of the live streams and prints each node it
    reached (by its streams() path), each filter's verdict (true,
    false, or the exception raised), what each node did (passed, emitted N,
    held in a window, throttled, forked to a by key), where it stopped, and
    what reached the outputs. The copy starts with the live nodes' state
    (windows, throttles, by's forks) and nothing is mailed, indexed or sent;
    the live streams are left as they are. Prints the path and returns a Trace
    (.steps, .stopped_at, .outputs, .step(path))."""
    evs = _events_from(() if event is None else (event,), fields)
    if len(evs) != 1:
        raise ValueError(f"trace() traces one event, not {len(evs)}")
    t = _server.trace(evs[0])
    print(t)
    return t


def _clock(t):
    return time.strftime("%H:%M:%S", time.localtime(t))


def _duration(secs):
    secs = int(round(secs))
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min {secs % 60} s"
    return f"{secs // 3600} h {secs % 3600 // 60} min"


def reload():
    """reload(): re-import the stream module from disk and swap its streams in atomically."""
    try:
        module = _server.load_module()
    except RuntimeError as e:
        _say(_paint(RED, f"reload failed; the running streams are unchanged:\n{e}"))
        return
    dropped = []
    for name in list(_ns):
        if "stream" in name and isinstance(_ns[name], Stream):
            if not isinstance(getattr(module, name, None), Stream):
                dropped.append(name)
            del _ns[name]
    adopt(module)
    _sync(announce=True)
    if dropped:
        _say(_paint(YELLOW, f"reload dropped {', '.join(dropped)}: defined at the prompt, "
                            "not in the module"))
    kept = [n["path"] for n in json.loads(_server.stats_json())["nodes"] if n.get("kept_state")]
    held = f"state kept by {', '.join(kept)}" if kept else "no node kept state"
    _say(_paint(DIM, f"{held}; changed and new nodes (and coroutines) start afresh"))


def edit(name=None):
    """edit(name=None): open $EDITOR on the stream module (or where `name` is defined); reload on save."""
    path, line = _server.module_path(), None
    if name is not None:
        import inspect
        target = _ns.get(name, name) if isinstance(name, str) else name
        try:
            path = inspect.getsourcefile(target)
            line = inspect.getsourcelines(target)[1]
        except (OSError, TypeError):
            # A root is a stream, not a function: find where the module binds it.
            names = [name] if isinstance(name, str) else [k for k, v in _ns.items() if v is target]
            line = next(filter(None, (_binding_line(path, n) for n in names)), None)
    if path is None:
        raise RuntimeError("the streams came from the built-in example; start with --streams FILE to edit")
    before = _read_bytes(path)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    cmd = editor.split() + ([f"+{line}"] if line else []) + [path]
    with _terminal_lent():
        subprocess.call(cmd)
    if _read_bytes(path) != before:
        reload()
    else:
        print(_paint(DIM, "not saved; nothing reloaded"))


class _terminal_lent:
    """While a pager or an editor has the terminal, server output (printer
    lines, logs) waits, and is shown when it returns, instead of landing on
    that program's screen and vanishing with it."""

    def __enter__(self):
        _server.hold_console()

    def __exit__(self, *exc):
        _server.release_console()


def _binding_line(path, name):
    """The line where a Python module at `path` binds `name` at its top level
    (an assignment, def, class or import), or None."""
    source = _read_bytes(path) if path and path.endswith(".py") else None
    tree = _parse(source, path) if source is not None else None
    for node in tree.body if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = [(a.asname or a.name).split(".")[0] for a in node.names]
        else:
            continue
        if name in bound:
            return node.lineno
    return None


_watcher = None


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def watch(interval=0.5):
    """watch(): reload automatically whenever the stream module file changes (watch(False) stops)."""
    global _watcher
    if _watcher is not None:
        _watcher.set()
        _watcher = None
    if interval is False:
        return "not watching"
    path = _server.module_path()
    if path is None:
        raise RuntimeError("the streams came from the built-in example; start with --streams FILE to watch")
    stop = threading.Event()
    _watcher = stop

    def run():
        # Contents, not mtimes: those are too coarse to see every save.
        last = _read_bytes(path)
        while not stop.wait(interval):
            now = _read_bytes(path)
            if now is not None and now != last:
                last = now
                _server.console(f"{path} changed; reloading")
                reload()

    threading.Thread(target=run, name="dmon-watch", daemon=True).start()
    return f"watching {path}"


_LEVEL_COLORS = {"ERROR": RED, "WARN": YELLOW, "INFO": GREEN}


def logs(n=20):
    """logs(n=20): the last n log records in full (tracebacks included), oldest first."""
    records = _server.recent_logs(n)
    for level, t, message in records:
        stamp = time.strftime("%H:%M:%S", time.localtime(t))
        print(f"{_paint(DIM, stamp)} {_paint(_LEVEL_COLORS.get(level, DIM), level)} {message}")
    if not records:
        print(_paint(DIM, "no log records yet"))


def log_level(level):
    """log_level("warn"|"info"|"debug"|"off"): which log records are shown and kept from now on."""
    _server.set_log_level(level)
    print(_paint(DIM, f"log level: {level}"))


def help(obj=None):  # noqa: A001  (the shell's help lists the shell's commands)
    """help(): the shell's commands; help(streams): the stream functions; help(x): Python's help on x."""
    if obj is streams:
        return _help_catalog()
    if obj is not None:
        import builtins
        with _terminal_lent():
            return builtins.help(obj)
    # One screen (50 lines at 80 columns): the commands, then the stream
    # functions by name only; help(streams) has a line for each.
    import shutil
    import textwrap
    import dmon.streams as ds
    width = min(shutil.get_terminal_size().columns, 100)
    print(_paint(BOLD, "dmon shell commands"))
    for f in _HELPERS:
        summary = f.__doc__.splitlines()[0].split(": ", 1)[-1]
        if len(summary) > width - 27:
            summary = summary[:width - 28] + "…"
        print(f"  {_paint(BLUE, f.__name__ + '()'):<24} {summary}")
    print(_paint(BOLD, "stream functions") + " (help(streams): one line each; help(name): the whole doc)")
    for family, names in ds._catalog:
        print(textwrap.fill(", ".join(names), width, initial_indent=f"  {family}: ", subsequent_indent="    "))
    print("  also: send(event, *targets), @coroutine, folds (lists of events to one)")
    print("Rebinding a name containing 'stream' takes effect when the statement finishes.")


def _help_catalog():
    import dmon.streams as ds
    for family, names in ds._catalog:
        print(_paint(BOLD, f"stream functions: {family}"))
        for name in names:
            doc = (getattr(ds, name).__doc__ or "").split("\n\n")
            summary = doc[1].replace("\n", " ") if len(doc) > 1 else ""
            print(f"  {_paint(BLUE, name):<24} {summary}")
    print(_paint(BOLD, "also"))
    print(f"  {_paint(BLUE, 'send'):<24} {ds.send.__doc__.splitlines()[0]}")
    print(f"  {_paint(BLUE, '@coroutine'):<24} {ds.coroutine.__doc__.splitlines()[0]}")
    print(f"  {_paint(BLUE, 'folds'):<24} {', '.join(ds.folds.__all__)}: a list of events to one event")
    print("help(name) shows a function's whole doc, with an example.")


def _say(text):
    """Prints at the prompt; from a background thread, above it."""
    if threading.current_thread() is threading.main_thread():
        print(text)
    else:
        _server.console(text)


def _sync(announce=False):
    """Swaps in the namespace's roots if they changed; called after every statement."""
    changed = _server.sync_roots(_ns)
    if changed is not None and (announce or changed):
        _say(_paint(DIM, "streams: " + (", ".join(changed) or "(none)")))


def banner():
    names = ", ".join(_server.root_names()) or "(on the remote server)"
    where = _server.describe()
    return f"dmon {_server.version()} — streams: {names} — {where} — help() for commands"


class PlainInterpreter(code.InteractiveInterpreter):
    """The plain shell's evaluator: coloured tracebacks, root sync after each
    statement, and every statement of a paste or a burst of lines run.

    Lines are pushed one at a time (a bracketed paste arrives as one line
    holding newlines). An input that is one statement runs as in Python's
    own REPL (a block stays open until a blank line). One that is several
    (a paste, or a block followed by a line at column 0) runs statement by
    statement, each echoing its value, as IPython and Python 3.13 do,
    stopping at the first exception."""

    inputs = 0

    def __init__(self, namespace):
        super().__init__(namespace)
        self._pending = []

    def write(self, data):
        sys.stderr.write(_paint(RED, data) if _color else data)

    def reset(self):
        """Forgets a half-typed block (Ctrl-C)."""
        self._pending = []

    def push(self, line):
        """One line of input; True while more lines are needed."""
        self._pending.append(line)
        source = "\n".join(self._pending)
        filename = self._remember(source)
        try:
            code = self.compile(source, filename, "single")
        except (OverflowError, SyntaxError, ValueError):
            self._pending = []
            return self._run_several(source, filename)
        if code is None:
            # Remembered again, whole, once complete.
            linecache.cache.pop(filename, None)
            return True
        self._pending = []
        _run(self, code)
        return False

    def _remember(self, source):
        # Each input under its own name in linecache, as IPython and bpython
        # do, so tracebacks and node names can show the text typed.
        PlainInterpreter.inputs += 1
        filename = f"<dmon-input-{PlainInterpreter.inputs}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        return filename

    def _run_several(self, source, filename):
        tree = _parse(source, filename)
        if tree is None:
            head, _, last = source.rpartition("\n")
            head_tree = _parse(head, filename) if head and last[:1] not in ("", " ", "\t") else None
            if head_tree is None:
                self.showsyntaxerror(filename)
                return False
            # A burst of lines: one at column 0 closed the block above it,
            # and may itself open the next.
            return _run_statements(self, head_tree, filename) and self.push(last)
        _run_statements(self, tree, filename)
        return False


def _several_statements(interp, source, filename):
    """The statements of `source` when it is more than one (so the prompt's
    single-statement compile refuses it) and parses as a module; else None."""
    if "\n" not in source.strip():
        return None
    try:
        interp.compile(source, filename, "single")
        return None
    except (OverflowError, SyntaxError, ValueError):
        return _parse(source, filename)


def _parse(source, filename):
    try:
        return ast.parse(source, filename, "exec")
    except (OverflowError, SyntaxError, ValueError):
        return None


def _run(interp, code):
    """Runs one compiled statement in a shell's namespace, then syncs the
    roots; False if it raised (the traceback is shown)."""
    try:
        exec(code, interp.locals)
    except SystemExit:
        raise
    except BaseException:
        interp.showtraceback()
        return False
    finally:
        _sync()
    return True


def _run_statements(interp, tree, filename):
    """Runs a module's statements one by one, each echoing its value as at
    the prompt; False at the first that raised."""
    flags = interp.compile.compiler.flags
    for statement in tree.body:
        code = compile(ast.Interactive(body=[statement]), filename, "single", flags, True)
        if not _run(interp, code):
            return False
    return True


_interp = None


def push_plain_line(line):
    """Evaluates one line typed or pasted at the plain prompt; True means more lines are needed."""
    return _interp.push(line)


def reset_plain_input():
    """Ctrl-C at the plain prompt: the half-typed block is dropped."""
    _interp.reset()


def complete(text, state_limit=200):
    """Completions for the word before the cursor: names and attributes."""
    import rlcompleter
    c = rlcompleter.Completer(_ns)
    out = []
    for i in range(state_limit):
        m = c.complete(text, i)
        if m is None:
            break
        out.append(m)
    return out


# How long prompt_toolkit's stdout proxy (IPython's prompt) waits after each
# write before the next; its 0.2 s default held a line that followed another
# within 0.2 s for up to that long.
_IPYTHON_WRITE_INTERVAL = 0.02


def run_ipython():
    import IPython
    from prompt_toolkit import patch_stdout
    from traitlets.config import Config

    original_init = patch_stdout.StdoutProxy.__init__

    def init(self, sleep_between_writes=0.2, *args, **kwargs):
        original_init(self, min(sleep_between_writes, _IPYTHON_WRITE_INTERVAL), *args, **kwargs)

    patch_stdout.StdoutProxy.__init__ = init

    cfg = Config()
    cfg.TerminalInteractiveShell.banner1 = banner() + "\n"
    cfg.InteractiveShellApp.exec_lines = [
        "get_ipython().events.register('post_run_cell', lambda result: __import__('dmon_shell')._sync())"
    ]
    if not _color:
        cfg.InteractiveShell.colors = "NoColor"
    IPython.start_ipython(argv=[], user_ns=_ns, config=cfg)


def run_hy():
    """Hy's own prompt over the shell's namespace, the roots synced after
    each form; Hy shows errors at the form typed, its reader's frames left
    out."""
    import hy
    global _ns

    class DmonREPL(hy.REPL):
        def runsource(self, source, filename="<stdin>", symbol="exec"):
            more = super().runsource(source, filename, symbol)
            if not more:
                _sync()
            return more

        def banner(self):
            return f"{banner()} — Hy {hy.__version__}"

    repl = DmonREPL(locals=_ns, filename="<dmon>")
    # Hy evaluates in a module's namespace, filled from ours: the shell's
    # helpers and root syncing follow it from now on.
    _ns = repl.locals
    repl.run()


_bpython_wake = None
_bpython_woken = False
_bpython_pending = collections.deque()


def bpython_output(line):
    """Server output under bpython: queued here, shown by bpython's own thread
    (its screen cannot be written from another thread)."""
    global _bpython_woken
    _bpython_pending.append(line)
    wake = _bpython_wake
    # One wake-up per paint: each writes to a pipe, and a full pipe would
    # block the server thread that prints.
    if wake is not None and not _bpython_woken:
        _bpython_woken = True
        wake()


def run_bpython():
    global _redraw_in_place
    _redraw_in_place = False
    import bpython
    import bpython.repl
    from bpython.curtsies import FullCurtsiesRepl
    from bpython.curtsiesfrontend import events as bpython_events
    from curtsies import events as curtsies_events
    from bpython.curtsiesfrontend.repl import FakeStdin

    original_runsource = bpython.repl.Interpreter.runsource

    def runsource(self, source, filename="<input>", *args, **kwargs):
        several = _several_statements(self, source, filename)
        if several is not None:
            # A paste (bpython feeds it line by line): a block followed by
            # a line at column 0 runs as statements, as at the plain prompt.
            _run_statements(self, several, filename)
            return False
        more = original_runsource(self, source, filename, *args, **kwargs)
        if not more:
            _sync()
        return more

    original_init = FullCurtsiesRepl.__init__
    original_paint = FullCurtsiesRepl.process_event_and_paint
    original_stdin_event = FakeStdin.process_event

    class ServerLines(curtsies_events.Event):
        """Wakes bpython's loop to show queued server lines."""

    def init(self, *args, **kwargs):
        global _bpython_wake
        original_init(self, *args, **kwargs)
        # A thread-safe trigger of a real event: bpython's own
        # interrupting_refresh() yields None, which its loop drops while it
        # gathers module names for completion (seconds after start-up), so
        # lines waited for the next key.
        _bpython_wake = self.input_generator.threadsafe_event_trigger(ServerLines)

    def process_event_and_paint(self, e):
        if isinstance(e, ServerLines):
            e = None  # nothing to process: the paint below shows the lines
        # Server lines go in only between lines of the user's own output,
        # never into the middle of one.
        global _bpython_woken
        _bpython_woken = False
        while _bpython_pending and self.current_stdouterr_line == "":
            self.send_to_stdouterr(_bpython_pending.popleft() + "\n")
        return original_paint(self, e)

    enter_keys = ("\n", "\r", "<Ctrl-j>", "<Ctrl-m>")

    def stdin_event(self, e):
        # bpython 0.26 treats keys that arrive together as a paste, and a
        # paste into input() (our paste()) swallows its Enter: feed such a
        # paste as text, Enter, text, … so each line reaches input().
        if isinstance(e, curtsies_events.PasteEvent) and any(k in enter_keys for k in e.events):
            text = []
            for i, key in enumerate(e.events):
                if key not in enter_keys:
                    text.append(key)
                    continue
                if text:
                    chunk = curtsies_events.PasteEvent()
                    chunk.events = text
                    stdin_event(self, chunk)
                    text = []
                stdin_event(self, "\n")
                if not self.has_focus:
                    # The code went on; what is left is typed at the prompt
                    # (or into the next input(), which takes focus again).
                    rest = e.events[i + 1:]
                    if rest:
                        chunk = curtsies_events.PasteEvent()
                        chunk.events = rest
                        self.repl.process_event(chunk)
                    return
            if text:
                chunk = curtsies_events.PasteEvent()
                chunk.events = text
                stdin_event(self, chunk)
            return
        original_stdin_event(self, e)
        # bpython defers refreshes while input() receives a paste and only
        # its own Enter handling performs them; without this, input() waits
        # for ever.
        while self.repl.fake_refresh_requested:
            self.repl.fake_refresh_requested = False
            self.repl.process_event(bpython_events.RefreshRequestEvent())

    bpython.repl.Interpreter.runsource = runsource
    FullCurtsiesRepl.__init__ = init
    FullCurtsiesRepl.process_event_and_paint = process_event_and_paint
    FakeStdin.process_event = stdin_event
    # blessed turns off every terminal capability under NO_COLOR, cursor
    # movement included, which leaves bpython's screen unusable.
    no_color = os.environ.pop("NO_COLOR", None)
    try:
        bpython.embed(locals_=_ns, banner=banner())
    finally:
        global _bpython_wake
        _bpython_wake = None
        if no_color is not None:
            os.environ["NO_COLOR"] = no_color
        while _bpython_pending:
            print(_bpython_pending.popleft())


def set_address(host, port):
    """Where send() and the seed's `addr` point: the server's UDP address."""
    global addr
    addr = (host, port)
    _ns["addr"] = addr


_HELPERS = (inject, paste, send, event, streams, tap, index, query, record, stats, logs,
            log_level, try_stream, trace, spark, top, reload, edit, watch, help)


def _put_helpers():
    for f in _HELPERS:
        _ns[f.__name__] = f
    _ns.update(sock=sock, Event=Event)


def adopt(module):
    """Brings the stream module's names into the shell; the shell's helpers
    keep their names (a module's `from dmon.streams import *` would shadow
    `send` and `index`)."""
    _ns.update({k: _shown(v) for k, v in vars(module).items() if not k.startswith("__")})
    _put_helpers()


def _shown(value):
    """A module's index node shows the index at the prompt, as index()'s does."""
    if type(value) is Stream and value.kind == "index":
        return _IndexNode(value)
    return value


def setup(server, namespace):
    """Fills `namespace` with the helpers and dmon.streams; returns it."""
    global _server, _ns, _interp
    _server, _ns = server, namespace
    import dmon.streams as ds
    namespace.update({k: getattr(ds, k) for k in ds.__all__})
    _put_helpers()
    namespace.setdefault("__name__", "__main__")
    _interp = PlainInterpreter(namespace)
    # The embedded interpreter's stdout and stderr write through, so print()
    # wrote its text and its newline separately, and a server line written
    # from another thread (the plain shell's external printer) could land
    # between them. Line buffering writes whole lines.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True, write_through=False)
        except (AttributeError, ValueError):
            pass  # not a TextIOWrapper (redirected by the user): leave it
    return namespace
