"""An LLM reward model at its real size on CPU: a random model with Qwen3-0.6B's config.

Skywork-Reward-V2-Qwen3-0.6B is the smallest of the LLM reward models minirm serves. This script
builds a Qwen3ForSequenceClassification (1 label) with Qwen/Qwen3-0.6B's published config (28
layers, hidden 1024, 16 query heads on 8 K/V heads of 128, vocab 151,936: 0.6 B parameters) and
seeded random weights, saved by transformers in bf16 as sharded safetensors (with
model.safetensors.index.json, the layout of the Hub repo). Its tokenizer is a byte-level BPE
trained on the hh-rlhf sample, with Qwen3's special tokens at Qwen3's ids (<|endoftext|> 151643,
<|im_start|> 151644, <|im_end|> 151645) and Qwen3's published chat template. Random weights do not
change the speed, nor where memory goes. The checkpoint is built once and cached (--cache).

1. Speed. 32 seeded hh-rlhf (conversation, last assistant turn) samples, rendered through the chat
   template and tokenized by minirm's tokenizer with --max-length 512 (the ids of those that fit
   are checked equal to transformers' apply_chat_template; a longer one minirm shortens by dropping
   its oldest turns). The same ids, in the same length-sorted batches (minirm's plan,
   --batch-size), go through three scorers: transformers' AutoModelForSequenceClassification
   (padded batches, attention mask, SDPA), minirm padded (`attention="sdpa"`) and minirm packed
   (the CPU default). They take turns batch by batch, the order rotating, for --rounds rounds, so
   that load from other processes on a shared machine falls on all three alike; each round's
   ratio to transformers is taken, and the median reported, beside the wall time, this process's
   CPU seconds (less moved by neighbours) and the share of the CPU other processes took. Only the
   forward passes are timed (tokenization is not). Useful GFLOP/s counts real tokens only (every
   linear layer, and causal attention's two products), so padding counts as waste.
2. Memory. Each loader runs `from_pretrained` in bf16 (the checkpoint's dtype, and the default
   for this family) in a fresh process, then one forward over a 32-token sequence: a loader may
   leave weights as views of the mapped files, read only when first used (transformers 5 does),
   so the load alone can understate what scoring holds. Both peaks are reported:
     x weights   (VmHWM - VmRSS before loading) / the weights' bytes (sum of numel * 2 over the
                 safetensors files). VmHWM is reset (/proc/self/clear_refs) after the imports, so
                 it is the peak of the load alone. RSS counts the pages of the memory-mapped
                 safetensors files that are resident, and the library code the load pages in.
     anon x      the same with the highest RssAnon seen by a 20 ms sampler: private memory only,
                 without file pages (which the kernel can drop at any time).
   The issue 26 goal: minirm's peak at most 1.1x the weights.

    python benchmarks/llm_cpu.py                           # bf16 speed + memory (5-10 min on 2 cores)
    python benchmarks/llm_cpu.py --threads 1               # steadier while other jobs share the cores
    python benchmarks/llm_cpu.py --sections speed --dtypes float32 --sequences 8   # fp32: agree to 1e-4
    python benchmarks/llm_cpu.py --sections memory         # memory only
    python benchmarks/llm_cpu.py --cache /tmp/qwen3-ckpt --rounds 5 --sequences 64
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_efficiency import cpu_snapshot, others_share  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
QWEN3_TEMPLATE = ROOT / "tests" / "data" / "chat_templates" / "qwen3.jinja"  # Qwen3's published chat template
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "minirm-bench-qwen3-0.6b-random"

# The published values of Qwen/Qwen3-0.6B's config.json on the Hub, in its layout (transformers 4.51's:
# rope_theta and torch_dtype, where transformers 5 would write rope_parameters and dtype); the reward
# model adds its classifier class, one label and the pad token (<|endoftext|>).
QWEN3_0_6B = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
    # the reward model's own fields
    "num_labels": 1,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "pad_token_id": 151643,
}
SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}  # Qwen3's ids
BPE_VOCAB = 16384  # the trained part of the vocabulary: ids 0..16383, all < vocab_size
SEED = 0


# --- the checkpoint -----------------------------------------------------------------------------------


def build_checkpoint(cache: Path, data: Path) -> Path:
    """The random Qwen3-0.6B reward model and its tokenizer in `cache`, built unless already there."""
    stamp = json.dumps({"config": QWEN3_0_6B, "specials": SPECIALS, "bpe": BPE_VOCAB, "seed": SEED,
                        "data": data.name}, sort_keys=True)
    if (cache / "built-with.json").is_file() and (cache / "built-with.json").read_text() == stamp:
        return cache
    import transformers as tf

    t0 = time.time()
    work = cache.parent / f"{cache.name}.tmp-{os.getpid()}"  # built beside, then renamed: never half a checkpoint
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save_tokenizer(work, data)
    hf_fields = {k: v for k, v in QWEN3_0_6B.items() if k not in ("architectures", "model_type")}
    torch.manual_seed(SEED)  # transformers' initialisation: normal(0, 0.02) linears and embeddings, norms 1
    model = tf.Qwen3ForSequenceClassification(tf.Qwen3Config(**hf_fields)).to(torch.bfloat16)
    model.save_pretrained(work, max_shard_size="300MB")
    del model
    # config.json as the Hub has it (rope_theta, torch_dtype), not transformers 5's rewrite of it
    (work / "config.json").write_text(json.dumps(QWEN3_0_6B, indent=2) + "\n")
    (work / "built-with.json").write_text(stamp)
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(work, cache)
    print(f"built {cache} in {time.time() - t0:.0f} s", file=sys.stderr)
    return cache


def save_tokenizer(out: Path, data: Path) -> None:
    """A byte-level BPE trained on the hh-rlhf sample, with Qwen3's special tokens at Qwen3's ids
    (the trained vocabulary stops at BPE_VOCAB; the ids between are unused, as a smaller real
    vocabulary would leave them) and Qwen3's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from minirm.text.records import read_jsonl

    texts = [row[k] for row in read_jsonl(data) for k in ("chosen", "rejected") if isinstance(row.get(k), str)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    # tokenizers renumbers added tokens to follow the vocabulary; in the model's vocabulary they keep their ids
    spec["model"]["vocab"].update(SPECIALS)
    spec["added_tokens"] = [dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                 special=True) for t, i in SPECIALS.items()]
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    check = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert all(check.token_to_id(t) == i for t, i in SPECIALS.items()), "special tokens lost their ids"
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
         "pad_token": "<|endoftext|>", "model_max_length": 131072}, indent=2))
    shutil.copy(QWEN3_TEMPLATE, out / "chat_template.jinja")


