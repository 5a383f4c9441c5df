"""DeBERTa-v2 (and v3) with its sequence-classification head, top to bottom.

DeBERTa is a post-LayerNorm encoder like BERT. What it changes is *where position
information enters*. BERT adds an absolute position embedding to every token once, at
the input. DeBERTa (usually) does not: every attention layer instead scores how far
apart two tokens are, with a shared table of *relative* position embeddings.

Disentangled attention
----------------------
Each token keeps two kinds of information apart: its content (the hidden state) and the
relative position of one token to another. For a query token i and a key token j whose
relative distance is d = i - j, the attention score sums up to three products:

    content -> content   q_i . k_j            what BERT computes
    content -> position  q_i . Pk[d]          "c2p": does query i care about a token d away?
    position -> content  k_j . Pq[d]          "p2c": does key j care about being d away from i?

Pk and Pq are the relative-position embeddings `R` (one row per distance) projected
with a key and a query matrix: their own (pos_key_proj / pos_query_proj) or, with
share_att_key, the very projections used for the content (key_proj / query_proj).
`pos_att_type` says which of c2p and p2c are used. Each term is a dot product of two
head_dim vectors, so the whole score is divided by sqrt(head_dim * (1 + number of
relative terms)) rather than BERT's sqrt(head_dim), to keep its variance in check.

R has 2k rows, for distances -k .. k-1 (k = "attention span"). Distances beyond are
clamped to the ends. With position_buckets > 0 (DeBERTa-v3 and v2-xxlarge use 256),
distances are first squashed log-style: |d| <= k/2 stays as is, larger distances share
buckets that grow logarithmically up to max_relative_positions. So a 1,000-token
sequence still uses a 512-row table, and distant words are told apart less finely
than near ones.

How a score is computed here, per layer (row r of R holds distance r - k):
    c2p[b, h, i, j] = q_i . Pk[r]  at r = bucket(i - j) + k     q against every row, then a gather
    p2c[b, h, i, j] = Pq[r] . k_j  at r = k - bucket(j - i)     every row against k, then a gather
    scores = (q k^T + c2p + p2c) / sqrt(head_dim * (1 + terms)), padded keys masked out
The division is folded into q (and Pq) before any product, so no (T, T) tensor is ever
rescaled, and only the rows of R that the sequence's distances reach are projected and
multiplied (a 100-token batch needs 199 of xxlarge's 512).

The rest of the model
---------------------
- Embeddings: word embeddings (optionally narrower, then projected to the hidden size),
  plus absolute positions only where position_biased_input, plus token type 0 only where
  type_vocab_size > 0; LayerNorm; then every padded position is zeroed.
- The first layer's output goes through a ConvLayer where conv_kernel_size > 0: a 1-D
  convolution over the *embeddings* (n-gram features), masked, activated, added to that
  layer's output and LayerNorm'ed.
- The head is a ContextPooler on the first token ([CLS]): dense + activation, then the
  classifier. The reward is logit 0.

Half precision: transformers builds its scale factor as a float32 tensor and rounds it to
the activation dtype (sqrt(3 * 64) = 13.856 becomes 13.875 in bf16); here it stays a
Python float. Masks use the minimum of the dtype in use, and the eager softmax runs in
float32. fp32 results are unchanged; bf16 / fp16 stay finite.

Backends. Padded ("sdpa", "eager"): torch's scaled_dot_product_attention with the c2p + p2c
bias as a float mask, or the same written out. Packed, the tokens of all sequences are
concatenated right after the embeddings and nothing later touches padding:
- "packed" (the CPU default): each run of equal-length sequences gets its own (L, L) bias;
  the indices depend on i - j only, so a shorter sequence's are the top-left block of the
  longest one's, and it reads only the rows of R its distances reach.
- "triton" (the CUDA default): kernels/deberta.py, one fused kernel for the whole pack. It
  takes Pk and Pq and the distance -> row maps (`Relative.c2p_rows` / `p2c_rows`) and adds the
  relative terms tile by tile inside its online softmax: no (T, T) tensor exists, forward or
  backward.
The ConvLayer convolves each packed sequence on its own: a token's window holds zeros where a
neighbour would belong to another sequence, exactly as at the ends of an unpadded one.

The config.json fields only DeBERTa reads are `DebertaOptions` (cfg.extra); they, the
weight map and the rest of the family's registry entry (`DEBERTA_V2`) close this file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionBatch, attend, packed_attention
from ..errors import MinirmError
# the relative-position maps and the bias they give live beside the kernel that reads them
from ..kernels.deberta_reference import by_pair, relative_bias, relative_rows, rows_read
from .bert import EncoderLayer, encoder_config  # the same post-LN block as BERT, with disentangled attention inside
from .common import RewardModel, activation, gather_tokens, run_layer
from .heads import ContextPooler
from .registry import INT, POSITIVE_INT, STRING, Alias, Family

if TYPE_CHECKING:
    from ..config import ModelConfig


# --- the model -------------------------------------------------------------------------------


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, C = cfg.extra.embedding_size or cfg.hidden_size, cfg.hidden_size
        self.tokens = nn.Embedding(cfg.vocab_size, E)
        self.positions = nn.Embedding(cfg.max_positions, E) if cfg.extra.position_biased_input else None
        self.token_types = nn.Embedding(cfg.type_vocab_size, E) if cfg.type_vocab_size > 0 else None
        self.proj = nn.Linear(E, C, bias=False) if E != C else None
        self.norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.tokens(input_ids)  # (B, T, E)
        if self.positions is not None:
            x = x + self.positions(torch.arange(input_ids.size(1), device=input_ids.device))
        if self.token_types is not None:
            x = x + self.token_types.weight[0]  # every token is of type 0
        if self.proj is not None:
            x = self.proj(x)  # (B, T, C)
        x = self.norm(x)
        if token_mask is not None:  # padded positions become exact zeros (the ConvLayer reads them)
            x = x.masked_fill(~token_mask[..., None], 0.0)
        return self.dropout(x)


@dataclass
class Relative:
    """What every layer's relative terms read, built once per forward pass. The kernel reads the
    rows by distance; the (T, T) indices the other backends gather with are built on first use,
    so the triton path never holds a T x T tensor."""

    embeddings: torch.Tensor  # (n, C): the n rows of R this length reaches, LayerNorm'ed where asked
    c2p_rows: torch.Tensor  # (2T - 1,) int32: row of R that c2p reads for query i and key j, at i - j + T - 1
    p2c_rows: torch.Tensor  # (2T - 1,) int32: row of R that p2c reads for query i and key j, at i - j + T - 1
    by_length: dict = field(default_factory=dict)  # length -> `shorter(length)`, filled once per length

    @cached_property
    def c2p_index(self) -> torch.Tensor:  # (T, T): c2p_index[i, j] = c2p_rows at i - j (padded path)
        return by_pair(self.c2p_rows).long()

    @cached_property
    def p2c_index(self) -> torch.Tensor:  # (T, T): p2c_index[i, j] = p2c_rows at i - j
        return by_pair(self.p2c_rows).long()

    def shorter(self, length: int) -> tuple[slice, torch.Tensor, torch.Tensor]:
        """The rows of R a `length`-token sequence reads, and its two (length, length) indices into
        them. Both depend on i - j only: its distances are the middle 2 * length - 1 of the maps."""
        if length not in self.by_length:
            middle = (self.c2p_rows.numel() + 1) // 2 - 1  # distance 0
            c2p, p2c = (rows[middle - length + 1 : middle + length] for rows in (self.c2p_rows, self.p2c_rows))
            rows = rows_read(c2p, p2c)
            self.by_length[length] = rows, by_pair(c2p - rows.start).long(), by_pair(p2c - rows.start).long()
        return self.by_length[length]


class DisentangledAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(C, C)
        self.k = nn.Linear(C, C)
        self.v = nn.Linear(C, C)
        self.o = nn.Linear(C, C)
        opts = cfg.extra  # DebertaOptions
        self.relative = opts.relative_attention
        self.c2p = "c2p" in opts.pos_att_type
        self.p2c = "p2c" in opts.pos_att_type
        self.share_att_key = opts.share_att_key
        if self.relative and not self.share_att_key:
            self.pos_k = nn.Linear(C, C) if self.c2p else None
            self.pos_q = nn.Linear(C, C) if self.p2c else None
        # transformers counts the relative terms named in pos_att_type even where
        # relative_attention is off (and then adds none of them); so do we
        self.scale = 1.0 / math.sqrt(cfg.head_dim * (1 + self.c2p + self.p2c))
        self.pos_dropout = nn.Dropout(cfg.dropout)
        self.attn_dropout = cfg.attention_dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, C) -> (..., nh, T, hs)"""
        *lead, T, C = x.shape
        return x.view(*lead, T, self.num_heads, C // self.num_heads).transpose(-3, -2)

    def relative_keys(self, rel: Relative) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """R projected to the relative keys (c2p) and queries (p2c), (nh, n, hs) each, once per layer;
        the queries are scaled, as q is."""
        R = self.pos_dropout(rel.embeddings)  # (n, C)
        pos_k = self.heads(self.k(R) if self.share_att_key else self.pos_k(R)) if self.c2p else None
        pos_q = self.heads(self.q(R) if self.share_att_key else self.pos_q(R)) * self.scale if self.p2c else None
        return pos_k, pos_q

    relative_bias = staticmethod(relative_bias)

    def forward(self, x, batch: AttentionBatch, rel: Relative | None) -> torch.Tensor:
        """(B, T, C) padded or (N, C) packed -> the same shape."""
        dropout = self.attn_dropout if self.training else 0.0
        relative = rel is not None and (self.c2p or self.p2c)
        pos_k, pos_q = self.relative_keys(rel) if relative else (None, None)
        if batch.packed:
            return self.o(self.packed(x, batch, rel if relative else None, pos_k, pos_q, dropout))
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))  # (B, nh, T, hs)
        # fold 1 / sqrt(head_dim * (1 + terms)) into the queries: then q k^T and c2p come out
        # scaled, and no (T, T) tensor is ever rescaled (transformers divides each term instead)
        q = q * self.scale
        bias = self.relative_bias(q, k, pos_k, pos_q, rel.c2p_index, rel.p2c_index) if relative else None
        key_mask = batch.key_mask()  # (B, 1, 1, T) bool, True at real keys; None when nothing is padded
        if batch.backend == "eager":
            scores = q @ k.transpose(-1, -2)  # (B, nh, T, T)
            if bias is not None:
                scores += bias
            if key_mask is not None:  # (B, 1, 1, T) bool, True at real keys
                scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
            probs = F.dropout(scores.float().softmax(dim=-1).to(v.dtype), dropout, self.training)
            y = probs @ v
        else:
            mask = key_mask
            if bias is not None:  # one float mask: the relative terms, and the dtype's minimum at padding
                mask = bias if key_mask is None else bias.masked_fill_(~key_mask, torch.finfo(bias.dtype).min)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=1.0)
        B, nh, T, hs = y.shape
        return self.o(y.transpose(1, 2).reshape(B, T, nh * hs))

    def packed(self, x, batch: AttentionBatch, rel: Relative | None, pos_k, pos_q, dropout: float) -> torch.Tensor:
        """(N, C) packed tokens -> (N, C), before the output projection. "triton": the fused kernel
        (kernels/deberta.py) over the whole pack. "packed": the bias is built per run of
        equal-length sequences, from the rows of R and the (L, L) indices their length reaches;
        there is no padding, so no mask."""
        N, C = x.shape
        q, k, v = (t.view(N, self.num_heads, -1) for t in (self.q(x) * self.scale, self.k(x), self.v(x)))
        if batch.backend == "triton" and rel is not None:
            from minirm.kernels.deberta import disentangled_attention  # only the triton backend needs Triton

            # q and pos_q arrive scaled, so the kernel's own scale is 1; its dropout draws its seed
            # from torch's CPU generator, which activation checkpointing replays
            y = disentangled_attention(q, k, v, batch.cu_seqlens, batch.max_len, pos_k, pos_q, rel.c2p_rows,
                                       rel.p2c_rows, softmax_scale=1.0, dropout_p=dropout)
            return y.reshape(N, C)
        if batch.backend == "triton":  # no relative term: the plain varlen kernel
            return attend(q, k, v, batch, scale=1.0, dropout=dropout).reshape(N, C)

        def bias(qs, ks, length):  # qs, ks: (count, nh, L, hs)
            rows, c2p_index, p2c_index = rel.shorter(length)
            return self.relative_bias(qs, ks, None if pos_k is None else pos_k[:, rows],
                                      None if pos_q is None else pos_q[:, rows], c2p_index, p2c_index)

        y = packed_attention(q, k, v, batch, scale=1.0, dropout=dropout, bias=None if rel is None else bias)
        return y.reshape(N, C)


