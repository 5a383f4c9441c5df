"""One config dataclass for every family, filled from a Hugging Face config.json.

The families name the same things differently (GPT-2 says n_embd where BERT says
hidden_size); `ModelConfig.from_dict` finds the family (`detect_family`) and reads the
config through its registry entry (minirm/models): the entry's ConfigFields map its
names onto one vocabulary, so the models can be read without knowing where a number came
from, and the options only that family has go to `cfg.extra` (DeBERTa's relative
attention, the Aira head's width). The original dict is kept in `raw` and written back on
save, so transformers can load what minirm saves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MinirmError
from .models import FAMILIES, Family, by_architecture, by_model_type
from .models.registry import INT, INTS, NUMBER, POSITIVE_INT, STRING

# the config.json fields every family may carry, by the JSON type each must have; each family's
# entry adds the fields it reads (ConfigFields.types)
SHARED_TYPES = {"num_labels": POSITIVE_INT, "pad_token_id": INT, "eos_token_id": INTS, "initializer_range": NUMBER,
                "model_type": STRING}
KIND_ORDER = (POSITIVE_INT, INT, INTS, NUMBER, STRING)


def field_types() -> dict[str, str]:
    """config.json key -> its JSON type, over every family: a number written as a string
    ("hidden_size": "32") is named here rather than failing deep inside the model."""
    types = dict(SHARED_TYPES)
    for family in FAMILIES.values():
        types.update(family.config.types)
    return dict(sorted(types.items(), key=lambda item: KIND_ORDER.index(item[1])))


FIELD_TYPES = field_types()


def check_field_types(raw: dict, source: str) -> None:
    """One line naming the first config.json field whose value has the wrong JSON type (null is
    taken as "not set", as transformers takes it)."""
    for key, should in FIELD_TYPES.items():
        value = raw.get(key)
        if value is None:
            continue
        is_int = _is_int(value)
        if should == POSITIVE_INT:
            ok = is_int and value > 0
        elif should == INT:
            ok = is_int
        elif should == INTS:
            ok = is_int or (isinstance(value, list) and all(map(_is_int, value)))
        elif should == NUMBER:
            ok = (is_int or isinstance(value, float)) and math.isfinite(value) and value >= 0
        else:
            ok = isinstance(value, str)
        if not ok:
            raise MinirmError(f"{source}: field {key!r} must be {should}, not {json.dumps(value)}; fix config.json")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ModelConfig:
    family: str  # the name of its registry entry (minirm.models.FAMILIES)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int = 2  # 0 means the model has no token-type embedding
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    num_labels: int = 1
    pad_token_id: int | None = 0
    dropout: float = 0.1  # hidden / residual dropout (training only)
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # None: same as dropout
    attention_head_dim: int | None = None  # the attention's head size where config.json gives it; None: hidden / heads
    extra: Any = None  # the options only this family has (its entry's `options`), or None
    raw: dict = field(default_factory=dict, repr=False)  # config.json as read

    @property
    def head_dim(self) -> int:
        """The attention's head size: config.json's head_dim where the family reads one (Qwen3 and
        Gemma 2 heads are wider than hidden / heads), else hidden / heads."""
        return self.attention_head_dim or self.hidden_size // self.num_heads

    @property
    def spec(self) -> Family:
        """This family's registry entry."""
        return FAMILIES[self.family]

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MinirmError(f"{path}: no config.json here; point --model at a checkpoint directory") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MinirmError(f"{path}: config.json is not valid JSON ({e}); re-download the checkpoint") from None
        if not isinstance(raw, dict):
            raise MinirmError(f"{path}: config.json must hold a JSON object")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> "ModelConfig":
        family = FAMILIES[detect_family(raw, source)]
        check_field_types(raw, source)
        try:
            cfg = cls(
                family=family.name,
                **family.config.read(raw),
                num_labels=_num_labels(raw, family),
                extra=family.options(raw) if family.options is not None else None,
                raw=dict(raw),
            )
        except (TypeError, ValueError) as e:
            raise MinirmError(f"{source}: a field has the wrong type ({e}); check config.json") from None
        if family.check is not None:
            family.check(cfg, source)
        if cfg.attention_head_dim is None and cfg.hidden_size % cfg.num_heads:
            raise MinirmError(
                f"{source}: hidden size {cfg.hidden_size} is not divisible by {cfg.num_heads} heads; check config.json"
            )
        return cfg

    def to_dict(self) -> dict:
        """config.json for saving: the original fields, with num_labels kept in step."""
        out = dict(self.raw)
        if self.spec.fixed_labels is None:
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            out["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return out


def detect_family(raw: dict, source: str = "config.json") -> str:
    """The family built for this config.json: its first architecture minirm builds, else its
    model_type when the architectures name no sequence classifier (a base model)."""
    archs = raw.get("architectures") or []
    model_type = raw.get("model_type")
    for arch in archs:
        family = by_architecture(arch, model_type)
        if family is not None:
            return family.name
    family = by_model_type(model_type)
    # a remote-code class named like another family's ("RewardModel" on a llama) is no base model either
    remote = any(f.architecture_needs_model_type and f.architecture in archs for f in FAMILIES.values())
    if family is not None and not remote and not any(a.endswith("ForSequenceClassification") for a in archs):
        return family.name
    supported = ", ".join(sorted({f.architecture for f in FAMILIES.values()}))
    named = f"architectures={archs}" if archs else f"model_type={model_type!r}"
    raise MinirmError(f"{source}: unsupported architecture ({named}); minirm supports {supported}")


def _num_labels(raw: dict, family: Family) -> int:
    if family.fixed_labels is not None:
        return family.fixed_labels
    if "id2label" in raw and raw["id2label"]:
        return len(raw["id2label"])
    # transformers' PretrainedConfig default is two labels when nothing says otherwise
    return int(raw.get("num_labels", 2))
