"""The training loop: records -> format -> tokenize -> batch -> model -> loss -> optimizer step -> checkpoint.

One function, `train(cfg)`, read top to bottom:

1. set up: distributed (torchrun), seed, model (a reward checkpoint, or a base model with a
   fresh head), tokenizer, examples (tokenized once, the way score.py tokenizes them);
2. plan: every optimizer step's examples are fixed by (seed, epoch) alone, so a resumed run
   takes exactly the batches the interrupted one would have taken;
3. loop: micro-batches under autocast, loss scaled for accumulation and ranks, backward,
   unscale, clip, step; log, evaluate and save on schedule;
4. finish: the model in Hugging Face layout in the output directory, metrics as JSONL, a
   PNG of the curves.

A checkpoint (`OUTPUT/checkpoints/step-NNNNNNN/`) holds the model in HF layout plus
`trainer_state.pt`: optimizer, GradScaler, RNG states and the step, which is also the data
position. It is written to a temporary directory and renamed into place, so a run killed
at any moment leaves the previous checkpoint intact; `resume` picks the newest whole one (a damaged
one is skipped with a warning). Old checkpoints are renamed to a hidden name before they are deleted,
and what a kill leaves (hidden temporary folders) is removed when the next run starts.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import losses
from .checkpoint import load_for_training, reward_config, save_model
from .config import ModelConfig
from .data import ADAPTER_KINDS, Example, load_examples, split_holdout
from .records import writable_ancestor
from .errors import MinirmError, check_number, first_line
from .hub import resolve_model
from .models import supports_packed
from .optim import SCHEDULES, build_optimizer, lr_factor, set_lr
from .batching import pad_batch
from .scoring import check_device
from .tokenizer import find_tokenizer, load_tokenizer

# which examples each loss takes (the adapters' kinds) and how many heads' outputs it reads
LOSS_KINDS = {
    "pairwise": ("pairwise",),
    "ranking": ("pairwise", "ranking"),  # a preference pair is a ranking of two
    "mse": ("regression",),
    "cross_entropy": ("classification",),
}
PRECISIONS = ("fp32", "bf16", "fp16")
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)  # recipes hand their own sources to every run: none may change them
class DataSource:
    source: str  # local file / directory, or a Hub dataset id
    adapter: str  # a name in data.ADAPTERS
    split: str | None = None
    revision: str | None = None  # Hub datasets: e.g. refs/convert/parquet for script-only repos


@dataclass
class TrainConfig:
    model: str  # base model or reward checkpoint: directory, Hub repo id or alias
    data: list[DataSource]
    output: str
    loss: str = "pairwise"  # pairwise | ranking | mse | cross_entropy
    num_labels: int = 1
    regression_head: bool = False  # the Aira 128-unit regression head on BERT
    eval_data: list[DataSource] = field(default_factory=list)
    eval_fraction: float = 0.0  # held out of `data` when eval_data is empty
    # optimizer and schedule
    lr: float = 5e-5
    weight_decay: float = 0.0  # Adam = AdamW with weight decay 0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "linear"  # linear | cosine | constant, after warmup
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0  # None: no clipping
    center_rewards_coefficient: float | None = None  # TRL's term pulling chosen + rejected towards 0
    # batches: one optimizer step takes batch_size * grad_accum * world_size examples
    batch_size: int = 8
    grad_accum: int = 1
    eval_batch_size: int | None = None  # default: 2 x batch_size
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    max_length: int = 512
    truncation_side: str | None = None  # default: left for GPT-2, right otherwise
    group_by_length: bool = True  # batch examples of similar length together (less padding)
    # numerics and devices
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler)
    gradient_checkpointing: bool = False
    device: str | None = None  # default: cuda when available
    attention: str | None = None  # default: sdpa (the triton kernel has no attention dropout)
    seed: int = 42
    # when things happen (in optimizer steps; 0 = never, except eval and save at the end)
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 0
    save_total_limit: int = 2
    resume: bool = False
    overwrite: bool = False  # replace a finished run (or an interrupted one's checkpoints) in `output`
    progress: bool = True
    tokenizer: str | None = None
    revision: str | None = None
    chat_names: dict = field(default_factory=dict)  # CHAI's Pygmalion names (bot_name, user_name, memory)

    def validate(self) -> None:
        if self.loss not in LOSS_KINDS:
            raise MinirmError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_KINDS)}")
        if self.precision not in PRECISIONS:
            raise MinirmError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            raise MinirmError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.resume and self.overwrite:
            raise MinirmError("--resume and --overwrite contradict each other: --resume continues the run in "
                              "--output, --overwrite starts it over; pass one")
        # every number, for type, finiteness and range (argparse's float() takes 'nan' and 'inf')
        for name in ("batch_size", "grad_accum", "max_length"):
            check_number(name, getattr(self, name), integer=True, low=1)
        check_number("eval_batch_size", self.eval_batch_size, integer=True, low=1, optional=True)
        check_number("max_steps", self.max_steps, integer=True, low=1, optional=True)
        check_number("epochs", self.epochs, low=0, low_open=True)
        check_number("eval_fraction", self.eval_fraction, low=0, high=1, high_open=True)
        check_number("lr", self.lr, low=0, low_open=True, hint="e.g. 5e-5")
        check_number("weight_decay", self.weight_decay, low=0, hint="0 for none")
        check_number("warmup_steps", self.warmup_steps, integer=True, low=0)
        check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True, optional=True,
                      hint="0 for no clipping")
        check_number("center_rewards_coefficient", self.center_rewards_coefficient, low=0, optional=True,
                      hint="TRL uses 0.01")
        check_number("eps", self.eps, low=0, low_open=True, flag="the optimizer's eps")
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise MinirmError(f"the optimizer's betas must be two numbers in [0, 1), got {self.betas!r}")
        for b in self.betas:
            check_number("betas", b, low=0, high=1, high_open=True, flag="the optimizer's betas")
        for name in ("log_every", "eval_every", "save_every"):
            check_number(name, getattr(self, name), integer=True, low=0, hint="0 for never")
        check_number("save_total_limit", self.save_total_limit, integer=True, low=0, hint="0 keeps them all")
        check_number("seed", self.seed, integer=True, low=0, high=2**32 - 1)
        if not isinstance(self.output, (str, os.PathLike)) or not str(self.output).strip():
            raise MinirmError(f"--output must be a directory path, got {self.output!r}")
        if not self.data:
            raise MinirmError("no training data: pass --data FILE_OR_HUB_ID")
        for src in self.data + self.eval_data:
            kind = ADAPTER_KINDS.get(src.adapter)
            if kind is None:
                raise MinirmError(f"unknown data adapter {src.adapter!r}; choose one of {', '.join(ADAPTER_KINDS)}")
            if kind not in LOSS_KINDS[self.loss]:
                raise MinirmError(f"the {self.loss} loss cannot train on {kind} data (adapter {src.adapter!r}); "
                                  f"it takes {' or '.join(LOSS_KINDS[self.loss])} examples")


# --- distributed ------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE, RANK and LOCAL_RANK: NCCL between GPUs, gloo between CPU processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    requested = check_device(device)
    if world == 1:
        return Dist(), requested
    cuda = requested.type == "cuda"
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(d.local_rank)
        return d, torch.device("cuda", d.local_rank)
    return d, torch.device("cpu")


# --- examples -> token ids -> batches ------------------------------------------------------

@dataclass
class Encoded:
    ids: list[list[int]]  # one token list per sample (chosen, rejected, ...)
    target: float | int | None = None
    margin: float | None = None

    @property
    def length(self) -> int:
        return max(len(s) for s in self.ids)


def encode_examples(examples: list[Example], tokenizer) -> list[Encoded]:
    """Tokenize every sample with the tokenizer's one formatting path, the one score.py uses."""
    flat = [s for ex in examples for s in ex.samples]
    ids = iter(tokenizer.encode_samples(flat))
    out = []
    for ex in examples:
        seqs = [next(ids) for _ in ex.samples]
        if not all(seqs):
            raise MinirmError(f"{ex.where}: a text tokenizes to nothing; give it some content")
        out.append(Encoded(seqs, ex.target, ex.margin))
    return out


