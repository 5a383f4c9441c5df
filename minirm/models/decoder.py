"""What the decoder LLM reward models share (llama.py: Llama, Mistral, Qwen2; qwen3.py; gemma2.py).

All of them are pre-norm causal decoders with RMSNorm, rotary positions (RoPE), grouped-query
attention and a gated MLP, read by a bias-free `score` Linear at each sequence's last real token.
They differ in options, each read from config.json into `DecoderOptions` (cfg.extra):

- grouped-query attention: num_key_value_heads K/V heads, each shared by num_heads / K query heads;
- head_dim from config.json where it is given (Qwen3, Gemma 2: wider than hidden / heads);
- RoPE: rope_theta, and the rope_scaling types llama3, linear and dynamic, computed as
  transformers 5.25 computes them (modeling_rope_utils.py), in float32 by the same operations;
- biases on q/k/v (Qwen2), on o and the MLP (Llama's attention_bias / mlp_bias);
- RMSNorm on each head's queries and keys (Qwen3's q_norm / k_norm);
- sliding-window attention on the layers config.json names (Mistral's sliding_window on every
  layer, Qwen's use_sliding_window from max_window_layers up, Gemma 2's alternate layers): a query
  at position i sees the keys j with i - window < j <= i;
- Gemma 2's softmax scale (query_pre_attn_scalar ** -0.5) and attention-logit soft-capping
  (cap * tanh(scores / cap), before the mask).

Where minirm and transformers differ on purpose:

- dynamic RoPE: transformers scales the frequencies by the padded batch's length (the largest
  position id + 1) and keeps the longest it has seen, so a sequence's score depends on what it is
  batched with and on what came before it. minirm scales each sequence by its own length, which is
  transformers' result for that sequence alone, on a fresh model. Up to max_position_embeddings
  the two agree (dynamic is then plain RoPE).
- the score token: transformers reads the rightmost token that is not pad_token_id; minirm reads
  each sequence's last real token (see each family file's docstring).

Attention runs on one of three paths:

- on CUDA, by default, the Triton varlen kernel (kernels/attention.py; --attention triton): Llama,
  Mistral, Qwen2 and Qwen3. The tokens are packed and the kernel reads the K/V heads in place
  (grouped-query attention), forward and backward. The kernel has no sliding window: a layer whose
  window is shorter than the batch's longest sequence runs SDPA over the packed runs instead (a
  window that long or longer, Mistral-7B-v0.1's 4096 on shorter texts, changes nothing: the layer
  runs on the kernel). Gemma 2 is not served by the kernel (supports_triton False): it has
  neither soft-capping nor windows;
- SDPA, padded with a mask or packed (SDPA per run of equal-length sequences), with GQA handled by
  SDPA itself;
- soft-capping, which SDPA cannot do, and the eager backend write the attention out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionBatch
from ..errors import MinirmError
from .common import RewardModel, activation, gather_tokens, run_layer
from .registry import INT, NUMBER, POSITIVE_INT, STRING, ConfigFields

if TYPE_CHECKING:
    from ..config import ModelConfig

DEFAULT_THETA = 10_000.0  # transformers' default_theta, for every family here
ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


# --- config ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rope:
    """Rotary position parameters, as transformers standardises them (rope_parameters)."""

    kind: str = "default"  # one of ROPE_TYPES
    theta: float = DEFAULT_THETA
    factor: float = 1.0  # linear, dynamic, llama3
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_positions: int = 0  # llama3


@dataclass(frozen=True)
class DecoderOptions:
    """The config.json fields only the decoder families read (cfg.extra)."""

    num_kv_heads: int
    head_dim: int
    rope: Rope
    windows: tuple  # per layer: the sliding window, or None for full causal attention
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3
    softmax_scale: float | None = None  # None: head_dim ** -0.5 (Gemma 2: query_pre_attn_scalar ** -0.5)
    attn_softcap: float | None = None  # Gemma 2
    tie_word_embeddings: bool = False


def read_rope(raw: dict, source: str = "config.json") -> Rope:
    """RoPE from config.json, both ways it is written: published checkpoints carry `rope_theta` and
    `rope_scaling` (with "type" in older ones), transformers 5 saves `rope_parameters`; rope_scaling
    wins where both are present, as transformers reads them."""
    params = raw.get("rope_scaling") or raw.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise MinirmError(f"{source}: rope_scaling must be a JSON object, not {params!r}; fix config.json")
    if any(isinstance(v, dict) for v in params.values()):
        raise MinirmError(f"{source}: RoPE parameters per layer type are not supported; this is not a Llama, "
                          "Mistral, Qwen2, Qwen3 or Gemma 2 config")
    theta = params.get("rope_theta", raw.get("rope_theta", DEFAULT_THETA))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise MinirmError(f"{source}: RoPE type {kind!r} is not one minirm computes ({', '.join(ROPE_TYPES)})")
    factor = params.get("factor", 1.0)
    numbers = {"rope_theta": theta, "factor": factor}
    if kind == "llama3":
        # transformers gives a top-level original_max_position_embeddings priority over the dict's
        original = raw.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") \
            or raw.get("max_position_embeddings")
        numbers.update(low_freq_factor=params.get("low_freq_factor"), high_freq_factor=params.get("high_freq_factor"),
                       original_max_position_embeddings=original)
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise MinirmError(f"{source}: RoPE {kind} needs a positive {name}, not {value!r}; fix config.json")
    partial = params.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
    if kind != "default" and partial != 1.0:
        raise MinirmError(f"{source}: partial_rotary_factor {partial} with RoPE {kind} is not supported")
    if kind != "llama3":
        return Rope(kind, float(theta), float(factor))
    if numbers["low_freq_factor"] == numbers["high_freq_factor"]:
        raise MinirmError(f"{source}: llama3 RoPE needs low_freq_factor != high_freq_factor; fix config.json")
    return Rope(kind, float(theta), float(factor), float(numbers["low_freq_factor"]),
                float(numbers["high_freq_factor"]), int(numbers["original_max_position_embeddings"]))


def with_defaults(raw: dict, defaults: dict) -> dict:
    """config.json over the family's transformers defaults (config.json keys); a null stays null."""
    return {**defaults, **raw}


