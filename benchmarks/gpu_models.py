"""The scoring, training and server sections of python -m benchmarks.gpu (see benchmarks/gpu.py).

The models have random weights and the real configs of bert-base-cased, roberta-base, gpt2 and
deberta-v2-xxlarge (1.5B): built with transformers (AutoModelForSequenceClassification.from_config)
and saved with save_pretrained into the work folder, once, for every section and worker to load.
The GPU machine has neither the real tokenizers nor the network, so each checkpoint carries a
tokenizer.json built here with the `tokenizers` library: a word-level vocabulary ("w0".."w8191"
are ids 1000..9191, one token per word) with the family's own special tokens at their real ids
and its pair template ([CLS] A [SEP] B [SEP]; RoBERTa's <s> A </s></s> B </s>; none for GPT-2).
So a text of n words is n tokens, and the (prompt, response) pairs get exactly the committed
hh-rlhf lengths (benchmarks/data/hh_rlhf_lengths.json): what a real tokenizer would cost is
not measured, what the models cost is. transformers scores the very token ids minirm makes.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
from importlib.util import find_spec
from pathlib import Path

from benchmarks.deberta_memory import XXLARGE
from benchmarks.gpu_context import Context
from benchmarks.gpu_lengths import DRY_SCALE, load_lengths

BERT, ROBERTA, GPT2, XXL = "bert-base-cased", "roberta-base", "gpt2", "deberta-v2-xxlarge"
# config.json of the published checkpoints (sizes and options), with a reward head
CONFIGS = {
    BERT: dict(model_type="bert", vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
               max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
               pad_token_id=0, num_labels=1),
    ROBERTA: dict(model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                  max_position_embeddings=514, type_vocab_size=1, initializer_range=0.02, layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1),
    # two labels, score P(label 1), as CHAI's GPT-2 reward model (the registry's GPT-2 alias); pad = eos
    GPT2: dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
               activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5,
               initializer_range=0.02, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256, num_labels=2),
    # microsoft/deberta-v2-xxlarge with the OpenAssistant reward model's head (benchmarks/deberta_memory.py)
    XXL: {key: value for key, value in XXLARGE.items() if key not in ("architectures", "label2id", "id2label")}
         | {"num_labels": 1},
}
FAMILY = {BERT: "bert", ROBERTA: "roberta", GPT2: "gpt2", XXL: "deberta"}
# --dry-run: the same families at toy size (one layer, head dim 32)
TINY = {"bert": dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128),
        "gpt2": dict(n_embd=64, n_layer=1, n_head=2),
        "deberta": dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                        pooler_hidden_size=64, attention_head_size=32)}

FIRST_WORD, WORDS = 1000, 8192  # word ids, clear of every family's special tokens
# family: (special tokens at their real ids, unknown token, (single, pair) template or None)
SPECIALS = {
    "bert": ({"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}, "[UNK]",
             ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1")),
    "roberta": ({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 50264}, "<unk>",
                ("<s> $A </s>", "<s> $A </s> </s> $B </s>")),
    "gpt2": ({"<|endoftext|>": 50256}, "<|endoftext|>", None),
    "deberta": ({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "[MASK]": 128000}, "[UNK]",
                ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1")),
}


def word_tokenizer(family: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials, unknown, template = SPECIALS[family]
    vocabulary = {f"w{i}": FIRST_WORD + i for i in range(WORDS)} | specials
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token=unknown))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(list(specials))
    if template:
        used = [token for token in specials if token in template[1]]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template[0], pair=template[1], special_tokens=[(token, specials[token]) for token in used])
    return tokenizer


def model_config(name: str, dry_run: bool, layers: int | None = None) -> dict:
    config = dict(CONFIGS[name])
    if dry_run:
        config.update(TINY["bert" if FAMILY[name] == "roberta" else FAMILY[name]])
    if layers:
        config["num_hidden_layers"] = layers
    return config


def checkpoint(ctx: Context, name: str, layers: int | None = None) -> Path:
    """The random-weight checkpoint of `name` in the work folder, built the first time it is asked
    for, under a lock: parallel workers wait for one build instead of each making their own."""
    config = json.dumps([model_config(name, ctx.dry_run, layers), SPECIALS[FAMILY[name]], WORDS], sort_keys=True)
    tag = f"{name}-{hashlib.sha1(config.encode()).hexdigest()[:10]}"  # a changed config is a new checkpoint
    folder = ctx.work / "checkpoints" / tag
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(tag + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "config.json").is_file():
            build_checkpoint(ctx, name, folder, layers)
    return folder


def build_checkpoint(ctx: Context, name: str, folder: Path, layers: int | None) -> None:
    import torch
    import transformers as tf

    config = model_config(name, ctx.dry_run, layers)
    config = tf.AutoConfig.for_model(config.pop("model_type"), **config)
    dtype = torch.bfloat16 if name == XXL else torch.float32  # the 1.5B as 3 GB, not 6
    torch.manual_seed(0)
    with torch.device(ctx.device):  # initialised on the GPU: seconds, not minutes, for 1.5B
        model = tf.AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    word_tokenizer(FAMILY[name]).save(str(tmp / "tokenizer.json"))
    os.replace(tmp, folder)
    del model
    free_memory(ctx)


def free_memory(ctx: Context) -> None:
    """Give the GPU memory of deleted models back, so that the next one's peak is its own."""
    import torch

    if ctx.device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def hh_pairs(count: int, scale: int = 1, seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, chosen response, rejected response) texts for the first `count` hh-rlhf pairs, with
    their committed lengths (divided by `scale`): a transcript of L tokens with a P-token prompt is a
    P-word prompt and an (L - P)-word response. Responses start with a space (a query is prompt +
    response, as OpenRLHF sends it)."""
    rng = random.Random(seed)

    def words(n):
        return " ".join(f"w{rng.randrange(WORDS)}" for _ in range(max(1, n)))

    out = []
    for chosen, rejected, prompt in load_lengths()[:count]:
        chosen, rejected, prompt = chosen // scale, rejected // scale, prompt // scale
        prompt = max(1, min(prompt, min(chosen, rejected) - 1))
        out.append((words(prompt), " " + words(chosen - prompt), " " + words(rejected - prompt)))
    return out


def pair_texts(count: int, scale: int = 1) -> tuple[list[str], list[str]]:
    """`count` (prompt, response) pairs: the chosen then the rejected side of each hh-rlhf pair."""
    prompts, responses = [], []
    for prompt, chosen, rejected in hh_pairs((count + 1) // 2, scale):
        prompts += [prompt, prompt]
        responses += [chosen, rejected]
    return prompts[:count], responses[:count]


def linear_parameters(model) -> int:
    import torch

    return sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))


def model_flops(model, cfg, lengths: list[int]) -> float:
    """Useful FLOPs of one forward pass of minirm's model, about: 2 per weight of every Linear per
    real token (the head's too), plus plain attention, 4 * L^2 * hidden per layer, halved if causal
    (DeBERTa's relative terms not counted). Padding is not counted: a padded pass shows as lower
    throughput."""
    attention = 4 * sum(n * n for n in lengths) * cfg.hidden_size * cfg.num_layers * (0.5 if model.causal else 1.0)
    return 2 * linear_parameters(model) * sum(lengths) + attention


def gib(nbytes: float | None) -> float | None:
    return None if nbytes is None else nbytes / 2**30


def peak_gib(ctx: Context) -> float | None:
    import torch

    return gib(torch.cuda.max_memory_allocated()) if ctx.device.type == "cuda" else None


def reset_peak(ctx: Context) -> None:
    import torch

    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


# --------------------------------------------------------------------------------------------------
# scoring: minirm's Scorer against transformers
# --------------------------------------------------------------------------------------------------
SCORING = {False: (512, 32), True: (8, 4)}  # (pairs, batch size)
FP32_DIFF_LIMIT = 1e-3  # fp32 scores of the two must agree this well (bf16 ones are reported only)


def scoring_cases(dry_run: bool) -> list[tuple[str, str]]:
    """Every model in bf16, then every model in fp32: if the budget runs out, the 1.5B model's fp32
    goes first. In a dry run each model once, each dtype at least once."""
    if dry_run:
        return [(BERT, "float32"), (ROBERTA, "bfloat16"), (GPT2, "bfloat16"), (XXL, "bfloat16")]
    return [(name, dtype) for dtype in ("bfloat16", "float32") for name in (BERT, ROBERTA, GPT2, XXL)]


def scoring(ctx: Context) -> None:
    cases = scoring_cases(ctx.dry_run)
    pairs, batch = SCORING[ctx.dry_run]
    ctx.figures["pairs"] = f"{pairs} (prompt, response) pairs of hh-rlhf lengths, batches of {batch}"
    ctx.figures["transformers"] = ("the same token ids, batches of the same size padded to their longest with the "
                                   "attention mask: in input order (as model cards show), and length-sorted")
    ctx.parallel(score_case_unit, len(warm_cases(ctx.dry_run)), warm=True, timeout_s=0.4 * ctx.time_left())
    ctx.each("models", cases, lambda case: score_case(ctx, *case), label=" ".join)


def warm_cases(dry_run: bool) -> list[tuple[str, str]]:
    """The cases the warm-up compiles for: all but the 1.5B model's fp32 (six more GB in each of
    eight processes, for a case that runs only if time allows)."""
    return [case for case in scoring_cases(dry_run) if case != (XXL, "float32")]


def score_case_unit(ctx: Context, index: int) -> None:
    score_case(ctx, *warm_cases(ctx.dry_run)[index])


def score_case(ctx: Context, name: str, dtype: str) -> dict | None:
    """One model in one dtype: minirm, then transformers, on the same token ids (each model alone on
    the GPU, so that each peak is its own)."""
    folder = checkpoint(ctx, name)
    minirm, ids, scores, rule, pad_id = minirm_scoring(ctx, folder, dtype)
    if ctx.warming:
        return None
    hf, theirs = transformers_scoring(ctx, folder, dtype, ids, rule, pad_id)
    row = dict(model=name, dtype=dtype, pairs=len(ids), tokens=sum(map(len, ids)), **minirm, **hf)
    row["transformers_tflops"] = row["minirm_tflops"] * row["transformers_pairs_per_s"] / row["minirm_pairs_per_s"]
    row["speedup"] = row["minirm_pairs_per_s"] / row["transformers_pairs_per_s"]
    row["speedup_vs_sorted"] = row["minirm_pairs_per_s"] / row["transformers_sorted_pairs_per_s"]
    row["minirm_share"] = ctx.share(row["minirm_tflops"])
    row["transformers_share"] = ctx.share(row["transformers_tflops"])
    row["max_abs_diff"] = max(abs(a - b) for a, b in zip(scores, theirs))
    if not all(math.isfinite(s) for s in scores + theirs):
        ctx.fail(f"{name} {dtype}: a score is not finite")
    elif dtype == "float32" and row["max_abs_diff"] > FP32_DIFF_LIMIT:
        ctx.fail(f"{name} {dtype}: scores differ from transformers' by {row['max_abs_diff']:.2g} > {FP32_DIFF_LIMIT:g}")
    return row


def minirm_scoring(ctx: Context, folder: Path, dtype: str):
    """Scorer.score_ids on the pairs, a first pass (compiles from the cache, autotunes) and a timed
    one: (figures, token ids, scores, the family's score rule, pad id). Warming: the first pass only."""
    import torch

    from minirm import Scorer

    count, batch_size = SCORING[ctx.dry_run]
    scorer = Scorer.from_pretrained(str(folder), device=str(ctx.device), dtype=dtype, attention="triton",
                                    batch_size=batch_size)
    ids = scorer.encode_pairs(*pair_texts(count, scale=DRY_SCALE if ctx.dry_run else 1))
    first_pass = ctx.timed(lambda: scorer.score_ids(ids))
    if ctx.warming:
        return None, ids, None, None, None
    weights = gib(torch.cuda.memory_allocated()) if ctx.device.type == "cuda" else None
    reset_peak(ctx)
    scores = []
    seconds = ctx.timed(lambda: scores.extend(scorer.score_ids(ids)))
    figures = dict(attention=scorer.attention, weights_gib=weights, minirm_first_pass_s=first_pass,
                   minirm_pairs_per_s=len(ids) / seconds, minirm_peak_gib=peak_gib(ctx),
                   minirm_tflops=model_flops(scorer.model, scorer.cfg, [len(s) for s in ids]) / seconds / 1e12)
    return figures, ids, scores, scorer.logits_to_scores, scorer.tokenizer.pad_id


def transformers_scoring(ctx: Context, folder: Path, dtype: str, ids, rule, pad_id):
    """AutoModelForSequenceClassification on the same ids: a warm pass, then timed passes in input
    order and length-sorted: (figures, scores in input order)."""
    import torch
    import transformers as tf

    from minirm.batching import length_batches

    free_memory(ctx)  # minirm's model is gone
    model = tf.AutoModelForSequenceClassification.from_pretrained(folder, dtype=getattr(torch, dtype))
    model = model.to(ctx.device).eval()
    batch_size = SCORING[ctx.dry_run][1]
    input_order = [list(range(i, min(i + batch_size, len(ids)))) for i in range(0, len(ids), batch_size)]
    by_length = length_batches([len(s) for s in ids], batch_size)
    hf_scores(model, ids, pad_id, rule, input_order, ctx)  # warm: cuBLAS and allocator, untimed
    reset_peak(ctx)
    scores = []
    seconds = ctx.timed(lambda: scores.extend(hf_scores(model, ids, pad_id, rule, input_order, ctx)))
    sorted_seconds = ctx.timed(lambda: hf_scores(model, ids, pad_id, rule, by_length, ctx))
    figures = dict(transformers_pairs_per_s=len(ids) / seconds,
                   transformers_sorted_pairs_per_s=len(ids) / sorted_seconds, transformers_peak_gib=peak_gib(ctx))
    return figures, scores


def hf_scores(model, ids, pad_id, rule, batches, ctx: Context) -> list[float]:
    """transformers' scores of the sequences, batch by batch, each padded to its longest."""
    import torch

    from minirm.batching import pad_batch

    scores = [0.0] * len(ids)
    with torch.inference_mode():
        for batch in batches:
            input_ids, lengths = pad_batch([ids[i] for i in batch], pad_id, ctx.device)
            mask = (torch.arange(input_ids.size(1), device=ctx.device)[None, :] < lengths[:, None]).long()
            for i, score in zip(batch, rule(model(input_ids=input_ids, attention_mask=mask).logits.float()).tolist()):
                scores[i] = score
    return scores


# --------------------------------------------------------------------------------------------------
# training: minirm's loop against a plain transformers loop; the oa-deberta recipe on 1.5B
# --------------------------------------------------------------------------------------------------
BERT_TRAINING = {False: (30, 16), True: (3, 4)}  # (steps, pairs per step)
RECIPE_STEPS = {False: 10, True: 1}


def training_data(ctx: Context) -> Path:
    return ctx.work / ("train-tiny.jsonl" if ctx.dry_run else "train.jsonl")


def training(ctx: Context) -> None:
    steps, pairs = BERT_TRAINING[ctx.dry_run]
    data = training_data(ctx)
    rows = [{"prompt": p, "chosen": c, "rejected": r}
            for p, c, r in hh_pairs(steps * pairs, DRY_SCALE if ctx.dry_run else 1)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    ctx.figures["data"] = f"{len(rows)} preference rows (prompt, chosen, rejected) of hh-rlhf lengths"
    ctx.each("bert", [BERT], lambda name: bert_training(ctx, data), label=str)
    # the recipe's kernels compile on a 2-layer model of the same width, one config per process
    ctx.parallel(warm_recipe, 1, warm=True, timeout_s=0.5 * ctx.time_left())
    ctx.each("recipe", ["oa-deberta"], lambda name: recipe_training(ctx, checkpoint(ctx, XXL), data), label=str)


def step_times(output: Path, examples_per_step: int) -> tuple[list[float], list[dict]]:
    """Seconds of each optimizer step, from metrics.jsonl (logged every step), and its rows."""
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("split") == "train"]
    return [examples_per_step / row["examples_per_s"] for row in rows], rows


def steady(seconds: list[float]) -> float:
    """The median step, the first one (cuBLAS and allocator warm-up, kernel autotuning) left out."""
    return statistics.median(seconds[1:] or seconds)


def bert_training(ctx: Context, data: Path) -> dict:
    import minirm.training.loop as mt

    steps, pairs = BERT_TRAINING[ctx.dry_run]
    folder = checkpoint(ctx, BERT)
    output = ctx.work / "train-bert"
    cfg = mt.TrainConfig(model=str(folder), data=[mt.DataSource(str(data), "preference")], output=str(output),
                         loss="pairwise", batch_size=pairs, max_steps=steps, max_length=512, precision="bf16",
                         lr=5e-5, schedule="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                         device=str(ctx.device), log_every=1, progress=False, overwrite=True, seed=0)
    backend = mt.read_model_config(cfg, ctx.device)[3]
    mt.train(cfg)
    seconds, rows = step_times(output, pairs)
    hf_seconds, hf_losses, flops = plain_transformers_loop(ctx, folder, data, steps, pairs)
    free_memory(ctx)
    shutil.rmtree(output, ignore_errors=True)
    row = dict(model=BERT, steps=steps, pairs_per_step=pairs, precision="bf16 autocast", minirm_attention=backend,
               minirm_step_ms=1e3 * steady(seconds), transformers_step_ms=1e3 * steady(hf_seconds),
               minirm_final_loss=rows[-1]["loss"], transformers_final_loss=hf_losses[-1])
    row.update(minirm_steps_per_s=1 / steady(seconds), transformers_steps_per_s=1 / steady(hf_seconds),
               speedup=steady(hf_seconds) / steady(seconds), minirm_tflops=flops / steady(seconds) / 1e12,
               transformers_tflops=flops / steady(hf_seconds) / 1e12)
    row.update(minirm_share=ctx.share(row["minirm_tflops"]), transformers_share=ctx.share(row["transformers_tflops"]))
    if not all(math.isfinite(x) for x in [r["loss"] for r in rows] + hf_losses):
        ctx.fail("bert-base training: a loss is not finite")
    return row


def plain_transformers_loop(ctx: Context, folder: Path, data: Path, steps: int, pairs: int):
    """The loop of benchmarks/train_vs_transformers.py's transformers side, on the GPU: the same
    examples and token ids as minirm (its tokenizer), random batches padded to their longest,
    chosen and rejected in one forward, -logsigmoid(r_c - r_r), AdamW, linear decay, clipping at
    1.0, dropout on, bf16 autocast. Returns (seconds per step, losses, mean FLOPs per step)."""
    import torch
    import torch.nn.functional as F
    import transformers as tf

    from minirm.batching import pad_batch
    from minirm.config import ModelConfig
    from minirm.training.data import encode_examples, load_examples
    from minirm.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(folder, ModelConfig.from_file(folder / "config.json"), 512)
    examples = encode_examples(load_examples(str(data), "preference"), tokenizer)
    torch.manual_seed(0)
    model = tf.AutoModelForSequenceClassification.from_pretrained(folder).to(ctx.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    seconds, losses, tokens, squares = [], [], 0, 0
    for step in range(steps):
        batch = [examples[i] for i in order[step * pairs:(step + 1) * pairs]]
        sequences = [ex.ids[0] for ex in batch] + [ex.ids[1] for ex in batch]
        tokens += sum(map(len, sequences))
        squares += sum(len(s) ** 2 for s in sequences)

        def one_step():
            input_ids, lengths = pad_batch(sequences, tokenizer.pad_id, ctx.device)
            mask = (torch.arange(input_ids.size(1), device=ctx.device)[None, :] < lengths[:, None]).long()
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
                rewards = model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float()
            loss = -F.logsigmoid(rewards[:len(batch)] - rewards[len(batch):]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())  # the step's one sync, as minirm's loop has

        seconds.append(ctx.timed(one_step))
    cfg = model.config
    flops = 3 * (2 * linear_parameters(model) * tokens + 4 * squares * cfg.hidden_size * cfg.num_hidden_layers) / steps
    return seconds, losses, flops


def recipe_config(ctx: Context, folder: Path, data: Path, output: Path):
    """The oa-deberta recipe as train.py --recipe oa-deberta runs it, for RECIPE_STEPS steps, no held-out
    evaluation (and in a dry run 2 micro-batches per step instead of 12, attention on the interpreted
    kernel)."""
    from minirm.training.recipes import get_recipe
    from minirm.training.loop import DataSource

    overrides = dict(model=str(folder), data=[DataSource(str(data), "preference")], output=str(output),
                     max_steps=RECIPE_STEPS[ctx.dry_run], eval_fraction=0.0, log_every=1, progress=False,
                     device=str(ctx.device), overwrite=True)
    if ctx.dry_run:  # the kernel is DeBERTa's training default on CUDA only; on CPU it must be asked for
        overrides.update(attention="triton", grad_accum=2)
    return get_recipe("oa-deberta").config(**overrides)


def warm_recipe(ctx: Context, index: int) -> None:
    """The recipe's steps on a 2-layer model of xxlarge's width (a compile warm-up worker): the
    same micro-batches, so the same kernel shapes, as the 48-layer run."""
    from minirm.training.loop import train

    output = ctx.work / f"warm-recipe-{os.getpid()}"
    train(recipe_config(ctx, checkpoint(ctx, XXL, layers=None if ctx.dry_run else 2), training_data(ctx), output))
    shutil.rmtree(output, ignore_errors=True)


def recipe_training(ctx: Context, folder: Path, data: Path) -> dict:
    import torch

    import minirm.training.loop as mt
    from minirm.training.plan import StepPlan
    from minirm.text.tokenizer import find_tokenizer, load_tokenizer

    output = ctx.work / "train-recipe"
    cfg = recipe_config(ctx, folder, data, output)
    model_dir, _, mcfg, backend = mt.read_model_config(cfg, ctx.device)
    free_memory(ctx)
    reset_peak(ctx)
    mt.train(cfg)
    peak = peak_gib(ctx)
    groups = cfg.batch_size * cfg.grad_accum
    seconds, rows = step_times(output, groups)
    shutil.rmtree(output, ignore_errors=True)  # 6 GB of fp32 weights
    # the tokens of each step, from the run's own plan, for its FLOPs: 6 per parameter of every Linear
    # and token (forward and backward; the recomputed forward of checkpointing is not useful work)
    tokenizer = load_tokenizer(find_tokenizer(cfg.tokenizer, model_dir, mcfg), mcfg, cfg.max_length)
    train_set = mt.read_data(cfg, tokenizer, mcfg.num_labels)[0]
    plan = StepPlan.make(train_set, cfg, 0, 1)
    tokens = [sum(len(s) for i in plan.examples(step) for s in train_set[i].ids) for step in range(len(rows))]
    with torch.device("meta"):
        linear = linear_parameters(mcfg.spec.build(mcfg))
    tflops = [6 * linear * n / s / 1e12 for n, s in zip(tokens, seconds)]
    losses, norms = [row["loss"] for row in rows], [row["grad_norm"] for row in rows]
    row = dict(model=XXL, recipe="oa-deberta", steps=len(rows), groups_per_step=groups, loss=cfg.loss,
               precision=cfg.precision, gradient_checkpointing=cfg.gradient_checkpointing, attention=backend,
               first_step_s=seconds[0], step_s=steady(seconds), steps_per_s=1 / steady(seconds), peak_gib=peak,
               tokens_per_step=statistics.mean(tokens), tflops_linear=steady(tflops), losses=losses,
               grad_norms=norms, losses_finite=all(math.isfinite(x) for x in losses))
    row["share"] = ctx.share(row["tflops_linear"])
    if not row["losses_finite"]:
        ctx.fail("oa-deberta recipe: a loss is not finite")
    return row


# --------------------------------------------------------------------------------------------------
# server: score.py --serve under concurrent clients, against offline scoring
# --------------------------------------------------------------------------------------------------
SERVER = {False: (512, 32, "bfloat16"), True: (16, 4, "float32")}  # (requests, clients, dtype)
SERVER_PACKAGES = ("fastapi", "uvicorn", "starlette", "pydantic", "httpx")


def server_batches(max_len: int = 512) -> list[list[int]]:
    """Sequence lengths of the batches a server can launch the varlen kernel with. It batches whatever
    requests are waiting, so any count and lengths; what Triton compiles apart is each length bucket
    of the autotuner (64 .. max_len) and each specialisation of the integer arguments (the number of
    sequences 1, divisible by 16 or neither; the token count divisible by 16 or not)."""
    batches, bucket = [], 64
    while bucket <= max_len:
        for count in (1, 3, 16):
            for divisible in (True, False):
                lengths = [bucket * 3 // 4] * count  # the longest sets the bucket
                remainder = sum(lengths) % 16
                lengths[-1] -= remainder if divisible else (0 if remainder else 1)
                batches.append(lengths)
        bucket *= 2
    return batches


def warm_server(ctx: Context, index: int) -> None:
    """One launch of the varlen kernel with bert-base's heads (a compile warm-up worker)."""
    import torch

    from minirm.kernels.attention import varlen_attention

    config, dtype = model_config(BERT, ctx.dry_run), getattr(torch, SERVER[ctx.dry_run][2])
    heads = config["num_attention_heads"]
    lengths = server_batches()[index]
    q = torch.randn(sum(lengths), heads, config["hidden_size"] // heads, device=ctx.device, dtype=dtype)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=ctx.device)
    varlen_attention(q, q, q, cu_seqlens, max(lengths))


def offline_scores(ctx: Context, folder: Path, dtype: str, prompts, responses) -> list[float]:
    """Scorer.score_pairs in this process, with the server's default attention: a first pass
    (autotunes), then a timed one; its figures go into the section's."""
    from minirm import Scorer

    scorer = Scorer.from_pretrained(str(folder), device=str(ctx.device), dtype=dtype)
    first = ctx.timed(lambda: scorer.score_pairs(prompts, responses))
    scores = []
    seconds = ctx.timed(lambda: scores.extend(scorer.score_pairs(prompts, responses)))
    flops = model_flops(scorer.model, scorer.cfg, [len(s) for s in scorer.encode_pairs(prompts, responses)])
    ctx.figures.update(attention=scorer.attention, offline_first_pass_s=first,
                       offline_pairs_per_s=len(prompts) / seconds, offline_tflops=flops / seconds / 1e12)
    return scores


def server(ctx: Context) -> None:
    missing = [name for name in SERVER_PACKAGES if find_spec(name) is None]
    if missing:
        raise RuntimeError(f"the server needs {', '.join(missing)}, not installed here: make the wheels with "
                           "bash benchmarks/gpu_wheels.sh, carry .whl/ and install it (benchmarks/gpu.py says how)")
    from benchmarks.serve_load import free_port, run_clients, start_server

    requests, clients, dtype = SERVER[ctx.dry_run]
    folder = checkpoint(ctx, BERT)
    ctx.parallel(warm_server, len(server_batches()), warm=True, timeout_s=0.4 * ctx.time_left())
    prompts, responses = pair_texts(requests, scale=DRY_SCALE if ctx.dry_run else 1)
    figures = ctx.figures
    figures.update(model=BERT, dtype=dtype, requests=requests, clients=clients,
                   request_shape='{"query": [prompt + response], "prompts": [prompt]}, one pair per request')
    offline = offline_scores(ctx, folder, dtype, prompts, responses)
    free_memory(ctx)
    ctx.save()
    port = free_port()
    # serve_load's start_server passes --device cpu; the --device given after it wins
    process = start_server(folder, port, ["--device", str(ctx.device), "--dtype", dtype])
    url = f"http://127.0.0.1:{port}"
    try:
        figures["warm_pass_s"] = asyncio.run(run_clients(url, prompts, responses, clients))[0]  # autotunes
        wall, served, latencies = asyncio.run(run_clients(url, prompts, responses, clients))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    latencies = sorted(latencies)
    served_vs_offline = requests / wall / figures["offline_pairs_per_s"]
    figures.update(served_pairs_per_s=requests / wall, served_vs_offline=served_vs_offline,
                   offline_share=ctx.share(figures["offline_tflops"]),
                   served_share=ctx.share(figures["offline_tflops"] * served_vs_offline),
                   p50_ms=1e3 * latencies[len(latencies) // 2],
                   p99_ms=1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                   max_abs_diff_vs_offline=max(abs(a - b) for a, b in zip(served, offline)))
    if not all(math.isfinite(s) for s in served):
        ctx.fail("a served score is not finite")
    ctx.save()