def epoch_steps(lengths: list[int], step_size: int, seed: int, epoch: int, group_by_length: bool,
                drop_last: bool) -> list[list[int]]:
    """The examples of each optimizer step in one epoch: a permutation fixed by (seed, epoch).

    With group_by_length, the permutation is cut into chunks of 50 steps, each chunk is
    sorted by length and cut into steps, and the steps are shuffled again: batches hold
    examples of similar length (little padding) yet come in random order.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group_by_length:
        chunk = 50 * step_size
        order = [i for c in range(0, len(order), chunk)
                 for i in sorted(order[c : c + chunk], key=lambda i: -lengths[i])]
    steps = [order[i : i + step_size] for i in range(0, len(order), step_size)]
    if drop_last and steps and len(steps[-1]) < step_size:
        steps.pop()
    if group_by_length:
        steps = [steps[i] for i in torch.randperm(len(steps), generator=g).tolist()]
    return steps


def micro_batches(step: list[int], grad_accum: int, d: Dist, lengths: list[int]) -> list[list[int]]:
    """This rank's micro-batches of one step: the step is cut into grad_accum similar-length
    chunks, and each chunk is dealt out to the ranks in turn."""
    step = sorted(step, key=lambda i: -lengths[i])
    size = math.ceil(len(step) / grad_accum)
    chunks = [step[i : i + size] for i in range(0, len(step), size)]
    return [c[d.rank :: d.world] for c in chunks]


def model_inputs(batch: list[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence of the examples, in order (chosen before rejected): ids (B, T) and lengths (B,)."""
    return pad_batch([s for ex in batch for s in ex.ids], pad_id, device)


