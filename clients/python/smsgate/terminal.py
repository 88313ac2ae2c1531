"""Terminal output of the ``smsgate`` CLI for people: with ``rich`` (the
``smsgate[cli]`` extra) on a terminal, a progress bar, tables and a watch
redrawn in place; without rich, or when the output is a pipe or a file, plain
lines a script can read (and ``--json`` is always plain).

``rich`` is imported here only, and only when used: the client distribution
itself depends on grpcio, protobuf and googleapis-common-protos alone.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.progress import Progress, TaskID
    from rich.table import Table

__all__ = [
    "MAX_WATCH_ROWS",
    "SendProgress",
    "WaitProgress",
    "WatchTable",
    "batch_summary",
    "rich_console",
]

#: The live watch table shows this many messages, the most recently changed.
MAX_WATCH_ROWS = 40
_STYLES = {"DELIVERED": "green", "FAILED": "red", "UNDELIVERABLE": "red", "EXPIRED": "yellow"}


def rich_console(stream: TextIO) -> Console | None:
    """A rich Console writing to ``stream`` when rich is installed and
    ``stream`` is a terminal; None for plain output."""
    if not stream.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream)


class _Progress:
    """A count of ``total`` redrawn as it grows: a rich progress bar labelled
    ``_label``, a ``done/total <_verb> (counts)`` line redrawn on a plain
    terminal, or nothing when ``stream`` is not a terminal or ``shown`` is False."""

    _label = ""
    _verb = ""
    _elapsed = False  # a column of the time since the bar started

    def __init__(self, total: int, stream: TextIO, *, shown: bool = True) -> None:
        self.total = total
        self.stream = stream
        self._console = rich_console(stream) if shown else None
        self._plain = shown and stream.isatty()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        if self._console is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            columns: list[ProgressColumn] = [
                TextColumn(self._label),
                BarColumn(),
                MofNCompleteColumn(),
            ]
            if self._elapsed:
                columns.append(TimeElapsedColumn())
            columns.append(TextColumn("{task.fields[counts]}"))
            self._bar = Progress(*columns, console=self._console)
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self.total, counts="")
        return self

    def _show(self, done: int, counts: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, counts=counts)
        elif self._plain:
            line = f"\r{done}/{self.total} {self._verb} ({counts})"
            print(line, end="", file=self.stream, flush=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._plain:
            print(file=self.stream)


class WaitProgress(_Progress):
    """How many of ``total`` messages reached a terminal status, by status: a
    rich progress bar, a counter redrawn on one line of a plain terminal, or
    nothing when ``stream`` is not a terminal."""

    _label = "waiting"
    _verb = "done"
    _elapsed = True

    def __init__(self, total: int, stream: TextIO) -> None:
        super().__init__(total, stream)
        self.counts: Counter[str] = Counter()

    def finished(self, status: str) -> None:
        """One more message reached ``status`` (DELIVERED, FAILED, ...)."""
        self.counts[status] += 1
        self._show(sum(self.counts.values()), self.describe())

    def describe(self) -> str:
        return ", ".join(f"{n} {status.lower()}" for status, n in sorted(self.counts.items()))


class SendProgress(_Progress):
    """Recipients sent of ``total``, chunk by chunk, with how many were
    accepted and rejected: a rich progress bar, a counter line on a plain
    terminal, nothing when ``stream`` is not a terminal or ``total`` is 0."""

    _label = "sending"
    _verb = "sent"

    def __init__(self, total: int, stream: TextIO) -> None:
        super().__init__(total, stream, shown=total > 0)
        self.accepted = self.rejected = 0

    def sent(self, accepted: int, rejected: int) -> None:
        """One more chunk answered."""
        self.accepted += accepted
        self.rejected += rejected
        counts = f"{self.accepted} accepted, {self.rejected} rejected"
        self._show(self.accepted + self.rejected, counts)


def batch_summary(
    stream: TextIO,
    batch_id: str,
    counts: dict[str, int],
    rejected: Sequence[tuple[str, str, str]],
) -> None:
    """Print a batch's ``counts`` (accepted, rejected and, after a wait,
    delivered and not delivered) and its ``rejected`` recipients (number,
    reason, description): tables on a rich terminal, lines otherwise."""
    console = rich_console(stream)
    if console is None:
        for phone, reason, description in rejected:
            print(f"  rejected {phone}: {reason} {description}", file=stream)
        shown = ", ".join(f"{n} {name}" for name, n in counts.items())
        print(f"batch {batch_id}: {shown}", file=stream, flush=True)
        return
    from rich.table import Table

    if rejected:
        table = Table("rejected", "reason", "description", title="Rejected recipients")
        for phone, reason, description in rejected:
            table.add_row(phone, reason, description, style="red")
        console.print(table)
    summary = Table(*counts, title=f"batch {batch_id}")
    summary.add_row(*(str(n) for n in counts.values()))
    console.print(summary)


class WatchTable:
    """The latest status of each watched message, redrawn in place on a rich
    terminal. It keeps the ``MAX_WATCH_ROWS`` most recently changed messages,
    so an endless watch holds a bounded table."""

    def __init__(self, console: Console) -> None:
        self.console = console
        # message id -> (time, status, detail, snapshot), least recent first
        self._rows: OrderedDict[str, tuple[str, str, str, bool]] = OrderedDict()
        self._events = 0
        self._live: Live | None = None

    def __enter__(self) -> WatchTable:
        from rich.live import Live

        self._live = Live(self._render(), console=self.console, auto_refresh=False)
        self._live.start()
        return self

    def add(self, message_id: str, status: str, time: str, detail: str, snapshot: bool) -> None:
        """An event: ``message_id`` is now ``status``."""
        self._events += 1
        self._rows[message_id] = (time, status, detail, snapshot)
        self._rows.move_to_end(message_id)
        while len(self._rows) > MAX_WATCH_ROWS:
            self._rows.popitem(last=False)
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def _render(self) -> Table:
        from rich.table import Table

        table = Table(
            "message", "status", "time (UTC)", "detail", title=f"watch: {self._events} events"
        )
        for message_id, (time, status, detail, snapshot) in reversed(self._rows.items()):
            shown = f"{status} (snapshot)" if snapshot else status
            table.add_row(message_id, shown, time, detail, style=_STYLES.get(status))
        return table

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
