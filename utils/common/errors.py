"""One base class for errors the user can fix, and one rule for how scripts report them.

Every script prints a `UserError` as one line, `<script>: error: <file>: <what is wrong>; <what to do>`,
and exits with EXIT_BAD_INPUT. Anything else is a bug in this project and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_BAD_INPUT = 2        # argparse's own code for a bad command line: one code for every bad input
EXIT_FAILED = 1           # an unexpected failure (a bug, a crashed worker): traceback printed
EXIT_INTERRUPTED = 130    # Ctrl-C or SIGTERM: what was processed is kept


class UserError(ValueError):
    """Bad input the user can fix. The message is one line: what, what is wrong, what to do."""


def user_error(subject: str | Path, problem: str, fix: str = "") -> UserError:
    """`subject: problem; fix` as a UserError (the one message format)."""
    return UserError(f"{subject}: {problem}" + (f"; {fix}" if fix else ""))


def one_line(message: object) -> str:
    """A message squeezed onto one line (library errors sometimes carry newlines)."""
    return " ".join(str(message).split())


def disk_error(exc: OSError) -> UserError:
    """An OSError in the middle of a run (a full disk, a folder removed) as a user error: the outputs are
    swapped in only at the end, so nothing was changed."""
    return UserError(f"{exc.filename or ''}: {exc.strerror or exc}; nothing was changed, fix and re-run")


def report(prog: str, error: BaseException) -> int:
    """Print `prog: error: message` on stderr and return the exit code for a user error."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def pass_hint(flag: str, make_variable: str, value: str = "PATH") -> str:
    """How to give a value in a message: `EGOHANDS_ZIP=PATH` when the script runs under make (which
    sets MAKELEVEL; `make train` reaching the download must not say a flag make cannot pass), else
    `--zip PATH`."""
    return f"{make_variable}={value}" if os.environ.get("MAKELEVEL") else f"{flag} {value}"
