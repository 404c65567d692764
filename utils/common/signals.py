"""Signals: every signal that ends a run -- Ctrl-C (SIGINT), SIGTERM (`kill`, `timeout`, `docker stop`)
and SIGHUP (a closed terminal, a dropped ssh) -- takes the same stop path, and short critical sections
(renaming finished outputs into place) that no such signal cuts in half.

    @interruptible("egohands_dataset_clean.py")   # any stop signal: one line, exit 130, outputs kept
    def main(argv=None) -> int: ...

The first stop signal of a run is the one that counts: it raises KeyboardInterrupt (sigterm_as_ctrl_c,
interruptible) or sets a clean-stop flag (stop_on_signal). Every later one, while the run unwinds and
removes its temporaries or finishes its outputs, is ignored: pressing Ctrl-C twice never throws the
work away nor leaves a temporary behind (SIGKILL still ends a run at once; the next run cleans up).
A signal the process was started ignoring (`nohup` for SIGHUP, `cmd &` for SIGINT) stays ignored.

Python runs signal handlers in the main thread only, so everything here acts there and does nothing
(safely) when used from another thread.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from utils.common.errors import EXIT_INTERRUPTED, EXIT_OK

# What a user, a terminal or a supervisor sends to stop a program that should still clean up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Run:
    """The stop state of the current run: the first stop signal's name, shared by nested handlers."""
    depth = 0
    stopping: str | None = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def stop_requested() -> str | None:
    """The name of the stop signal this run received ('Ctrl-C', 'SIGTERM', 'SIGHUP'), or None."""
    return _Run.stopping


def _first_stop(signum: int) -> str | None:
    """The signal's name when it is the run's first stop signal, else None (a repeat: ignore it)."""
    if _Run.stopping is not None:
        return None
    _Run.stopping = signal_name(signum)
    return _Run.stopping


@contextlib.contextmanager
def _handlers(handler: Callable) -> Iterator[None]:
    """Install `handler` for STOP_SIGNALS in the main thread; restore the previous ones after."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    if _Run.depth == 0:
        _Run.stopping = None  # a new run (main() called again in one process)
    _Run.depth += 1
    for signum, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(signum, handler)
    try:
        yield
    finally:
        _Run.depth -= 1
        for signum, old in previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is closest.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """The first stop signal (SIGTERM and SIGHUP too) raises KeyboardInterrupt like Ctrl-C, so every
    `finally` and `except KeyboardInterrupt` runs (temporaries removed, earlier outputs kept) instead of
    the process dying on the spot; later ones are ignored while that cleanup runs."""
    def handler(signum: int, frame: object) -> None:
        name = _first_stop(signum)
        if name is not None:
            raise KeyboardInterrupt(name)

    with _handlers(handler):
        yield


@contextlib.contextmanager
def stop_on_signal(stop: threading.Event, on_stop: Callable[[str], None] = lambda name: None) -> Iterator[None]:
    """The first stop signal sets `stop` (a loop then ends cleanly and keeps its outputs) and calls
    `on_stop` with the signal's name; later ones are ignored (the outputs are being finished)."""
    def handler(signum: int, frame: object) -> None:
        name = _first_stop(signum)
        if name is not None:
            on_stop(name)
            stop.set()

    with _handlers(handler):
        yield


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold the stop signals during a short block (a few renames); deliver them when it ends.

    The previous handlers are back in place before a held signal is re-raised, so it then does exactly
    what it would have done (KeyboardInterrupt, a clean-stop flag, nothing when already stopping).
    """
    pending: list[int] = []
    stopping = _Run.stopping
    with _handlers(lambda signum, frame: pending.append(signum)):
        _Run.stopping = stopping  # _handlers may start a new run state; the held signals belong to this one
        yield
    for signum in dict.fromkeys(pending):
        signal.raise_signal(signum)


def stdout_closed() -> None:
    """The reader of stdout went away (`... | head -1`): stop writing quietly, as Unix tools do. Later
    writes and the flush at exit go to /dev/null instead of raising BrokenPipeError again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed terminal (SIGHUP) takes stderr with it
        print(text, file=sys.stderr, flush=True)


def interruptible(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a script's main(): any stop signal ends it with one line on stderr and EXIT_INTERRUPTED
    (130) instead of a traceback or a silent death; stdout closed by its reader ends it quietly; file
    names that are not UTF-8 print escaped."""
    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args, **kwargs) -> int:
            for stream in (sys.stdout, sys.stderr):  # a path that is not UTF-8 prints as \xff, not a traceback
                with contextlib.suppress(AttributeError, ValueError, OSError):
                    stream.reconfigure(errors="backslashreplace")
            try:
                with sigterm_as_ctrl_c():
                    code = main(*args, **kwargs)
                    sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
                    return code
            except KeyboardInterrupt as exc:
                by = f" by {exc}" if str(exc) else ""
                _say(f"{prog}: interrupted{by}; nothing is half-written (each output is the earlier one, "
                     f"or the new one if it was complete)")
                return EXIT_INTERRUPTED
            except BrokenPipeError:
                stdout_closed()
                return EXIT_OK
        return wrapper
    return decorate