class ConvLayer(nn.Module):
    """n-gram features of the embeddings, merged into the first layer's output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, K = cfg.hidden_size, cfg.extra.conv_kernel_size
        if K % 2 == 0:  # transformers pads (K - 1) // 2 per side: an even kernel shortens the sequence
            raise MinirmError(f"conv_kernel_size {K} in config.json must be odd")
        self.conv = nn.Conv1d(C, C, K, padding=(K - 1) // 2, groups=cfg.extra.conv_groups)
        self.act = activation(cfg.extra.conv_act)
        self.norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, embedded, layer_out, token_mask, batch: AttentionBatch) -> torch.Tensor:
        """embedded and layer_out: (B, T, C) padded, or (N, C) packed."""
        if batch.packed:
            return self.norm(layer_out + self.act(self.dropout(self.packed(embedded, batch))))
        # embedded is zero at padded positions, so real tokens next to padding see zeros,
        # as they would at the true end of an unpadded sequence
        out = self.conv(embedded.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        if token_mask is not None:
            out = out.masked_fill(~token_mask[..., None], 0.0)
        out = self.norm(layer_out + self.act(self.dropout(out)))
        if token_mask is not None:
            out = out.masked_fill(~token_mask[..., None], 0.0)
        return out

    def packed(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        """The same convolution on (N, C) packed tokens, each sequence on its own: token t's window
        holds its K neighbours, with zeros where a neighbour would belong to another sequence, as
        at the ends of an unpadded sequence; then one conv1d over windows of exactly K."""
        K = self.conv.kernel_size[0]
        half = (K - 1) // 2
        windows = F.pad(x, (0, 0, half, half)).unfold(0, K, 1)  # (N, C, K): windows[t, :, w] = x[t + w - half]
        position = batch.positions[:, None] + torch.arange(-half, half + 1, device=x.device)  # (N, K) in-sequence
        inside = (position >= 0) & (position < batch.token_lengths[:, None])
        out = F.conv1d(windows * inside[:, None, :].to(x.dtype), self.conv.weight, self.conv.bias,
                       groups=self.conv.groups)  # (N, C, 1)
        return out.squeeze(-1)


class DebertaEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg, DisentangledAttention(cfg)) for _ in range(cfg.num_layers))
        # max_relative_positions < 1 means "as many as there are absolute positions"
        opts = cfg.extra
        self.max_distance = opts.max_relative_positions if opts.max_relative_positions >= 1 else cfg.max_positions
        self.buckets = opts.position_buckets
        if opts.relative_attention:
            span = self.buckets if self.buckets > 0 else self.max_distance
            self.rel_embeddings = nn.Embedding(2 * span, cfg.hidden_size)  # R: distances -span .. span-1
        norms = [n.strip() for n in opts.norm_rel_ebd.split("|")]
        self.rel_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if "layer_norm" in norms else None
        self.conv = ConvLayer(cfg) if opts.conv_kernel_size > 0 else None

    def relative(self, T: int, device) -> Relative:
        R = self.rel_embeddings.weight  # (2span, C), shared by every layer
        span = R.size(0) // 2
        c2p_rows, p2c_rows = relative_rows(T, self.buckets, self.max_distance, span, device)
        # a sequence shorter than the table reads only the rows of its own distances: keep
        # just those (T = 100 uses 199 of xxlarge's 512), so each layer projects and
        # multiplies fewer. Every score is the same dot product as with the whole table.
        rows = rows_read(c2p_rows, p2c_rows)
        R = R[rows]
        if self.rel_norm is not None:
            R = self.rel_norm(R)  # row by row, so normalising the kept rows is the same
        c2p_rows, p2c_rows = (c2p_rows - rows.start).int(), (p2c_rows - rows.start).int()
        return Relative(R, c2p_rows, p2c_rows)

    def forward(self, input_ids: torch.Tensor, batch: AttentionBatch, checkpointing: bool = False) -> torch.Tensor:
        T = input_ids.size(1)
        padded = bool((batch.lengths < T).any())
        token_mask = batch.token_mask if padded else None  # (B, T) True at real tokens
        x = self.embed(input_ids, token_mask)  # (B, T, C)
        # the relative terms of the longest sequence; a shorter one reads a part of them
        rel = self.relative(T, input_ids.device) if self.cfg.extra.relative_attention else None
        if batch.packed:
            x = batch.pack(x)  # (N, C): from here on no op touches a pad token
        embedded = x  # what the ConvLayer convolves
        for i, layer in enumerate(self.layers):
            x = run_layer(layer, x, batch, rel, checkpointing=checkpointing)
            if i == 0 and self.conv is not None:
                x = self.conv(embedded, x, token_mask, batch)
        return x


class DebertaRewardModel(RewardModel):
    """DeBERTa-v2 encoder, then a ContextPooler head on the first token."""

    causal = False
    supports_triton = True  # kernels/deberta.py: the relative terms fused into the varlen kernel

    @staticmethod
    def kernel_dropout(cfg) -> bool:
        """kernels/deberta.py does attention dropout; a config without relative terms runs the
        plain varlen kernel, which does not."""
        return cfg.extra.relative_attention and bool(cfg.extra.pos_att_type)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        head_size = cfg.raw.get("attention_head_size")
        if head_size is not None and head_size * cfg.num_heads != cfg.hidden_size:
            raise MinirmError(
                f"attention_head_size {head_size} x {cfg.num_heads} heads != hidden size {cfg.hidden_size}; "
                "minirm supports DeBERTa models whose heads add up to the hidden size"
            )
        self.cfg = cfg
        self.encoder = DebertaEncoder(cfg)
        self.head = ContextPooler(cfg)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, num_labels) logits."""
        batch = self.attention_batch(lengths, input_ids.size(1), backend)
        hidden = self.encoder(input_ids, batch, self.gradient_checkpointing)  # (B, T, C) or (N, C)
        return self.head(gather_tokens(hidden, torch.zeros_like(batch.lengths), batch))


