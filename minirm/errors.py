"""The one exception type a user ever sees.

Everything that is the user's to fix (a bad path, a corrupt checkpoint, a malformed
JSONL row, an unreachable hub) raises MinirmError with a single line that says what
is wrong and how to fix it. The CLIs print that line and exit with status 2; anything
else that escapes is a bug in minirm and keeps its traceback.
"""

import argparse
import math
import re


class MinirmError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class CliParser(argparse.ArgumentParser):
    """argparse, reading '--lr -1e-5' as a value: its own test for a negative number misses the
    exponent form and says 'expected one argument', which sends a user looking in the wrong place."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.I)


def cli_main(prog: str, run, argv: list[str] | None, interrupted: str) -> int:
    """Run a CLI's `run(argv)`: a MinirmError becomes one line on stderr and exit status 2."""
    import sys

    try:
        return run(argv)
    except MinirmError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message cut to its first line, for the parentheses of a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def check_number(name: str, value, *, integer: bool = False, low=None, high=None, low_open: bool = False,
                 high_open: bool = False, optional: bool = False, hint: str = "", flag: str | None = None) -> None:
    """One option's value: the right type, finite, in range; else a one-line MinirmError naming --flag."""
    flag = flag or "--" + name.replace("_", "-")
    if value is None and optional:
        return
    if integer:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type:
        raise MinirmError(f"{flag} must be {'a whole number' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise MinirmError(f"{flag} must be a finite number, got {value}" + (f" ({hint})" if hint else ""))
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        def fmt(x):
            return str(x) if isinstance(x, int) else f"{x:g}"

        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open else ']'}"
        elif low_open:
            want = "positive" if low == 0 else f"above {fmt(low)}"
        else:
            want = f"at least {fmt(low)}"
        raise MinirmError(f"{flag} must be {want}, got {value}" + (f" ({hint})" if hint else ""))
