"""BERT and RoBERTa encoders with their reward heads, top to bottom, and the registry
entries of the three families built on them: bert, roberta and bert-reward (the older Aira
regression model).

One encoder serves all three. The only differences are where RoBERTa's position ids start
(padding_idx + 1, counting only non-pad tokens, as fairseq did) and which head sits on
top. The encoder is post-LayerNorm: each sublayer's output is added to its input and then
normalised.

Inputs are right-padded (B, T) token ids with each sequence's real length; token types
are all 0, as the reward model cards call the tokenizer with return_token_type_ids=False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..attention import AttentionBatch
from ..errors import MinirmError
from .common import MultiHeadAttention, RewardModel, activation, gather_tokens, run_layer
from .heads import BertHead, RegressionHead, RobertaHead
from .registry import INT, NUMBER, POSITIVE_INT, STRING, Alias, ConfigFields, Family, Regression, scaled_score

if TYPE_CHECKING:
    from ..config import ModelConfig


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
    def __init__(self, cfg: ModelConfig, fairseq_positions: bool = False):
        super().__init__()
        self.cfg = cfg
        self.fairseq_positions = fairseq_positions
        self.embed = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.fairseq_positions:
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

class BertRewardModel(RewardModel):
    """BERT: encoder, then a head on the first token ([CLS]). RoBERTa and the Aira regression
    model are the same with another head (and, for RoBERTa, fairseq's position numbering)."""

    causal = False
    supports_triton = True
    head_type: type[nn.Module] = BertHead
    fairseq_positions = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = BertEncoder(cfg, self.fairseq_positions)
        self.head = self.head_type(cfg)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, num_labels) logits."""
        batch = self.attention_batch(lengths, input_ids.size(1), backend)
        hidden = self.encoder(input_ids, batch, self.gradient_checkpointing)
        first = torch.zeros_like(batch.lengths)
        return self.head(gather_tokens(hidden, first, batch))


class RobertaRewardModel(BertRewardModel):
    head_type = RobertaHead
    fairseq_positions = True  # real tokens count up from padding_idx + 1


class AiraRewardModel(BertRewardModel):
    head_type = RegressionHead


# --- registry entries ----------------------------------------------------------------------

# config.json of the BERT-like families -> ours (DeBERTa-v2 reads the same names)
ENCODER_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "classifier_dropout": "classifier_dropout",
    "pad_token_id": "pad_token_id",
}
ENCODER_TYPES = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"), POSITIVE_INT),
    "type_vocab_size": INT,
    **dict.fromkeys(("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
                    NUMBER),
    "hidden_act": STRING,
}


def encoder_config(extra_types: dict | None = None, **defaults) -> ConfigFields:
    """The BERT-like config.json, with `defaults` for the sizes it leaves out."""
    return ConfigFields(ENCODER_NAMES, dict(defaults, dropout=0.1, attention_dropout=0.1, classifier_dropout=None,
                                            pad_token_id=0), {**ENCODER_TYPES, **(extra_types or {})})


# what fills a field config.json leaves out: bert-base-cased (the Aira config only names its base model)
BERT_BASE = dict(vocab_size=28996, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                 max_positions=512, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)


def bert_map(prefix: str) -> dict:
    p = prefix
    return {
        f"{p}embeddings.word_embeddings": "encoder.embed.tokens",
        f"{p}embeddings.position_embeddings": "encoder.embed.positions",
        f"{p}embeddings.token_type_embeddings": "encoder.embed.token_types",
        f"{p}embeddings.LayerNorm": "encoder.embed.norm",
        f"{p}encoder.layer.{{}}.attention.self.query": "encoder.layers.{}.attn.q",
        f"{p}encoder.layer.{{}}.attention.self.key": "encoder.layers.{}.attn.k",
        f"{p}encoder.layer.{{}}.attention.self.value": "encoder.layers.{}.attn.v",
        f"{p}encoder.layer.{{}}.attention.output.dense": "encoder.layers.{}.attn.o",
        f"{p}encoder.layer.{{}}.attention.output.LayerNorm": "encoder.layers.{}.attn_norm",
        f"{p}encoder.layer.{{}}.intermediate.dense": "encoder.layers.{}.up",
        f"{p}encoder.layer.{{}}.output.dense": "encoder.layers.{}.down",
        f"{p}encoder.layer.{{}}.output.LayerNorm": "encoder.layers.{}.mlp_norm",
    }


BUFFERS = (r".*\.position_ids", r".*\.token_type_ids")


def bare(prefix: str) -> dict:
    """Checkpoints saved from the bare encoder (BertModel, as sentence-transformers ships them)
    have no "bert." / "roberta." prefix: read their keys as if they had it."""
    return {p: prefix + p for p in ("embeddings.", "encoder.", "pooler.")}


BERT = Family(
    name="bert",
    model=BertRewardModel,
    architecture="BertForSequenceClassification",
    model_type="bert",
    config=encoder_config(**BERT_BASE),
    weight_map={**bert_map("bert."), "bert.pooler.dense": "head.pooler", "classifier": "head.classifier"},
    ignore=BUFFERS,
    renames=bare("bert."),
    base_tokenizer="google-bert/bert-base-cased",
    aliases=(Alias("aira-bert", "nicholasKluge/RewardModel",
                   "BERT-base-cased, 1 label; score = logit of (prompt, response)"),),
)


def fairseq_positions(cfg: ModelConfig) -> int:
    """Positions 0..pad are reserved by fairseq's numbering."""
    return cfg.max_positions - (cfg.pad_token_id or 0) - 1


