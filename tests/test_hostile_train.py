"""Hostile use of train.py (issue 10): every user mistake ends in exit status 2 with one line
that names the option or file and how to fix it, and nothing is left half-written or silently
wrong. Bad numbers, a loss that diverges, --resume with nothing to resume, a finished output
folder, an output path that cannot be written, damaged checkpoints and metrics, what SIGKILL
leaves behind, and the logged training averages across a resume.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_train import cli_args, metrics, pair_rows, run_child, write_jsonl

import minirm.training.resume as R
import minirm.training.loop as T
from minirm.training.cli import main
from minirm.training.losses import Pairwise
from minirm.training.resume import checkpoint_dirs


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()  # what earlier runs of the test printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def setup(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("bert")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(20))
    return model_dir, data


def no_loading(monkeypatch):
    """Fail the test if the model is loaded: the check under test must come before any work."""
    def boom(*a, **k):
        raise AssertionError("the model was loaded before the check")
    monkeypatch.setattr(T, "load_for_training", boom)


def interrupt_after_save(monkeypatch, at: int):
    """The in-process stand-in for a kill right after the save of step `at` (main() returns 130)."""
    real = T.save_checkpoint

    def save_then_stop(output, step, *args, **kwargs):
        path = real(output, step, *args, **kwargs)
        if step == at:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(T, "save_checkpoint", save_then_stop)
    return lambda: monkeypatch.setattr(T, "save_checkpoint", real)


def same_weights(a, b) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# --- 13. bad numbers ----------------------------------------------------------------------------

BAD_OPTIONS = [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-0.5"), ("--lr", "0"),
    ("--weight-decay", "nan"), ("--weight-decay", "-0.1"), ("--warmup-steps", "-1"),
    ("--epochs", "inf"), ("--epochs", "0"), ("--epochs", "nan"), ("--max-steps", "-5"),
    ("--batch-size", "0"), ("--grad-accum", "0"), ("--eval-batch-size", "0"), ("--max-length", "0"),
    ("--eval-fraction", "1"), ("--eval-fraction", "-0.1"), ("--eval-fraction", "nan"),
    ("--max-grad-norm", "nan"), ("--max-grad-norm", "-1"), ("--max-grad-norm", "inf"),
    ("--log-every", "-1"), ("--eval-every", "-2"), ("--save-every", "-1"), ("--save-total-limit", "-1"),
    ("--center-rewards-coefficient", "nan"), ("--center-rewards-coefficient", "-0.01"), ("--seed", "-1"),
]


@pytest.mark.parametrize("flag,value", BAD_OPTIONS, ids=[f"{f}={v}" for f, v in BAD_OPTIONS])
def test_bad_numbers_stop_with_one_line_before_any_work(setup, tmp_path, capsys, monkeypatch, flag, value):
    model_dir, data = setup
    no_loading(monkeypatch)
    argv = cli_args(model_dir, data, tmp_path / "out")
    if flag in argv:
        del argv[argv.index(flag) : argv.index(flag) + 2]
    argv.append(f"{flag}={value}")  # the = form: argparse reads "-1e-5" after a space as an option
    err = one_line_error(capsys, argv)
    assert flag in err and value.lstrip("-") in err
    assert not (tmp_path / "out").exists()


def test_lr_too_large_diverges_stops_naming_the_step_and_saves_nothing(setup, tmp_path, capsys):
    model_dir, data = setup
    out = tmp_path / "out"
    err = one_line_error(capsys, cli_args(model_dir, data, out, steps=10, lr=1e30, save_every=1))
    assert "diverged" in err and "at step" in err and "--lr" in err
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()
    for ckpt in checkpoint_dirs(out):  # what was saved before the divergence is finite
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model.safetensors")).values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loss_turning_nan_stops_at_that_step_before_the_optimizer_step(setup, tmp_path, capsys, monkeypatch,
                                                                       precision):
    model_dir, data = setup
    real, calls = Pairwise.loss, []

    def nan_at_step_3(self, logits, batch):
        loss, parts = real(self, logits, batch)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), parts

    monkeypatch.setattr(Pairwise, "loss", nan_at_step_3)
    seen = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (seen.append(1), real_step(self, *a, **k))[1])
    err = one_line_error(capsys, cli_args(model_dir, data, tmp_path / "out", precision=precision))
    assert "at step 3" in err and "lower --lr" in err
    assert len(seen) == 2  # the NaN step never reached the optimizer
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_fp16_divergence_suggests_bf16_or_fp32(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    monkeypatch.setattr(Pairwise, "loss", lambda self, logits, batch: (logits.float().sum() * float("inf"), {
        "chosen": logits[0::2, 0].float(), "rejected": logits[1::2, 0].float()}))
    err = one_line_error(capsys, cli_args(model_dir, data, tmp_path / "out", precision="fp16", device="cpu"))
    assert "at step 1" in err and "bf16 or fp32" in err


# --- 14. --resume with nothing to resume --------------------------------------------------------

def test_resume_with_nothing_to_resume_names_the_folder(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    no_loading(monkeypatch)
    for out in (tmp_path / "never-made", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        err = one_line_error(capsys, cli_args(model_dir, data, out) + ["--resume"])
        assert str(out) in err and "no checkpoint" in err and "without --resume" in err
    assert not (tmp_path / "never-made").exists() and not any((tmp_path / "empty").iterdir())


def test_resume_of_a_finished_run_without_checkpoints_says_overwrite(setup, tmp_path, capsys):
    model_dir, data = setup
    out = tmp_path / "out"
    assert main(cli_args(model_dir, data, out, steps=2)) == 0
    before = (out / "model.safetensors").read_bytes()
    err = one_line_error(capsys, cli_args(model_dir, data, out, steps=2) + ["--resume"])
    assert str(out) in err and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == before


# --- 15. a finished output folder ---------------------------------------------------------------

def test_finished_output_is_kept_unless_overwrite(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "out"
    assert main(cli_args(model_dir, data, out, steps=3)) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with monkeypatch.context() as m:
        no_loading(m)
        err = one_line_error(capsys, cli_args(model_dir, data, out, steps=2, seed=7))
        assert str(out) in err and "--overwrite" in err
        assert "--overwrite" in one_line_error(capsys, cli_args(model_dir, data, out) + ["--resume", "--overwrite"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
    assert main(cli_args(model_dir, data, out, steps=2, seed=7) + ["--overwrite"]) == 0
    assert [r["step"] for r in metrics(out) if r["split"] == "train"] == [1, 2]  # the new run's rows only
    assert (out / "model.safetensors").read_bytes() != files["model.safetensors"]


def test_overwrite_clears_an_interrupted_runs_checkpoints(setup, tmp_path, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "out"
    restore = interrupt_after_save(monkeypatch, 4)
    assert main(cli_args(model_dir, data, out, steps=8, save_every=2)) == 130
    restore()
    assert [p.name for p in checkpoint_dirs(out)] == ["step-0000002", "step-0000004"]
    assert main(cli_args(model_dir, data, out, steps=3) + ["--overwrite"]) == 0
    assert checkpoint_dirs(out) == []  # no stale checkpoint of the old run is left for a later --resume
    assert main(cli_args(model_dir, data, tmp_path / "fresh", steps=3)) == 0
    assert same_weights(out, tmp_path / "fresh")


# --- 16. an output path that cannot be written ----------------------------------------------------

def test_output_that_is_a_file_or_under_a_file_fails_before_loading(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    no_loading(monkeypatch)
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    err = one_line_error(capsys, cli_args(model_dir, data, f))
    assert str(f) in err and "is a file" in err
    err = one_line_error(capsys, cli_args(model_dir, data, f / "sub" / "out"))
    assert str(f) in err and "is a file" in err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoints").write_text("")
    assert "checkpoints" in one_line_error(capsys, cli_args(model_dir, data, tmp_path / "out"))
    assert f.read_text() == "not a folder"


def test_unwritable_output_fails_before_loading(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    no_loading(monkeypatch)

    def denied(*a, dir=None, **k):  # tests run as root, where chmod cannot deny a write
        raise PermissionError(13, "Permission denied", dir)

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    err = one_line_error(capsys, cli_args(model_dir, data, tmp_path / "ro" / "out"))
    assert "cannot write in" in err and str(tmp_path) in err and "Permission denied" in err
    assert not (tmp_path / "ro").exists()


# --- 17. a damaged newest checkpoint, a half-written metrics row ------------------------------------

def test_resume_skips_a_truncated_newest_checkpoint_and_a_half_written_metrics_row(setup, tmp_path, capsys,
                                                                                   monkeypatch):
    model_dir, data = setup
    assert main(cli_args(model_dir, data, tmp_path / "straight", steps=12)) == 0
    out = tmp_path / "out"
    restore = interrupt_after_save(monkeypatch, 8)
    assert main(cli_args(model_dir, data, out, steps=12, save_every=4, save_total_limit=3)) == 130
    restore()
    weights = out / "checkpoints" / "step-0000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "split": "tra')  # what a kill in the middle of a write leaves
    capsys.readouterr()
    assert main(cli_args(model_dir, data, out, steps=12, save_every=4, save_total_limit=3) + ["--resume"]) == 0
    captured = capsys.readouterr()
    assert "skipping damaged checkpoint" in captured.err and "step-0000008" in captured.err
    assert "re-download" not in captured.err
    assert "half-written" in captured.err
    assert "resuming from" in captured.out and "step-0000004" in captured.out
    assert same_weights(out, tmp_path / "straight")
    assert [r["step"] for r in metrics(out) if r["split"] == "train"] == list(range(1, 13))
    # the damaged checkpoint was replaced by a whole one when the run passed step 8 again
    assert R.load_checkpoint(out / "checkpoints" / "step-0000008", "cpu")[0]["step"] == 8


def test_resume_with_only_damaged_checkpoints_is_one_line(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "out"
    restore = interrupt_after_save(monkeypatch, 2)
    assert main(cli_args(model_dir, data, out, steps=4, save_every=2)) == 130
    restore()
    (out / "checkpoints" / "step-0000002" / "model.safetensors").write_bytes(b"\0" * 10)
    err = one_line_error(capsys, cli_args(model_dir, data, out, steps=4, save_every=2) + ["--resume"])
    assert "no checkpoint" in err and "is whole" in err and "--overwrite" in err


def test_a_bad_line_in_the_middle_of_metrics_is_one_line(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "out"
    restore = interrupt_after_save(monkeypatch, 2)
    assert main(cli_args(model_dir, data, out, steps=4, save_every=2)) == 130
    restore()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(["{oops"] + lines) + "\n")
    err = one_line_error(capsys, cli_args(model_dir, data, out, steps=4, save_every=2) + ["--resume"])
    assert "metrics.jsonl:1" in err


# --- 18. what SIGKILL leaves ----------------------------------------------------------------------

# A SIGKILL while the model file of the step-KILL_DURING checkpoint is half-written: it leaves the
# model save's own temporary folder inside the checkpoint's temporary folder.
KILL_DURING_MODEL_SAVE = textwrap.dedent("""
    import os, signal, sys
    import minirm.checkpoint as C
    from minirm.training.cli import main
    real = C.save_file
    target = ".step-%07d." % int(os.environ["KILL_DURING"])
    def save_file_then_die(tensors, path, *args, **kwargs):
        if target in path:
            with open(path, "wb") as fh:
                fh.write(b"half a model")
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real(tensors, path, *args, **kwargs)
    C.save_file = save_file_then_die
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_during_the_model_save_leaves_nothing_after_resume(setup, tmp_path):
    model_dir, data = setup
    out = tmp_path / "run"
    args = cli_args(model_dir, data, out, steps=12, save_every=4)
    killed = run_child(KILL_DURING_MODEL_SAVE, args, {"KILL_DURING": "8"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((out / "checkpoints").glob("..step-0000008*")), "the kill should leave the inner temp folder"
    assert [p.name for p in checkpoint_dirs(out)] == ["step-0000004"]
    assert main(args + ["--resume"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000004", "step-0000008"]
    assert not list(tmp_path.glob(".run.*"))


def test_rotation_leaves_whole_checkpoints_or_hidden_leftovers(setup, tmp_path, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "out"
    real_rmtree = shutil.rmtree

    def rmtree_killed_half_way(path, *a, **k):  # deletes the trainer state, then the process "dies"
        if "deleting" in str(path) and os.path.isdir(path):
            os.remove(os.path.join(path, R.STATE_FILE))
            raise KeyboardInterrupt
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree_killed_half_way)
    assert main(cli_args(model_dir, data, out, steps=8, save_every=2, save_total_limit=2)) == 130
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    ckpts = out / "checkpoints"
    # the doomed step-2 went to a hidden name before its files were deleted: no step-N folder is half there
    assert sorted(p.name for p in ckpts.iterdir()) == [".step-0000002.deleting.tmp", "step-0000004",
                                                        "step-0000006"]
    # and a step-N folder without a trainer state, as older versions left, is cleared too
    (ckpts / "step-0000001").mkdir()
    (ckpts / "step-0000001" / "config.json").write_text("{}")
    assert main(cli_args(model_dir, data, out, steps=8, save_every=2, save_total_limit=2) + ["--resume"]) == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000004", "step-0000006"]


# --- 19. logged training averages across a resume ------------------------------------------------

def test_logged_windows_resume_with_the_run(setup, tmp_path, monkeypatch):
    model_dir, data = setup
    assert main(cli_args(model_dir, data, tmp_path / "straight", steps=10, log_every=3)) == 0
    out = tmp_path / "out"
    restore = interrupt_after_save(monkeypatch, 5)  # in the middle of the window of steps 4-6
    assert main(cli_args(model_dir, data, out, steps=10, log_every=3, save_every=5)) == 130
    restore()
    assert main(cli_args(model_dir, data, out, steps=10, log_every=3, save_every=5) + ["--resume"]) == 0

    def rows(run):
        return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in metrics(run)]

    assert [r["step"] for r in rows(out) if r["split"] == "train"] == [3, 6, 9, 10]
    assert rows(out) == rows(tmp_path / "straight")
    assert all(math.isfinite(r["examples_per_s"]) for r in metrics(out) if r["split"] == "train")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["examples"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["examples"]


# --- variants: options the model cannot take are found before the weights load ------------------

@pytest.mark.parametrize("extra, needle", [
    (["--bot-name", "Ann"], "--bot-name: the Pygmalion chat format is for GPT-2 chat models"),
    (["--memory", "kind"], "--memory: the Pygmalion chat format"),
    (["--max-length", "3"], "use at least 5"),
    (["--max-length", "100000"], "exceeds this model's"),
    (["--revision", "main"], "--revision main applies to Hub repos"),
    (["--tokenizer", "no/such/dir"], "--tokenizer 'no/such/dir'"),
], ids=["bot-name", "memory", "max-length-short", "max-length-long", "revision-local", "tokenizer-missing"])
def test_options_the_model_cannot_take_fail_before_the_weights_load(setup, tmp_path, capsys, monkeypatch,
                                                                    extra, needle):
    model_dir, data = setup
    no_loading(monkeypatch)
    argv = cli_args(model_dir, data, tmp_path / "out")
    if extra[0] in argv:
        del argv[argv.index(extra[0]) : argv.index(extra[0]) + 2]
    assert needle in one_line_error(capsys, argv + extra)
    assert not (tmp_path / "out").exists()


def test_triton_with_attention_dropout_fails_before_the_weights_load(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup  # the tiny BERT keeps transformers' attention dropout of 0.1
    no_loading(monkeypatch)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    err = one_line_error(capsys, cli_args(model_dir, data, tmp_path / "out") + ["--attention", "triton"])
    assert "no attention dropout" in err and "--attention sdpa" in err


def test_bad_data_fails_before_the_weights_load(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    no_loading(monkeypatch)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data.read_text() + '{"chosen": "only one side"}\n')
    err = one_line_error(capsys, cli_args(model_dir, bad, tmp_path / "out"))
    assert f"{bad}:21" in err


@pytest.mark.parametrize("value", ["-1e-5", "-2E+3", "-.5", "-inf", "-nan"])
def test_negative_numbers_after_a_space_are_read_as_values(setup, tmp_path, capsys, monkeypatch, value):
    """argparse alone says 'expected one argument' for '--lr -1e-5'; the check must see the value."""
    model_dir, data = setup
    no_loading(monkeypatch)
    argv = cli_args(model_dir, data, tmp_path / "out")
    del argv[argv.index("--lr") : argv.index("--lr") + 2]
    err = one_line_error(capsys, argv + ["--lr", value])
    assert err.startswith("train.py: error: --lr must be") and "expected one argument" not in err


@pytest.mark.parametrize("device, needle", [("banana", "is not a device"), ("cuda:9", "--device cuda:9"),
                                            ("meta", "holds no data")])
def test_bad_device_is_one_line_before_any_work(setup, tmp_path, capsys, monkeypatch, device, needle):
    model_dir, data = setup
    no_loading(monkeypatch)
    assert needle in one_line_error(capsys, cli_args(model_dir, data, tmp_path / "out") + ["--device", device])
    assert not (tmp_path / "out").exists()


def test_a_split_on_a_single_file_is_refused(setup, tmp_path, capsys, monkeypatch):
    """'pairs.jsonl:train' would otherwise read the whole file and train on rows the user did not pick."""
    model_dir, data = setup
    no_loading(monkeypatch)
    argv = cli_args(model_dir, data, tmp_path / "out")
    argv[argv.index("--data") + 1] = f"{data}:train"
    assert "is one file and is read whole" in one_line_error(capsys, argv)
