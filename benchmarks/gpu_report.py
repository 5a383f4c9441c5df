"""gpu.json -> gpu.md (tables) and the PNG plots, for python -m benchmarks.gpu."""

from __future__ import annotations

import json
import os
from pathlib import Path


def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)[:120].replace("|", "/")
    return str(value).replace("|", "/").replace("\n", " ")


def table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return lines + [""]


def figure_lines(figures: dict) -> list[str]:
    """Scalars (and dicts of scalars, as key.sub) in one two-column table; each list of rows, and each
    dict of dicts, as a table of its own under its name."""
    scalars, tables = [], []
    for key, value in figures.items():
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            tables += [f"**{key}**", ""] + table(value)
        elif isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values()):
            tables += [f"**{key}**", ""] + table([{"name": name, **row} for name, row in value.items()])
        elif isinstance(value, dict):
            scalars += [{"figure": f"{key}.{sub}", "value": item} for sub, item in value.items()]
        else:
            scalars.append({"figure": key, "value": value})
    return (table(scalars) if scalars else []) + tables


def markdown(report: dict) -> str:
    dry = " (dry run: tiny sizes on CPU, figures meaningless)" if report.get("dry_run") else ""
    device, versions = report.get("device") or {}, report.get("versions") or {}
    lines = [f"# minirm GPU check{dry}", "",
             f"Command: `{report.get('command')}`, {report.get('date')}.", "",
             "Device: " + ", ".join(f"{k} {cell(v)}" for k, v in device.items()) + ".", "",
             "Versions: " + ", ".join(f"{k} {cell(v)}" for k, v in versions.items()) + ".", ""]
    if report.get("git"):
        lines += [f"Commit: {report['git']['commit']}" + (" with uncommitted changes" if report["git"].get(
            "uncommitted_changes") else "") + ".", ""]
    env = next((s for s in report.get("sections", []) if s["name"] == "env" and s.get("ok")), None)
    if env:
        figures = env["figures"]
        lines += [f"Ceilings (env): bf16 matmul {cell(figures.get('matmul_tflops'))} TFLOP/s, device copy "
                  f"{cell(figures.get('copy_tbps'))} TB/s; shares below are of these.", ""]
    summary = [{"section": s["name"], "ok": s["ok"], "seconds": s.get("seconds"), "budget s": s.get("budget_s"),
                "cut": len(s.get("cut") or []), "ran at": s.get("ran_at"), "error": s.get("error")}
               for s in report.get("sections", [])]
    lines += table(summary)
    plots = report.get("plots") or {}
    for name, path in plots.items():
        lines += [f"![{name}]({path})" if path.endswith(".png") else f"Plot of {name}: {path}.", ""]
    for section in report.get("sections", []):
        lines += [f"## {section['name']}", ""]
        if section.get("error"):
            lines += [f"Error: {section['error']}", ""]
        for title, items in (("Failures", section.get("failures")), ("Cut for time", section.get("cut")),
                             ("Notes", section.get("notes"))):
            if items:
                lines += [f"{title}:", ""] + [f"- {item}" for item in items] + [""]
        lines += figure_lines(section.get("figures") or {})
    return "\n".join(lines)


def plot(out: Path, report: dict, section: str) -> dict:
    """Draw the section's plot, where it has one and rows to draw: {section: file name, or why not}."""
    if section not in PLOTS:
        return {}
    group, draw = PLOTS[section]
    figures = next((s.get("figures") or {} for s in report.get("sections", []) if s["name"] == section), {})
    rows = [row for row in figures.get(group, []) if "error" not in row]
    if not rows:
        return {section: "not drawn: no rows"}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {section: "not drawn: matplotlib is not installed"}
    figure = draw(plt, rows)
    tmp = out / f".{section}.tmp.png"
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, out / f"{section}.png")
    return {section: f"{section}.png"}


def kernel_speed_plot(plt, rows):
    panels = sorted({(row["head_dim"], row["causal"]) for row in rows})
    modes = ["fwd", "fwd+bwd"]
    figure, axes = plt.subplots(len(modes), len(panels), figsize=(4 * len(panels), 3.4 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, (head_dim, causal) in enumerate(panels):
            axis = axes[i][j]
            panel = (head_dim, causal, mode)
            mine = sorted((row for row in rows if (row["head_dim"], row["causal"], row["mode"]) == panel),
                          key=lambda row: row["seq_len"])
            for key, label in (("triton_tflops", "triton varlen"), ("sdpa_flash_tflops", "SDPA flash")):
                points = [(row["seq_len"], row[key]) for row in mine if row.get(key) is not None]
                if points:
                    axis.plot(*zip(*points), marker="o", label=label)
            axis.set_xscale("log", base=2)
            axis.set_title(f"{mode}, head dim {head_dim}, {'causal' if causal else 'non-causal'}")
            axis.set_xlabel("tokens per sequence")
            axis.set_ylabel("TFLOP/s")
            axis.grid(alpha=0.3)
            axis.legend()
    figure.tight_layout()
    return figure


def scoring_plot(plt, rows):
    sides = [("minirm_pairs_per_s", "minirm (packed, triton)"), ("transformers_pairs_per_s", "transformers"),
             ("transformers_sorted_pairs_per_s", "transformers, length-sorted")]
    figure, axis = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    width = 0.8 / len(sides)
    for k, (key, label) in enumerate(sides):
        heights = [row.get(key) or 0 for row in rows]
        axis.bar([i + k * width for i in range(len(rows))], heights, width=width, label=label)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    axis.set_xticklabels([f"{row['model']}\n{row['dtype']}" for row in rows], fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("pairs/s")
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def candidates_plot(plt, rows):
    """One panel per head dim: a bar per (config, kernel version), TFLOP/s."""
    head_dims = sorted({row["head_dim"] for row in rows})
    names = list(dict.fromkeys(row["candidate"] for row in rows))
    figure, axes = plt.subplots(len(head_dims), 1, figsize=(9, 3.4 * len(head_dims)), squeeze=False)
    width = 0.8 / len(names)
    for axis, head_dim in zip(axes[:, 0], head_dims):
        mine = [row for row in rows if row["head_dim"] == head_dim]
        configs = list(dict.fromkeys(row["config"] for row in mine))
        for k, name in enumerate(names):
            tflops = {row["config"]: row.get("tflops") or 0 for row in mine if row["candidate"] == name}
            axis.bar([i + k * width for i in range(len(configs))], [tflops.get(c, 0) for c in configs], width=width,
                     label=name)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(configs))])
        axis.set_xticklabels(configs, fontsize=7)
        axis.set_title(f"forward, head dim {head_dim}, non-causal")
        axis.set_ylabel("TFLOP/s")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


PLOTS = {"kernel-speed": ("fixed", kernel_speed_plot), "scoring": ("models", scoring_plot),  # section: (rows, draw)
         "candidates": ("configs", candidates_plot)}
