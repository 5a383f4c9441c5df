"""Training objectives for reward models: losses (differentiable), metrics, and the objective
objects a training loop holds.

With s = sigmoid, so that -log s(d) = log(1 + e^-d):

  pairwise   L = mean_b -log s(c_b - r_b - m_b)  [+ coef * mean_b (c_b + r_b)^2]
             Bradley-Terry exactly as TRL's RewardTrainer writes it: optional per-pair margin m,
             optional "center rewards" term that pulls rewards towards zero mean.
  ranking    L = mean_g mean_{i<j<n_g} -log s(x_gi - x_gj)
             K replies per group, best first; every ordered pair is one Bradley-Terry
             comparison. With K = 2 this is the pairwise loss without margin.
  mse        L = mean_b (p_b - t_b)^2
  xent       L = mean_b -log softmax(z_b)[y_b]

Losses upcast to float32 (bf16/fp16 inputs give a float32 loss); metrics run on detached
float32 copies, named as TRL logs them ("accuracy", "margin", ...). The functions below
(`pairwise_metrics`, ...) return Python floats; the objectives keep them as tensors, so a
loop reads them from the GPU only when it logs. Accuracy counts a tie as a loss: only
chosen > rejected strictly is a win.

An `Objective` is one loss as the loop uses it (see the class): the loop holds one, made by
`make_objective(name)`, and never asks which it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_batch(name: str, *xs: Tensor) -> None:
    """All tensors share one shape, with a non-empty first dimension."""
    if xs[0].dim() == 0 or xs[0].shape[0] == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(xs[0].shape)}); a loss needs at least one example")
    for x in xs[1:]:
        if x.shape != xs[0].shape:
            raise ValueError(f"{name}: shapes differ, {tuple(xs[0].shape)} vs {tuple(x.shape)}")


def _check_logits(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"classification: need logits (B, C) and labels (B,), "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    _check_batch("classification", labels)


def _pair_mask(rewards: Tensor, counts: Tensor | None) -> tuple[Tensor, Tensor]:
    """(G, K) rewards -> (G, K, K) mask of the pairs i < j < n_g, and (G, K) mask of real entries.

    The masks are made on the device of `counts` (the CPU when counts is None): with counts on
    the CPU, as the Ranking objective keeps them, checking and masking never wait for the GPU.
    """
    if rewards.dim() != 2 or rewards.shape[0] == 0:
        raise ValueError(f"ranking: empty batch or bad shape, rewards must be (G, K) with G >= 1, "
                         f"got shape {tuple(rewards.shape)}")
    G, K = rewards.shape
    if counts is None:
        counts = torch.full((G,), K)
    if counts.shape != (G,):
        raise ValueError(f"ranking: counts must be ({G},), got shape {tuple(counts.shape)}")
    if bool((counts < 2).any()) or bool((counts > K).any()):
        raise ValueError(f"ranking: every group needs 2 <= count <= K={K} replies, got counts {counts.tolist()}")
    idx = torch.arange(K, device=counts.device)
    real = idx[None, :] < counts[:, None]  # (G, K)
    upper = idx[:, None] < idx[None, :]  # (K, K): i < j
    return upper[None] & real[:, None, :], real  # j < n_g implies i < n_g


# ---------------------------------------------------------------- losses


def pairwise_loss(chosen: Tensor, rejected: Tensor, margin: Tensor | None = None,
                  center_rewards_coefficient: float | None = None) -> Tensor:
    """Bradley-Terry loss over (B,) chosen/rejected rewards; scalar float32."""
    _check_batch("pairwise", chosen, rejected, *(() if margin is None else (margin,)))
    c, r = chosen.float(), rejected.float()
    diff = c - r if margin is None else c - r - margin.float()  # (B,)
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * ((c + r) ** 2).mean()
    return loss


def ranking_loss(rewards: Tensor, counts: Tensor | None = None) -> Tensor:
    """K-wise ranking loss: rewards (G, K) best first, padded past counts (G,); scalar float32.

    Reduction as OpenAssistant's RMLoss (model_training/utils/losses.py): the pairs of one
    group are averaged first, then the groups, so a group of 5 replies (10 pairs) weighs
    the same as a group of 2 (1 pair). (RMLoss also adds a small L2 term; this does not.)
    """
    pairs, real = (m.to(rewards.device) for m in _pair_mask(rewards, counts))  # (G, K, K), (G, K)
    x = torch.where(real, rewards.float(), 0.0)  # padding may hold anything (inf, nan): keep it out of the graph
    per_pair = -F.logsigmoid(x[:, :, None] - x[:, None, :])  # (G, K, K): -log s(x_i - x_j)
    per_group = torch.where(pairs, per_pair, 0.0).sum((1, 2)) / pairs.sum((1, 2))  # (G,)
    return per_group.mean()


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over (B,) predictions and targets; scalar float32."""
    _check_batch("mse", pred, target)
    return ((pred.float() - target.float()) ** 2).mean()


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of (B, C) logits against (B,) long labels; scalar float32."""
    _check_logits(logits, labels)
    return F.cross_entropy(logits.float(), labels)


# ---------------------------------------------------------------- metrics
# Each metric is computed as a dict of 0-dim float32 tensors; the public functions read them
# into Python floats, the objectives hand the tensors on.


def to_floats(values: dict[str, Tensor]) -> dict[str, float]:
    """0-dim tensors (one device) -> Python floats, in one transfer: one GPU sync, not one per value."""
    if not values:
        return {}
    read = torch.stack([v.detach().double().reshape(()) for v in values.values()]).tolist()
    return dict(zip(values, read))


def _reward_stats(x: Tensor) -> dict[str, Tensor]:
    return {"min_reward": x.min(), "mean_reward": x.mean(), "max_reward": x.max()}


@torch.no_grad()
def _pairwise_values(chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
    _check_batch("pairwise", chosen, rejected)
    c, r = chosen.detach().float(), rejected.detach().float()
    return {"accuracy": (c > r).float().mean(), "margin": (c - r).mean(), **_reward_stats(torch.cat([c, r]))}


@torch.no_grad()
def _ranking_values(rewards: Tensor, counts: Tensor | None = None) -> dict[str, Tensor]:
    pairs, real = _pair_mask(rewards, counts)
    x = rewards.detach().float()
    # the masks' nonzero positions, found where the masks are (the CPU for the Ranking objective), index
    # the rewards in the same row-major order a boolean mask would, without a GPU sync
    diff = (x[:, :, None] - x[:, None, :])[pairs.nonzero(as_tuple=True)]  # (P,) r_i - r_j over all pairs
    return {"accuracy": (diff > 0).float().mean(), "margin": diff.mean(),
            **_reward_stats(x[real.nonzero(as_tuple=True)])}


@torch.no_grad()
def _regression_values(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    _check_batch("regression", pred, target)
    p, t = pred.detach().float(), target.detach().float()
    return {"rmse": ((p - t) ** 2).mean().sqrt(), "mae": (p - t).abs().mean(), "mean_reward": p.mean()}


@torch.no_grad()
def _classification_values(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    _check_logits(logits, labels)
    return {"accuracy": (logits.detach().float().argmax(-1) == labels).float().mean()}


def pairwise_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, float]:
    return to_floats(_pairwise_values(chosen, rejected))


def ranking_metrics(rewards: Tensor, counts: Tensor | None = None) -> dict[str, float]:
    """Pair-level: every ordered pair of every group counts once (unlike the loss's group mean)."""
    return to_floats(_ranking_values(rewards, counts))


def regression_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    return to_floats(_regression_values(pred, target))


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    return to_floats(_classification_values(logits, labels))


# ---------------------------------------------------------------- objectives: what a training loop holds


class Objective:
    """One loss as a training loop uses it, so the loop never asks which loss it has.

    A batch is a list of examples, each with `ids` (one token list per sample, in the data's
    order: chosen before rejected, K replies best first) and, by kind, a `target` or `margin`
    (data.Encoded).

    - `kinds`: the data adapters' kinds (data.ADAPTER_KINDS) it trains on;
    - `sequences(batch)`: every sequence the model scores, in the order `loss` reads its outputs:
      the objective owns this layout;
    - `loss(logits, batch)`: the model's (B, num_labels) outputs for those sequences -> (scalar
      float32 loss, the detached tensors the metrics are made from);
    - `merge(parts)`: those tensors of several micro-batches (or eval batches) as one;
    - `metrics(parts)`: named 0-dim tensors; the loop reads them (a GPU sync) only when it logs.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    def sequences(self, batch: list) -> list[list[int]]:
        """One sequence per example (regression, classification): row b is example b."""
        return [ex.ids[0] for ex in batch]

    def loss(self, logits: Tensor, batch: list) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def merge(self, parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def metrics(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def chance(self, num_labels: int) -> dict[str, float]:
        """What a model that knows nothing scores, per metric (the lines curves.png draws)."""
        return {}


# a model that gives every reply the same reward: -log s(0) for every pair, and a coin's accuracy
PAIR_CHANCE = {"loss": math.log(2), "accuracy": 0.5}


@dataclass(frozen=True)
class Pairwise(Objective):
    """TRL's RewardTrainer loss: -log s(chosen - rejected - margin), margins from the examples."""

    center_rewards_coefficient: float | None = None
    name: ClassVar[str] = "pairwise"
    kinds: ClassVar[tuple[str, ...]] = ("pairwise",)

    def sequences(self, batch: list) -> list[list[int]]:
        """Each pair's chosen then its rejected: chosen rows 0, 2, 4, ..., rejected rows 1, 3, 5, ..."""
        out = []
        for ex in batch:
            chosen, rejected = ex.ids
            out += [chosen, rejected]
        return out

    def loss(self, logits: Tensor, batch: list) -> tuple[Tensor, dict[str, Tensor]]:
        rewards = logits.float()[:, 0]
        chosen, rejected = rewards[0::2], rewards[1::2]
        margins = [ex.margin for ex in batch]
        margin = None if all(m is None for m in margins) else torch.tensor(
            [m or 0.0 for m in margins], device=rewards.device)
        loss = pairwise_loss(chosen, rejected, margin, self.center_rewards_coefficient)
        return loss, {"chosen": chosen.detach(), "rejected": rejected.detach()}

    def metrics(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        return _pairwise_values(parts["chosen"], parts["rejected"])

    def chance(self, num_labels: int) -> dict[str, float]:
        return dict(PAIR_CHANCE)


@dataclass(frozen=True)
class Ranking(Objective):
    """K-wise ranking over groups of K >= 2 replies, best first; a preference pair is a group of 2."""

    name: ClassVar[str] = "ranking"
    kinds: ClassVar[tuple[str, ...]] = ("pairwise", "ranking")

    def sequences(self, batch: list) -> list[list[int]]:
        """Each group's replies in turn, best first: group g takes the next len(ids) rows."""
        return [s for ex in batch for s in ex.ids]

    def loss(self, logits: Tensor, batch: list) -> tuple[Tensor, dict[str, Tensor]]:
        rewards = logits.float()[:, 0]
        counts = torch.tensor([len(ex.ids) for ex in batch])  # on the CPU: no GPU sync to read or mask
        K = max(len(ex.ids) for ex in batch)
        grouped = torch.full((len(batch), K), 0.0, device=rewards.device, dtype=rewards.dtype)
        real = torch.arange(K)[None, :] < counts[:, None]
        grouped[real.nonzero(as_tuple=True)] = rewards  # (G, K), padded past each group's count
        return ranking_loss(grouped, counts), {"rewards": grouped.detach(), "counts": counts}

    def merge(self, parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Groups padded to one width."""
        K = max(p["rewards"].size(1) for p in parts)
        rewards = torch.cat([F.pad(p["rewards"], (0, K - p["rewards"].size(1))) for p in parts])
        return {"rewards": rewards, "counts": torch.cat([p["counts"] for p in parts])}

    def metrics(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        return _ranking_values(parts["rewards"], parts["counts"])

    def chance(self, num_labels: int) -> dict[str, float]:
        return dict(PAIR_CHANCE)  # the mean over a group's ordered pairs of the pairwise loss


@dataclass(frozen=True)
class Regression(Objective):
    """Mean squared error of the first output against each example's target."""

    name: ClassVar[str] = "mse"
    kinds: ClassVar[tuple[str, ...]] = ("regression",)

    def loss(self, logits: Tensor, batch: list) -> tuple[Tensor, dict[str, Tensor]]:
        pred = logits.float()[:, 0]
        target = torch.tensor([float(ex.target) for ex in batch], device=pred.device)
        return mse_loss(pred, target), {"pred": pred.detach(), "target": target}

    def metrics(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        return _regression_values(parts["pred"], parts["target"])


@dataclass(frozen=True)
class Classification(Objective):
    """Cross-entropy of the logits against each example's class label."""

    name: ClassVar[str] = "cross_entropy"
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def loss(self, logits: Tensor, batch: list) -> tuple[Tensor, dict[str, Tensor]]:
        logits = logits.float()
        labels = torch.tensor([ex.target for ex in batch], device=logits.device)
        return classification_loss(logits, labels), {"logits": logits.detach(), "labels": labels}

    def metrics(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        return _classification_values(parts["logits"], parts["labels"])

    def chance(self, num_labels: int) -> dict[str, float]:
        return {"loss": math.log(num_labels), "accuracy": 1 / num_labels}  # uniform over the labels


OBJECTIVES: dict[str, type[Objective]] = {o.name: o for o in (Pairwise, Ranking, Regression, Classification)}


def make_objective(name: str, center_rewards_coefficient: float | None = None) -> Objective:
    """The objective called `name`. center_rewards_coefficient is the pairwise loss's own setting
    (TRL's term); the other objectives have no such term."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(OBJECTIVES)}")
    if name == Pairwise.name:
        return Pairwise(center_rewards_coefficient)
    return OBJECTIVES[name]()
