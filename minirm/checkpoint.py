"""Checkpoints: Hugging Face files <-> tensors <-> our modules, and back.

Loading reads one tensor at a time (safetensors `safe_open`, or a memory-mapped
`torch.load(weights_only=True)` for pytorch_model.bin), renames it through the weight map
of its family's registry entry (minirm/models), checks its shape, casts it and keeps it;
the model is built on the meta device and the tensors are assigned to it, so peak memory
is about the weights themselves. Pickle never runs arbitrary code here: weights_only=True only rebuilds
tensors and plain containers.

Saving writes the same Hugging Face layout (config.json + model.safetensors) through a
temporary directory and os.replace, so transformers loads what minirm saves and an
interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .errors import MinirmError, first_line
from .hub import TOKENIZER_FILES
from .models import FAMILIES, Family, regression_family
from .tokenizer import read_tokenizer

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"


# --- reading tensors ----------------------------------------------------------------------

def checkpoint_files(model_dir: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors preferred, shards in order."""
    for index_name in (SAFETENSORS_INDEX, PYTORCH_BIN_INDEX):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
                raise MinirmError(f"{index}: not a valid shard index ({e}); re-download the checkpoint") from None
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (model_dir / s).is_file()]
            if missing:
                raise MinirmError(f"{index}: shard(s) {', '.join(missing)} missing; re-download the checkpoint")
            return [model_dir / s for s in shards]
    for name in (SAFETENSORS, PYTORCH_BIN):
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise MinirmError(
        f"{model_dir}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN})"
    )


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of one weight file, read lazily."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise MinirmError(f"{path}: corrupt or truncated safetensors file ({e}); re-download it") from None
        return
    try:
        # weights_only: no arbitrary pickle code; mmap: tensors stay on disk until used. mmap needs the
        # zip format (PyTorch >= 1.6); the older format is still read, weights-only, into memory.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 - any failure here means the file is unusable
        raise MinirmError(
            f"{path}: cannot be read as a weights-only PyTorch checkpoint ({first_line(e)}); "
            "re-download it, or convert it to safetensors"
        ) from None
    if not isinstance(state, dict):
        raise MinirmError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    yield from state.items()


# --- renaming -----------------------------------------------------------------------------

class WeightMap:
    """HF names <-> our names for one family, compiled from its module-path table."""

    def __init__(self, family: Family):
        self.family = family
        self.rules = []  # (HF regex, our template, transpose, HF template, our regex)
        for hf, ours in family.weight_map.items():
            ours, transpose = ours if isinstance(ours, tuple) else (ours, False)
            self.rules.append((_template_regex(hf), ours, transpose, hf, _template_regex(ours)))
        self.ignored = [re.compile(p + "$") for p in family.ignore]

    def to_ours(self, hf_name: str) -> tuple[str, bool] | None:
        for old, new in self.family.renames.items():
            if hf_name.startswith(old):
                hf_name = new + hf_name[len(old):]
        # TF-era checkpoints name LayerNorm parameters gamma/beta; transformers renames them too
        hf_name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", hf_name))
        for pattern, ours, transpose, _, _ in self.rules:
            m = pattern.match(hf_name)
            if m:
                *layer, suffix = m.groups()
                name = ours.replace("{}", layer[0]) if layer else ours
                return f"{name}.{suffix}", transpose
        return None

    def is_ignored(self, hf_name: str) -> bool:
        return any(p.match(hf_name) for p in self.ignored)

    def to_hf(self, our_name: str) -> tuple[str, bool]:
        for _, _, transpose, hf, pattern in self.rules:
            m = pattern.match(our_name)
            if m:
                *layer, suffix = m.groups()
                return (hf.replace("{}", layer[0]) if layer else hf) + "." + suffix, transpose
        raise KeyError(our_name)


def _template_regex(template: str) -> re.Pattern:
    """'encoder.layers.{}.attn.q' -> a regex capturing the layer number and the parameter suffix."""
    return re.compile(re.escape(template).replace(r"\{\}", r"(\d+)") + r"\.(\w+)$")


def _shape(t) -> str:
    return "(" + ", ".join(str(d) for d in t) + ")"


# what a checkpoint holds besides the encoder, which a new reward head replaces: the masked-LM /
# next-sentence / LM heads of base models (bert-base-cased, roberta-base, gpt2, deberta-v2-xxlarge),
# or another reward model's classifier
REPLACED_HEADS = r"(cls|lm_head|lm_predictions|mask_predictions|classifier|score)\..*"
# the reward-head parameters a base model does not have; training starts them fresh
NEW_HEAD = ("head.", "score.")