def weight_bytes(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes at 2 bytes each) from the safetensors headers, without reading the weights."""
    numel = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, entry in header.items():
            if name != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                numel += n
    return numel, numel * 2


# --- speed ------------------------------------------------------------------------------------------------


def pick_samples(data: Path, n: int, seed: int):
    from minirm.text.records import read_jsonl, row_samples

    samples = [s for row in read_jsonl(data) for s in row_samples(row)]
    return [samples[i] for i in random.Random(seed).sample(range(len(samples)), n)]


def check_ids_match_transformers(model_dir: Path, samples, ids, max_length: int) -> tuple[int, int]:
    """(how many of minirm's token lists equal transformers' apply_chat_template(tokenize=True), how many
    conversations fit in max_length): a longer one minirm shortens by its own rule, dropping the oldest
    turns (docs/models.md; tests/test_llm_templates.py checks it against transformers)."""
    import transformers as tf

    from minirm.text.templates import conversation

    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    same = fit = 0
    for sample, ours in zip(samples, ids):
        messages = sample.messages or conversation(sample.history or [], sample.response)
        theirs = tok.apply_chat_template(messages, tokenize=True)
        theirs = list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)
        if len(theirs) <= max_length:
            fit += 1
            same += theirs == ours
    return same, fit


def hf_scores(model, batches, pad_id: int) -> list[tuple[list[int] | None, list[float]]]:
    """transformers on right-padded batches with an attention mask; its score is read at the rightmost
    token that is not pad_token_id (no text here holds the pad token, so that is the last real one)."""
    from minirm.batching import pad_batch

    out = []
    with torch.inference_mode():
        for idx, seqs in batches:
            input_ids, lengths = pad_batch(seqs, pad_id, "cpu")
            mask = (torch.arange(input_ids.size(1))[None, :] < lengths[:, None]).long()
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            out.append((idx, logits[:, 0].float().tolist()))
    return out


def measure_speed(model_dir: Path, ids: list[list[int]], dtype: str, rounds: int, batch_size: int) -> list[dict]:
    import transformers as tf

    from minirm import Scorer
    from minirm.batching import length_batches

    tf.logging.set_verbosity_error()
    packed = Scorer.from_pretrained(str(model_dir), device="cpu", dtype=dtype, batch_size=batch_size, max_length=512)
    assert packed.attention == "packed", packed.attention
    padded = dataclasses.replace(packed, attention="sdpa")  # the same model and weights, padded batches
    hf = tf.AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    assert hf.config.rope_parameters["rope_theta"] == 1e6 and hf.config.num_hidden_layers == 28
    plan = length_batches([len(s) for s in ids], batch_size)  # the scorer's own plan (no duplicates here)
    assert len({tuple(s) for s in ids}) == len(ids), "duplicate sequences: the scorer would score them once"
    batches = [(b, [ids[i] for i in b]) for b in plan]
    pad_id = hf.config.pad_token_id

    def run_hf(seqs):
        return hf_scores(hf, [(None, seqs)], pad_id)[0][1]

    # each scorer scores one batch at a time, in the scorer's own plan; score_ids on a batch's sequences
    # runs that batch's one forward pass, tokens already made
    runners = {"transformers": run_hf, "minirm padded": padded.score_ids, "minirm packed": packed.score_ids}
    warm = sorted(ids, key=len)[:4]  # first calls: oneDNN's kernel choices, allocations
    for run in runners.values():
        run(warm)
    names = list(runners)
    times = {name: [0.0] * rounds for name in names}
    cpu = {name: [0.0] * rounds for name in names}  # this process's CPU seconds: less moved by neighbours
    others = {name: [] for name in names}
    scores = {name: [0.0] * len(ids) for name in names}
    for r in range(rounds):
        for j, (idx, seqs) in enumerate(batches):
            # the scorers take turns batch by batch (seconds apart, not minutes), the order rotating, so
            # that a neighbour's load on this shared machine falls on all three alike
            k = (r + j) % len(names)
            for name in names[k:] + names[:k]:
                start = cpu_snapshot()
                out = runners[name](seqs)
                times[name][r] += time.perf_counter() - start[0]
                cpu[name][r] += cpu_snapshot()[2] - start[2]
                others[name].append(others_share(start))
                for i, v in zip(idx, out):
                    scores[name][i] = v
        print(f"  {dtype} round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][r]:.1f} s ({cpu[n][r]:.1f} CPU s)"
                                                             for n in names)
              + f" (others took up to {100 * max(max(o) for o in others.values()):.0f}% of the CPU)",
              file=sys.stderr, flush=True)
    real = sum(map(len, ids))
    useful = sum(useful_flops(len(s), hf.config) for s in ids)
    padded_slots = sum(len(b) * max(len(ids[i]) for i in b) for b in plan)
    ref = times["transformers"]
    rows = []
    for name in names:
        med = statistics.median(times[name])
        per_round = [a / b for a, b in zip(ref, times[name])]
        rows.append(dict(dtype=dtype, scorer=name, median=med, runs=times[name], seqs_per_s=len(ids) / med,
                         gflops=useful / med / 1e9, others=statistics.mean(others[name]),
                         tokens=real if name == "minirm packed" else padded_slots,
                         ratio=statistics.median(per_round), round_ratios=per_round,  # paired by round
                         cpu=statistics.median(cpu[name]),
                         cpu_ratio=statistics.median(a / b for a, b in zip(cpu["transformers"], cpu[name])),
                         max_diff=max(abs(a - b) for a, b in zip(scores[name], scores["transformers"])),
                         scores=scores[name]))
    rows[-1]["packed_vs_padded"] = max(abs(a - b) for a, b in zip(scores["minirm packed"], scores["minirm padded"]))
    rows[-1]["score_range"] = (min(scores["transformers"]), max(scores["transformers"]))
    del hf, packed, padded
    gc.collect()
    return rows


def useful_flops(n: int, c) -> float:
    """The forward's multiply-adds on one sequence of n real tokens, padding not counted: every linear
    layer (q, k, v, o and the gated MLP's three) on each token, and causal attention's two products
    (n(n+1)/2 query-key pairs each, per query head); the embedding lookup and the 1-output head are free."""
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_token = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * (2 * n * per_token + 2 * 2 * q * n * (n + 1) / 2)


def linear_rates(dtype: torch.dtype, m: int = 2048, k: int = 1024, n: int = 3072) -> dict[str, float]:
    """GFLOP/s of one linear layer at the MLP's shape (2048 tokens), best of 8: nn.Linear's F.linear
    (transformers' layers) and, in bf16 where minirm prepacks, minirm's prepacked layer."""
    import torch.nn.functional as F

    from minirm.cpu import PrepackedLinear, can_prepack

    x, lin = torch.randn(m, k).to(dtype), torch.nn.Linear(k, n, bias=False).to(dtype)
    ops = {"F.linear": lambda: F.linear(x, lin.weight)}
    if can_prepack(dtype, torch.device("cpu")):
        ops["prepacked"] = PrepackedLinear(lin)
        ops["prepacked"] = (lambda p=ops["prepacked"]: p(x))
    rates = {}
    with torch.inference_mode():
        for name, op in ops.items():
            best = float("inf")
            for _ in range(8):
                t0 = time.perf_counter()
                op()
                best = min(best, time.perf_counter() - t0)
            rates[name] = 2 * m * k * n / best / 1e9
    return rates


# --- memory (each measurement in a fresh process) -----------------------------------------------------


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0): the peak then belongs to what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_load(loader: str, model_dir: Path, dtype: str, threads: int) -> dict:
    from deberta_memory import AnonSampler, _status

    torch.set_num_threads(threads)
    if loader.startswith("minirm"):
        import minirm.models.qwen3  # noqa: F401  (every module the load needs, imported before the baseline)
        from minirm import Scorer
    else:
        import transformers as tf
        import transformers.models.qwen3.modeling_qwen3  # noqa: F401

        tf.logging.set_verbosity_error()
    gc.collect()
    base, base_anon = _status("VmRSS"), _status("RssAnon")
    was_reset = reset_peak()
    with AnonSampler() as anon:
        t0 = time.perf_counter()
        if loader.startswith("minirm"):
            prepack = {"minirm": None, "minirm, prepack off": False}[loader]
            model = Scorer.from_pretrained(str(model_dir), device="cpu", dtype=dtype, prepack=prepack)
            assert model.dtype == getattr(torch, dtype)
        else:
            model = tf.AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        load_s = time.perf_counter() - t0
        peak_load, peak_anon_load = _status("VmHWM"), anon.peak
        after_load = {k: _status(k) for k in ("VmRSS", "RssAnon", "RssFile")}
        # a loader may leave the weights as views of the mapped files, read only when first used: one
        # forward over a short sequence touches every weight (of the embedding, only its rows)
        ids = [SPECIALS["<|im_start|>"], *range(300, 330), SPECIALS["<|im_end|>"]]
        if loader.startswith("minirm"):
            score = model.score_ids([ids])[0]
        else:
            with torch.inference_mode():
                score = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, 0].float().item()
    return dict(loader=loader, base=base, base_anon=base_anon, peak_load=peak_load, peak_anon_load=peak_anon_load,
                after_load=after_load, peak=_status("VmHWM"), peak_anon=anon.peak, load_s=load_s, score=score,
                after={k: _status(k) for k in ("VmRSS", "RssAnon", "RssFile")}, reset=was_reset)


def memory_rows(model_dir: Path, threads: int, loaders: list[str]) -> list[dict]:
    rows = []
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for loader in loaders:
        out = subprocess.run([sys.executable, __file__, "--_measure-load", loader, str(model_dir), str(threads)],
                             capture_output=True, text=True, env=env, check=False)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"measuring {loader}'s load failed (exit {out.returncode})")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


# --- the report ---------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{cpu} ({os.cpu_count()} cores; {', '.join(have) or 'no AVX-512'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="hh-rlhf style JSONL (default: %(default)s)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help="where the random checkpoint is built once and kept (default: %(default)s; 1.2 GB)")
    ap.add_argument("--sections", nargs="+", default=["speed", "memory"], choices=["speed", "memory"])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float32"],
                    help="speed in these dtypes (default bfloat16, the family's default for a bf16 checkpoint)")
    ap.add_argument("--sequences", type=int, default=32, help="hh-rlhf samples scored (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, the scorers taking turns (default 3)")
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per batch, all scorers (default 8)")
    ap.add_argument("--seed", type=int, default=SEED, help="which samples are drawn (default 0)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--_measure-load", nargs=3, metavar=("LOADER", "DIR", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure_load:
        loader, model_dir, threads = args._measure_load
        print(json.dumps(measure_load(loader, Path(model_dir), "bfloat16", int(threads))))
        return
    if not args.data.is_file():
        sys.exit(f"{args.data}: not found; pass --data with hh-rlhf style JSONL (chosen/rejected transcripts)")
    for name in ("sequences", "rounds", "batch_size", "threads"):
        if getattr(args, name) < 1:
            sys.exit(f"--{name.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    import transformers as tf

    model_dir = build_checkpoint(args.cache, args.data)
    n_params, n_bytes = weight_bytes(model_dir)
    shards = sorted(model_dir.glob("*.safetensors"))
    print(f"command: python benchmarks/llm_cpu.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {machine()}; torch {torch.__version__}, transformers {tf.__version__}, {args.threads} torch "
          f"threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    print(f"model: random Qwen3ForSequenceClassification with Qwen3-0.6B's config, {n_params / 1e9:.3f} B parameters, "
          f"{n_bytes / 1e9:.3f} GB in bf16, {len(shards)} safetensors shards + index ({model_dir})")

    if "speed" in args.sections:
        from minirm.config import ModelConfig
        from minirm.text.tokenizer import load_tokenizer

        samples = pick_samples(args.data, args.sequences, args.seed)
        # the scorer's own tokenizer (Scorer.encode), without loading the weights for it
        tokenizer = load_tokenizer(model_dir, ModelConfig.from_file(model_dir / "config.json"), max_length=512)
        ids = tokenizer.encode_samples(samples)
        same, fit = check_ids_match_transformers(model_dir, samples, ids, 512)
        lengths = sorted(map(len, ids))
        print(f"\ninputs: {len(ids)} hh-rlhf samples (seed {args.seed}) through Qwen3's chat template, "
              f"{sum(lengths)} tokens (median {statistics.median(lengths):.0f}, min {lengths[0]}, max {lengths[-1]}); "
              f"{fit} fit in 512 tokens, and their ids equal transformers' apply_chat_template for {same}/{fit}; "
              f"{len(ids) - fit} longer, shortened by minirm (oldest turns dropped); "
              f"batches of {args.batch_size} by length; median of {args.rounds} rounds\n")
        if same != fit:
            print("WARNING: minirm and transformers tokenize some samples differently\n")
        print("| dtype | scorer | median s | every round (s) | sequences/s | useful GFLOP/s | token slots "
              "| vs transformers: median of rounds (range) | CPU s (median) | vs transformers in CPU s "
              "| max score diff vs transformers | others' CPU (mean) |")
        print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        notes, by_dtype = [], {}
        for dtype in args.dtypes:
            rows = measure_speed(model_dir, ids, dtype, args.rounds, args.batch_size)
            by_dtype[dtype] = {r["scorer"]: r["scores"] for r in rows}
            for r in rows:
                spread = f"{min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f}"
                ref = r["scorer"] == "transformers"
                name = f"transformers {tf.__version__}" if ref else r["scorer"]
                ratio = "1.00x" if ref else f"**{r['ratio']:.2f}x** ({spread})"
                print(f"| {dtype} | {name} | {r['median']:.2f} | {', '.join(f'{t:.2f}' for t in r['runs'])} | "
                      f"{r['seqs_per_s']:.2f} | {r['gflops']:.0f} | {r['tokens']:,} | {ratio} | {r['cpu']:.1f} | "
                      f"{'1.00x' if ref else format(r['cpu_ratio'], '.2f') + 'x'} | "
                      f"{'-' if ref else format(r['max_diff'], '.1e')} | {100 * r['others']:.0f}% |", flush=True)
            low, high = rows[-1]["score_range"]
            rates = ", ".join(f"{op} {g:.0f}" for op, g in linear_rates(getattr(torch, dtype)).items())
            notes.append(f"{dtype}: packed vs padded differ by at most {rows[-1]['packed_vs_padded']:.1e}; "
                         f"transformers' scores span {low:+.3f} .. {high:+.3f}; one linear layer at the MLP's "
                         f"shape (2048 x 1024 -> 3072), GFLOP/s: {rates}")
        if "float32" in by_dtype and "bfloat16" in by_dtype:  # how far bf16 moves each scorer from fp32
            ref = by_dtype["float32"]["transformers"]
            for name, got in by_dtype["bfloat16"].items():
                diffs = [abs(a - b) for a, b in zip(got, ref)]
                notes.append(f"bfloat16 {name} against float32 transformers: |score difference| max "
                             f"{max(diffs):.1e}, median {statistics.median(diffs):.1e}")
        print("\n" + "\n".join(notes))

    if "memory" in args.sections:
        rows = memory_rows(model_dir, args.threads, ["minirm", "minirm, prepack off", "transformers"])
        gb = 1e9
        print(f"\nmemory: from_pretrained in bf16, then one forward over a 32-token sequence, each loader in a fresh "
              f"process; weights {n_bytes / gb:.3f} GB (sum of numel * 2 over the safetensors); x weights = (VmHWM - "
              f"VmRSS before loading) / the weights, anon x the same with RssAnon; issue 26's goal for minirm's load: "
              f"at most 1.10x\n")
        print("| loader | RSS before (GB) | load: peak RSS (GB) | **load: peak growth x weights** | load: anon x "
              "| load + 1st score: peak growth x weights | anon x | then RSS / anon / file (GB) | load s | score |")
        print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
        for r in rows:
            name = f"transformers {tf.__version__}" if r["loader"] == "transformers" else r["loader"]
            a = r["after"]
            print(f"| {name} | {r['base'] / gb:.2f} | {r['peak_load'] / gb:.2f} | "
                  f"**{(r['peak_load'] - r['base']) / n_bytes:.2f}x** | {(r['peak_anon_load'] - r['base_anon']) / n_bytes:.2f}x "
                  f"| {(r['peak'] - r['base']) / n_bytes:.2f}x | {(r['peak_anon'] - r['base_anon']) / n_bytes:.2f}x | "
                  f"{a['VmRSS'] / gb:.2f} / {a['RssAnon'] / gb:.2f} / {a['RssFile'] / gb:.2f} | {r['load_s']:.1f} | "
                  f"{r['score']:+.4f} |")
        if not all(r["reset"] for r in rows):
            print("\n(VmHWM could not be reset here: the peak includes the imports')")


if __name__ == "__main__":
    main()
