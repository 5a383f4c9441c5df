"""Stopping and watching long runs (issue 24): Ctrl-C at any moment, SIGTERM from a scheduler, a
closed pipe, a default run that can always be resumed, and progress a batch log can read.

Each ends in one true line and exit status 130 (Ctrl-C), 143 (SIGTERM) or 141 (a closed pipe),
or a correct result. (The compile report's sweep: tests/test_kernels_aot.py.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_train import cli_args, pair_rows, quick_config, write_jsonl

import minirm.console as console
import minirm.training.loop as T
from minirm.scoring.cli import main as score_main
from minirm.training.cli import main as train_main
from minirm.training.recipes import RECIPES
from minirm.training.resume import checkpoint_dirs
from minirm.training.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(make_checkpoint, tmp_path):
    return make_checkpoint("bert")[0], write_jsonl(tmp_path / "pairs.jsonl", pair_rows(20))


def last_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


# --- 1. Ctrl-C during start-up -------------------------------------------------------------------

# Ctrl-C while `import torch` runs: a meta-path hook raises KeyboardInterrupt at that import, as
# the signal would, and the entry point runs as `python score.py` (or the console script) runs it
INTERRUPT_IMPORT = textwrap.dedent("""
    import runpy, sys

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    entry, sys.argv = sys.argv[1], sys.argv[1:]
    if entry.endswith(".py"):
        runpy.run_path(entry, run_name="__main__")
    else:  # module:function, as a console script's wrapper calls it
        module, function = entry.split(":")
        sys.exit(getattr(__import__(module, fromlist=[function]), function)())
""")


@pytest.mark.parametrize("entry, args, prog", [
    (str(ROOT / "score.py"), ["--model", "{model}", "hi", "hello"], "score.py"),
    (str(ROOT / "train.py"), ["--recipe", "aira-bert", "--model", "{model}", "--data", "{data}", "--output", "{out}"],
     "train.py"),
    ("minirm.scoring.cli:console_main", ["--model", "{model}", "hi", "hello"], "minirm-score"),
    ("minirm.kernels.aot:main", ["--kernel", "forward", "--cache", "{out}.json"], "python -m minirm.kernels.aot"),
])
def test_ctrl_c_while_torch_imports_is_one_line(setup, tmp_path, entry, args, prog):
    model_dir, data = setup
    args = [a.format(model=model_dir, data=data, out=tmp_path / "run") for a in args]
    out = subprocess.run([sys.executable, "-c", INTERRUPT_IMPORT, entry, *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 130 and len(lines) == 1 and lines[0].startswith(f"{prog}: interrupted"), out.stderr
    assert not (tmp_path / "run").exists()


def test_the_command_lines_import_no_torch_before_they_run():
    out = subprocess.run([sys.executable, "-c", "import sys, minirm, minirm.scoring.cli, minirm.training.cli; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# --- 3. a default run can be resumed, and every message says what is true ------------------------

def test_the_defaults_save_by_the_clock():
    assert TrainConfig.__dataclass_fields__["save_every_minutes"].default > 0
    assert all(recipe.get("save_every_minutes") > 0 for recipe in RECIPES.values())


def test_timed_checkpoints_are_saved_and_resumed(setup, tmp_path):
    model_dir, data = setup
    out = tmp_path / "run"
    timed = quick_config(model_dir, data, out, max_steps=4, save_every_minutes=1e-9, save_total_limit=0)
    train(timed)  # every step is past the clock's due time: a checkpoint after each but the last
    assert [p.name for p in checkpoint_dirs(out)] == ["step-0000001", "step-0000002", "step-0000003"]
    never = tmp_path / "never"
    train(quick_config(model_dir, data, never, max_steps=4, save_every_minutes=0))
    assert checkpoint_dirs(never) == []


def interrupt_at_step(monkeypatch, at: int):
    """Ctrl-C inside step `at`'s forward pass."""
    real = T.accumulate
    seen = []

    def accumulate(*args, **kwargs):
        seen.append(1)
        if len(seen) == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "accumulate", accumulate)


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "run"
    interrupt_at_step(monkeypatch, 3)
    assert train_main(cli_args(model_dir, data, out)) == 130
    line = last_line(capsys)
    assert line == ("train.py: interrupted; stopped after 2 of 10 steps, before the first checkpoint (saved every "
                    "30 minutes): nothing to resume; run the command again as it was to start over"), line
    monkeypatch.undo()
    assert train_main(cli_args(model_dir, data, out)) == 0  # as it says


