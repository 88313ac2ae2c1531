"""Structured logging: one JSON object per line, phone numbers masked.

Codes and secrets are never passed to a logger. As a second line of defence,
anything that looks like an E.164 number in a log line is masked too. A
failure that repeats is logged once per interval with a count
(``RepeatedLog``), not once per occurrence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RepeatedLog", "configure_logging", "mask_phone"]

_PHONE = re.compile(r"\+\d{7,15}")
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def mask_phone(phone: str) -> str:
    """Keep the country-code side and the last two digits: ``+86138******00``."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:6] + "*" * (len(phone) - 8) + phone[-2:]


def _scrub(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _scrub(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = _scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = _scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines, masked the same way."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _RESERVED and not k.startswith("_")
        )
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()} {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _scrub(line.rstrip())


class RepeatedLog:
    """Logs one event that may repeat (Redis down, a bad request body, a bug hit
    by every call) at most once per ``every`` seconds for each kind, with how
    many occurrences the line stands for; the traceback of an exception goes
    with the first of each interval only.

    An occurrence with an exception is a bug and is logged at ERROR at least;
    one without (an outage the code expects and recovers from) at ``level``.
    So ``error`` lines mean something to fix, as the fault suite counts them."""

    # Kinds are chosen by code (method names, exception types), but a bound
    # keeps a bug from turning this into a leak.
    MAX_KINDS = 1024

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        *,
        every: float,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.event = event
        self.every = every
        self.level = level
        self.clock = clock
        # kind -> (occurrences not yet logged, monotonic time of the next line)
        self._kinds: dict[str, tuple[int, float]] = {}

    def occurred(
        self, kind: str = "", *, exc: BaseException | None = None, **fields: object
    ) -> None:
        """Count one occurrence of ``kind``; log it when its interval has passed."""
        now = self.clock()
        count, next_line = self._kinds.get(kind, (0, 0.0))
        count += 1
        if now < next_line:
            self._kinds[kind] = (count, next_line)
            return
        if len(self._kinds) >= self.MAX_KINDS and kind not in self._kinds:
            self._kinds.clear()
        self._kinds[kind] = (0, now + self.every)
        level = max(self.level, logging.ERROR) if exc is not None else self.level
        self.logger.log(level, self.event, exc_info=exc, extra={**fields, "count": count})


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send the ``smsgate`` loggers to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access logs from uvicorn would double our own.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