def decoder_options(c: dict, *, qkv_bias: bool | None = None, o_bias: bool | None = None,
                    mlp_bias: bool | None = None, qk_norm: bool = False, windows=(), softmax_scale=None,
                    attn_softcap=None) -> DecoderOptions:
    """The shared fields (heads, head size, RoPE, biases) of `c`, config.json over the family's
    defaults; the family passes what it decides itself (None: read Llama's attention_bias / mlp_bias)."""
    heads = c["num_attention_heads"]
    attention_bias = bool(c.get("attention_bias") or False)
    return DecoderOptions(
        num_kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or c["hidden_size"] // heads,
        rope=read_rope(c), windows=tuple(windows),
        qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
        o_bias=attention_bias if o_bias is None else o_bias,
        mlp_bias=bool(c.get("mlp_bias") or False) if mlp_bias is None else mlp_bias,
        qk_norm=qk_norm, softmax_scale=softmax_scale, attn_softcap=attn_softcap,
        tie_word_embeddings=bool(c.get("tie_word_embeddings")),
    )


def layer_windows(raw: dict, num_layers: int, window, sliding) -> tuple:
    """Each layer's window: config.json's layer_types where given, else `sliding(i)`; None where the
    window is unset or the layer attends fully."""
    types = raw.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != num_layers:
            raise MinirmError(f"config.json: layer_types must list one type per layer ({num_layers}), not {types!r}")
        unknown = set(types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise MinirmError(f"config.json: layer type(s) {', '.join(map(repr, sorted(unknown)))} are not supported; "
                              "minirm knows full_attention and sliding_attention")
        flags = [t == "sliding_attention" for t in types]
    else:
        flags = [sliding(i) for i in range(num_layers)]
    return tuple(window if flag and window is not None else None for flag in flags)


def check_decoder(cfg: ModelConfig, source: str) -> None:
    """The one-line refusals of a config these models cannot build."""
    opts = cfg.extra
    if cfg.num_heads % opts.num_kv_heads:
        raise MinirmError(f"{source}: {cfg.num_heads} attention heads cannot be shared among "
                          f"{opts.num_kv_heads} key/value heads; check config.json")
    if opts.head_dim % 2:
        raise MinirmError(f"{source}: head_dim {opts.head_dim} is odd; rotary positions rotate pairs of dimensions")
    bad = [w for w in opts.windows if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1)]
    if bad:
        raise MinirmError(f"{source}: sliding_window must be a positive integer, not {bad[0]!r}; fix config.json")
    if opts.rope.kind == "dynamic" and opts.head_dim <= 2:
        raise MinirmError(f"{source}: dynamic RoPE needs head_dim > 2")