# --- Hugging Face names ----------------------------------------------------------------------

_LAYER = "deberta.encoder.layer.{}."
WEIGHT_MAP = {
    "deberta.embeddings.word_embeddings": "encoder.embed.tokens",
    "deberta.embeddings.position_embeddings": "encoder.embed.positions",
    "deberta.embeddings.token_type_embeddings": "encoder.embed.token_types",
    "deberta.embeddings.embed_proj": "encoder.embed.proj",
    "deberta.embeddings.LayerNorm": "encoder.embed.norm",
    _LAYER + "attention.self.query_proj": "encoder.layers.{}.attn.q",
    _LAYER + "attention.self.key_proj": "encoder.layers.{}.attn.k",
    _LAYER + "attention.self.value_proj": "encoder.layers.{}.attn.v",
    _LAYER + "attention.self.pos_key_proj": "encoder.layers.{}.attn.pos_k",
    _LAYER + "attention.self.pos_query_proj": "encoder.layers.{}.attn.pos_q",
    _LAYER + "attention.output.dense": "encoder.layers.{}.attn.o",
    _LAYER + "attention.output.LayerNorm": "encoder.layers.{}.attn_norm",
    _LAYER + "intermediate.dense": "encoder.layers.{}.up",
    _LAYER + "output.dense": "encoder.layers.{}.down",
    _LAYER + "output.LayerNorm": "encoder.layers.{}.mlp_norm",
    "deberta.encoder.rel_embeddings": "encoder.rel_embeddings",
    "deberta.encoder.LayerNorm": "encoder.rel_norm",
    "deberta.encoder.conv.conv": "encoder.conv.conv",
    "deberta.encoder.conv.LayerNorm": "encoder.conv.norm",
    "pooler.dense": "head.dense",
    "classifier": "head.classifier",
}



