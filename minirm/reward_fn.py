"""The reward functions' public names, as scripts and RL configs import them: `from
minirm.reward_fn import RewardFunction`, verl's `custom_reward_function.path:
pkg://minirm.reward_fn`. The code lives in minirm/scoring/reward_fn.py."""

from .scoring.reward_fn import RewardFunction, verl_compute_score, verl_compute_score_batch

__all__ = ["RewardFunction", "verl_compute_score", "verl_compute_score_batch"]
