"""The shape of a model family's registry entry: everything minirm knows about one family.

Each family's entry is a `Family`, defined beside its model (bert.py holds bert, roberta and
bert-reward; gpt2.py and deberta.py one each) and listed in `minirm.models.FAMILIES`. The
rest of minirm never names a family: it looks the entry up by `cfg.family` and asks it.

An entry says
- what it is built for: the transformers class written in config.json ("architectures")
  and the model_type read when that names a base model;
- how its config.json reads (`ConfigFields`: names, defaults, JSON types) and which
  options only it has (`options`, hung on ModelConfig as `cfg.extra`);
- how checkpoint keys map to the model's parameters (`weight_map`, `ignore`, `renames`);
- how text goes in: a (prompt, response) pair or one formatted text, the default
  truncation side, how many positions a text may use, which tokenizer files it rebuilds;
- how logits become a score, and whether it takes --alpha;
- the tokenizer repo it falls back to, and the Hub aliases of its published models.

This module imports nothing of minirm's models or config, so every model file can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: config.py imports the registry, never the other way round
    import torch

    from ..config import ModelConfig

# the JSON type a config.json field must have (checked before any field is read)
POSITIVE_INT, INT, NUMBER, STRING = "a positive integer", "an integer", "a non-negative number", "a string"
INTS = "an integer or a list of integers"  # eos_token_id: Llama 3 lists several


@dataclass(frozen=True)
class ConfigFields:
    """How one family's config.json fills ModelConfig's shared fields."""

    names: dict[str, str]  # our field -> its config.json key
    defaults: dict[str, Any]  # our field -> its value when the key is absent (a field with no key: always)
    types: dict[str, str] = field(default_factory=dict)  # config.json key -> POSITIVE_INT | INT | NUMBER | STRING | INTS
    derive: Callable[[dict], None] | None = None  # fills fields computed from others, in place

    def read(self, raw: dict) -> dict:
        fields = {ours: raw.get(self.names[ours], default) if ours in self.names else default
                  for ours, default in self.defaults.items()}
        if self.derive is not None:
            self.derive(fields)
        return fields


@dataclass(frozen=True)
class Alias:
    """A short --model name for a published checkpoint, and what --list-models says of it."""

    name: str
    repo: str
    note: str


@dataclass(frozen=True)
class Regression:
    """A regression head that sits on another family's encoder (train's regression_head)."""

    on: tuple[str, ...]  # the families whose encoder it sits on
    described: str  # "the X head sits on a Y encoder", for the one line that refuses another encoder
    layout: Callable[[dict], None]  # rewrites a base config.json, in place, into the head's published one


def classifier_score(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """1 label: the logit; 2 labels: P(label 1) = softmax(logits)[1]. alpha is not taken."""
    if logits.size(-1) == 1:
        return logits[:, 0]
    return logits.softmax(dim=-1)[:, 1]


def scaled_score(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """The one output, times alpha (a forward argument of the published model)."""
    return logits[:, 0] * alpha


def all_positions(cfg: ModelConfig) -> int:
    return cfg.max_positions


@dataclass(frozen=True)
class Family:
    name: str  # cfg.family
    model: type  # a RewardModel subclass: built as model(cfg); declares causal and supports_triton
    architecture: str  # the transformers class of its reward model, written into config.json
    model_type: str  # config.json model_type: picks the family when "architectures" names a base model
    config: ConfigFields
    weight_map: dict  # HF module path -> our module path, or (our path, transpose?); `{}` is a layer number
    # checkpoint keys transformers itself drops on load (buffers, unused pooler, tied lm heads)
    ignore: tuple = ()
    # alternative HF key prefixes accepted on load, rewritten to the canonical one
    renames: dict = field(default_factory=dict)
    # "RewardModel" is a common remote-code class name: claim it only with this family's model_type
    architecture_needs_model_type: bool = False
    options: Callable[[dict], Any] | None = None  # config.json -> this family's own options (cfg.extra)
    check: Callable[[ModelConfig, str], None] | None = None  # one-line MinirmError for a config it cannot build
    fixed_labels: int | None = None  # outputs fixed by the head: num_labels and id2label are not read or written
    pair_input: bool = True  # (prompt, response) as a tokenizer pair; False: one formatted text
    # a conversation is formatted by the tokenizer's chat template (text/templates.py); False: GPT-2's
    # Pygmalion format where pair_input is False
    chat_template: bool = False
    truncation_side: str = "right"  # the default; GPT-2 keeps the end of the conversation
    usable_positions: Callable[[ModelConfig], int] = all_positions  # the longest input it can read
    # --max-length when none is given (never beyond usable_positions); None: the model's max_positions
    default_max_length: int | None = 512
    # scores in the checkpoint's dtype when that is bf16 (the LLMs, published in bf16); otherwise float32
    bf16_when_published: bool = False
    roberta_specials: bool = False  # vocab.json + merges.txt rebuild with RoBERTa's <s> </s> specials
    spm: bool = False  # a bare spm.model rebuilds as DeBERTa-v2's tokenizer
    score: Callable[[torch.Tensor, float], torch.Tensor] = classifier_score  # logits, alpha -> scores
    takes_alpha: bool = False
    base_tokenizer: str | None = None  # the repo whose tokenizer it falls back to when a checkpoint has none
    reward_fields: Callable[[dict], None] | None = None  # fills what a reward config.json needs, in place
    regression: Regression | None = None
    aliases: tuple[Alias, ...] = ()

    @property
    def supports_triton(self) -> bool:
        return self.model.supports_triton

    def build(self, cfg: ModelConfig):
        return self.model(cfg)