@dataclass(frozen=True)
class DebertaOptions:
    """The config.json fields only DeBERTa-v2 reads (cfg.extra), with DebertaV2Config's defaults."""

    relative_attention: bool = False
    max_relative_positions: int = -1  # -1: use max_positions
    position_buckets: int = -1  # <= 0: no log bucketing
    pos_att_type: tuple[str, ...] = ()  # subset of ("c2p", "p2c")
    share_att_key: bool = False
    norm_rel_ebd: str = "none"
    position_biased_input: bool = True  # add absolute position embeddings to the input
    conv_kernel_size: int = 0  # 0: no convolution layer after the first block
    conv_act: str = "tanh"
    conv_groups: int = 1
    embedding_size: int | None = None  # DeBERTa may embed narrower than hidden, then project
    pooler_hidden_size: int | None = None
    pooler_hidden_act: str = "gelu"

    @classmethod
    def from_config(cls, raw: dict) -> "DebertaOptions":
        get = raw.get
        pos_att_type = get("pos_att_type") or ()
        if isinstance(pos_att_type, str):  # "p2c|c2p", as DebertaV2Config accepts it
            pos_att_type = [p.strip() for p in pos_att_type.lower().split("|") if p.strip()]
        return cls(
            relative_attention=bool(get("relative_attention", False)),
            max_relative_positions=get("max_relative_positions", -1),
            position_buckets=get("position_buckets", -1),
            pos_att_type=tuple(pos_att_type),
            share_att_key=bool(get("share_att_key", False)),
            norm_rel_ebd=(get("norm_rel_ebd") or "none").lower(),
            position_biased_input=bool(get("position_biased_input", True)),
            conv_kernel_size=get("conv_kernel_size", 0),
            conv_act=get("conv_act", "tanh"),
            conv_groups=get("conv_groups", 1),
            embedding_size=get("embedding_size"),
            pooler_hidden_size=get("pooler_hidden_size"),
            pooler_hidden_act=get("pooler_hidden_act", "gelu"),
        )


