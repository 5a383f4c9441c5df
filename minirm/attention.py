"""Self-attention over a batch of sequences of different lengths: one entry point, three backends.

Every model calls `attend(q, k, v, batch)`. The `AttentionBatch` carries each
sequence's length, built once per forward pass, so a backend can skip padding:

- "sdpa":   torch.nn.functional.scaled_dot_product_attention with a key-padding mask
            (PyTorch picks a fused kernel where one fits). The default off CUDA.
- "eager":  softmax(q k^T / sqrt(d)) v written out, the reference a student can read.
- "triton": the varlen kernel in kernels/attention.py on packed tokens (no padding at all).
            The default on CUDA; the models pack their tokens first (see `AttentionBatch.pack`).

Shapes: padded tensors are (B, nh, T, hs); packed tensors are (N, nh, hs) with N = sum(lengths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .errors import MinirmError

BACKENDS = ("sdpa", "eager", "triton")


@dataclass
class AttentionBatch:
    lengths: torch.Tensor  # (B,) int64, real tokens per sequence; padding is on the right
    max_len: int  # T, the padded length
    causal: bool = False
    backend: str = "sdpa"

    @classmethod
    def build(cls, lengths: torch.Tensor, max_len: int, causal: bool = False, backend: str = "sdpa"):
        if backend not in BACKENDS:
            raise MinirmError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return cls(lengths=lengths, max_len=max_len, causal=causal, backend=backend)

    @property
    def packed(self) -> bool:
        return self.backend == "triton"

    # --- padded layout ---------------------------------------------------------------
    def key_mask(self) -> torch.Tensor | None:
        """Boolean (B, 1, T|1, T) mask, True where a query may look; None when nothing is masked."""
        if "_mask" in self.__dict__:
            return self.__dict__["_mask"]
        positions = torch.arange(self.max_len, device=self.lengths.device)
        full = bool((self.lengths == self.max_len).all())
        mask = None
        if not full:
            mask = (positions[None, :] < self.lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
        if self.causal:
            causal = positions[None, :] <= positions[:, None]  # (T, T): query row i sees keys j <= i
            mask = causal[None, None] if mask is None else mask & causal
        self.__dict__["_mask"] = mask
        return mask

    # --- packed layout (triton backend) ------------------------------------------------
    @cached_property
    def token_mask(self) -> torch.Tensor:  # (B, T) True at real tokens
        positions = torch.arange(self.max_len, device=self.lengths.device)
        return positions[None, :] < self.lengths[:, None]

    @cached_property
    def cu_seqlens(self) -> torch.Tensor:  # (B + 1,) int32, where each sequence starts in the pack
        return F.pad(torch.cumsum(self.lengths, 0), (1, 0)).to(torch.int32)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C): drop the padding so every later op works on real tokens only."""
        return x[self.token_mask]

    def token_index(self, position: torch.Tensor) -> torch.Tensor:
        """Index into the packed tokens of position[b] within sequence b."""
        return self.cu_seqlens[:-1].long() + position


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: AttentionBatch, scale: float | None = None,
           dropout: float = 0.0):
    """Scaled dot-product attention of each sequence over its own real tokens.

    `dropout` is attention-probability dropout (training only); the Triton kernel has none.
    """
    if batch.packed:
        if dropout:
            raise MinirmError("the triton attention kernel has no attention dropout; set attention dropout to 0 "
                              "or use the sdpa backend")
        from kernels import varlen_attention  # imported lazily: only the triton backend needs Triton

        return varlen_attention(
            q, k, v, batch.cu_seqlens, batch.max_len, causal=batch.causal, softmax_scale=scale
        )
    if batch.backend == "sdpa":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=batch.key_mask(), dropout_p=dropout, scale=scale
        )
    return eager_attention(q, k, v, batch.key_mask(), dropout, scale)


def eager_attention(q, k, v, mask, dropout: float = 0.0, scale: float | None = None):
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    if dropout:
        probs = F.dropout(probs, dropout)
    return probs @ v  # (B, nh, T, hs)


def check_backend(backend: str, device: torch.device | str) -> None:
    """Fail in one line, before a model loads, when `backend` cannot run on `device`."""
    import os
    from importlib.util import find_spec

    if backend not in BACKENDS:
        raise MinirmError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "triton":
        return
    if find_spec("triton") is None:
        raise MinirmError("--attention triton needs the triton package (pip install triton); or use --attention sdpa")
    if torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise MinirmError(f"--attention triton runs on CUDA, not {torch.device(device).type}; use --attention sdpa "
                          "(or set TRITON_INTERPRET=1 to run the kernel on CPU, slowly)")


def triton_unavailable(device: torch.device, head_dim: int, dtype: torch.dtype) -> str | None:
    """Why the varlen kernel cannot serve this model on this device, or None when it can."""
    from importlib.util import find_spec

    if find_spec("triton") is None:
        return "Triton is not installed (pip install triton)"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 0):
            return f"the GPU's compute capability is {major}.{minor}; the kernel needs 8.0 (Ampere) or newer"
    from kernels.attention import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS

    if head_dim not in SUPPORTED_HEAD_DIMS:
        return f"head dim {head_dim} is not one the kernel takes ({', '.join(map(str, SUPPORTED_HEAD_DIMS))})"
    if dtype not in SUPPORTED_DTYPES:
        return f"the kernel does not take {str(dtype).removeprefix('torch.')}"
    return None


_FALLBACKS_SHOWN: set[str] = set()


def choose_backend(requested: str | None, device: torch.device, head_dim: int, dtype: torch.dtype,
                   packed: bool) -> str:
    """The backend a model runs with. By default the kernel on CUDA; where it cannot serve, SDPA,
    with one line on stderr saying why (once per reason). An explicit --attention triton that
    cannot run is an error instead."""
    if requested is None:
        if device.type != "cuda" or not packed:
            return "sdpa"
        why = triton_unavailable(device, head_dim, dtype)
        if why is None:
            return "triton"
        if why not in _FALLBACKS_SHOWN:
            import sys

            _FALLBACKS_SHOWN.add(why)
            print(f"minirm: attention runs on sdpa, not the triton kernel: {why}", file=sys.stderr)
        return "sdpa"
    check_backend(requested, device)
    if requested == "triton":
        if not packed:
            raise MinirmError("this model's attention carries a relative-position bias the triton kernel does not "
                              "take; use --attention sdpa")
        why = triton_unavailable(device, head_dim, dtype)
        if why is not None:
            raise MinirmError(f"--attention triton: {why}; use --attention sdpa")
    return requested
