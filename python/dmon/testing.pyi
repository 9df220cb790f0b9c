"""Run streams over events with a virtual clock, outputs captured: run(tree, events, until=...)."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, final

from dmon.streams import Event as Event
from dmon.streams import Stream

@final
class At:
    """A step of the clock among `run()`'s events (made by `at(t)`)."""

    @property
    def time(self) -> float: ...

def at(time: float) -> At:
    """Moves the clock to `time` at this place in `run()`'s events, ticking
    the tree (windows flush, rates report, the index expires).

    Example: run(tree, [{"metric": 1, "time": 1}, at(60), {"metric": 2, "time": 61}])
    """

@final
class Run:
    """What reached a tree's outputs in one `run()`. Iterating gives the
    events in the order they reached outputs."""

    @property
    def events(self) -> list[Event]:
        """Every event that reached an output, in order."""
    @property
    def outputs(self) -> list[tuple[str, str, list[Event]]]:
        """`(node, kind, [events])` per output, in order: `node` is the output
        as written (`printer("high: ")`), `kind` its function's name."""
    @property
    def printed(self) -> list[str]:
        """The lines `printer()` nodes printed."""
    @property
    def printed_events(self) -> list[Event]:
        """The events `printer()` nodes received."""
    @property
    def mailed(self) -> list[list[Event]]:
        """The mails `email()` would have sent: one list of events per mail."""
    @property
    def indexed(self) -> list[Event]:
        """The events `index()` nodes received, in order."""
    @property
    def index(self) -> list[Event]:
        """The index at the end of the run (expired events removed)."""
    @property
    def counts(self) -> dict[str, int]:
        """Events per output node: `{"printer('high: ')": 2, ...}`."""
    @property
    def errors(self) -> int:
        """Errors nodes of the tree counted (an exception in a predicate, ...)."""
    @property
    def now(self) -> float:
        """The virtual time the run ended at."""
    def leaving(self, node: Stream) -> list[Event]:
        """The events `node` (given in `watch=`) emitted, in order."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Event]: ...

def run(
    tree: Stream | Sequence[Stream] | ModuleType,
    events: Iterable[Event | Mapping[str, Any] | str | At],
    until: float | None = None,
    start: float | None = None,
    watch: Iterable[Stream] | None = None,
) -> Run:
    """Runs `tree` over `events` with a virtual clock and returns what reached
    its outputs.

    `tree` is a stream, a list of streams, or a stream module (its roots).
    It runs as a fresh copy: its state and counters are left as they were,
    so one tree serves many tests. `events` are Events or dicts; the clock
    starts at `start` (default: the first event's time, else 0), follows
    event times and `at(t)` steps among the events, and ends at `until`
    (default: where the events left it). With `until`, time ends there:
    windows, rates, percentiles and batches then forward what they hold, as
    at a server's clean shutdown. `email()` sends nothing: its mails
    are in `.mailed`. `watch` lists nodes of the tree whose emitted events
    `.leaving(node)` returns.
    """

__all__ = ["run", "at", "Run", "Event"]
