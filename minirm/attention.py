"""Self-attention over a batch of sequences of different lengths: one entry point, three backends.

Every model calls `attend(q, k, v, batch)`. The `AttentionBatch` carries each
sequence's length, built once per forward pass, so a backend can skip padding. Two layouts:

padded: (B, T, C) activations, every sequence right-padded to the longest; attention masks the padding.
- "sdpa":   torch.nn.functional.scaled_dot_product_attention with a key-padding mask.
- "eager":  softmax(q k^T / sqrt(d)) v written out, the reference a student can read.

packed: (N, C) activations, N = sum(lengths): the models drop the padding right after the
embeddings (`AttentionBatch.pack`), so every linear layer, LayerNorm and activation runs on
real tokens only.
- "packed": attention per run of equal-length sequences, through SDPA with no mask. The
            default on CPU, where a masked (B, T, T) attention costs more than the
            per-sequence calls (BENCHMARKS.md, "CPU efficiency").
- "triton": the varlen kernel in kernels/attention.py, one launch for the whole pack. The
            default on CUDA.

Shapes: padded tensors are (B, nh, T, hs); packed tensors are (N, nh, hs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .errors import MinirmError

BACKENDS = ("packed", "sdpa", "eager", "triton")
PACKED_BACKENDS = ("packed", "triton")


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
        return self.backend in PACKED_BACKENDS

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

    @cached_property
    def token_lengths(self) -> torch.Tensor:  # (N,): the length of each packed token's sequence
        return self.lengths.repeat_interleave(self.lengths, output_size=self.token_count)

    @cached_property
    def positions(self) -> torch.Tensor:  # (N,): each packed token's position inside its sequence
        starts = self.cu_seqlens[:-1].long().repeat_interleave(self.lengths, output_size=self.token_count)
        return torch.arange(self.token_count, device=self.lengths.device) - starts

    @cached_property
    def token_count(self) -> int:  # N, the real tokens (one host sync, once per batch)
        return int(self.lengths.sum())

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C): drop the padding so every later op works on real tokens only."""
        return x[self.token_mask]

    def token_index(self, position: torch.Tensor) -> torch.Tensor:
        """Index into the packed tokens of position[b] within sequence b."""
        return self.cu_seqlens[:-1].long() + position

    @cached_property
    def runs(self) -> list[tuple[int, int, int]]:
        """(first token, sequences, length) of each run of neighbouring equal-length sequences.
        A run's tokens are contiguous in the pack, so (count * length, ...) views as
        (count, length, ...) without a copy; batches cut from length-sorted data have long runs."""
        runs, start = [], 0
        for length in self.lengths.tolist():
            if runs and runs[-1][2] == length:
                runs[-1][1] += 1
            else:
                runs.append([start, 1, length])
            start += length
        return [tuple(r) for r in runs]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: AttentionBatch, scale: float | None = None,
           dropout: float = 0.0):
    """Scaled dot-product attention of each sequence over its own real tokens.

    `dropout` is attention-probability dropout (training only); the Triton kernel has none.
    """
    if batch.backend == "packed":
        return packed_attention(q, k, v, batch, scale, dropout)
    if batch.packed:
        if dropout:
            raise MinirmError("the triton attention kernel has no attention dropout; set attention dropout to 0 "
                              "or use the sdpa backend")
        from minirm.kernels.attention import varlen_attention  # imported lazily: only the triton backend needs Triton

        return varlen_attention(
            q, k, v, batch.cu_seqlens, batch.max_len, causal=batch.causal, softmax_scale=scale
        )
    if batch.backend == "sdpa":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=batch.key_mask(), dropout_p=dropout, scale=scale
        )
    return eager_attention(q, k, v, batch.key_mask(), dropout, scale)


def packed_attention(q, k, v, batch: AttentionBatch, scale: float | None = None, dropout: float = 0.0,
                     bias=None):
    """(N, nh, hs) packed q, k, v -> (N, nh, hs): SDPA over each run of equal-length sequences,
    which needs no mask (GPT-2's causal mask is SDPA's own `is_causal`). `bias(qs, ks, length)`,
    where given, returns a float bias added to a run's scores (DeBERTa's c2p + p2c)."""
    out = []
    for start, count, length in batch.runs:
        span = slice(start, start + count * length)
        # (count * L, nh, hs) -> (count, nh, L, hs)
        qs, ks, vs = (t[span].view(count, length, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
        mask = None if bias is None else bias(qs, ks, length)
        if dropout and q.device.type == "cpu":
            y = unmasked_attention(qs, ks, vs, mask, dropout, scale, batch.causal)
        else:
            y = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, dropout_p=dropout, scale=scale,
                                               is_causal=batch.causal)
        out.append(y.transpose(1, 2).reshape(count * length, *q.shape[1:]))
    return out[0] if len(out) == 1 else torch.cat(out)


def unmasked_attention(q, k, v, bias, dropout: float, scale: float | None, causal: bool):
    """Attention with dropout for packed runs on CPU, written out. SDPA's CPU flash kernel has no
    dropout, and its fallback spends a fifth of its time checking for rows that are all masked,
    which a run without padding cannot have."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (count, nh, L, L)
    if bias is not None:
        scores = scores + bias
    if causal:
        L = scores.size(-1)
        scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return F.dropout(scores.softmax(dim=-1), dropout) @ v


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
    from minirm.kernels.attention import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS

    if head_dim not in SUPPORTED_HEAD_DIMS:
        return f"head dim {head_dim} is not one the kernel takes ({', '.join(map(str, SUPPORTED_HEAD_DIMS))})"
    if dtype not in SUPPORTED_DTYPES:
        return f"the kernel does not take {str(dtype).removeprefix('torch.')}"
    return None


_FALLBACKS_SHOWN: set[str] = set()


def choose_backend(requested: str | None, device: torch.device, head_dim: int, dtype: torch.dtype,
                   kernel_ok: bool) -> str:
    """The backend a model runs with. By default: "packed" off CUDA (padding-free, faster than the
    masked padded batch on CPU for every family: BENCHMARKS.md, "CPU efficiency"); the kernel on
    CUDA, and where it cannot serve, SDPA with one line on stderr saying why (once per reason).
    `kernel_ok`: the model's attention is one the kernel computes. An explicit --attention
    triton that cannot run is an error instead."""
    if requested is None:
        if device.type != "cuda":
            return "packed"
        if not kernel_ok:
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
        if not kernel_ok:
            raise MinirmError("no triton kernel computes this model's attention; use --attention packed or sdpa")
        why = triton_unavailable(device, head_dim, dtype)
        if why is not None:
            raise MinirmError(f"--attention triton: {why}; use --attention sdpa")
    return requested
