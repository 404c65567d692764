"""Signals: SIGTERM (`kill`, `timeout`, `docker stop`) handled like Ctrl-C, and short critical
sections (renaming finished outputs into place) that no Ctrl-C or SIGTERM cuts in half.

    @interruptible("egohands_dataset_clean.py")   # Ctrl-C / SIGTERM: one line, exit 130, outputs kept
    def main(argv=None) -> int: ...

Python runs signal handlers in the main thread only, so everything here acts there and does nothing
(safely) when used from another thread.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from utils.common.errors import EXIT_INTERRUPTED

# What a user or a supervisor sends to stop a program that should still clean up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


@contextlib.contextmanager
def _handlers(handler: Callable) -> Iterator[None]:
    """Install `handler` for STOP_SIGNALS in the main thread; restore the previous ones after."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is closest.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like Ctrl-C, so every `finally` and `except KeyboardInterrupt`
    runs (temporaries removed, earlier outputs kept) instead of the process dying on the spot."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal_name(signum))

    with _handlers(handler):
        yield


@contextlib.contextmanager
def stop_on_signal(stop: threading.Event, on_stop: Callable[[str], None] = lambda name: None) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM sets `stop` (a loop then ends cleanly and keeps its outputs) and calls
    `on_stop` with the signal's name; a second one raises KeyboardInterrupt at once."""
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt(signal_name(signum))
        on_stop(signal_name(signum))
        stop.set()

    with _handlers(handler):
        yield


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM during a short block (a few renames); deliver them when it ends.

    The previous handlers are back in place before a held signal is re-raised, so it then does exactly
    what it would have done (KeyboardInterrupt, a clean-stop flag, or the default action).
    """
    pending: list[int] = []
    with _handlers(lambda signum, frame: pending.append(signum)):
        yield
    for signum in dict.fromkeys(pending):
        signal.raise_signal(signum)


def interruptible(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a script's main(): SIGTERM acts as Ctrl-C, and either ends the script with one line on
    stderr and EXIT_INTERRUPTED (130) instead of a traceback or a silent death."""
    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args, **kwargs) -> int:
            try:
                with sigterm_as_ctrl_c():
                    return main(*args, **kwargs)
            except KeyboardInterrupt as exc:
                by = f" by {exc}" if str(exc) else ""
                print(f"{prog}: interrupted{by}; nothing is half-written (each output is the earlier one, "
                      f"or the new one if it was complete)", file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED
        return wrapper
    return decorate