def compute_loss(cfg: TrainConfig, logits: torch.Tensor, batch: list[Encoded]) -> tuple[torch.Tensor, dict]:
    """logits of every sample of the batch, in order -> (loss, the tensors metrics are made from)."""
    device = logits.device
    if cfg.loss == "cross_entropy":
        labels = torch.tensor([ex.target for ex in batch], device=device)
        return losses.classification_loss(logits, labels), {"logits": logits, "labels": labels}
    rewards = logits[:, 0]
    if cfg.loss == "mse":
        target = torch.tensor([float(ex.target) for ex in batch], device=device)
        return losses.mse_loss(rewards, target), {"pred": rewards, "target": target}
    if cfg.loss == "pairwise":
        chosen, rejected = rewards[0::2], rewards[1::2]
        margins = [ex.margin for ex in batch]
        margin = None if all(m is None for m in margins) else torch.tensor(
            [m or 0.0 for m in margins], device=device)
        loss = losses.pairwise_loss(chosen, rejected, margin, cfg.center_rewards_coefficient)
        return loss, {"chosen": chosen, "rejected": rejected}
    counts = torch.tensor([len(ex.ids) for ex in batch], device=device)  # ranking: groups of K, best first
    grouped = torch.full((len(batch), int(counts.max())), 0.0, device=device, dtype=rewards.dtype)
    grouped[torch.arange(grouped.size(1), device=device)[None, :] < counts[:, None]] = rewards
    return losses.ranking_loss(grouped, counts), {"rewards": grouped, "counts": counts}


def batch_metrics(cfg: TrainConfig, parts: dict) -> dict[str, float]:
    if cfg.loss == "cross_entropy":
        return losses.classification_metrics(parts["logits"], parts["labels"])
    if cfg.loss == "mse":
        return losses.regression_metrics(parts["pred"], parts["target"])
    if cfg.loss == "pairwise":
        return losses.pairwise_metrics(parts["chosen"], parts["rejected"])
    return losses.ranking_metrics(parts["rewards"], parts["counts"])


def concat_parts(parts: list[dict]) -> dict:
    """Merge the metric tensors of several batches (ranking groups padded to one width)."""
    if "rewards" in parts[0]:
        K = max(p["rewards"].size(1) for p in parts)
        rewards = torch.cat([torch.nn.functional.pad(p["rewards"], (0, K - p["rewards"].size(1))) for p in parts])
        return {"rewards": rewards, "counts": torch.cat([p["counts"] for p in parts])}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# --- checkpoints ---------------------------------------------------------------------------

