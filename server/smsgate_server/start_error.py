"""``StartError``, in a module of its own: the command imports it before the
server's modules, which must wait until the metrics mode is chosen
(``shared_metrics``)."""

from __future__ import annotations

__all__ = ["StartError"]


class StartError(RuntimeError):
    """The server cannot start; the message says why and what to do."""
