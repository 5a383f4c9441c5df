"""GPT-2 with its sequence-classification head, top to bottom.

GPT-2 is pre-LayerNorm (normalise, then the sublayer, then add) and causal. Its reward
head is a bias-free `score` Linear read at the last real token of each sequence.

That last point is where GPT-2 reward models commonly go wrong. transformers finds the
rightmost token that is not pad_token_id; CHAI-style models use pad = eos = 50256, so a
text that itself ends in <|endoftext|> would be read one token early. minirm knows each
sequence's length and reads at length - 1, which agrees with transformers on every input
that does not end in the pad token, and is right on those that do.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttentionBatch
from ..config import ModelConfig
from .common import MultiHeadAttention, RewardModel, activation, gather_tokens, run_layer


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.hidden_size
        self.attn_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadAttention(C, cfg.num_heads, fused_qkv=True, dropout=cfg.attention_dropout)
        self.mlp_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.up = nn.Linear(C, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.down = nn.Linear(cfg.intermediate_size, C)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), batch))
        return x + self.dropout(self.down(self.act(self.up(self.mlp_norm(x)))))


class GPT2RewardModel(RewardModel):
    causal = True
    supports_packed = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.positions = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.score = nn.Linear(cfg.hidden_size, cfg.num_labels, bias=False)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, num_labels) logits at each sequence's last token."""
        T = input_ids.size(1)
        batch = self.attention_batch(lengths, T, backend)
        # right padding keeps every real token at its true position 0..len-1
        positions = torch.arange(T, device=input_ids.device)
        x = self.dropout(self.tokens(input_ids) + self.positions(positions))  # (B, T, C)
        if batch.packed:
            x = batch.pack(x)  # (N, C)
        for layer in self.layers:
            x = run_layer(layer, x, batch, checkpointing=self.gradient_checkpointing)
        last = gather_tokens(x, batch.lengths - 1, batch)  # (B, C)
        return self.score(self.final_norm(last))