def load_state(model: torch.nn.Module, model_dir: Path, family: Family, dtype: torch.dtype,
               new_head: bool = False) -> list[str]:
    """Read every tensor of the checkpoint into `model` (built on the meta device).

    With `new_head`, the checkpoint's own head (a base model's pretraining head, or a reward
    head of another shape) is dropped and the reward head's parameters it lacks are initialised
    as transformers does (normal(0, initializer_range) weights, zero biases). Returns the names
    initialised.
    """
    names = WeightMap(family)
    extra_ignored = re.compile(REPLACED_HEADS + "$") if new_head else None
    expected = {name: p.shape for name, p in model.state_dict(keep_vars=True).items()}
    state, unexpected = {}, []
    for path in checkpoint_files(model_dir):
        for hf_name, tensor in iter_tensors(path):
            mapped = names.to_ours(hf_name)
            if mapped is None or mapped[0] not in expected:
                if not names.is_ignored(hf_name) and not (extra_ignored and extra_ignored.match(hf_name)):
                    unexpected.append(hf_name)
                continue
            ours, transpose = mapped
            if transpose:
                tensor = tensor.t()
            if tensor.shape != expected[ours]:
                if new_head and ours.startswith(NEW_HEAD):
                    continue  # a head of another size (1 label -> 2): start it fresh
                raise MinirmError(
                    f"{path.name}: tensor {hf_name!r} has shape {_shape(tensor.shape)} but config.json implies "
                    f"{_shape(expected[ours])}; the checkpoint and its config.json disagree"
                )
            state[ours] = tensor.to(dtype).contiguous()
    fresh = [k for k in expected if k not in state and new_head and k.startswith(NEW_HEAD)]
    std = float(model.cfg.raw.get("initializer_range", 0.02))
    for k in fresh:
        state[k] = torch.zeros(expected[k], dtype=dtype) if k.endswith("bias") else torch.randn(expected[k]).mul_(std).to(dtype)
    missing = [names.to_hf(k)[0] for k in expected if k not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MinirmError(f"{model_dir}: checkpoint is missing tensor(s) {shown}; it is incomplete or for another model")
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        raise MinirmError(
            f"{model_dir}: checkpoint has tensor(s) this {model.cfg.family} model does not use: {shown}; "
            "is config.json for this checkpoint?"
        )
    model.load_state_dict(state, assign=True, strict=True)
    return fresh


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A freshly initialised model (for training from scratch, or before loading weights)."""
    return FAMILIES[cfg.family].build(cfg).to(device)


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", *,
               config: ModelConfig | None = None):
    """config.json + weights in `model_dir` -> (model in eval mode, config). Pass `config` when
    the caller has read model_dir's config.json already."""
    model_dir = Path(model_dir)
    cfg = config if config is not None else ModelConfig.from_file(model_dir / "config.json")
    if cfg.family not in FAMILIES:
        raise MinirmError(f"{model_dir}: {cfg.family} models are not available in this minirm build")
    family = FAMILIES[cfg.family]
    with torch.device("meta"):
        model = family.build(cfg)
    load_state(model, model_dir, family, dtype)
    return model.to(device).eval(), cfg


def reward_config(cfg: ModelConfig, num_labels: int, regression_head: bool = False) -> ModelConfig:
    """The config of a reward model on `cfg`'s encoder: its sequence-classification class and
    `num_labels`, or a regression head (the Aira one, bert-reward) on the encoder it sits on."""
    raw = {k: v for k, v in cfg.raw.items() if k not in ("id2label", "label2id")}
    family = FAMILIES[cfg.family]
    if regression_head:
        family = regression_family(cfg.family)
        family.regression.layout(raw)
    else:
        raw["num_labels"] = num_labels
    if family.reward_fields is not None:
        family.reward_fields(raw)
    raw["architectures"] = [family.architecture]
    return ModelConfig.from_dict(raw)


def load_for_training(model_dir: str | Path, num_labels: int = 1, regression_head: bool = False,
                      device: str | torch.device = "cpu", *,
                      config: ModelConfig | None = None) -> tuple[torch.nn.Module, ModelConfig, list[str]]:
    """A reward model to train, in fp32: from a reward checkpoint of the same head (fine-tuning
    further), or from a base model (bert-base-cased, gpt2, ...) with a freshly initialised head.
    Pass `config` when the caller has read model_dir's config.json already.
    Returns (model in train mode, config, names of the parameters initialised fresh)."""
    model_dir = Path(model_dir)
    cfg = config if config is not None else ModelConfig.from_file(model_dir / "config.json")
    target = reward_config(cfg, num_labels, regression_head)
    same_head = (cfg.family == target.family and cfg.num_labels == target.num_labels
                 and FAMILIES[cfg.family].architecture in (cfg.raw.get("architectures") or []))
    if same_head:
        model, cfg = load_model(model_dir, torch.float32, device, config=cfg)
        return model.train(), cfg, []
    family = FAMILIES[target.family]
    with torch.device("meta"):
        model = family.build(target)
    fresh = load_state(model, model_dir, family, torch.float32, new_head=True)
    return model.to(device).train(), target, fresh


# --- saving -------------------------------------------------------------------------------

def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = WeightMap(FAMILIES[model.cfg.family])
    out = {}
    for ours, tensor in model.state_dict().items():
        hf, transpose = names.to_hf(ours)
        out[hf] = (tensor.t() if transpose else tensor).detach().cpu().contiguous()
    return out


def save_model(model: torch.nn.Module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
               into_existing: bool = False) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) atomically, in HF layout.

    The files are written to a temporary directory beside `out_dir`, which then replaces
    `out_dir` whole. With `into_existing`, other files in `out_dir` (a training run's metrics
    and checkpoints) are kept: each file is renamed in on its own, config.json last.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # hidden and ending in .tmp: what a kill leaves is recognisable (train's start-up cleanup removes it)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        save_file(hf_state_dict(model), str(tmp / SAFETENSORS), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
            if not (tmp / "tokenizer.json").is_file():  # rebuilt from vocab files: write the one-file form
                read_tokenizer(Path(tokenizer_dir), model.cfg).save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        if into_existing:
            out_dir.mkdir(exist_ok=True)
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == "config.json"):
                os.replace(f, out_dir / f.name)
        elif out_dir.exists():
            old = out_dir.with_name(out_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