def checkpoint_dirs(output: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Half-written saves are hidden (.tmp) directories."""
    root = output / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(output: Path, step: int, model, optimizer, scaler, tokenizer_dir: Path, extra: dict,
                    keep: int) -> Path:
    """model (HF layout) + trainer state into a temporary directory, then renamed into place."""
    root = output / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        save_model(model, tmp, tokenizer_dir, into_existing=True)
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            **extra,
        }
        torch.save(state, tmp / STATE_FILE)
        _fsync_dir(tmp)
        if final.exists():  # a checkpoint of this step from before a resume (or a damaged one): set it aside
            _discard(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in checkpoint_dirs(output)[:-keep] if keep > 0 else []:
        _discard(old)
    return final


def _discard(folder: Path) -> None:
    """Delete a checkpoint so that a kill at any moment leaves it whole or gone: it is renamed to a
    hidden name first (one atomic step), and the start-up cleanup removes what a kill leaves there."""
    doomed = folder.with_name(f".{folder.name}.deleting.tmp")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(output: Path) -> list[Path]:
    """Remove what killed saves and deletions leave: hidden temporary folders and files in
    OUTPUT/checkpoints/ (a checkpoint being written, the model save inside it, a checkpoint being
    deleted), step-N folders without a trainer state (deleted half-way by older versions), and the
    hidden temporary folder of a killed final model save beside OUTPUT."""
    removed = []
    root = output / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") or (p.name.startswith("step-") and p.is_dir()
                                          and not (p / STATE_FILE).is_file()):
                removed.append(p)
    if output.parent.is_dir():
        removed += [p for p in output.parent.glob(f".{glob.escape(output.name)}.*.tmp") if p.is_dir()]
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def load_trainer_state(ckpt: Path) -> dict:
    try:
        # weights_only: the state is tensors, numbers and plain containers; no pickled code runs
        return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
        raise MinirmError(f"{ckpt / STATE_FILE}: cannot be read ({first_line(e)}); "
                          "delete this checkpoint directory to resume from the one before") from None


def load_checkpoint(ckpt: Path, device) -> tuple[dict, torch.nn.Module]:
    """(trainer state, model) of one checkpoint; MinirmError when either is damaged."""
    from .checkpoint import load_model

    state = load_trainer_state(ckpt)
    missing = [k for k in ("step", "optimizer", "scaler", "rng") if k not in state]
    if missing:
        raise MinirmError(f"{ckpt / STATE_FILE}: holds no {', '.join(missing)}")
    try:
        saved, _ = load_model(ckpt, torch.float32, device)
    except MinirmError as e:
        raise MinirmError(str(e).split("; re-download")[0]) from None
    return state, saved


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# --- metrics file and plot -------------------------------------------------------------------

class MetricsLog:
    """metrics.jsonl, one JSON object per logged step or evaluation. On resume, rows past the
    resumed step are dropped, so the file describes one run without repeats."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if resume_step is not None and path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines):  # the last row, half-written when the run was killed: drop it
                        print(f"warning: {path}:{n}: dropped a half-written row", file=sys.stderr, flush=True)
                        break
                    raise MinirmError(f"{path}:{n}: not a JSON row; delete that line (or the file) and "
                                      "resume again") from None
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    kept.append(line)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(rows: list[dict], out: Path) -> Path | None:
    """Loss and accuracy (or RMSE) against step, train and eval; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [r for r in rows if r.get("split") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    second = next((k for k in ("accuracy", "rmse") if any(k in r for r in train + evals)), None)
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(10 if second else 5, 3.6), squeeze=False)
    for ax, key in zip(axes[0], ["loss"] + ([second] if second else [])):
        for name, part, style in (("train", train, "-"), ("eval", evals, "o-")):
            pts = [(r["step"], r[key]) for r in part if key in r]
            if pts:
                ax.plot(*zip(*pts), style, label=name, markersize=4)
        ax.set_xlabel("optimizer step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


# --- the loop ------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Train; returns a summary (steps, final eval metrics, output path, seconds)."""
    cfg.validate()
    d, device = setup_distributed(cfg.device)
    output = Path(cfg.output)
    check_output(output, cfg)  # before any model or data is loaded
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    # --- config, tokenizer, data: everything that can be wrong is found before the weights load ---
    model_dir = resolve_model(cfg.model, cfg.revision)
    mcfg = reward_config(ModelConfig.from_file(model_dir / "config.json"), cfg.num_labels, cfg.regression_head)
    backend = cfg.attention or "sdpa"
    if backend == "triton" and (mcfg.attention_dropout or not supports_packed(mcfg.family)):
        raise MinirmError("the triton kernel has no attention dropout (and no DeBERTa bias); train with "
                          "--attention sdpa, or set attention_probs_dropout_prob to 0 in config.json")
    tok_dir = find_tokenizer(cfg.tokenizer, model_dir, mcfg)
    tokenizer = load_tokenizer(tok_dir, mcfg, cfg.max_length, cfg.truncation_side, cfg.chat_names)
    train_ex = [ex for src in cfg.data for ex in _load(src, mcfg.num_labels)]
    eval_ex = [ex for src in cfg.eval_data for ex in _load(src, mcfg.num_labels)]
    if not eval_ex and cfg.eval_fraction > 0:
        train_ex, eval_ex = split_holdout(train_ex, cfg.eval_fraction, cfg.seed)
    train_set = encode_examples(train_ex, tokenizer)
    eval_set = encode_examples(eval_ex, tokenizer)
    lengths = [ex.length for ex in train_set]

    # --- the plan: steps per epoch, total steps ---
    step_size = cfg.batch_size * cfg.grad_accum * d.world
    # an epoch's steps; with several processes a last partial step is dropped (see epoch_steps)
    per_epoch = len(train_set) // step_size if d.world > 1 else math.ceil(len(train_set) / step_size)
    if per_epoch == 0:
        raise MinirmError(f"{len(train_set)} training examples cannot fill one step of {step_size} across "
                          f"{d.world} processes; lower --batch-size or --grad-accum")
    total = cfg.max_steps or math.ceil(cfg.epochs * per_epoch)
    plans: dict[int, list[list[int]]] = {}

    def step_examples(step: int) -> list[int]:
        epoch = step // per_epoch
        if epoch not in plans:
            plans.clear()
            plans[epoch] = epoch_steps(lengths, step_size, cfg.seed, epoch, cfg.group_by_length, d.world > 1)
        return plans[epoch][step % per_epoch]

    # --- model, optimizer, precision, checkpointing ---
    model, mcfg, fresh = load_for_training(model_dir, cfg.num_labels, cfg.regression_head, device)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps, device)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    fingerprint = {"examples": len(train_set), "tokens": sum(len(s) for ex in train_set for s in ex.ids),
                   "step_size": step_size, "seed": cfg.seed}

    start = 0
    resumed: dict = {}
    if cfg.resume:
        ckpts, skipped = checkpoint_dirs(output), []
        for ckpt in reversed(ckpts):  # the newest checkpoint that is whole
            try:
                state, saved = load_checkpoint(ckpt, device)
            except MinirmError as e:
                skipped.append(f"{ckpt.name} ({e})")
                continue
            if d.main:
                for reason in skipped:
                    print(f"warning: skipping damaged checkpoint {reason}; resuming from {ckpt.name}",
                          file=sys.stderr, flush=True)
            if state.get("data") != fingerprint:
                raise MinirmError(f"{ckpt}: was saved for other data or batch settings ({state.get('data')}, "
                                  f"now {fingerprint}); resume with the same --data, --batch-size and --seed")
            model.load_state_dict(saved.state_dict())
            del saved
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            restore_rng(state["rng"])
            start, resumed = state["step"], state
            if d.main:
                print(f"resuming from {ckpt} at step {start}/{total}", flush=True)
            break
        else:
            raise MinirmError(f"--resume: no checkpoint in {output / 'checkpoints'} is whole (newest: "
                              f"{skipped[0]}); run with --overwrite to start over")
    if d.main:
        clean_leftovers(output)  # what a kill during a save or a checkpoint's deletion left
        if cfg.overwrite and not cfg.resume:  # the old run's files go; its model is replaced at the end
            shutil.rmtree(output / "checkpoints", ignore_errors=True)
            for name in ("summary.json", "metrics.jsonl", "curves.png"):
                (output / name).unlink(missing_ok=True)
        (output / "train_config.json").parent.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    wrapped = model
    if d.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    log = MetricsLog(output / "metrics.jsonl", d.main, start if cfg.resume else None)

    def evaluate(step: int) -> dict:
        if not eval_set or not d.main:
            return {}
        row = {"step": step, "split": "eval", **run_eval(cfg, model, eval_set, tokenizer.pad_id, device, backend,
                                                         amp_dtype)}
        log.write(row)
        return row

    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, unit="step", desc="training", dynamic_ncols=True,
               disable=not (cfg.progress and d.main))
    model.train()
    last_eval: dict = {}
    # the steps since the last train row, and the counters, come back on resume: a resumed run logs
    # the same rows as an uninterrupted one (examples_per_s aside, which is measured)
    window: list[dict] = list(resumed.get("window", []))
    train_seconds, examples_seen = resumed.get("train_seconds", 0.0), resumed.get("examples_seen", 0)
    window_seconds, window_examples = resumed.get("window_seconds", 0.0), resumed.get("window_examples", 0)
    for step in range(start, total):
        t_step = time.perf_counter()
        set_lr(optimizer, cfg.lr * lr_factor(step, total, cfg.warmup_steps, cfg.schedule))
        examples = step_examples(step)
        mine = micro_batches(examples, cfg.grad_accum, d, lengths)
        n_step = len(examples)
        step_loss, parts = 0.0, []
        for i, idx in enumerate(mine):
            batch = [train_set[j] for j in idx]
            sync = nullcontext() if d.world == 1 or i == len(mine) - 1 else wrapped.no_sync()
            with sync:
                ids, seq_lengths = model_inputs(batch, tokenizer.pad_id, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = wrapped(ids, seq_lengths, backend)
                loss, part = compute_loss(cfg, logits.float(), batch)
                # each loss is a mean over its micro-batch: weight it by its share of the whole step,
                # times world because DDP averages gradients over ranks
                scaler.scale(loss * (len(batch) * d.world / n_step)).backward()
            step_loss += loss.item() * len(batch) / n_step
            parts.append({k: v.detach() for k, v in part.items()})
        scaler.unscale_(optimizer)
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
        # checked on the scalars already read above (no extra GPU sync), before the step can spoil the
        # weights; under fp16 a non-finite gradient is the GradScaler's to handle (it skips the step)
        if not math.isfinite(grad_norm) and cfg.precision != "fp16":
            _diverged("gradient norm", grad_norm, step + 1, cfg)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        examples_seen += n_step
        done = step + 1
        if d.world > 1:  # each rank holds its share of the step's mean loss; metrics below are rank 0's
            shared = torch.tensor([step_loss], device=device)
            dist.all_reduce(shared)
            step_loss = shared.item()
        if not math.isfinite(step_loss):  # the same on every rank (all-reduced)
            _diverged("loss", step_loss, step + 1, cfg)

        elapsed = time.perf_counter() - t_step
        train_seconds += elapsed
        window_seconds += elapsed
        window_examples += n_step
        window.append({"loss": step_loss, "grad_norm": grad_norm,
                       **batch_metrics(cfg, concat_parts(parts))})
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", **({"acc": f"{window[-1]['accuracy']:.2f}"}
                                                     if "accuracy" in window[-1] else {}))
        if cfg.log_every and (done % cfg.log_every == 0 or done == total):
            row = {"step": done, "split": "train", "epoch": round(done / per_epoch, 4),
                   "lr": optimizer.param_groups[0]["lr"],
                   **{k: sum(w[k] for w in window) / len(window) for k in window[0]},
                   "examples_per_s": window_examples / window_seconds}  # over the steps since the last row
            log.write(row)
            window.clear()
            window_seconds, window_examples = 0.0, 0
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == total:
            last_eval = evaluate(done) or last_eval
            if last_eval and d.main:
                bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()
                                                      if isinstance(v, float)))
        if cfg.save_every and done % cfg.save_every == 0 and done < total:
            if d.main:
                _check_finite(model, done, cfg)
                save_checkpoint(output, done, model, optimizer, scaler, tok_dir,
                                {"data": fingerprint, "config": asdict(cfg), "window": window,
                                 "window_seconds": window_seconds, "window_examples": window_examples,
                                 "train_seconds": train_seconds, "examples_seen": examples_seen},
                                cfg.save_total_limit)
            if d.world > 1:
                dist.barrier()
    bar.close()

    # --- finish: the model in HF layout, the curves ---
    summary = {"steps": total, "examples": examples_seen, "seconds": train_seconds, "output": str(output),
               "new_parameters": fresh, "eval": {k: v for k, v in last_eval.items() if k not in ("step", "split")}}
    if d.main:
        _check_finite(model, total, cfg)
        save_model(model, output, tok_dir, into_existing=True)
        png = plot_curves(log.rows(), output / "curves.png")
        summary["plot"] = str(png) if png else None
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if d.world > 1:
        dist.barrier()
    return summary


