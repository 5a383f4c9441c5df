"""Small pieces the model families share: activations, head splitting, the attention block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..attention import AttentionBatch, attend
from ..errors import MinirmError


def gelu_tanh(x):  # GPT-2's "gelu_new": the tanh approximation
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "tanh": torch.tanh,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise MinirmError(f"unsupported activation {name!r} in config.json; minirm knows {', '.join(ACTIVATIONS)}") from None


def split_heads(x: torch.Tensor, num_heads: int, batch: AttentionBatch) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs) for padded batches; (N, C) -> (N, nh, hs) for packed ones."""
    if batch.packed:
        return x.view(x.size(0), num_heads, -1)
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(y: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
    if batch.packed:
        return y.reshape(y.size(0), -1)
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


class MultiHeadAttention(nn.Module):
    """q, k, v projections -> attention over each sequence's real tokens -> output projection.

    BERT keeps three projections; GPT-2 stores one fused (C, 3C) matrix. Both load into
    this module: the GPT-2 weight map splits nothing, it maps c_attn onto `qkv`.
    """

    def __init__(self, hidden: int, num_heads: int, fused_qkv: bool = False, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(hidden, 3 * hidden)
        else:
            self.q = nn.Linear(hidden, hidden)
            self.k = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        if self.fused_qkv:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = (split_heads(t, self.num_heads, batch) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        y = attend(q, k, v, batch, scale=1.0 / math.sqrt(q.size(-1)), dropout=dropout)
        return self.o(merge_heads(y, batch))


class RewardModel(nn.Module):
    """The contract between every family's model and its callers (the scorer, the training loop).

    A caller passes right-padded token ids, each sequence's length and an attention backend;
    the model builds its own attention layout from them, packed or padded, and returns the
    logits (B, num_labels). What a caller may rely on is declared here, never probed:
    """

    causal: bool = False  # attends left to right only (GPT-2)
    head_modules: tuple[str, ...] = ("head",)  # what maps the gathered (B, C) states to the logits
    supports_triton: bool = True  # a Triton kernel computes its attention (varlen; DeBERTa: kernels/deberta.py)

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False  # recompute each layer in backward (training only)

    @staticmethod
    def kernel_dropout(cfg) -> bool:
        """Whether the kernel that computes this model's attention does attention dropout (the
        varlen kernel does not; DeBERTa's does)."""
        return False

    def attention_batch(self, lengths: torch.Tensor, max_len: int, backend: str) -> AttentionBatch:
        if backend == "triton" and not self.supports_triton:
            raise MinirmError(f"{type(self).__name__} cannot run on the triton kernel: no kernel computes its "
                              "attention; use --attention packed or sdpa")
        return AttentionBatch.build(lengths, max_len, causal=self.causal, backend=backend)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        raise NotImplementedError

    def float_head(self) -> None:
        """Run the head in float32 on a half-precision model: its weights are upcast and its
        (B, C) input cast on the way in, so the logits come out in float32. Costless (B rows),
        and it matters: a score rounded to bf16 keeps 8 significant bits, so a chosen and a
        rejected response scored 0.3% apart would tie."""
        for name in self.head_modules:
            getattr(self, name).float()
        getattr(self, self.head_modules[0]).register_forward_pre_hook(lambda module, args: (args[0].float(),))


def run_layer(layer: nn.Module, *args, checkpointing: bool = False):
    """layer(*args); with activation checkpointing, keep only the layer's input and recompute its
    activations during backward (memory for compute: what lets the 1.5B DeBERTa train on one GPU).
    Non-reentrant checkpointing replays the RNG, so dropout masks match the first pass."""
    if checkpointing and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


def gather_tokens(x: torch.Tensor, position: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
    """Hidden state of token `position[b]` of each sequence b: (B, T, C) or (N, C) -> (B, C)."""
    if batch.packed:
        return x[batch.token_index(position)]
    return x[torch.arange(x.size(0), device=x.device), position]
