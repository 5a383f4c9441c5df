"""minirm.training.losses against values worked out by hand with `math` (never with torch.nn.functional).

-log sigmoid(d) = log(1 + e^-d), written nll(d) below; its derivative is -sigmoid(-d).
"""

from __future__ import annotations

import math

import pytest
import torch

from minirm.training.data import Encoded
from minirm.training.losses import (
    OBJECTIVES,
    Pairwise,
    Ranking,
    classification_loss,
    classification_metrics,
    make_objective,
    mse_loss,
    pairwise_loss,
    pairwise_metrics,
    ranking_loss,
    ranking_metrics,
    regression_metrics,
    to_floats,
)

TOL = 1e-6


def nll(d: float) -> float:
    """-log sigmoid(d)"""
    return math.log(1.0 + math.exp(-d))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(*xs: float, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    return torch.tensor(xs, dtype=dtype, requires_grad=grad)


# the running example: chosen - rejected - margin = [2 - 1 - 0.5, 0.5 - 1.5 - 0] = [0.5, -1.0]
C, R, M = (2.0, 0.5), (1.0, 1.5), (0.5, 0.0)
DIFFS = [c - r - m for c, r, m in zip(C, R, M)]


# ---------------------------------------------------------------- pairwise


def test_pairwise_loss_without_margin():
    want = (nll(2.0 - 1.0) + nll(0.5 - 1.5)) / 2
    assert pairwise_loss(t(*C), t(*R)).item() == pytest.approx(want, abs=TOL)


def test_pairwise_loss_with_margin():
    want = (nll(0.5) + nll(-1.0)) / 2
    assert pairwise_loss(t(*C), t(*R), margin=t(*M)).item() == pytest.approx(want, abs=TOL)


def test_pairwise_loss_center_rewards():
    # 0.01 * mean((2 + 1)^2, (0.5 + 1.5)^2) = 0.01 * (9 + 4) / 2 = 0.065
    want = (nll(0.5) + nll(-1.0)) / 2 + 0.065
    got = pairwise_loss(t(*C), t(*R), margin=t(*M), center_rewards_coefficient=0.01)
    assert got.item() == pytest.approx(want, abs=TOL)


def test_pairwise_loss_gradient():
    chosen, rejected = t(*C, grad=True), t(*R, grad=True)
    pairwise_loss(chosen, rejected, margin=t(*M)).backward()
    B = 2
    for b, d in enumerate(DIFFS):
        assert chosen.grad[b].item() == pytest.approx(-sigmoid(-d) / B, abs=TOL)
        assert rejected.grad[b].item() == pytest.approx(sigmoid(-d) / B, abs=TOL)


def test_pairwise_loss_gradient_center_term():
    # d/dc of coef * mean((c + r)^2) adds 2 * coef * (c + r) / B
    chosen, rejected = t(*C, grad=True), t(*R, grad=True)
    pairwise_loss(chosen, rejected, margin=t(*M), center_rewards_coefficient=0.01).backward()
    for b, d in enumerate(DIFFS):
        want = -sigmoid(-d) / 2 + 2 * 0.01 * (C[b] + R[b]) / 2
        assert chosen.grad[b].item() == pytest.approx(want, abs=TOL)


def test_pairwise_metrics_tie_is_not_a_win():
    # pairs (2, 1) win, (1, 1) tie, (0, 0.5) loss
    m = pairwise_metrics(t(2.0, 1.0, 0.0), t(1.0, 1.0, 0.5))
    assert set(m) == {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"}
    assert all(type(v) is float for v in m.values())
    assert m["accuracy"] == pytest.approx(1 / 3, abs=TOL)
    assert m["margin"] == pytest.approx((1.0 + 0.0 - 0.5) / 3, abs=TOL)
    assert m["min_reward"] == pytest.approx(0.0, abs=TOL)
    assert m["mean_reward"] == pytest.approx((2 + 1 + 0 + 1 + 1 + 0.5) / 6, abs=TOL)
    assert m["max_reward"] == pytest.approx(2.0, abs=TOL)


# ---------------------------------------------------------------- ranking

# group 0: three replies [3, 1, 2] -> pairs (0,1): 2, (0,2): 1, (1,2): -1
# group 1: two replies [0.5, 1.5] + one padding entry -> pair (0,1): -1
GROUP0 = (nll(2.0) + nll(1.0) + nll(-1.0)) / 3
GROUP1 = nll(-1.0)


def padded(pad: float) -> torch.Tensor:
    return torch.tensor([[3.0, 1.0, 2.0], [0.5, 1.5, pad]])


def test_ranking_loss_means_within_then_over_groups():
    got = ranking_loss(padded(99.0), counts=torch.tensor([3, 2]))
    assert got.item() == pytest.approx((GROUP0 + GROUP1) / 2, abs=TOL)


def test_ranking_loss_ignores_padding_even_nan():
    rewards = padded(float("nan")).requires_grad_()
    loss = ranking_loss(rewards, counts=torch.tensor([3, 2]))
    assert loss.item() == pytest.approx((GROUP0 + GROUP1) / 2, abs=TOL)
    loss.backward()
    assert torch.isfinite(rewards.grad).all() and rewards.grad[1, 2].item() == 0.0


def test_ranking_loss_counts_none_means_all_k():
    assert ranking_loss(torch.tensor([[3.0, 1.0, 2.0]])).item() == pytest.approx(GROUP0, abs=TOL)


def test_ranking_loss_gradient():
    # one group [3, 1, 2]: d/dx0 of (nll(x0-x1) + nll(x0-x2) + nll(x1-x2)) / 3
    rewards = torch.tensor([[3.0, 1.0, 2.0]], requires_grad=True)
    ranking_loss(rewards).backward()
    want = [
        (-sigmoid(-2.0) - sigmoid(-1.0)) / 3,
        (sigmoid(-2.0) - sigmoid(1.0)) / 3,
        (sigmoid(-1.0) + sigmoid(1.0)) / 3,
    ]
    for k in range(3):
        assert rewards.grad[0, k].item() == pytest.approx(want[k], abs=TOL)


def test_ranking_with_two_replies_equals_pairwise():
    want = (nll(2.0 - 1.0) + nll(0.5 - 1.5)) / 2
    rewards = torch.stack([t(*C), t(*R)], dim=1)  # (B, 2): chosen first
    assert ranking_loss(rewards).item() == pytest.approx(want, abs=TOL)
    assert ranking_loss(rewards).item() == pytest.approx(pairwise_loss(t(*C), t(*R)).item(), abs=TOL)


@pytest.mark.parametrize("counts", [[3, 1], [3, 0], [3, 4]])
def test_ranking_bad_counts_raise(counts):
    with pytest.raises(ValueError, match="count"):
        ranking_loss(padded(0.0), counts=torch.tensor(counts))


def test_ranking_metrics_pair_level():
    m = ranking_metrics(padded(99.0), counts=torch.tensor([3, 2]))
    assert set(m) == {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"}
    # pairs: 2, 1, -1 | -1 -> 2 wins of 4; the padding 99 is in no pair and no reward stat
    assert m["accuracy"] == pytest.approx(2 / 4, abs=TOL)
    assert m["margin"] == pytest.approx((2 + 1 - 1 - 1) / 4, abs=TOL)
    assert m["min_reward"] == pytest.approx(0.5, abs=TOL)
    assert m["mean_reward"] == pytest.approx((3 + 1 + 2 + 0.5 + 1.5) / 5, abs=TOL)
    assert m["max_reward"] == pytest.approx(3.0, abs=TOL)


def test_ranking_metrics_tie_is_not_a_win():
    m = ranking_metrics(torch.tensor([[2.0, 2.0, 1.0]]))  # pairs: 0 (tie), 1, 1
    assert m["accuracy"] == pytest.approx(2 / 3, abs=TOL)


# ---------------------------------------------------------------- regression and classification

P, T = (1.0, 2.0, 4.0), (1.5, 2.0, 1.0)  # errors -0.5, 0, 3


def test_mse_loss():
    assert mse_loss(t(*P), t(*T)).item() == pytest.approx((0.25 + 0.0 + 9.0) / 3, abs=TOL)


def test_regression_metrics():
    m = regression_metrics(t(*P), t(*T))
    assert set(m) == {"rmse", "mae", "mean_reward"}
    assert m["rmse"] == pytest.approx(math.sqrt(9.25 / 3), abs=TOL)
    assert m["mae"] == pytest.approx(3.5 / 3, abs=TOL)
    assert m["mean_reward"] == pytest.approx(7.0 / 3, abs=TOL)


LOGITS = [[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]
LABELS = [1, 0]


def test_classification_loss():
    want = 0.0
    for row, y in zip(LOGITS, LABELS):
        z = sum(math.exp(v) for v in row)
        want += -math.log(math.exp(row[y]) / z)
    got = classification_loss(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert got.item() == pytest.approx(want / 2, abs=TOL)


def test_classification_metrics():
    m = classification_metrics(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert m == {"accuracy": pytest.approx(0.5, abs=TOL)}  # row 0 argmax 1 (right), row 1 argmax 2 (wrong)


# ---------------------------------------------------------------- dtypes, empty batches, the table

LOSS_CALLS = {
    "pairwise": lambda dt: pairwise_loss(t(*C, dtype=dt), t(*R, dtype=dt), margin=t(*M, dtype=dt)),
    "ranking": lambda dt: ranking_loss(padded(99.0).to(dt), counts=torch.tensor([3, 2])),
    "mse": lambda dt: mse_loss(t(*P, dtype=dt), t(*T, dtype=dt)),
    "cross_entropy": lambda dt: classification_loss(torch.tensor(LOGITS, dtype=dt), torch.tensor(LABELS)),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_half_precision_inputs_give_float32_loss(name, dtype):
    # every input above is exact in bf16 and fp16, so the float32 answer must not move
    low, full = LOSS_CALLS[name](dtype), LOSS_CALLS[name](torch.float32)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(full.item(), abs=TOL)


def test_half_precision_gradient_reaches_input():
    chosen = t(*C, dtype=torch.bfloat16, grad=True)
    pairwise_loss(chosen, t(*R, dtype=torch.bfloat16), margin=t(*M)).backward()
    assert chosen.grad.dtype == torch.bfloat16 and torch.isfinite(chosen.grad).all()


EMPTY = torch.zeros(0)


@pytest.mark.parametrize("call", [
    lambda: pairwise_loss(EMPTY, EMPTY),
    lambda: ranking_loss(torch.zeros(0, 3)),
    lambda: mse_loss(EMPTY, EMPTY),
    lambda: classification_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
    lambda: pairwise_metrics(EMPTY, EMPTY),
    lambda: ranking_metrics(torch.zeros(0, 3)),
    lambda: regression_metrics(EMPTY, EMPTY),
    lambda: classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
])
def test_empty_batch_raises(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_mismatched_shapes_raise():
    # (B, 1) against (B,) would silently broadcast to (B, B)
    with pytest.raises(ValueError, match="shapes differ"):
        pairwise_loss(torch.zeros(2, 1), torch.zeros(2))


def test_metrics_are_detached_floats():
    chosen = t(*C, grad=True)
    m = pairwise_metrics(chosen, t(*R))
    assert all(type(v) is float for v in m.values())
    assert chosen.grad is None


# ---------------------------------------------------------------- objectives: what the training loop holds


def test_objectives_table():
    assert {n: o.kinds for n, o in OBJECTIVES.items()} == {
        "pairwise": ("pairwise",), "ranking": ("pairwise", "ranking"), "mse": ("regression",),
        "cross_entropy": ("classification",),
    }
    assert all(make_objective(n).name == n for n in OBJECTIVES)
    assert make_objective("pairwise", 0.01) == Pairwise(0.01)
    assert make_objective("ranking", 0.01) == Ranking()  # TRL's centering term is the pairwise loss's own
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_objective("hinge")


def seqs(n: int, first: int) -> list[list[int]]:
    """n distinct token lists, to follow where each lands in the batch."""
    return [[first + k] * (k + 1) for k in range(n)]


def scored(rows) -> torch.Tensor:
    """The model's (B, 1) outputs, one row per sequence in the objective's layout."""
    return torch.tensor(rows, dtype=torch.bfloat16)[:, None]  # the exact values of the running examples


def test_pairwise_objective_lays_out_chosen_then_rejected_and_gives_the_loss():
    batch = [Encoded(seqs(2, 10), margin=M[0]), Encoded(seqs(2, 20), margin=None)]  # a missing margin is 0
    objective = make_objective("pairwise", 0.01)
    assert objective.sequences(batch) == [[10], [11, 11], [20], [21, 21]]  # chosen rows 0, 2; rejected 1, 3
    logits = scored([C[0], R[0], C[1], R[1]])
    loss, parts = objective.loss(logits, batch)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((nll(0.5) + nll(-1.0)) / 2 + 0.065, abs=TOL)  # as in the hand sums above
    values = objective.metrics(parts)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values.values())  # nothing read yet
    assert to_floats(values) == pairwise_metrics(t(*C), t(*R))
    assert list(to_floats(values)) == ["accuracy", "margin", "min_reward", "mean_reward", "max_reward"]
    no_margins = [Encoded(seqs(2, 10)), Encoded(seqs(2, 20))]
    assert make_objective("pairwise").loss(logits, no_margins)[0].item() == pytest.approx(
        (nll(1.0) + nll(-1.0)) / 2, abs=TOL)


def test_pairwise_objective_refuses_an_example_that_is_not_a_pair():
    with pytest.raises(ValueError):
        make_objective("pairwise").sequences([Encoded(seqs(3, 10))])


def test_metrics_merge_over_micro_batches_as_over_one_batch():
    objective = make_objective("pairwise")
    one = objective.loss(scored([C[0], R[0]]), [Encoded(seqs(2, 10))])[1]
    two = objective.loss(scored([C[1], R[1]]), [Encoded(seqs(2, 20))])[1]
    merged = objective.metrics(objective.merge([one, two]))
    assert to_floats(merged) == pairwise_metrics(t(*C), t(*R))


def test_ranking_objective_lays_out_groups_best_first_and_pads_them():
    batch = [Encoded(seqs(3, 10)), Encoded(seqs(2, 20))]
    objective = make_objective("ranking")
    assert objective.sequences(batch) == [[10], [11, 11], [12, 12, 12], [20], [21, 21]]
    rewards = [3.0, 1.0, 2.0, 0.5, 1.5]  # the groups of padded() above
    loss, parts = objective.loss(scored(rewards), batch)
    assert loss.item() == pytest.approx((GROUP0 + GROUP1) / 2, abs=TOL)
    assert to_floats(objective.metrics(parts)) == ranking_metrics(padded(0.0), torch.tensor([3, 2]))
    # a micro-batch of pairs merges with one of triples: the pairs are padded to K = 3
    first = objective.loss(scored(rewards[3:]), batch[1:])[1]
    second = objective.loss(scored(rewards[:3]), batch[:1])[1]
    merged = objective.merge([first, second])
    assert merged["rewards"].shape == (2, 3) and merged["counts"].tolist() == [2, 3]
    assert to_floats(objective.metrics(merged)) == pytest.approx(ranking_metrics(padded(0.0), torch.tensor([3, 2])))


def test_regression_and_classification_objectives_read_each_examples_target():
    batch = [Encoded(seqs(1, 10 * (i + 1)), target=v) for i, v in enumerate(T)]
    objective = make_objective("mse")
    assert objective.sequences(batch) == [[10], [20], [30]]  # one sequence per example, in order
    loss, parts = objective.loss(scored(P), batch)
    assert loss.item() == pytest.approx((0.25 + 0.0 + 9.0) / 3, abs=TOL)
    assert to_floats(objective.metrics(parts)) == regression_metrics(t(*P), t(*T))
    batch = [Encoded(seqs(1, 10), target=y) for y in LABELS]
    objective = make_objective("cross_entropy")
    loss, parts = objective.loss(torch.tensor(LOGITS), batch)
    assert loss.item() == pytest.approx(classification_loss(torch.tensor(LOGITS), torch.tensor(LABELS)).item())
    assert to_floats(objective.metrics(parts)) == {"accuracy": 0.5}
