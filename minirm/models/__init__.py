"""The model families minirm builds: one registry entry each, defined beside its model.

    bert.py     bert, roberta, bert-reward (the older Aira regression model)
    gpt2.py     gpt2
    deberta.py  deberta-v2
    llama.py    llama, mistral, qwen2 (one decoder, three config classes)
    qwen3.py    qwen3
    gemma2.py   gemma2
    decoder.py  what the decoder LLMs share: RMSNorm, RoPE, grouped-query and windowed attention
    registry.py the shape of an entry (`Family`), which every model file imports

Each entry's weight map is in the gpt-fast manner: HF module path -> our module path, `{}`
standing for a layer number, the parameter suffix (.weight / .bias) carried over. GPT-2
stores its linear layers as Conv1D, i.e. (in, out), the transpose of nn.Linear's (out, in);
those four modules are flagged `transpose`.

Adding a family: write its model file with its `Family` entry, list the entry here, and copy
a parity test (tests/test_parity.py, or tests/test_deberta.py for a family with options).
"""

from __future__ import annotations

from ..errors import MinirmError
from .bert import BERT, BERT_REWARD, ROBERTA
from .deberta import DEBERTA_V2
from .gemma2 import GEMMA2
from .gpt2 import GPT2
from .llama import LLAMA, MISTRAL, QWEN2
from .qwen3 import QWEN3
from .registry import Alias, Family

# in the order --list-models shows their aliases
FAMILIES: dict[str, Family] = {f.name: f for f in (ROBERTA, BERT, BERT_REWARD, GPT2, DEBERTA_V2, LLAMA, MISTRAL,
                                                   QWEN2, QWEN3, GEMMA2)}
MODEL_ALIASES: tuple[Alias, ...] = tuple(a for f in FAMILIES.values() for a in f.aliases)

__all__ = ["FAMILIES", "MODEL_ALIASES", "Alias", "Family", "by_architecture", "by_model_type", "regression_family",
           "supports_triton", "kernel_trains"]


def by_architecture(arch: str, model_type) -> Family | None:
    """The family built for config.json's architecture name `arch`, if any."""
    for family in FAMILIES.values():
        if family.architecture == arch and (not family.architecture_needs_model_type
                                            or model_type == family.model_type):
            return family
    return None


def by_model_type(model_type) -> Family | None:
    return next((f for f in FAMILIES.values() if f.model_type == model_type), None)


def regression_family(encoder: str) -> Family:
    """The family whose regression head sits on `encoder`'s encoder (train's regression_head)."""
    heads = [f for f in FAMILIES.values() if f.regression is not None]
    for family in heads:
        if encoder in family.regression.on:
            return family
    described = "; ".join(f.regression.described for f in heads) or "no regression head is built"
    raise MinirmError(f"{described}, not on {encoder}")


def supports_triton(family: str) -> bool:
    """Whether a Triton kernel can compute the family's attention."""
    return family not in FAMILIES or FAMILIES[family].supports_triton


def kernel_trains(cfg) -> bool:
    """Whether a Triton kernel can train this model (a ModelConfig), attention dropout included:
    DeBERTa's kernel drops probabilities itself; the varlen kernel (BERT, RoBERTa, GPT-2, and a
    DeBERTa without relative terms) has no dropout."""
    if not supports_triton(cfg.family):
        return False
    return not cfg.attention_dropout or (cfg.family in FAMILIES and FAMILIES[cfg.family].model.kernel_dropout(cfg))
