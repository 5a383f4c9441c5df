"""What a training run measures and writes: the window of step values since the last logged
row with the examples/s counters (`Meter`), metrics.jsonl (`MetricsLog`) and curves.png.

A step's values (loss, gradient norm, the objective's metrics) stay tensors on the device
until a row is logged (or a checkpoint saved): then the whole window is read in one transfer,
so a step costs no GPU sync for its metrics. The Meter's state goes into every checkpoint and
comes back on resume, so a resumed run logs the same rows as an uninterrupted one
(examples_per_s aside, which is measured).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

from ..errors import MinirmError


class Meter:
    """The steps since the last train row, and the seconds and examples counted for examples/s."""

    def __init__(self, state: dict | None = None):
        state = state or {}  # a checkpoint's trainer state, or nothing for a new run
        self.window: list[dict] = [dict(w) for w in state.get("window", [])]  # one dict of values per step
        self.window_seconds: float = state.get("window_seconds", 0.0)
        self.window_examples: int = state.get("window_examples", 0)
        self.train_seconds: float = state.get("train_seconds", 0.0)
        self.examples_seen: int = state.get("examples_seen", 0)

    def add(self, examples: int, seconds: float, values: dict[str, torch.Tensor]) -> None:
        """One optimizer step: its examples, its seconds, and its values (0-dim tensors or floats)."""
        self.examples_seen += examples
        self.train_seconds += seconds
        self.window_seconds += seconds
        self.window_examples += examples
        self.window.append(values)

    def row(self) -> dict[str, float]:
        """The mean of every value over the window, and examples/s over it; the window starts over."""
        window = self._read()
        row = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
        row["examples_per_s"] = self.window_examples / self.window_seconds
        self.window, self.window_seconds, self.window_examples = [], 0.0, 0
        return row

    def state(self) -> dict:
        """What a checkpoint keeps (floats only), for Meter(state) on resume."""
        return {"window": self._read(), "window_seconds": self.window_seconds,
                "window_examples": self.window_examples, "train_seconds": self.train_seconds,
                "examples_seen": self.examples_seen}

    def _read(self) -> list[dict[str, float]]:
        """The window with every tensor read into a float, all in one transfer (one GPU sync)."""
        pending = [(w, k) for w in self.window for k, v in w.items() if isinstance(v, torch.Tensor)]
        if pending:
            read = torch.stack([w[k].detach().double().reshape(()) for w, k in pending]).tolist()
            for (w, k), value in zip(pending, read):
                w[k] = value
        return self.window


class MetricsLog:
    """metrics.jsonl, one JSON object per logged step or evaluation. On resume, rows past the
    resumed step are dropped, so the file describes one run without repeats."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if resume_step is not None and path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines):  # the last row, half-written when the run was killed: drop it
                        print(f"warning: {path}:{n}: dropped a half-written row", file=sys.stderr, flush=True)
                        break
                    raise MinirmError(f"{path}:{n}: not a JSON row; delete that line (or the file) and "
                                      "resume again") from None
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    kept.append(line)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def curves_figure(rows: list[dict], chance: dict[str, float] | None = None, window: int | None = None):
    """Loss and accuracy (or RMSE) against the optimizer step, train and eval: a matplotlib Figure,
    honest at any length. The y-axis starts at 0 (accuracy spans 0 to 1), so noise around a
    constant does not look like a trend; the chance level of each metric (`chance`: ln 2 for the
    pairwise loss, 0.5 for its accuracy) is a dotted line; steps are whole numbers; each point is
    marked while there are few. `window` is how many steps each train point averages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    chance = chance or {}
    train = [r for r in rows if r.get("split") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    second = next((k for k in ("accuracy", "rmse") if any(k in r for r in train + evals)), None)
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(10 if second else 5, 3.6), squeeze=False)
    last_step = max((r["step"] for r in train + evals), default=1)
    for ax, key in zip(axes[0], ["loss"] + ([second] if second else [])):
        values = []
        mean_of = f" (mean of up to {window} steps)" if window and window > 1 else ""
        for name, part, style in ((f"train{mean_of}", train, "-"), ("eval", evals, "--")):
            pts = [(r["step"], r[key]) for r in part if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), style, marker="o" if len(pts) <= 30 else None, markersize=4, label=name)
                values += [v for _, v in pts]
        if key in chance:
            ax.axhline(chance[key], color="0.4", linestyle=":", linewidth=1,
                       label=f"chance ({'ln 2' if abs(chance[key] - math.log(2)) < 1e-12 else f'{chance[key]:.3g}'})")
            values.append(chance[key])
        if key == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        elif values and all(math.isfinite(v) for v in values):
            ax.set_ylim(0, max(values) * 1.1 or 1)
        ax.set_xlim(0, last_step * 1.02 + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(rows: list[dict], out: Path, chance: dict[str, float] | None = None,
                window: int | None = None) -> Path | None:
    """curves.png (see curves_figure), written atomically; None when matplotlib is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = curves_figure(rows, chance, window)
    out = Path(os.path.realpath(out))  # a link is written through, as every output is
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
