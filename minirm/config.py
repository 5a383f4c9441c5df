"""One config dataclass for every family, filled from a Hugging Face config.json.

The families name the same things differently (GPT-2 says n_embd where BERT says
hidden_size); `ModelConfig.from_dict` maps them onto one vocabulary so the models can
be read without knowing where a number came from. The original dict is kept in `raw`
and written back on save, so transformers can load what minirm saves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MinirmError

# architecture name (config.json "architectures") -> the family minirm builds for it
ARCHITECTURES = {
    "BertForSequenceClassification": "bert",
    "RobertaForSequenceClassification": "roberta",
    "GPT2ForSequenceClassification": "gpt2",
    "DebertaV2ForSequenceClassification": "deberta-v2",
    "RewardModel": "bert-reward",  # the older Aira regression model (remote code, rebuilt here)
}
# model_type -> family, used when "architectures" is missing or names a base model
MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "gpt2": "gpt2",
    "deberta-v2": "deberta-v2",
    "bert-reward": "bert-reward",
}


# config.json field names of the BERT-like families -> ours
ENCODER_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
}
# what fills a field config.json leaves out: bert-base-cased (the Aira config only names its
# base model), and DebertaV2Config's own defaults
ENCODER_DEFAULTS = {
    "bert": dict(vocab_size=28996, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                 max_positions=512, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12),
    "deberta-v2": dict(vocab_size=128100, hidden_size=1536, num_layers=24, num_heads=24, intermediate_size=6144,
                       max_positions=512, type_vocab_size=0, hidden_act="gelu", layer_norm_eps=1e-7),
}


# the config.json fields minirm reads, by the JSON type each must have: a number written as a
# string ("hidden_size": "32") is named here rather than failing deep inside the model
POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "n_embd", "n_layer", "n_head", "n_positions", "linear_layer",
                 "num_labels", "conv_groups")
INTS = ("type_vocab_size", "n_inner", "pad_token_id", "eos_token_id", "linear_layer_output", "max_relative_positions",
        "position_buckets", "conv_kernel_size", "embedding_size", "pooler_hidden_size")
FLOATS = ("layer_norm_eps", "layer_norm_epsilon", "hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop",
          "attn_pdrop", "classifier_dropout", "summary_first_dropout", "initializer_range")
STRINGS = ("hidden_act", "activation_function", "pooler_hidden_act", "conv_act", "norm_rel_ebd", "model_type")


def check_field_types(raw: dict, source: str) -> None:
    """One line naming the first config.json field whose value has the wrong JSON type (null is
    taken as "not set", as transformers takes it)."""
    def wrong(key, value, should):
        raise MinirmError(f"{source}: field {key!r} must be {should}, not {json.dumps(value)}; fix config.json")

    for key in POSITIVE_INTS + INTS + FLOATS + STRINGS:
        value = raw.get(key)
        if value is None:
            continue
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if key in POSITIVE_INTS and not (is_int and value > 0):
            wrong(key, value, "a positive integer")
        elif key in INTS and not is_int:
            wrong(key, value, "an integer")
        elif key in FLOATS and not ((is_int or isinstance(value, float)) and math.isfinite(value) and value >= 0):
            wrong(key, value, "a non-negative number")
        elif key in STRINGS and not isinstance(value, str):
            wrong(key, value, "a string")


@dataclass
class ModelConfig:
    family: str  # "bert" | "roberta" | "gpt2" | "bert-reward" | "deberta-v2"
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
    # the older Aira regression head: hidden -> linear_layer -> linear_layer -> 1 (alpha is a
    # scoring option, as it was a forward argument of the published model: config.json has none)
    linear_layer: int = 128
    # DeBERTa-v2 (ignored by the other families)
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
    raw: dict = field(default_factory=dict, repr=False)  # config.json as read

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

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
        family = detect_family(raw, source)
        check_field_types(raw, source)
        get = raw.get
        try:
            if family == "gpt2":
                hidden = get("n_embd", 768)
                common = dict(
                    vocab_size=get("vocab_size", 50257),
                    hidden_size=hidden,
                    num_layers=get("n_layer", 12),
                    num_heads=get("n_head", 12),
                    intermediate_size=get("n_inner") or 4 * hidden,
                    max_positions=get("n_positions", 1024),
                    type_vocab_size=0,
                    hidden_act=get("activation_function", "gelu_new"),
                    layer_norm_eps=get("layer_norm_epsilon", 1e-5),
                )
            else:
                defaults = ENCODER_DEFAULTS["deberta-v2" if family == "deberta-v2" else "bert"]
                common = {ours: get(theirs, defaults[ours]) for ours, theirs in ENCODER_FIELDS.items()}
            pos_att_type = get("pos_att_type") or ()
            if isinstance(pos_att_type, str):
                pos_att_type = [p.strip() for p in pos_att_type.lower().split("|") if p.strip()]
            cfg = cls(
                family=family,
                **common,
                num_labels=_num_labels(raw, family),
                dropout=get("resid_pdrop" if family == "gpt2" else "hidden_dropout_prob", 0.1),
                attention_dropout=get("attn_pdrop" if family == "gpt2" else "attention_probs_dropout_prob", 0.1),
                classifier_dropout=get("summary_first_dropout" if family == "gpt2" else "classifier_dropout"),
                pad_token_id=get("pad_token_id", None if family == "gpt2" else 0),
                linear_layer=get("linear_layer", 128),
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
                raw=dict(raw),
            )
        except (TypeError, ValueError) as e:
            raise MinirmError(f"{source}: a field has the wrong type ({e}); check config.json") from None
        if family == "bert-reward" and get("linear_layer_output", 1) != 1:
            raise MinirmError(
                f"{source}: linear_layer_output is {get('linear_layer_output')!r}, but a reward is one number; "
                "this regression model must have linear_layer_output 1"
            )
        if cfg.hidden_size % cfg.num_heads:
            raise MinirmError(
                f"{source}: hidden size {cfg.hidden_size} is not divisible by {cfg.num_heads} heads; check config.json"
            )
        return cfg

    def to_dict(self) -> dict:
        """config.json for saving: the original fields, with num_labels kept in step."""
        out = dict(self.raw)
        if self.family != "bert-reward":
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            out["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return out


def detect_family(raw: dict, source: str = "config.json") -> str:
    archs = raw.get("architectures") or []
    for arch in archs:
        family = ARCHITECTURES.get(arch)
        # "RewardModel" is a common remote-code class name: only Aira's (model_type bert-reward) is ours
        if family == "bert-reward" and raw.get("model_type") != "bert-reward":
            continue
        if family is not None:
            return family
    model_type = raw.get("model_type")
    if model_type in MODEL_TYPES and not any(a.endswith("ForSequenceClassification") for a in archs):
        return MODEL_TYPES[model_type]
    supported = ", ".join(sorted(ARCHITECTURES))
    named = f"architectures={archs}" if archs else f"model_type={model_type!r}"
    raise MinirmError(f"{source}: unsupported architecture ({named}); minirm supports {supported}")


def _num_labels(raw: dict, family: str) -> int:
    if family == "bert-reward":
        return 1
    if "id2label" in raw and raw["id2label"]:
        return len(raw["id2label"])
    # transformers' PretrainedConfig default is two labels when nothing says otherwise
    return int(raw.get("num_labels", 2))
