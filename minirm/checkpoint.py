"""Checkpoints: Hugging Face files <-> tensors <-> our modules, and back.

Loading reads one tensor at a time (safetensors `safe_open`, or a memory-mapped
`torch.load(weights_only=True)` for pytorch_model.bin), renames it through the weight map
of its family's registry entry (minirm/models), checks its shape and that it is finite, casts
it and keeps it; the model is built on the meta device and the tensors are assigned to it.
Peak memory is one copy of the weights: a tensor kept in the file's dtype stays a view of the
mapped file, and the file's pages of every tensor are given back once it has been read
(`release_file_pages`), so a copy (a cast, a transposition, a bf16 weight prepacked for oneDNN
as it loads, cpu.py) never lives beside them: a mapped file's pages stay resident while any
tensor still views the mapping, and the copies used to double the memory.
Pickle never runs arbitrary code here: weights_only=True only rebuilds tensors and plain
containers.

Saving writes the same Hugging Face layout (config.json + model.safetensors) through a
temporary directory and os.replace, so transformers loads what minirm saves and an
interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap
import os
import re
import shutil
import sys
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
from .models import FAMILIES, Family, by_architecture, regression_family
from .text.tokenizer import read_tokenizer

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
    for name in list(state):  # handed over one by one: a tensor read into memory (not mapped) is freed once used
        yield name, state.pop(name)


# --- memory: the mapped file's pages ---------------------------------------------------------

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of every file-backed mapping of this process (/proc/self/maps; [] elsewhere)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):  # an inode and a path: a file
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def release_file_pages(tensor: torch.Tensor) -> int:
    """Give back the resident pages of `tensor`, a view of a memory-mapped checkpoint file that has
    just been read (checked, cast, transposed or prepacked); returns the bytes released.

    A mapped file's pages stay resident once read, for as long as any tensor views the mapping
    (the embeddings and LayerNorms kept as views do), so without this a copy and the pages read
    to make it are two copies of the weights, and a check touches rows that scoring never reads.
    Only whole pages inside the tensor are released, and only inside a file mapping: a released
    page holds the file's bytes and is read from the file again if anything touches it, so values
    never change (nothing writes into the mapping before this runs); anonymous memory (a tensor
    read, not mapped) is left to reference counting. Linux only; a no-op elsewhere."""
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu" or tensor.is_mkldnn:
        return 0
    first = tensor.data_ptr()
    start = -(-first // _PAGE) * _PAGE
    end = (first + tensor.numel() * tensor.element_size()) // _PAGE * _PAGE
    if end <= start or not any(lo <= start and end <= hi for lo, hi in _file_mappings()):
        return 0
    if _libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) != 0:
        return 0
    return end - start


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc



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
               new_head: bool = False, replace=None) -> list[str]:
    """Read every tensor of the checkpoint into `model` (built on the meta device).

    `replace(our_name, tensor, dtype, what)` sees each tensor as read (transposed, in the file's
    dtype) and may lay it out elsewhere itself, cast and checked (cpu.py's prepacking), returning
    True. Then the small tensors (biases,
    norms) are copied out of the mapped file rather than kept as views: they sit between the
    replaced weights, whose pages are given back, and the kernel maps a file's pages a folio at
    a time (up to 2 MB), so touching one bias would map its neighbours' pages in again. A large
    one (the embeddings) stays a view, of which scoring reads a few rows.

    With `new_head`, the checkpoint's own head (a base model's pretraining head, or a reward
    head of another shape) is dropped and the reward head's parameters it lacks are initialised
    as transformers does (normal(0, initializer_range) weights, zero biases). Returns the names
    initialised.
    """
    names = WeightMap(family)
    extra_ignored = re.compile(REPLACED_HEADS + "$") if new_head else None
    expected = {name: p.shape for name, p in model.state_dict(keep_vars=True).items()}
    state, unexpected, replaced = {}, [], set()
    for path in checkpoint_files(model_dir):
        for hf_name, tensor in iter_tensors(path):
            mapped = names.to_ours(hf_name)
            if mapped is None or mapped[0] not in expected:
                if not names.is_ignored(hf_name) and not (extra_ignored and extra_ignored.match(hf_name)):
                    unexpected.append(hf_name)
                continue
            ours, transpose = mapped
            shape = tensor.t().shape if transpose else tensor.shape
            if shape != expected[ours]:
                if new_head and ours.startswith(NEW_HEAD):
                    continue  # a head of another size (1 label -> 2): start it fresh
                raise MinirmError(
                    f"{path.name}: tensor {hf_name!r} has shape {_shape(shape)} but config.json implies "
                    f"{_shape(expected[ours])}; the checkpoint and its config.json disagree"
                )
            source, what = tensor.t() if transpose else tensor, f"{path.name}: tensor {hf_name!r}"
            if replace is not None and replace(ours, source, dtype, what):
                replaced.add(ours)
            else:
                kept = source.to(dtype).contiguous()
                check_finite(kept, tensor, what)
                if (replace is not None and kept.nbytes < SMALL_VIEW
                        and kept.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()):
                    kept = kept.clone()
                state[ours] = kept
                del kept
            # the check (and a cast, transposition or layout) read every page of the tensor: give them
            # back. A copy no longer needs them; a view kept reads them from the file again when it is
            # used, and only what scoring uses (a few rows of the embeddings) comes back
            release_file_pages(tensor)
            del tensor, source
    fresh = [k for k in expected if k not in state and new_head and k.startswith(NEW_HEAD)]
    std = float(model.cfg.raw.get("initializer_range", 0.02))
    for k in fresh:
        state[k] = torch.zeros(expected[k], dtype=dtype) if k.endswith("bias") else torch.randn(expected[k]).mul_(std).to(dtype)
    absent = [k for k in expected if k not in state and k not in replaced]
    missing = [names.to_hf(k)[0] for k in absent]
    if missing and all(k.startswith(NEW_HEAD) for k in absent):  # an encoder without its reward head
        raise MinirmError(base_model_message(model_dir, model.cfg, missing))
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


def check_finite(kept: torch.Tensor, source: torch.Tensor, what: str) -> None:
    """One line naming a tensor that holds NaN or infinity: in the checkpoint itself (a damaged file, or
    one saved from a diverged run), or only once cast (values beyond the dtype's range)."""
    if not kept.is_floating_point() or kept.numel() == 0:
        return
    low, high = torch.aminmax(kept)  # one pass, no tensor-sized temporary; NaN propagates into both
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return
    bad = ~torch.isfinite(source)
    if bad.any():
        kinds = " and ".join(k for k, m in (("NaN", source.isnan()), ("infinity", source.isinf())) if m.any())
        raise MinirmError(f"{what} holds {kinds} in {int(bad.sum())} of its {source.numel()} values; the checkpoint "
                          "is damaged or was saved from a diverged run: re-download it, or train it again")
    dtype = str(kept.dtype).removeprefix("torch.")
    largest = float(source.abs().max())
    raise MinirmError(f"{what} holds values up to {largest:.3g}, beyond {dtype}'s range "
                      f"(largest {torch.finfo(kept.dtype).max:.3g}); load it in bfloat16 or float32 (--dtype)")


# below this, a tensor loaded beside replaced weights is copied rather than kept as a view (load_state):
# a few file folios (2 MB at most each)
SMALL_VIEW = 8 << 20

# the transformers classes of a base model: an encoder or decoder with its pretraining head, or none
BASE_CLASS = re.compile(r".*(Model|ForMaskedLM|LMHeadModel|ForPreTraining|ForCausalLM)$")


def base_model_message(model_dir: Path, cfg: ModelConfig, missing: list[str] | None = None) -> str:
    """A checkpoint of an encoder with no reward head: what it is and how to make a reward model of it."""
    archs = cfg.raw.get("architectures") or []
    what = f"a base model ({', '.join(archs)})" if archs else "a base model"
    head = f" ({', '.join(missing)} missing)" if missing else ""
    return (f"{model_dir}: {what} with no reward head{head}, so it cannot score; train one on it with "
            f"train.py --model {model_dir} --data PAIRS.jsonl, or give a reward model "
            f"({FAMILIES[cfg.family].architecture})")


def check_reward_checkpoint(model_dir: Path, cfg: ModelConfig) -> None:
    """Before the weights load: config.json names a class minirm scores, or none at all (the weights
    decide then); a base model or another task's head (token classification, question answering)
    is one line, where it would otherwise fail on a missing tensor or score with the wrong head."""
    archs = [a for a in cfg.raw.get("architectures") or [] if isinstance(a, str)]
    if not archs or any(by_architecture(a, cfg.raw.get("model_type")) for a in archs):
        return
    if any(BASE_CLASS.match(a) for a in archs):
        raise MinirmError(base_model_message(model_dir, cfg))
    raise MinirmError(f"{model_dir}: a {archs[0]} checkpoint, not a reward model; minirm scores sequence classifiers "
                      f"({FAMILIES[cfg.family].architecture}); train one on its encoder with train.py --model "
                      f"{model_dir} --data PAIRS.jsonl")


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A freshly initialised model (for training from scratch, or before loading weights)."""
    return FAMILIES[cfg.family].build(cfg).to(device)


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", *,
               config: ModelConfig | None = None, prepack: bool = False):
    """config.json + weights in `model_dir` -> (model in eval mode, config). Pass `config` when
    the caller has read model_dir's config.json already. With `prepack` (bf16 on CPU, inference
    only), each linear weight is laid out for oneDNN as it is read (cpu.py), one copy at a time."""
    model_dir = Path(model_dir)
    cfg = config if config is not None else ModelConfig.from_file(model_dir / "config.json")
    if cfg.family not in FAMILIES:
        raise MinirmError(f"{model_dir}: {cfg.family} models are not available in this minirm build")
    check_reward_checkpoint(model_dir, cfg)
    family = FAMILIES[cfg.family]
    with torch.device("meta"):
        model = family.build(cfg)
    replace = None
    if prepack:
        from .cpu import packing_loader

        replace = packing_loader(model)
    load_state(model, model_dir, family, dtype, replace=replace)
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

def hf_tensors(model: torch.nn.Module, tensors=None):
    """(HF name, tensor on the CPU) for each of the model's tensors, or of `tensors` ((our name,
    tensor) pairs, e.g. gathered one at a time from a sharded model), in HF layout."""
    names = WeightMap(FAMILIES[model.cfg.family])
    for ours, tensor in (model.state_dict().items() if tensors is None else tensors):
        hf, transpose = names.to_hf(ours)
        yield hf, (tensor.t() if transpose else tensor).detach().cpu().contiguous()


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(hf_tensors(model))


# transformers' default max_shard_size, "5GB" (decimal)
MAX_SHARD_BYTES = 5 * 10**9


def write_safetensors(folder: Path, tensors, max_shard_bytes: int | None = None) -> list[str]:
    """(name, tensor) pairs -> model.safetensors, or, past max_shard_bytes, shards named as
    transformers names them (model-00001-of-00003.safetensors) with model.safetensors.index.json.
    Tensors are written as they come, a shard at a time, so only one shard is ever held. Returns
    the files written."""
    max_shard_bytes = max_shard_bytes or MAX_SHARD_BYTES
    written, weight_map, current, size, total = [], {}, {}, 0, 0

    def flush():
        if current:
            part = f".part-{len(written)}.tmp"
            save_file(current, str(folder / part), metadata={"format": "pt"})
            written.append((part, list(current)))
            current.clear()

    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            flush()
            size = 0
        current[name] = tensor
        size += nbytes
        total += nbytes
    flush()
    if len(written) == 1:
        os.replace(folder / written[0][0], folder / SAFETENSORS)
        return [SAFETENSORS]
    files = []
    for i, (part, names) in enumerate(written):
        files.append(f"model-{i + 1:05d}-of-{len(written):05d}.safetensors")
        os.replace(folder / part, folder / files[-1])
        weight_map.update(dict.fromkeys(names, files[-1]))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*files, SAFETENSORS_INDEX]


def save_model(model: torch.nn.Module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
               into_existing: bool = False, tensors=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) atomically, in HF layout; shards
    of at most 5 GB with model.safetensors.index.json for a larger model. `tensors`: (our name,
    tensor) pairs to write instead of model.state_dict() (a sharded model's, gathered one by one).

    The files are written to a temporary directory beside `out_dir`, which then replaces
    `out_dir` whole. With `into_existing`, other files in `out_dir` (a training run's metrics
    and checkpoints) are kept: each file is renamed in on its own, config.json last.
    """
    # a link to a directory (runs -> /scratch/runs) is written through: the temporary directory goes beside
    # the real one, on its filesystem (a rename cannot cross filesystems), and the link stays a link
    out_dir = Path(os.path.realpath(out_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # hidden and ending in .tmp: what a kill leaves is recognisable (train's start-up cleanup removes it)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        write_safetensors(tmp, hf_tensors(model, tensors))
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
            if not (tmp / "tokenizer.json").is_file():  # rebuilt from vocab files: write the one-file form
                read_tokenizer(Path(tokenizer_dir), model.cfg).save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        if into_existing:
            out_dir.mkdir(exist_ok=True)
            new = {f.name for f in tmp.iterdir()}
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == "config.json"):
                if f.name == "config.json":  # an earlier save's weights in the other layout (one file / shards) go first
                    for stale in [out_dir / SAFETENSORS, out_dir / SAFETENSORS_INDEX,
                                  *out_dir.glob("model-*-of-*.safetensors")]:
                        if stale.name not in new:
                            stale.unlink(missing_ok=True)
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
