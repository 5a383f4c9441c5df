"""The one exception type a user ever sees, and how the CLIs end.

Everything that is the user's to fix (a bad path, a corrupt checkpoint, a malformed
JSONL row, an unreachable hub) raises MinirmError with a single line that says what
is wrong and how to fix it. The CLIs print that line and exit with status 2; anything
else that escapes is a bug in minirm and keeps its traceback. Ctrl-C, and SIGTERM (what
Slurm, systemd and `kill` send), end in one line saying what the stopped work left behind,
with status 130 or 143. This module imports no torch: the CLIs handle interrupts from
their first line, and `import torch` takes seconds.
"""

import argparse
import math
import os
import re
import signal
import sys


class MinirmError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, raised where the work was; `note` says what it left behind
    (the CLI's own default when None). A KeyboardInterrupt, so that code catching one catches both."""

    def __init__(self, signum: int = signal.SIGINT, note: str | None = None):
        super().__init__(note or "")
        self.signum, self.note = signum, note


def interrupted(e: BaseException, note: str) -> Interrupted:
    """The interrupt `e` (Ctrl-C or SIGTERM) with `note` attached."""
    return Interrupted(getattr(e, "signum", signal.SIGINT), note)


def raise_interrupted(signum, frame):
    """A signal handler (for SIGTERM) that stops the work as Ctrl-C does: an Interrupted where it was."""
    raise Interrupted(signum)


class CliParser(argparse.ArgumentParser):
    """argparse, reading '--lr -1e-5' as a value: its own test for a negative number misses the
    exponent form and says 'expected one argument', which sends a user looking in the wrong place."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.I)


def cli_main(prog: str, run, argv: list[str] | None, when_interrupted: str) -> int:
    """Run a CLI's `run(argv)`: a MinirmError becomes one line on stderr and exit status 2; Ctrl-C
    or SIGTERM one line (the interrupt's note, else `when_interrupted`) and 130 or 143; a reader of
    stdout that went away (`| head`) ends the run quietly, as it ends cat."""
    main_thread = signal.getsignal(signal.SIGTERM) is not None and _in_main_thread()
    previous = signal.signal(signal.SIGTERM, raise_interrupted) if main_thread else None
    try:
        return run(argv)
    except MinirmError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"{prog}: {what}; {getattr(e, 'note', None) or when_interrupted}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # stdout's reader has gone: send what is still buffered nowhere, so that exiting cannot fail on it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


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