# our ModelConfig field -> its config.json key, for every decoder family
NAMES = dict(vocab_size="vocab_size", hidden_size="hidden_size", num_layers="num_hidden_layers",
             num_heads="num_attention_heads", intermediate_size="intermediate_size",
             max_positions="max_position_embeddings", hidden_act="hidden_act", layer_norm_eps="rms_norm_eps",
             attention_dropout="attention_dropout", pad_token_id="pad_token_id", attention_head_dim="head_dim")


def decoder_fields(defaults: dict, act_key: str = "hidden_act") -> ConfigFields:
    """ModelConfig's shared fields from a decoder config.json; `defaults` are the family's
    transformers defaults by config.json key (Gemma 2 names its activation hidden_activation)."""
    names = {**NAMES, "hidden_act": act_key}
    ours = {field: defaults.get(key) for field, key in names.items()}
    ours.update(type_vocab_size=0, dropout=0.0, classifier_dropout=None)  # no token types, no hidden dropout
    return ConfigFields(
        names=names, defaults=ours,
        types={**dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "num_key_value_heads", "head_dim"),
                               POSITIVE_INT),
               **dict.fromkeys(("rms_norm_eps", "attention_dropout", "rope_theta", "query_pre_attn_scalar",
                                "attn_logit_softcapping", "final_logit_softcapping"), NUMBER),
               **dict.fromkeys(("sliding_window", "max_window_layers"), INT),
               act_key: STRING},
    )


def decoder_positions(cfg: ModelConfig) -> int:
    """RoPE has no position table: max_position_embeddings is the length the model was made for,
    except with dynamic scaling, which exists to read past it."""
    return 1 << 20 if cfg.extra.rope.kind == "dynamic" else cfg.max_positions


# --- rotary positions ---------------------------------------------------------------------------

