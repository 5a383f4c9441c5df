"""The one exception type a user ever sees.

Everything that is the user's to fix (a bad path, a corrupt checkpoint, a malformed
JSONL row, an unreachable hub) raises MinirmError with a single line that says what
is wrong and how to fix it. The CLIs print that line and exit with status 2; anything
else that escapes is a bug in minirm and keeps its traceback.
"""


class MinirmError(Exception):
    """A problem with the user's input or environment, explained in one line."""
