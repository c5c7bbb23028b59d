"""Stopping a run at a clean point on SIGTERM or SIGINT (Ctrl-C).

The command-line entry points install ``handlers()``: a signal then only sets a flag, the
long loops (full-data training epochs, outer steps, learners trained on a summary) look at
it at their next clean point, save what they resume from, and raise ``Stopped``, which the
command reports in one line with the exit status 128 + the signal's number. Rerunning the
command resumes. Launchers (Submitit, Ray) keep their own signal handling: the handlers are
installed by the command line only, so inside a launcher ``check()`` never stops anything.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_requested: list[int] = []


class Stopped(KeyboardInterrupt):
    """A run stopped on request; a BaseException, so no ``except Exception`` records it as
    a failure. ``signum`` is the signal that asked."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def requested() -> int | None:
    """The signal that asked the run to stop, or None."""
    return _requested[0] if _requested else None


def check(where: str) -> None:
    """Raise ``Stopped`` if a stop was requested; ``where`` says what was saved (for the message)."""
    signum = requested()
    if signum is not None:
        name = signal.Signals(signum).name
        raise Stopped(f"stopped by {name} {where}; rerun the same command to resume", signum)


@contextmanager
def handlers() -> Iterator[None]:
    """SIGTERM and SIGINT set the stop flag while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def ask(signum, frame):
        if signum == signal.SIGINT and _requested:   # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        if not _requested:
            _requested.append(signum)

    for s in previous:
        signal.signal(s, ask)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()
