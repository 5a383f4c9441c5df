"""Training objectives for reward models: losses (differentiable) and metrics (plain floats).

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
float32 copies and return Python floats named as TRL logs them ("accuracy", "margin", ...).
Accuracy counts a tie as a loss: only chosen > rejected strictly is a win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    """(G, K) rewards -> (G, K, K) mask of the pairs i < j < n_g, and (G, K) mask of real entries."""
    if rewards.dim() != 2 or rewards.shape[0] == 0:
        raise ValueError(f"ranking: empty batch or bad shape, rewards must be (G, K) with G >= 1, "
                         f"got shape {tuple(rewards.shape)}")
    G, K = rewards.shape
    if counts is None:
        counts = torch.full((G,), K, device=rewards.device)
    if counts.shape != (G,):
        raise ValueError(f"ranking: counts must be ({G},), got shape {tuple(counts.shape)}")
    if bool((counts < 2).any()) or bool((counts > K).any()):
        raise ValueError(f"ranking: every group needs 2 <= count <= K={K} replies, got counts {counts.tolist()}")
    idx = torch.arange(K, device=rewards.device)
    real = idx[None, :] < counts.to(rewards.device)[:, None]  # (G, K)
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
    pairs, real = _pair_mask(rewards, counts)  # (G, K, K), (G, K)
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


def _reward_stats(x: Tensor) -> dict[str, float]:
    return {"min_reward": x.min().item(), "mean_reward": x.mean().item(), "max_reward": x.max().item()}


@torch.no_grad()
def pairwise_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, float]:
    _check_batch("pairwise", chosen, rejected)
    c, r = chosen.detach().float(), rejected.detach().float()
    return {"accuracy": (c > r).float().mean().item(), "margin": (c - r).mean().item(),
            **_reward_stats(torch.cat([c, r]))}


@torch.no_grad()
def ranking_metrics(rewards: Tensor, counts: Tensor | None = None) -> dict[str, float]:
    """Pair-level: every ordered pair of every group counts once (unlike the loss's group mean)."""
    pairs, real = _pair_mask(rewards, counts)
    x = rewards.detach().float()
    diff = (x[:, :, None] - x[:, None, :])[pairs]  # (P,) r_i - r_j over all pairs
    return {"accuracy": (diff > 0).float().mean().item(), "margin": diff.mean().item(),
            **_reward_stats(x[real])}


@torch.no_grad()
def regression_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    _check_batch("regression", pred, target)
    p, t = pred.detach().float(), target.detach().float()
    return {"rmse": ((p - t) ** 2).mean().sqrt().item(), "mae": (p - t).abs().mean().item(),
            "mean_reward": p.mean().item()}


@torch.no_grad()
def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    _check_logits(logits, labels)
    return {"accuracy": (logits.detach().float().argmax(-1) == labels).float().mean().item()}


# ---------------------------------------------------------------- the table a training loop dispatches on


@dataclass(frozen=True)
class Objective:
    name: str  # what the user picks: "pairwise" | "ranking" | "mse" | "cross_entropy"
    kind: str  # the data adapters' kind: "pairwise" | "ranking" | "regression" | "classification"
    loss: Callable[..., Tensor]
    metrics: Callable[..., dict[str, float]]


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("pairwise", "pairwise", pairwise_loss, pairwise_metrics),
    Objective("ranking", "ranking", ranking_loss, ranking_metrics),
    Objective("mse", "regression", mse_loss, regression_metrics),
    Objective("cross_entropy", "classification", classification_loss, classification_metrics),
)}
