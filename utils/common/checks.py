"""The one range check for numbers from users: flags, config values, annotation fields, API arguments.

    max_hands = checked_number(max_hands, "max_hands", minimum=0, integer=True)
    parser.add_argument("--linger", type=number_arg(minimum=0))

A number is refused when it is not a number (a bool, a string, None unless allowed), not finite (NaN,
inf: every comparison with NaN is False, so a plain `x < 0` check lets it through) or outside the
bounds. The error is a UserError (a ValueError) in the one message format: `<name> is <value>; <expected>`.
"""
from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable

from utils.common.errors import UserError


def number_problem(value: object, *, minimum: float | None = None, maximum: float | None = None,
                   above: float | None = None, below: float | None = None, integer: bool = False) -> str | None:
    """What is wrong with `value` as such a number ('expected ...'), or None when it is fine."""
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {maximum:g}" if maximum is not None else "", f"< {below:g}" if below is not None else ""]
    expected = f"expected {'a whole' if integer else 'a finite'} number" + (
        " " + " and ".join(b for b in bounds if b) if any(bounds) else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return expected
    if not math.isfinite(float(value)) or (integer and float(value) != int(value)):
        return expected
    if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
            or (above is not None and value <= above) or (below is not None and value >= below)):
        return expected
    return None


def checked_number(value: object, name: str, *, minimum: float | None = None, maximum: float | None = None,
                   above: float | None = None, below: float | None = None, integer: bool = False,
                   where: str = "", error: type[UserError] = UserError):
    """`value` (an int when `integer`) if it is a finite number within the bounds, else `error`:
    '<where>: <name> is <value>; expected ...'."""
    problem = number_problem(value, minimum=minimum, maximum=maximum, above=above, below=below, integer=integer)
    if problem is not None:
        raise error(f"{where + ': ' if where else ''}{name} is {value!r}; {problem}")
    return int(value) if integer else value  # type: ignore[arg-type]


def number_arg(kind: type = float, *, minimum: float | None = None, maximum: float | None = None,
               above: float | None = None, below: float | None = None) -> Callable[[str], float | int]:
    """An argparse `type=` for a number within the bounds (argparse then prints usage and exits 2)."""
    integer = kind is int

    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = None
        problem = number_problem(value, minimum=minimum, maximum=maximum, above=above, below=below,
                                 integer=integer)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
        return value  # type: ignore[return-value]

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse
