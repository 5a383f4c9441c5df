"""A run's output folder and its checkpoints: what OUTPUT may already hold, saving a
checkpoint, and resuming from one.

A checkpoint (`OUTPUT/checkpoints/step-NNNNNNN/`) holds the model in HF layout plus
`trainer_state.pt`: optimizer, GradScaler, RNG states and the step, which is also the data
position, beside the plan's fingerprint, the run's config and the Meter's counters. A sharded
run's (--shard fsdp) holds its weights and optimizer state in `sharded/` instead, written by every
process through torch.distributed.checkpoint (sharding.py), and loads at any number of processes. It is
written to a temporary directory and renamed into place, so a run killed at any moment leaves
the previous checkpoint intact; `resume` picks the newest whole one (a damaged one is skipped
with a warning) and refuses one saved for other data or batch settings. Old checkpoints are
renamed to a hidden name before they are deleted, and what a kill leaves (hidden temporary
folders) is removed when the next run starts (`prepare_output`).
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoint import save_model
from ..errors import MinirmError, first_line
from ..text.records import writable_ancestor
from .sharding import SHARDED_DIR, is_sharded, load_sharded, load_whole_into_sharded, save_sharded

STATE_FILE = "trainer_state.pt"


def check_output(output: Path, cfg) -> None:
    """Before any work: OUTPUT is (or can become) a writable directory, and what it already holds
    fits the request (--resume needs a checkpoint; a finished run is replaced only with --overwrite)."""
    writable_ancestor(output, "--output")
    for name in ("checkpoints", "metrics.jsonl", "model.safetensors", "summary.json"):
        p = output / name
        if p.exists() and p.is_dir() != (name == "checkpoints"):
            raise MinirmError(f"--output {output}: {p} is a {'file' if name == 'checkpoints' else 'directory'}; "
                              "move it away or choose another --output")
    ckpts = checkpoint_dirs(output)
    finished = [name for name in ("summary.json", "model.safetensors") if (output / name).is_file()]
    # summary.json is written last: a run that has it finished, whatever checkpoints it kept on the way
    done = "summary.json" in finished
    if cfg.resume and (done or not ckpts):
        if finished:
            raise MinirmError(f"--resume: {output} holds a finished run ({', '.join(finished)}), so there is "
                              "nothing to continue; pass --overwrite instead to train it again, or another --output")
        raise MinirmError(f"--resume: {output} holds no checkpoint to resume from (checkpoints/step-N/ with "
                          f"{STATE_FILE}); run without --resume to start a new run")
    if not cfg.resume and not cfg.overwrite:
        if ckpts and not done:
            raise MinirmError(f"{output} already holds checkpoints of an unfinished run; pass --resume to continue "
                              "it, --overwrite to start over, or choose another --output")
        if finished:
            raise MinirmError(f"{output} already holds a trained model ({', '.join(finished)}); pass --overwrite "
                              "to replace it, or choose another --output")


def checkpoint_dirs(output: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Half-written saves are hidden (.tmp) directories."""
    root = output / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(output: Path, step: int, model, optimizer, scaler, tokenizer_dir: Path, extra: dict,
                    keep: int, main: bool = True) -> Path:
    """model (HF layout) + trainer state into a temporary directory, then renamed into place.
    A sharded model is saved by every process (each writes its shards; `main`, rank 0, the rest)."""
    if is_sharded(model):
        return _save_sharded_checkpoint(output, step, model, optimizer, scaler, extra, keep, main)
    root = output / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        save_model(model, tmp, tokenizer_dir, into_existing=True)
        _finish_checkpoint(tmp, final, step, optimizer.state_dict(), scaler, extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _keep_newest(output, keep)
    return final


def _save_sharded_checkpoint(output: Path, step: int, model, optimizer, scaler, extra: dict, keep: int,
                             main: bool) -> Path:
    """Rank 0 makes the hidden temporary folder and tells the others its name; every process writes
    its shards into it; rank 0 adds the trainer state (no optimizer: it is in the shards) and renames
    the folder into place once every process has finished writing."""
    import torch.distributed as dist

    root = output / "checkpoints"
    final = root / f"step-{step:07d}"
    name = [None]
    if main:
        root.mkdir(parents=True, exist_ok=True)
        name = [tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root)]
    dist.broadcast_object_list(name, src=0)
    tmp = Path(name[0])
    try:
        save_sharded(tmp, model, optimizer)  # a collective: returns on every process once all have written
        if main:
            _finish_checkpoint(tmp, final, step, None, scaler, extra)
    finally:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
    if main:
        _keep_newest(output, keep)
    dist.barrier()  # no process goes on (or stops) before the checkpoint is in place
    return final


def _finish_checkpoint(tmp: Path, final: Path, step: int, optimizer_state: dict | None, scaler, extra: dict) -> None:
    """The trainer state into tmp, everything flushed to disk, then tmp renamed to `final`."""
    state = {
        "step": step,
        **({"optimizer": optimizer_state} if optimizer_state is not None else {}),
        "scaler": scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        **extra,
    }
    torch.save(state, tmp / STATE_FILE)
    _fsync_dir(tmp)
    if final.exists():  # a checkpoint of this step from before a resume (or a damaged one): set it aside
        _discard(final)
    os.replace(tmp, final)


