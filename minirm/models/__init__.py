"""The model families minirm builds, and how each one's Hugging Face names map onto ours.

Each family has one weight map, in the gpt-fast manner: HF module path -> our module
path, `{}` standing for a layer number, the parameter suffix (.weight / .bias) carried
over. GPT-2 stores its linear layers as Conv1D, i.e. (in, out), the transpose of
nn.Linear's (out, in); those four modules are flagged `transpose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..config import ModelConfig
from .bert import BertRewardModel
from .gpt2 import GPT2RewardModel


@dataclass(frozen=True)
class Family:
    build: Callable[[ModelConfig], nn.Module]
    weight_map: dict  # HF module path -> (our module path, transpose?)
    # checkpoint keys transformers itself drops on load (buffers, unused pooler, tied lm heads)
    ignore: tuple = ()
    # alternative HF prefixes accepted on load, rewritten to the canonical one
    aliases: dict = field(default_factory=dict)


def _bert_map(prefix: str) -> dict:
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


_BUFFERS = (r".*\.position_ids", r".*\.token_type_ids")


def bare(prefix: str) -> dict:
    """Checkpoints saved from the bare encoder (BertModel, as sentence-transformers ships them)
    have no "bert." / "roberta." prefix: read their keys as if they had it."""
    return {p: prefix + p for p in ("embeddings.", "encoder.", "pooler.")}

FAMILIES = {
    "bert": Family(
        BertRewardModel,
        {**_bert_map("bert."), "bert.pooler.dense": "head.pooler", "classifier": "head.classifier"},
        ignore=_BUFFERS,
        aliases=bare("bert."),
    ),
    "roberta": Family(
        BertRewardModel,
        {**_bert_map("roberta."), "classifier.dense": "head.dense", "classifier.out_proj": "head.out_proj"},
        # RobertaForSequenceClassification has no pooler; transformers drops one if present
        ignore=_BUFFERS + (r"roberta\.pooler\..*",),
        aliases=bare("roberta."),
    ),
    # the older Aira RewardModel (remote code reward_model.py): its own module names, not a
    # transformers class; the BertModel pooler is saved with it though the forward never uses it
    "bert-reward": Family(
        BertRewardModel,
        {**_bert_map("bert."), "bert.pooler.dense": "head.pooler",
         "cls_layer1": "head.net.0", "ff1": "head.net.2", "ff2": "head.net.4"},
        ignore=_BUFFERS,
        aliases=bare("bert."),
    ),
    "gpt2": Family(
        GPT2RewardModel,
        {
            "transformer.wte": "tokens",
            "transformer.wpe": "positions",
            "transformer.h.{}.ln_1": "layers.{}.attn_norm",
            "transformer.h.{}.attn.c_attn": ("layers.{}.attn.qkv", True),
            "transformer.h.{}.attn.c_proj": ("layers.{}.attn.o", True),
            "transformer.h.{}.ln_2": "layers.{}.mlp_norm",
            "transformer.h.{}.mlp.c_fc": ("layers.{}.up", True),
            "transformer.h.{}.mlp.c_proj": ("layers.{}.down", True),
            "transformer.ln_f": "final_norm",
            "score": "score",
        },
        ignore=(r".*\.attn\.bias", r".*\.attn\.masked_bias", r"lm_head\..*"),
        # the Hub's gpt2 base checkpoint was saved from GPT2Model: its keys have no "transformer." prefix
        aliases={p: "transformer." + p for p in ("h.", "wte.", "wpe.", "ln_f.")},
    ),
}


def supports_packed(family: str) -> bool:
    """Whether the family's attention can run on packed (padding-free) sequences."""
    return family not in FAMILIES or getattr(FAMILIES[family].build, "supports_packed", True)


def register(name: str, family: Family) -> None:
    FAMILIES[name] = family


# DeBERTa-v2 lives in its own module, which imports Family from this package: import it
# only now that Family is defined. A broken deberta.py fails loudly here, never silently.
from .deberta import FAMILY as DEBERTA_FAMILY  # noqa: E402

FAMILIES["deberta-v2"] = DEBERTA_FAMILY
