"""The one exception type a user ever sees.

Everything that is the user's to fix (a bad path, a corrupt checkpoint, a malformed
JSONL row, an unreachable hub) raises MinirmError with a single line that says what
is wrong and how to fix it. The CLIs print that line and exit with status 2; anything
else that escapes is a bug in minirm and keeps its traceback.
"""


class MinirmError(Exception):
    """A problem with the user's input or environment, explained in one line."""


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