def _keep_newest(output: Path, keep: int) -> None:
    for old in checkpoint_dirs(output)[:-keep] if keep > 0 else []:
        _discard(old)


def _discard(folder: Path) -> None:
    """Delete a checkpoint so that a kill at any moment leaves it whole or gone: it is renamed to a
    hidden name first (one atomic step), and the start-up cleanup removes what a kill leaves there."""
    doomed = folder.with_name(f".{folder.name}.deleting.tmp")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(output: Path) -> list[Path]:
    """Remove what killed saves and deletions leave: hidden temporary folders and files in
    OUTPUT/checkpoints/ (a checkpoint being written, the model save inside it, a checkpoint being
    deleted), step-N folders without a trainer state (deleted half-way by older versions), and the
    hidden temporary folder of a killed final model save beside OUTPUT."""
    removed = []
    root = output / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") or (p.name.startswith("step-") and p.is_dir()
                                          and not (p / STATE_FILE).is_file()):
                removed.append(p)
    real = Path(os.path.realpath(output))  # save_model writes beside the real folder when OUTPUT is a link
    if real.parent.is_dir():
        removed += [p for p in real.parent.glob(f".{glob.escape(real.name)}.*.tmp") if p.is_dir()]
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


def _fsync_dir(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def load_trainer_state(ckpt: Path) -> dict:
    try:
        # weights_only: the state is tensors, numbers and plain containers; no pickled code runs
        return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
        raise MinirmError(f"{ckpt / STATE_FILE}: cannot be read ({first_line(e)}); "
                          "delete this checkpoint directory to resume from the one before") from None


def load_checkpoint(ckpt: Path, device) -> tuple[dict, torch.nn.Module | None]:
    """(trainer state, model) of one checkpoint, model None for a sharded one (its weights are read
    into the run's own model by `resume`); MinirmError when either is damaged."""
    from ..checkpoint import load_model

    state = load_trainer_state(ckpt)
    sharded = (ckpt / SHARDED_DIR / ".metadata").is_file()
    missing = [k for k in ("step", "scaler", "rng") + (() if sharded else ("optimizer",)) if k not in state]
    if missing:
        raise MinirmError(f"{ckpt / STATE_FILE}: holds no {', '.join(missing)}")
    if sharded:
        return state, None
    try:
        saved, _ = load_model(ckpt, torch.float32, device)
    except MinirmError as e:
        raise MinirmError(str(e).split("; re-download")[0]) from None
    return state, saved


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def same_plan(saved: dict | None, fingerprint: dict) -> bool:
    """Whether a checkpoint's plan fingerprint is this run's. Checkpoints from before a field was
    added to the fingerprint (steps_per_epoch) are compared on the fields they have."""
    if not isinstance(saved, dict):
        return False
    return all(fingerprint.get(k) == v for k, v in saved.items()) and set(fingerprint) - set(saved) <= {"steps_per_epoch"}


def resume(output: Path, device, fingerprint: dict, model, optimizer, scaler, total: int, verbose: bool) -> dict:
    """Put the run back where the newest whole checkpoint in OUTPUT left it: the model's weights,
    the optimizer, the GradScaler and the RNG states. Returns that checkpoint's trainer state (its
    "step" is the next step; the Meter's counters are in it too). A damaged checkpoint is skipped
    with a warning; one saved for other data or batch settings is an error."""
    skipped = []
    for ckpt in reversed(checkpoint_dirs(output)):  # the newest checkpoint that is whole
        try:
            state, saved = load_checkpoint(ckpt, device)
        except MinirmError as e:
            skipped.append(f"{ckpt.name} ({e})")
            continue
        if verbose:
            for reason in skipped:
                print(f"warning: skipping damaged checkpoint {reason}; resuming from {ckpt.name}",
                      file=sys.stderr, flush=True)
        if not same_plan(state.get("data"), fingerprint):
            raise MinirmError(f"{ckpt}: was saved for other data or batch settings ({state.get('data')}, "
                              f"now {fingerprint}); resume with the same --data, --seed and global batch "
                              "(--batch-size x --grad-accum x processes)")
        if saved is None:  # sharded by N processes, loaded by this run's M (sharded or not)
            load_sharded(ckpt, model, optimizer)
        elif is_sharded(model):  # a whole checkpoint (DDP, one process) into a sharded run
            load_whole_into_sharded(model, optimizer, saved.state_dict(), state["optimizer"])
        else:
            model.load_state_dict(saved.state_dict())
            optimizer.load_state_dict(state["optimizer"])
        del saved
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        if verbose:
            print(f"resuming from {ckpt} at step {state['step']}/{total}", flush=True)
        return state
    raise MinirmError(f"--resume: no checkpoint in {output / 'checkpoints'} is whole (newest: "
                      f"{skipped[0]}); run with --overwrite to start over")


def prepare_output(output: Path, cfg) -> None:
    """On the main process, once the weights are loaded: clear what a kill during a save or a
    checkpoint's deletion left, the old run's files under --overwrite (its model is replaced at
    the end), and write train_config.json."""
    clean_leftovers(output)
    if cfg.overwrite and not cfg.resume:
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
        for name in ("summary.json", "metrics.jsonl", "curves.png"):
            (output / name).unlink(missing_ok=True)
    (output / "train_config.json").parent.mkdir(parents=True, exist_ok=True)
    (output / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
