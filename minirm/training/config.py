"""What a training run is asked to do: `TrainConfig`, every setting with its one default.

A recipe (recipes.py) is a named set of overrides on these fields, and every train.py option
overrides the field of the same name; `validate` checks the whole config before any work.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields

from ..errors import MinirmError, check_number
from .data import ADAPTER_KINDS, DataSource
from .losses import OBJECTIVES
from .optim import SCHEDULES
from .sharding import check_sharding

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    model: str  # base model or reward checkpoint: directory, Hub repo id or alias
    data: list[DataSource]
    output: str
    loss: str = "pairwise"  # a name in losses.OBJECTIVES: pairwise | ranking | mse | cross_entropy
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
    # under torchrun: ddp (every process holds the whole model) or fsdp (weights, gradients and
    # optimizer state sharded over the processes: sharding.py)
    shard: str = "ddp"
    device: str | None = None  # default: cuda when available
    attention: str | None = None  # default: packed on CPU; on CUDA triton, or sdpa where attention dropout is on
    seed: int = 42
    # when things happen (in optimizer steps; 0 = never, except eval and save at the end)
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 0
    # and by the clock: a checkpoint once this many minutes have passed since the last (0 = never), so
    # that any long run can be resumed however it stops; rank 0's clock decides for every process
    save_every_minutes: float = 30.0
    save_total_limit: int = 2
    resume: bool = False
    overwrite: bool = False  # replace a finished run (or an interrupted one's checkpoints) in `output`
    progress: bool = True
    tokenizer: str | None = None
    revision: str | None = None
    chat_names: dict = field(default_factory=dict)  # CHAI's Pygmalion names (bot_name, user_name, memory)

    def validate(self) -> None:
        if self.loss not in OBJECTIVES:
            raise MinirmError(f"unknown loss {self.loss!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.precision not in PRECISIONS:
            raise MinirmError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        check_sharding(self.shard, self.precision)
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
        check_number("save_every_minutes", self.save_every_minutes, low=0, hint="0 for never")
        check_number("save_total_limit", self.save_total_limit, integer=True, low=0, hint="0 keeps them all")
        check_number("seed", self.seed, integer=True, low=0, high=2**32 - 1)
        if not isinstance(self.output, (str, os.PathLike)) or not str(self.output).strip():
            raise MinirmError(f"--output must be a directory path, got {self.output!r}")
        if not self.data:
            raise MinirmError("no training data: pass --data FILE_OR_HUB_ID")
        kinds = OBJECTIVES[self.loss].kinds
        for src in [*self.data, *self.eval_data]:
            kind = ADAPTER_KINDS.get(src.adapter)
            if kind is None:
                raise MinirmError(f"unknown data adapter {src.adapter!r}; choose one of {', '.join(ADAPTER_KINDS)}")
            if kind not in kinds:
                raise MinirmError(f"the {self.loss} loss cannot train on {kind} data (adapter {src.adapter!r}); "
                                  f"it takes {' or '.join(kinds)} examples")


def field_defaults() -> dict:
    """Every TrainConfig field that has a default -> that default (model, data and output have none)."""
    out = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
