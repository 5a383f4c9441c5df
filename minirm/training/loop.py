"""The training loop: records -> format -> tokenize -> batch -> model -> loss -> optimizer step -> checkpoint.

`train(cfg)` reads top to bottom:

1. set up: the options and the output folder are checked, then the model's config, the
   tokenizer and the data are read (tokenized once, the way score.py tokenizes), so that
   everything that can be wrong is found before the weights load, last; a resumed run takes
   back its weights, optimizer, GradScaler, RNG states and counters (resume.py);
2. plan (plan.py): every optimizer step's examples are fixed by (seed, epoch) alone, so a
   resumed run takes exactly the batches the interrupted one would have taken;
3. loop: micro-batches under autocast, loss scaled for accumulation and ranks, backward,
   unscale, clip; one read of the step's loss and gradient norm (its only GPU sync) stops a
   diverging run before its optimizer step; step; log (meter.py), evaluate and save on schedule;
4. finish: the model in Hugging Face layout in the output directory, metrics as JSONL, a
   PNG of the curves.

The loss is an Objective (losses.py): it lays out a batch's sequences, turns the model's
outputs into the loss and the metric tensors, and merges those over micro-batches; the loop
holds one and never asks which it is.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..attention import choose_backend
from ..batching import pad_batch
from ..checkpoint import load_for_training, reward_config, save_model
from ..config import ModelConfig
from ..console import Progress
from ..devices import Dist, setup_distributed
from ..errors import MinirmError, interrupted
from ..hub import resolve_model
from ..models import kernel_trains, supports_triton
from ..text.tokenizer import find_tokenizer, load_tokenizer
from .config import TrainConfig
from .data import DataSource, Encoded, Example, encode_examples, load_examples, split_holdout
from .losses import Objective, make_objective, to_floats
from .meter import Meter, MetricsLog, plot_curves
from .optim import build_optimizer, lr_factor, set_lr
from .plan import StepPlan
from .resume import check_output, checkpoint_dirs, prepare_output, resume, save_checkpoint
from .sharding import full_value, gathered, is_sharded, memory_line, shard_model

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# --- what the weights need: config, tokenizer, data ------------------------------------------

def read_model_config(cfg: TrainConfig, device: torch.device) -> tuple[Path, ModelConfig, ModelConfig, str]:
    """(model directory, its config.json as read, that config with the run's reward head, attention backend)."""
    model_dir = resolve_model(cfg.model, cfg.revision)
    base = ModelConfig.from_file(model_dir / "config.json")
    mcfg = reward_config(base, cfg.num_labels, cfg.regression_head)
    kernel_ok = kernel_trains(mcfg)
    if cfg.attention == "triton" and supports_triton(mcfg.family) and not kernel_ok:
        raise MinirmError("the triton kernel has no attention dropout; train with --attention sdpa, or set "
                          "attention_probs_dropout_prob to 0 in config.json")
    amp = AMP_DTYPES[cfg.precision] or torch.float32
    # the varlen kernel has no attention dropout: by default a model that uses some trains on sdpa
    # on CUDA; DeBERTa's kernel has dropout, so DeBERTa trains on it
    backend = choose_backend(cfg.attention, device, mcfg.head_dim, amp, kernel_ok)
    return model_dir, base, mcfg, backend


def _load(src: DataSource, num_labels: int) -> list[Example]:
    return load_examples(src.source, src.adapter, split=src.split, revision=src.revision, num_labels=num_labels)


def read_data(cfg: TrainConfig, tokenizer, num_labels: int) -> tuple[list[Encoded], list[Encoded]]:
    """(training examples, held-out examples), tokenized: --eval-data, or a fraction of --data."""
    train_ex = [ex for src in cfg.data for ex in _load(src, num_labels)]
    eval_ex = [ex for src in cfg.eval_data for ex in _load(src, num_labels)]
    if not eval_ex and cfg.eval_fraction > 0:
        train_ex, eval_ex = split_holdout(train_ex, cfg.eval_fraction, cfg.seed)
    return encode_examples(train_ex, tokenizer), encode_examples(eval_ex, tokenizer)


# --- one step ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Forward:
    """A batch of examples through the model: the objective's layout, padding, autocast -> (loss, metric tensors)."""

    objective: Objective
    pad_id: int
    device: torch.device
    backend: str
    amp_dtype: torch.dtype | None

    def __call__(self, model, batch: list[Encoded]) -> tuple[torch.Tensor, dict]:
        ids, lengths = pad_batch(self.objective.sequences(batch), self.pad_id, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = model(ids, lengths, self.backend)
        return self.objective.loss(logits, batch)


def gradient_sync(wrapped, world: int, last: bool):
    """Gradients are averaged over the ranks after the step's last micro-batch only: DDP's no_sync
    for the others; FSDP is told whether to reduce-scatter."""
    if is_sharded(wrapped):
        wrapped.set_requires_gradient_sync(last)
        return nullcontext()
    return nullcontext() if world == 1 or last else wrapped.no_sync()


def accumulate(wrapped, forward: Forward, batches: list[list[Encoded]], n_step: int, world: int,
               scaler) -> tuple[torch.Tensor, dict]:
    """Forward and backward over this rank's micro-batches of one step -> (this rank's share of the
    step's mean loss, float64 on the device, nothing read; the micro-batches' metric tensors merged)."""
    step_loss, parts = 0.0, []
    for i, batch in enumerate(batches):
        with gradient_sync(wrapped, world, i == len(batches) - 1):
            loss, part = forward(wrapped, batch)
            # each loss is a mean over its micro-batch: weight it by its share of the whole step,
            # times world because DDP and FSDP average gradients over ranks
            scaler.scale(loss * (len(batch) * world / n_step)).backward()
        step_loss = step_loss + loss.detach().double() * len(batch) / n_step
        parts.append(part)
    return step_loss, forward.objective.merge(parts)


def all_ranks(loss: torch.Tensor, save_due: bool, d: Dist) -> tuple[torch.Tensor, torch.Tensor | bool]:
    """The step's mean loss (each rank holds its share, summed in float32 over the ranks) and whether
    rank 0's clock says a checkpoint is due, in one all-reduce, so that every rank saves at the same step."""
    if d.world == 1:
        return loss, save_due
    shared = torch.stack([loss.float().reshape(()), torch.tensor(float(save_due), device=loss.device)])
    dist.all_reduce(shared)
    return shared[0], shared[1]


def check_step(loss: torch.Tensor, grad_norm: torch.Tensor, step: int, cfg: TrainConfig,
               save_due: torch.Tensor | bool = False) -> tuple[float, bool]:
    """The step's loss and gradient norm (and the ranks' shared save flag), read in one transfer (the
    step's one GPU sync) before the optimizer step can spoil the weights; a non-finite one stops the
    run. Under fp16 a non-finite gradient is the GradScaler's to handle (it skips the step).
    Returns (the loss, whether a timed checkpoint is due)."""
    values = [loss.double().reshape(()), grad_norm.double().reshape(())]
    if isinstance(save_due, torch.Tensor):
        values.append(save_due.double().reshape(()))
    loss_value, norm, *due = torch.stack(values).tolist()
    if not math.isfinite(norm) and cfg.precision != "fp16":
        _diverged("gradient norm", norm, step, cfg)
    if not math.isfinite(loss_value):  # the same on every rank (all-reduced)
        _diverged("loss", loss_value, step, cfg)
    return loss_value, bool(due[0]) if due else bool(save_due)


def _diverged(what: str, value: float, step: int, cfg: TrainConfig) -> None:
    fix = f"lower --lr (now {cfg.lr:g})" + (", or train in bf16 or fp32 instead of fp16" if cfg.precision == "fp16"
                                             else ", or clip harder with --max-grad-norm")
    raise MinirmError(f"training diverged: the {what} became {value} at step {step}; nothing of that step was "
                      f"saved (earlier checkpoints are intact); {fix}, and start again or --resume")


def _check_finite(model: torch.nn.Module, step: int, cfg: TrainConfig) -> None:
    """A save never writes a non-finite model (one sync per save, not per step). A sharded model
    checks each process's shards, and the processes agree (every process calls it)."""
    sharded = is_sharded(model)
    local = [p.to_local() if sharded else p for p in model.parameters()]
    finite = torch.stack([torch.isfinite(p).all() for p in local]).all().float()
    if sharded and dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite):
        _diverged("model's weights", float("nan"), step, cfg)


@torch.no_grad()
def run_eval(model, forward: Forward, eval_set: list[Encoded], batch_size: int) -> dict[str, float]:
    """Loss and metrics over the whole held-out set, in length-sorted batches, dropout off."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(eval_set)), key=lambda i: -eval_set[i].length)
    total_loss, parts = 0.0, []
    for i in range(0, len(order), batch_size):
        batch = [eval_set[j] for j in order[i : i + batch_size]]
        loss, part = forward(model, batch)
        total_loss = total_loss + loss.double() * len(batch)
        parts.append(part)
    model.train(was_training)
    values = {"loss": total_loss / len(eval_set), **forward.objective.metrics(forward.objective.merge(parts))}
    return to_floats(values)


# --- the loop ------------------------------------------------------------------------------

@dataclass
class Where:
    """How far a run got, for the line an interrupt leaves: the steps done of the total, once the loop runs."""

    step: int | None = None
    total: int | None = None
    finishing: bool = False


def train(cfg: TrainConfig) -> dict:
    """Train; returns a summary (steps, examples, seconds, output, new parameters, final eval metrics, plot).

    Ctrl-C or SIGTERM (under the CLI) raises an `Interrupted` whose note says what the run left
    behind: the checkpoint --resume would continue from, or that there is none yet."""
    cfg.validate()
    where = Where()
    try:
        return _train(cfg, where)
    except KeyboardInterrupt as e:
        raise interrupted(e, interrupt_note(cfg, where)) from None


def interrupt_note(cfg: TrainConfig, where: Where) -> str:
    """What an interrupted run leaves in --output, read from the disk, so that it is true whatever
    was interrupted: the checkpoint --resume continues from, or that there is none yet."""
    output = Path(cfg.output)
    ckpts = checkpoint_dirs(output)
    if where.step is None:
        if cfg.resume and ckpts:
            return f"before training started; {output}'s checkpoints are as they were: --resume continues from them"
        return "before training started; nothing was trained"
    at = "while saving the trained model" if where.finishing else f"after {where.step} of {where.total} steps"
    if ckpts:
        return f"stopped {at}; the last checkpoint is {ckpts[-1]}: run the same command with --resume to continue"
    rules = [f"every {cfg.save_every} steps" if cfg.save_every else "",
             f"every {cfg.save_every_minutes:g} minutes" if cfg.save_every_minutes else ""]
    saved = ("saved " + " or ".join(r for r in rules if r) if any(rules)
             else "--save-every and --save-every-minutes are 0")
    finished = any((output / f).is_file() for f in ("model.safetensors", "summary.json"))
    return (f"stopped {at}, before the first checkpoint ({saved}): nothing to resume; run the command again "
            f"{'with --overwrite' if finished else 'as it was'} to start over")


def _train(cfg: TrainConfig, where: Where) -> dict:
    d, device = setup_distributed(cfg.device)
    output = Path(cfg.output)
    check_output(output, cfg)  # before any model or data is loaded
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # config, tokenizer, data, plan: everything that can be wrong is found before the weights load
    model_dir, base, mcfg, backend = read_model_config(cfg, device)
    tok_dir = find_tokenizer(cfg.tokenizer, model_dir, mcfg)
    tokenizer = load_tokenizer(tok_dir, mcfg, cfg.max_length, cfg.truncation_side, cfg.chat_names)
    train_set, eval_set = read_data(cfg, tokenizer, mcfg.num_labels)
    plan = StepPlan.make(train_set, cfg, d.rank, d.world)
    objective = make_objective(cfg.loss, cfg.center_rewards_coefficient)
    forward = Forward(objective, tokenizer.pad_id, device, backend, AMP_DTYPES[cfg.precision])
    # the weights, last; then where an interrupted run left them
    model, _, fresh = load_for_training(model_dir, cfg.num_labels, cfg.regression_head, device, config=base)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    sharded = cfg.shard == "fsdp" and d.world > 1  # one process has nothing to shard with
    if d.main and (sharded or d.world > 1):
        print(memory_line(model, d.world, cfg.shard, cfg.precision), flush=True)
    if sharded:  # before the optimizer, which then holds only this process's shards
        shard_model(model, device, d.world, cfg.precision)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    state = resume(output, device, plan.fingerprint, model, optimizer, scaler, plan.total, d.main) if cfg.resume else {}
    start = state.get("step", 0)
    if d.main:
        prepare_output(output, cfg)
    wrapped = model if d.world == 1 or sharded else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    log = MetricsLog(output / "metrics.jsonl", d.main, start if cfg.resume else None)
    meter, row, last_eval = Meter(state), {}, {}
    # a bar at a terminal; elsewhere (nohup, Slurm) a plain line every 30 s (console.py)
    bar = Progress(plan.total, "steps", "training", enabled=cfg.progress and d.main, initial=start)
    where.step, where.total = start, plan.total
    last_save = time.monotonic()
    model.train()
    for step in range(start, plan.total):
        t0 = time.perf_counter()
        set_lr(optimizer, cfg.lr * lr_factor(step, plan.total, cfg.warmup_steps, cfg.schedule))
        examples = plan.examples(step)
        batches = [[train_set[j] for j in idx] for idx in plan.micro_batches(examples)]
        loss, parts = accumulate(wrapped, forward, batches, len(examples), d.world, scaler)
        scaler.unscale_(optimizer)
        grad_norm = full_value(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf")))
        timed = d.main and 0 < 60 * cfg.save_every_minutes <= time.monotonic() - last_save  # rank 0's clock
        loss, timed = all_ranks(loss, timed, d)
        step_loss, timed = check_step(loss, grad_norm, step + 1, cfg, timed)  # the step's one read, before its update
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        meter.add(len(examples), time.perf_counter() - t0,
                  {"loss": loss, "grad_norm": grad_norm, **objective.metrics(parts)})  # this rank's share; rank 0 logs
        done = where.step = step + 1
        if cfg.log_every and (done % cfg.log_every == 0 or done == plan.total):
            row = {"step": done, "split": "train", "epoch": round(done / plan.per_epoch, 4),
                   "lr": optimizer.param_groups[0]["lr"], **meter.row()}  # means over the steps since the last row
            log.write(row)
        bar.update(1, loss=f"{step_loss:.4f}", **({"acc": f"{row['accuracy']:.2f}"} if "accuracy" in row else {}))
        # a sharded model's forward is a collective: every process evaluates (rank 0 logs)
        if eval_set and (d.main or sharded) and ((cfg.eval_every and done % cfg.eval_every == 0)
                                                 or done == plan.total):
            last_eval = {"step": done, "split": "eval",
                         **run_eval(model, forward, eval_set, cfg.eval_batch_size or 2 * cfg.batch_size)}
            log.write(last_eval)
            if d.main:
                bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()
                                                       if isinstance(v, float)))
        if ((cfg.save_every and done % cfg.save_every == 0) or timed) and done < plan.total:
            if d.main or sharded:  # a sharded checkpoint is written by every process
                _check_finite(model, done, cfg)
                save_checkpoint(output, done, model, optimizer, scaler, tok_dir, {
                    "data": plan.fingerprint, "config": asdict(cfg), **meter.state()}, cfg.save_total_limit,
                    d.main)
            if d.world > 1:
                dist.barrier()
            last_save = time.monotonic()
    bar.close()

    summary = {"steps": plan.total, "examples": meter.examples_seen, "seconds": meter.train_seconds,
               "output": str(output), "new_parameters": fresh,
               "eval": {k: v for k, v in last_eval.items() if k not in ("step", "split")}}
    where.finishing = True
    if sharded:  # every process takes part in gathering the weights, one tensor at a time, to rank 0
        _check_finite(model, summary["steps"], cfg)
        tensors = gathered(model, d.main)
        if d.main:
            finish(model, cfg, tok_dir, log, summary, tensors)
        else:
            for _ in tensors:
                pass
    elif d.main:
        _check_finite(model, summary["steps"], cfg)
        finish(model, cfg, tok_dir, log, summary)
    if d.world > 1:
        dist.barrier()
    return summary


def finish(model, cfg: TrainConfig, tok_dir: Path, log: MetricsLog, summary: dict, tensors=None) -> None:
    """The trained model in HF layout in OUTPUT (checked finite by the caller), curves.png and
    summary.json; `tensors`: a sharded model's, gathered one at a time."""
    output = Path(cfg.output)
    save_model(model, output, tok_dir, into_existing=True, tensors=tensors)
    png = plot_curves(log.rows(), output / "curves.png", chance=make_objective(cfg.loss).chance(cfg.num_labels),
                      window=cfg.log_every)
    summary["plot"] = str(png) if png else None
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


__all__ = ["DataSource", "TrainConfig", "train"]