OPTION_TYPES = {
    "conv_groups": POSITIVE_INT,
    **dict.fromkeys(("max_relative_positions", "position_buckets", "conv_kernel_size", "embedding_size",
                     "pooler_hidden_size"), INT),
    **dict.fromkeys(("pooler_hidden_act", "conv_act", "norm_rel_ebd"), STRING),
}


def usable_positions(cfg: ModelConfig) -> int:
    if not cfg.extra.position_biased_input:
        return 1 << 20  # relative positions only: no hard limit from the embedding table
    return cfg.max_positions


DEBERTA_V2 = Family(
    name="deberta-v2",
    model=DebertaRewardModel,
    architecture="DebertaV2ForSequenceClassification",
    model_type="deberta-v2",
    # DebertaV2Config's own defaults fill what config.json leaves out
    config=encoder_config(OPTION_TYPES, vocab_size=128100, hidden_size=1536, num_layers=24, num_heads=24,
                          intermediate_size=6144, max_positions=512, type_vocab_size=0, hidden_act="gelu",
                          layer_norm_eps=1e-7),
    weight_map=WEIGHT_MAP,
    # what transformers drops silently: the old persistent position_ids buffer, and
    # position_embeddings of checkpoints whose config has position_biased_input false
    # (DebertaV2PreTrainedModel._keys_to_ignore_on_load_unexpected, matched anywhere)
    ignore=(r".*\.position_ids", r".*position_embeddings.*"),
    renames={p: "deberta." + p for p in ("embeddings.", "encoder.")},  # a bare DebertaV2Model checkpoint
    options=DebertaOptions.from_config,
    usable_positions=usable_positions,
    spm=True,
    aliases=(Alias("oa-deberta", "theblackcat102/deberta-v2-xxlarge-rm",
                   "OpenAssistant DeBERTa-v2-xxlarge (1.5B), 1 label; score = logit of (prompt, response)"),),
)
