"""BERT and RoBERTa encoders with their reward heads, top to bottom.

One encoder serves both families. The only differences are where RoBERTa's position
ids start (padding_idx + 1, counting only non-pad tokens, as fairseq did) and which head
sits on top. The encoder is post-LayerNorm: each sublayer's output is added to its input
and then normalised.

Inputs are right-padded (B, T) token ids with each sequence's real length; token types
are all 0, as the reward model cards call the tokenizer with return_token_type_ids=False.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttentionBatch
from ..config import ModelConfig
from .common import MultiHeadAttention, RewardModel, activation, gather_tokens, run_layer
from .heads import BertHead, RegressionHead, RobertaHead

class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.positions = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_types = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size else None
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(input_ids) + self.positions(position_ids)  # (B, T, C)
        if self.token_types is not None:
            x = x + self.token_types.weight[0]  # every token is of type 0
        return self.dropout(self.norm(x))

class EncoderLayer(nn.Module):
    """Post-LN block: x = norm(x + attn(x)); x = norm(x + mlp(x)). DeBERTa reuses it with its own attention."""

    def __init__(self, cfg: ModelConfig, attn: nn.Module | None = None):
        super().__init__()
        C = cfg.hidden_size
        self.attn = attn or MultiHeadAttention(C, cfg.num_heads, dropout=cfg.attention_dropout)
        self.attn_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.up = nn.Linear(C, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.down = nn.Linear(cfg.intermediate_size, C)
        self.mlp_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, *attn_args) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, *attn_args)))
        return self.mlp_norm(x + self.dropout(self.down(self.act(self.up(x)))))

class BertEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.family == "roberta":
            # fairseq numbering: real tokens count up from padding_idx + 1, pad tokens sit at padding_idx
            pad = self.cfg.pad_token_id
            not_pad = input_ids.ne(pad).long()
            return torch.cumsum(not_pad, dim=1) * not_pad + pad
        return torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)

    def forward(self, input_ids: torch.Tensor, batch: AttentionBatch, checkpointing: bool = False) -> torch.Tensor:
        x = self.embed(input_ids, self.position_ids(input_ids))  # (B, T, C)
        if batch.packed:
            x = batch.pack(x)  # (N, C): from here on no op touches a pad token
        for layer in self.layers:
            x = run_layer(layer, x, batch, checkpointing=checkpointing)
        return x

HEADS = {"bert": BertHead, "roberta": RobertaHead, "bert-reward": RegressionHead}

class BertRewardModel(RewardModel):
    """BERT / RoBERTa / Aira-regression: encoder, then a head on the first token."""

    causal = False
    supports_packed = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = BertEncoder(cfg)
        self.head = HEADS[cfg.family](cfg)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, num_labels) logits."""
        batch = self.attention_batch(lengths, input_ids.size(1), backend)
        hidden = self.encoder(input_ids, batch, self.gradient_checkpointing)
        first = torch.zeros_like(batch.lengths)
        return self.head(gather_tokens(hidden, first, batch))