def inverse_frequencies(rope: Rope, head_dim: int, max_positions: int, seq_len: int | None = None) -> torch.Tensor:
    """(head_dim / 2,) float32 inverse frequencies, by transformers' formulas and float32 operations.
    `seq_len` matters for dynamic scaling only."""
    dim = head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if rope.kind == "dynamic" and seq_len is not None and seq_len > max_positions:
        # NTK-aware: the base grows with the length past max_position_embeddings (float32 tensors)
        length = torch.tensor(seq_len)
        base = rope.theta * ((rope.factor * length / max_positions) - (rope.factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (base ** exponents)
    inv = 1.0 / (rope.theta ** exponents)
    if rope.kind == "linear":
        return inv / rope.factor
    if rope.kind == "llama3":
        low_wavelen = rope.original_max_positions / rope.low_freq_factor
        high_wavelen = rope.original_max_positions / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / rope.factor, inv)  # long wavelengths: divided by factor
        smooth = (rope.original_max_positions / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled  # in between: interpolated
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    return inv


class Rotary:
    """cos and sin tables for a batch, in the activations' dtype; nothing kept on the model (it is
    built on the meta device), the frequencies cached per device and length."""

    def __init__(self, rope: Rope, head_dim: int, max_positions: int):
        self.rope, self.head_dim, self.max_positions = rope, head_dim, max_positions
        self._cache: dict = {}

    def inverse(self, device: torch.device, seq_len: int | None = None) -> torch.Tensor:
        if self.rope.kind != "dynamic" or seq_len is None or seq_len <= self.max_positions:
            seq_len = None
        key = (str(device), seq_len)
        if key not in self._cache:
            inv = inverse_frequencies(self.rope, self.head_dim, self.max_positions, seq_len)
            self._cache[key] = inv.to(device)
        return self._cache[key]

    def tables(self, batch: AttentionBatch, max_len: int, dtype: torch.dtype, device: torch.device):
        """(cos, sin) shaped to multiply (B, T, heads, hd) padded or (N, heads, hd) packed q and k."""
        per_sequence = self.rope.kind == "dynamic" and int(batch.lengths.max()) > self.max_positions
        if batch.packed:
            positions = batch.positions.float()
            if per_sequence:
                inv = self._per_sequence(batch, device).repeat_interleave(batch.lengths, dim=0,
                                                                          output_size=batch.token_count)
            else:
                inv = self.inverse(device)
            freqs = positions[:, None] * inv  # (N, hd/2)
        else:
            positions = torch.arange(max_len, device=device).float()
            if per_sequence:
                freqs = positions[None, :, None] * self._per_sequence(batch, device)[:, None, :]  # (B, T, hd/2)
            else:
                freqs = (positions[:, None] * self.inverse(device))[None]  # (1, T, hd/2)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
        return cos.unsqueeze(-2), sin.unsqueeze(-2)  # a heads axis to broadcast over

    def _per_sequence(self, batch: AttentionBatch, device: torch.device) -> torch.Tensor:
        return torch.stack([self.inverse(device, n) for n in batch.lengths.tolist()])  # (B, hd/2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the half-split layout (the first half of each head pairs with the second)."""
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


# --- layers ---------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in float32, then cast back before the weight (Llama)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class GemmaRMSNorm(RMSNorm):
    """Gemma's: the weight is stored as an offset from 1, and applied in float32 before the cast."""

    def __init__(self, size: int, eps: float):
        super().__init__(size, eps)
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).to(x.dtype)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with silu, GeGLU with tanh GELU (Gemma 2)."""

    def __init__(self, cfg: ModelConfig, bias: bool):
        super().__init__()
        C, inner = cfg.hidden_size, cfg.intermediate_size
        self.gate = nn.Linear(C, inner, bias=bias)
        self.up = nn.Linear(C, inner, bias=bias)
        self.down = nn.Linear(inner, C, bias=bias)
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


@dataclass
class Context:
    """What every layer of one forward pass shares: the batch, the RoPE tables, the masks by window."""

    batch: AttentionBatch
    cos: torch.Tensor
    sin: torch.Tensor
    masks: dict

    def mask(self, window: int | None) -> torch.Tensor:
        """(B|1, 1, T, T) bool for the padded layout: causal, key padding, and the window."""
        if window not in self.masks:
            mask = self.batch.key_mask()  # causal & key padding
            if window is not None:
                T = self.batch.max_len
                positions = torch.arange(T, device=self.batch.lengths.device)
                mask = mask & (positions[None, :] > positions[:, None] - window)
                # a padding query may now see no key at all, and its NaN would reach the real tokens through
                # 0 * NaN in the next layer: padding queries see every key (their outputs are never read)
                padding = positions[None, :] >= self.batch.lengths[:, None]  # (B, T)
                mask = mask | padding[:, None, :, None]
            self.masks[window] = mask
        return self.masks[window]


def _window_mask(length: int, window: int | None, device) -> torch.Tensor:
    positions = torch.arange(length, device=device)
    mask = positions[None, :] <= positions[:, None]
    if window is not None:
        mask &= positions[None, :] > positions[:, None] - window
    return mask


def _explicit_attention(q, k, v, mask, scale: float, softcap: float | None, dropout: float) -> torch.Tensor:
    """softmax(cap(q k^T * scale) masked) v, written out (soft-capping, the eager backend)."""
    groups = q.size(1) // k.size(1)
    if groups > 1:  # query head h reads K/V head h // groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout:
        probs = F.dropout(probs, dropout)
    return probs @ v


def decoder_attend(q, k, v, ctx: Context, scale: float, window: int | None = None, softcap: float | None = None,
                   dropout: float = 0.0) -> torch.Tensor:
    """Causal attention of (B, H, T, hd) padded or (N, H, hd) packed queries over keys and values
    with H or fewer (grouped) heads; the output has the queries' shape."""
    batch = ctx.batch
    heads = -2 if batch.packed else -3
    gqa = q.size(heads) != k.size(heads)
    # a window at least as long as the longest sequence hides nothing: plain causal attention
    plain = softcap is None and (window is None or window >= batch.max_len)
    if batch.backend == "triton" and plain:
        if dropout:
            raise MinirmError("the triton attention kernel has no attention dropout; set attention_dropout to 0 "
                              "or use --attention sdpa")
        from minirm.kernels.attention import varlen_attention  # imported lazily: only this backend needs Triton

        # (N, H, hd) queries over (N, Hk, hd) keys and values, read in place by the kernel
        return varlen_attention(q, k, v, batch.cu_seqlens, batch.max_len, causal=True, softmax_scale=scale)
    if not batch.packed:
        mask = ctx.mask(window)
        if softcap is None and batch.backend == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale,
                                                  enable_gqa=gqa)
        return _explicit_attention(q, k, v, mask, scale, softcap, dropout)
    out = []  # packed, and triton where the kernel cannot serve the layer (a window, soft-capping)
    for start, count, length in batch.runs:  # each run of equal lengths needs no padding mask
        span = slice(start, start + count * length)
        qs, ks, vs = (t[span].view(count, length, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
        if softcap is None and window is None:
            y = F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout, scale=scale, is_causal=True,
                                               enable_gqa=gqa)
        elif softcap is None:
            y = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=_window_mask(length, window, q.device),
                                               dropout_p=dropout, scale=scale, enable_gqa=gqa)
        else:
            y = _explicit_attention(qs, ks, vs, _window_mask(length, window, q.device), scale, softcap, dropout)
        out.append(y.transpose(1, 2).reshape(count * length, *q.shape[1:]))
    return out[0] if len(out) == 1 else torch.cat(out)


