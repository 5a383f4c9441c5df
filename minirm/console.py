"""What a person reads while a command runs: tables that fit the terminal, and progress.

Progress goes to stderr. At a terminal it is a tqdm bar. Anywhere else (nohup, Slurm, a pipe,
a notebook) a bar would be off or a mess of carriage returns, so a plain line is printed every
LINE_EVERY_S seconds instead, as other trainers' loggers do: a batch log shows the run moving,
how far it is and how long is left. A run shorter than that prints no line at all, so a
short command's stderr holds nothing but an error, if there is one.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time

LINE_EVERY_S = 30.0  # seconds between progress lines when stderr is not a terminal


def terminal_width(default: int = 80) -> int:
    """Columns of the terminal (or $COLUMNS); `default` when there is none (a pipe, a file)."""
    return shutil.get_terminal_size((default, 24)).columns


def fit_table(rows: list[tuple[str, ...]], width: int | None = None) -> str:
    """rows[0] is the header. An aligned table when it fits in `width` columns (default: the
    terminal's); else one block per row, its first cell and then "header: value" lines wrapped
    to the width, which reads on an 80-column terminal where a wide table wraps into noise."""
    width = width or terminal_width()
    header, body = rows[0], rows[1:]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    if sum(widths) + 2 * (len(widths) - 1) <= width:
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
    label = max(len(h) for h in header[1:]) + 2
    blocks = []
    for row in body:
        lines = [row[0]]
        for name, value in zip(header[1:], row[1:]):
            lines += textwrap.wrap(value, width=max(20, width - 2), initial_indent=f"  {name + ':':<{label}}",
                                   subsequent_indent=" " * (label + 2), break_on_hyphens=False) or [f"  {name}:"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def duration(seconds: float) -> str:
    """Seconds as H:MM:SS (or M:SS under an hour)."""
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta(done: int, total: int, seconds: float, initial: int = 0) -> str:
    """'about H:MM:SS left' from the pace of this process (its `done - initial` items in `seconds`)."""
    if done <= initial or seconds <= 0:
        return "time left unknown yet"
    return f"about {duration((total - done) * seconds / (done - initial))} left"


class Progress:
    """Counts `total` items of `unit`: a tqdm bar at a terminal; elsewhere a line every `every` seconds."""

    def __init__(self, total: int, unit: str, desc: str, enabled: bool = True, initial: int = 0,
                 every: float | None = None, stream=None):
        self.total, self.unit, self.desc, self.initial, self.done = total, unit, desc, initial, initial
        self.stream = stream or sys.stderr
        self.every = LINE_EVERY_S if every is None else every
        self.start = self.last_line = time.monotonic()
        self.postfix: dict[str, str] = {}
        self.bar = None
        self.lines = enabled and not _is_terminal(self.stream)
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, file=self.stream)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        self.postfix.update({k: str(v) for k, v in postfix.items()})
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(self.postfix)
        elif self.lines and time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {duration(elapsed)} elapsed, "
                f"{eta(self.done, self.total, elapsed, self.initial)}{extra}")

    def write(self, text: str) -> None:
        """A line of its own on stdout (an evaluation's figures) that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