ROBERTA = Family(
    name="roberta",
    model=RobertaRewardModel,
    architecture="RobertaForSequenceClassification",
    model_type="roberta",
    config=encoder_config(**BERT_BASE),
    weight_map={**bert_map("roberta."), "classifier.dense": "head.dense", "classifier.out_proj": "head.out_proj"},
    # RobertaForSequenceClassification has no pooler; transformers drops one if present
    ignore=BUFFERS + (r"roberta\.pooler\..*",),
    renames=bare("roberta."),
    usable_positions=fairseq_positions,
    roberta_specials=True,
    base_tokenizer="FacebookAI/roberta-base",
    aliases=(Alias("aux-roberta", "nicholasKluge/Aux-RewardModel",
                   "RoBERTa-base, 1 label; score = logit of (prompt, response)"),),
)


@dataclass(frozen=True)
class AiraOptions:
    """The older Aira regression head: hidden -> linear_layer -> linear_layer -> 1. Its alpha is a
    scoring option, as it was a forward argument of the published model: config.json has none."""

    linear_layer: int = 128

    @classmethod
    def from_config(cls, raw: dict) -> "AiraOptions":
        return cls(linear_layer=raw.get("linear_layer", 128))


def check_aira(cfg: ModelConfig, source: str) -> None:
    output = cfg.raw.get("linear_layer_output", 1)
    if output != 1:
        raise MinirmError(f"{source}: linear_layer_output is {output!r}, but a reward is one number; "
                          "this regression model must have linear_layer_output 1")


# the published config.json points transformers at the remote code through this
AIRA_AUTO_MAP = {"AutoConfig": "reward_model_config.RewardModelConfig", "AutoModel": "reward_model.RewardModel"}


def aira_layout(raw: dict) -> None:
    """A BERT config.json -> the published Aira RewardModel's fields, auto_map included, so that the
    original remote code (reward_model.py, reward_model_config.py) loads what minirm saves."""
    raw.update(model_type="bert-reward", linear_layer=raw.get("linear_layer", 128), linear_layer_output=1,
               auto_map=dict(AIRA_AUTO_MAP))
    raw.pop("num_labels", None)


# the older Aira RewardModel (remote code reward_model.py): its own module names, not a
# transformers class; the BertModel pooler is saved with it though the forward never uses it
BERT_REWARD = Family(
    name="bert-reward",
    model=AiraRewardModel,
    architecture="RewardModel",
    architecture_needs_model_type=True,
    model_type="bert-reward",
    config=encoder_config({"linear_layer": POSITIVE_INT, "linear_layer_output": INT}, **BERT_BASE),
    weight_map={**bert_map("bert."), "bert.pooler.dense": "head.pooler",
                "cls_layer1": "head.net.0", "ff1": "head.net.2", "ff2": "head.net.4"},
    ignore=BUFFERS,
    renames=bare("bert."),
    options=AiraOptions.from_config,
    check=check_aira,
    fixed_labels=1,
    score=scaled_score,
    takes_alpha=True,
    base_tokenizer="google-bert/bert-base-cased",
    regression=Regression(on=("bert", "bert-reward"), described="the Aira regression head sits on a BERT encoder",
                          layout=aira_layout),
)