class DecoderAttention(nn.Module):
    """q, k, v projections (K/V with fewer heads), RoPE, causal attention, output projection."""

    def __init__(self, cfg: ModelConfig, window: int | None, norm: type = RMSNorm):
        super().__init__()
        opts: DecoderOptions = cfg.extra
        C, H, Hk, D = cfg.hidden_size, cfg.num_heads, opts.num_kv_heads, opts.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = H, Hk, D
        self.q = nn.Linear(C, H * D, bias=opts.qkv_bias)
        self.k = nn.Linear(C, Hk * D, bias=opts.qkv_bias)
        self.v = nn.Linear(C, Hk * D, bias=opts.qkv_bias)
        self.o = nn.Linear(H * D, C, bias=opts.o_bias)
        if opts.qk_norm:
            self.q_norm, self.k_norm = norm(D, cfg.layer_norm_eps), norm(D, cfg.layer_norm_eps)
        self.qk_norm = opts.qk_norm
        self.scale = opts.softmax_scale if opts.softmax_scale is not None else D ** -0.5
        self.softcap = opts.attn_softcap
        self.window = window
        self.dropout = cfg.attention_dropout

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        lead = x.shape[:-1]  # (B, T) or (N,)
        q = self.q(x).view(*lead, self.num_heads, self.head_dim)
        k = self.k(x).view(*lead, self.num_kv_heads, self.head_dim)
        v = self.v(x).view(*lead, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, ctx.cos, ctx.sin), rotate(k, ctx.cos, ctx.sin)
        if not ctx.batch.packed:  # (B, T, heads, hd) -> (B, heads, T, hd)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        y = decoder_attend(q, k, v, ctx, self.scale, self.window, self.softcap, dropout)
        if not ctx.batch.packed:
            y = y.transpose(1, 2)
        return self.o(y.reshape(*lead, -1))