def test_ctrl_c_after_a_checkpoint_names_it_and_resume_continues(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    out = tmp_path / "run"
    interrupt_at_step(monkeypatch, 6)
    assert train_main(cli_args(model_dir, data, out, save_every=2)) == 130
    line = last_line(capsys)
    ckpt = out / "checkpoints" / "step-0000004"
    assert line == (f"train.py: interrupted; stopped after 5 of 10 steps; the last checkpoint is {ckpt}: run the same "
                    "command with --resume to continue"), line
    monkeypatch.undo()
    assert train_main(cli_args(model_dir, data, out, save_every=2) + ["--resume"]) == 0


def test_ctrl_c_before_training_starts(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "load_for_training", interrupted)
    assert train_main(cli_args(model_dir, data, tmp_path / "run")) == 130
    assert last_line(capsys) == "train.py: interrupted; before training started; nothing was trained"


def test_sigterm_stops_a_run_that_resume_continues(setup, tmp_path):
    """What a scheduler's time limit sends: one line naming the checkpoint, status 143; --resume finishes."""
    model_dir, data = setup
    out = tmp_path / "run"
    args = cli_args(model_dir, data, out, steps=100000, save_every=1)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(checkpoint_dirs(out)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 143 and len(lines) == 1, err
    assert lines[0].startswith("train.py: stopped by SIGTERM; stopped after ") and "--resume" in lines[0], err
    last = checkpoint_dirs(out)[-1]
    assert str(last) in lines[0]
    step = int(last.name.split("-")[1])
    # the same data and batches (the plan's fingerprint), a nearer end: the run finishes from that checkpoint
    assert train_main(cli_args(model_dir, data, out, steps=step + 2, save_every=1) + ["--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == step + 2


def test_a_finished_run_with_checkpoints_is_finished(setup, tmp_path, capsys):
    """Timed saves leave checkpoints in a finished run: it is refused as finished (--overwrite), never
    offered to --resume."""
    model_dir, data = setup
    out = tmp_path / "run"
    assert train_main(cli_args(model_dir, data, out, steps=3, save_every=1)) == 0
    assert checkpoint_dirs(out)
    capsys.readouterr()
    assert train_main(cli_args(model_dir, data, out, steps=3, save_every=1)) == 2
    assert "already holds a trained model" in last_line(capsys)
    assert train_main(cli_args(model_dir, data, out, steps=3, save_every=1) + ["--resume"]) == 2
    line = last_line(capsys)
    assert "holds a finished run" in line and "nothing to continue" in line and "--overwrite" in line


# --- 4. batch jobs see progress --------------------------------------------------------------------

def test_training_without_a_terminal_prints_a_progress_line_every_interval(setup, tmp_path, capsys, monkeypatch):
    model_dir, data = setup
    monkeypatch.setattr(console, "LINE_EVERY_S", 0.0)  # every step, instead of every 30 s
    args = [a for a in cli_args(model_dir, data, tmp_path / "run", steps=4) if a != "--no-progress"]
    assert train_main(args) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("training: ")]
    assert [ln.split(",")[0] for ln in lines] == [f"training: {i}/4 steps ({25 * i}%)" for i in range(1, 5)]
    assert " elapsed, about " in lines[0] and " left, loss " in lines[0]


def test_a_short_run_prints_no_progress_line(setup, tmp_path, capsys):
    model_dir, data = setup
    args = [a for a in cli_args(model_dir, data, tmp_path / "run", steps=2) if a != "--no-progress"]
    assert train_main(args) == 0
    assert capsys.readouterr().err == ""  # under LINE_EVERY_S (30 s): nothing


def test_scoring_without_a_terminal_prints_progress_lines(setup, tmp_path, capsys, monkeypatch):
    model_dir, _ = setup
    monkeypatch.setattr(console, "LINE_EVERY_S", 0.0)
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q{i}", "response": "a" * i} for i in range(1, 6)])
    assert score_main(["--model", str(model_dir), "--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                       "--batch-size", "2"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(ln.startswith("scoring: ") for ln in lines) and lines[-1].startswith("scoring: 5/5 seq (100%)")


# --- a closed pipe ------------------------------------------------------------------------------------

def test_a_reader_that_goes_away_ends_the_run_quietly(setup, tmp_path):
    """`score.py --input big.jsonl | head -1`: no BrokenPipeError traceback, status 141 as a killed cat's."""
    model_dir, _ = setup
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "question " * 20, "response": f"answer {i}"}
                                             for i in range(3000)])  # far more output than a pipe holds
    proc = subprocess.Popen([sys.executable, str(ROOT / "score.py"), "--model", str(model_dir), "--input", str(src)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["score"]  # head -1
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err
