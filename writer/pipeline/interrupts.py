"""Ctrl-C and SIGTERM during a write, held back where the writer must not be cut off.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is.
Most places unwind cleanly from a ``KeyboardInterrupt``; one does not: inside
``ProcessPoolExecutor.submit``, after the job is recorded as pending and before it is queued,
the pool's shutdown then waits for that job forever. :func:`held` marks such a stretch: an
interrupt that arrives inside it is raised when it ends.

:func:`handling` installs the handlers (the ``write`` command does, for its whole run): SIGTERM
becomes :class:`Terminated`, a ``KeyboardInterrupt``, so it unwinds exactly like Ctrl-C, and a
second SIGTERM is ignored so that it cannot cut the clean-up short. Without them (a script
calling the library), Python's own Ctrl-C handler applies and nothing is held.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Terminated", "handling", "held"]

_depth = 0  # how many held() stretches the main thread is in
_pending: list[KeyboardInterrupt] = []  # the first interrupt that arrived inside one


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, to unwind exactly like Ctrl-C."""


def _interrupt(error: KeyboardInterrupt) -> None:
    if _depth:
        if not _pending:
            _pending.append(error)
        return
    raise error


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    _interrupt(Terminated())


def _on_sigint(signum: int, frame: Any) -> None:
    _interrupt(KeyboardInterrupt())


@contextmanager
def handling() -> Iterator[None]:
    """Install the SIGTERM and Ctrl-C handlers for the block (main thread only), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        _pending.clear()
        for signum, handler in zip((signal.SIGINT, signal.SIGTERM), previous, strict=True):
            if handler is not None:  # None: not installed from Python, nothing to restore
                signal.signal(signum, handler)


@contextmanager
def held() -> Iterator[None]:
    """Raise an interrupt that arrives inside the block only when the block ends.

    It replaces an exception the block raises (the user asked to stop). Outside the main
    thread, where no handler runs, it does nothing.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            raise _pending.pop()