class DecoderLayer(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)) (Llama, Mistral, Qwen2, Qwen3)."""

    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        C, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.attn_norm = RMSNorm(C, eps)
        self.attn = DecoderAttention(cfg, window)
        self.mlp_norm = RMSNorm(C, eps)
        self.mlp = GatedMLP(cfg, cfg.extra.mlp_bias)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), ctx)
        return x + self.mlp(self.mlp_norm(x))


class DecoderRewardModel(RewardModel):
    """Embeddings, the layers, a final norm and the `score` head at each sequence's last real token."""

    causal = True
    # the varlen kernel computes grouped-query causal attention; windowed layers fall back (decoder_attend)
    supports_triton = True
    head_modules = ("final_norm", "score")  # the final norm runs on the gathered tokens only
    layer_type: type = DecoderLayer
    norm_type: type = RMSNorm

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        opts: DecoderOptions = cfg.extra
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(self.layer_type(cfg, opts.windows[i]) for i in range(cfg.num_layers))
        self.final_norm = self.norm_type(cfg.hidden_size, cfg.layer_norm_eps)
        self.score = nn.Linear(cfg.hidden_size, cfg.num_labels, bias=False)
        self.rotary = Rotary(opts.rope, opts.head_dim, cfg.max_positions)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(input_ids)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, num_labels) logits at each sequence's last token."""
        T = input_ids.size(1)
        batch = self.attention_batch(lengths, T, backend)
        x = self.embed(input_ids)  # (B, T, C); right padding keeps every real token at its position 0..len-1
        if batch.packed:
            x = batch.pack(x)  # (N, C)
        cos, sin = self.rotary.tables(batch, T, x.dtype, x.device)
        ctx = Context(batch, cos, sin, {})
        for layer in self.layers:
            x = run_layer(layer, x, ctx, checkpointing=self.gradient_checkpointing)
        last = gather_tokens(x, batch.lengths - 1, batch)  # (B, C)
        return self.score(self.final_norm(last))


# the checkpoint keys of every decoder family: model.* (a ForSequenceClassification or ForCausalLM)
def weight_map(layer: dict) -> dict:
    """HF module path -> ours: the family's layer entries between the shared embeddings, norm and head."""
    return {"model.embed_tokens": "tokens",
            **{f"model.layers.{{}}.{hf}": f"layers.{{}}.{ours}" for hf, ours in layer.items()},
            "model.norm": "final_norm",
            "score": "score"}


ATTENTION_KEYS = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
                  "self_attn.o_proj": "attn.o", "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up",
                  "mlp.down_proj": "mlp.down", "input_layernorm": "attn_norm"}
# what transformers drops on load: the LM head of a ForCausalLM checkpoint (tied or not), and the
# rotary inverse frequencies that older checkpoints saved as a buffer
IGNORE = (r"lm_head\..*", r".*\.rotary_emb\.inv_freq")
# a bare base model (LlamaModel.save_pretrained) has no "model." prefix
RENAMES = {p: "model." + p for p in ("embed_tokens.", "layers.", "norm.")}
