"""The reward heads: how a sequence's hidden states become one or two numbers.

Each head reads one token's hidden state (B, C) and returns logits (B, num_labels):
- BertHead:        pooler (dense + tanh on [CLS]) -> classifier.              BERT
- RobertaHead:     dense -> tanh -> out_proj on <s>.                           RoBERTa
- RegressionHead:  Linear -> ReLU -> Linear -> Tanh -> Linear(1) on [CLS].     the older Aira model
- ContextPooler:   dense + pooler_hidden_act on the first token -> classifier. DeBERTa
GPT-2's head is a single bias-free `score` Linear and lives in gpt2.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import activation

if TYPE_CHECKING:
    from ..config import ModelConfig


def _classifier_dropout(cfg: ModelConfig) -> float:
    return cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout


class BertHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(_classifier_dropout(cfg))
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        pooled = torch.tanh(self.pooler(cls_state))
        return self.classifier(self.dropout(pooled))


class RobertaHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dropout = nn.Dropout(_classifier_dropout(cfg))
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(cls_state)))
        return self.out_proj(self.dropout(x))


class RegressionHead(nn.Module):
    """The older Aira RewardModel's head: [CLS] -> cls_layer1 -> ReLU -> ff1 -> Tanh -> ff2 (1 unit).
    Scoring multiplies the output by alpha (a forward argument of the published model, default 1).

    Its BertModel has a pooler whose weights are in the checkpoint but never used. It is kept
    here, frozen, only so that a save holds every tensor the published layout has."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size).requires_grad_(False)
        width = cfg.extra.linear_layer  # AiraOptions (bert.py)
        self.net = nn.Sequential(
            nn.Linear(cfg.hidden_size, width),  # cls_layer1
            nn.ReLU(),
            nn.Linear(width, width),  # ff1
            nn.Tanh(),
            nn.Linear(width, 1),  # ff2
        )

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        return self.net(cls_state)


class ContextPooler(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        pooler_size = cfg.extra.pooler_hidden_size or cfg.hidden_size  # DebertaOptions (deberta.py)
        self.dense = nn.Linear(pooler_size, pooler_size)
        self.act = activation(cfg.extra.pooler_hidden_act)
        self.dropout = nn.Dropout(_classifier_dropout(cfg))
        self.classifier = nn.Linear(pooler_size, cfg.num_labels)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        pooled = self.act(self.dense(self.dropout(cls_state)))
        return self.classifier(self.dropout(pooled))
