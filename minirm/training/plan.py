"""The step plan of a training run: which examples each optimizer step takes, on which rank.

Every optimizer step's examples are fixed by (seed, epoch) alone, so a resumed run takes
exactly the batches the interrupted one would have taken, and the plan's fingerprint (the
data and batch settings it was made from) tells whether a checkpoint belongs to this run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import MinirmError


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


def micro_batches(step: list[int], grad_accum: int, rank: int, world: int, lengths: list[int]) -> list[list[int]]:
    """This rank's micro-batches of one step: the step is cut into grad_accum similar-length
    chunks, and each chunk is dealt out to the ranks in turn."""
    step = sorted(step, key=lambda i: -lengths[i])
    size = math.ceil(len(step) / grad_accum)
    chunks = [step[i : i + size] for i in range(0, len(step), size)]
    return [c[rank::world] for c in chunks]


@dataclass
class StepPlan:
    """Steps per epoch, examples per step, and each step's examples (one epoch's plan kept at a time)."""

    lengths: list[int]  # each training example's longest sequence, in tokens
    tokens: int  # every sequence's tokens, together
    step_size: int  # examples per optimizer step: batch_size x grad_accum x world
    per_epoch: int  # optimizer steps per epoch
    total: int  # optimizer steps of the run
    seed: int
    group_by_length: bool
    grad_accum: int
    rank: int
    world: int
    _epoch: dict[int, list[list[int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def make(cls, train_set: list, cfg, rank: int, world: int) -> StepPlan:
        """The plan of `cfg` (a TrainConfig) over the encoded training examples, for process `rank` of `world`."""
        step_size = cfg.batch_size * cfg.grad_accum * world
        # an epoch's steps; with several processes a last partial step is dropped (see epoch_steps)
        per_epoch = len(train_set) // step_size if world > 1 else math.ceil(len(train_set) / step_size)
        if per_epoch == 0:
            raise MinirmError(f"{len(train_set)} training examples cannot fill one step of {step_size} across "
                              f"{world} processes; lower --batch-size or --grad-accum")
        total = cfg.max_steps or math.ceil(cfg.epochs * per_epoch)
        return cls([ex.length for ex in train_set], sum(len(s) for ex in train_set for s in ex.ids), step_size,
                   per_epoch, total, cfg.seed, cfg.group_by_length, cfg.grad_accum, rank, world)

    @property
    def fingerprint(self) -> dict:
        """What a checkpoint must have been saved with for this run to resume from it."""
        # steps_per_epoch: one process keeps an epoch's last partial step, several drop it, so a run
        # resumed at another number of processes continues the same plan only where they agree
        return {"examples": len(self.lengths), "tokens": self.tokens, "step_size": self.step_size, "seed": self.seed,
                "steps_per_epoch": self.per_epoch}

    def examples(self, step: int) -> list[int]:
        """The examples of optimizer step `step` (0-based), across all ranks."""
        epoch = step // self.per_epoch
        if epoch not in self._epoch:
            self._epoch.clear()
            self._epoch[epoch] = epoch_steps(self.lengths, self.step_size, self.seed, epoch, self.group_by_length,
                                             self.world > 1)
        return self._epoch[epoch][step % self.per_epoch]

    def micro_batches(self, examples: list[int]) -> list[list[int]]:
        """This rank's micro-batches of a step's examples."""
        return micro_batches(examples, self.grad_accum, self.rank, self.world, self.lengths)