def _diverged(what: str, value: float, step: int, cfg: TrainConfig) -> None:
    fix = f"lower --lr (now {cfg.lr:g})" + (", or train in bf16 or fp32 instead of fp16" if cfg.precision == "fp16"
                                             else ", or clip harder with --max-grad-norm")
    raise MinirmError(f"training diverged: the {what} became {value} at step {step}; nothing of that step was "
                      f"saved (earlier checkpoints are intact); {fix}, and start again or --resume")


def _check_finite(model: torch.nn.Module, step: int, cfg: TrainConfig) -> None:
    """A save never writes a non-finite model (one sync per save, not per step)."""
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        _diverged("model's weights", float("nan"), step, cfg)


def check_output(output: Path, cfg: TrainConfig) -> None:
    """Before any work: OUTPUT is (or can become) a writable directory, and what it already holds
    fits the request (--resume needs a checkpoint; a finished run is replaced only with --overwrite)."""
    writable_ancestor(output, "--output")
    for name in ("checkpoints", "metrics.jsonl", "model.safetensors", "summary.json"):
        p = output / name
        if p.exists() and p.is_dir() != (name == "checkpoints"):
            raise MinirmError(f"--output {output}: {p} is a {'file' if name == 'checkpoints' else 'directory'}; "
                              "move it away or choose another --output")
    ckpts = checkpoint_dirs(output)
    finished = [name for name in ("summary.json", "model.safetensors") if (output / name).is_file()]
    if cfg.resume and not ckpts:
        if finished:
            raise MinirmError(f"--resume: {output} holds a finished run ({', '.join(finished)}) and no checkpoint "
                              "to continue from; pass --overwrite instead to train it again, or another --output")
        raise MinirmError(f"--resume: {output} holds no checkpoint to resume from (checkpoints/step-N/ with "
                          f"{STATE_FILE}); run without --resume to start a new run")
    if not cfg.resume and not cfg.overwrite:
        if ckpts:
            raise MinirmError(f"{output} already holds checkpoints of a run; pass --resume to continue it, "
                              "--overwrite to start over, or choose another --output")
        if finished:
            raise MinirmError(f"{output} already holds a trained model ({', '.join(finished)}); pass --overwrite "
                              "to replace it, or choose another --output")


def _load(src: DataSource, num_labels: int) -> list[Example]:
    return load_examples(src.source, src.adapter, split=src.split, revision=src.revision, num_labels=num_labels)


@torch.no_grad()
def run_eval(cfg: TrainConfig, model, eval_set: list[Encoded], pad_id: int, device, backend: str,
             amp_dtype) -> dict:
    """Loss and metrics over the whole held-out set, in length-sorted batches, dropout off."""
    was_training = model.training
    model.eval()
    bs = cfg.eval_batch_size or 2 * cfg.batch_size
    order = sorted(range(len(eval_set)), key=lambda i: -eval_set[i].length)
    total_loss, parts = 0.0, []
    for i in range(0, len(order), bs):
        batch = [eval_set[j] for j in order[i : i + bs]]
        ids, seq_lengths = model_inputs(batch, pad_id, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(ids, seq_lengths, backend)
        loss, part = compute_loss(cfg, logits.float(), batch)
        total_loss += loss.item() * len(batch)
        parts.append(part)
    model.train(was_training)
    return {"loss": total_loss / len(eval_set), **batch_metrics(cfg, concat_parts(parts))}


__all__ = ["DataSource", "TrainConfig", "train"]
