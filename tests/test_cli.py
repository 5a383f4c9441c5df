"""score.py end to end: arguments, JSONL in and out, order, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from minirm import Scorer
from minirm.scoring.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "score.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=120)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prompt_and_responses_print_one_score_each(make_checkpoint, pairs, capsys):
    model_dir, _ = make_checkpoint("roberta")
    prompts, responses = pairs
    assert main(["--model", str(model_dir), prompts[0], *responses[:3]]) == 0
    printed = [float(x) for x in capsys.readouterr().out.split()]
    expected = Scorer.from_pretrained(str(model_dir)).score_pairs([prompts[0]] * 3, responses[:3])
    assert printed == pytest.approx(expected, abs=1e-6)

    assert main(["--model", str(model_dir), "--json", prompts[0], responses[0]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["response"] == responses[0] and out[0]["score"] == pytest.approx(expected[0], abs=1e-6)


def test_jsonl_in_and_out_keeps_fields_and_order(make_checkpoint, pairs, tmp_path):
    model_dir, _ = make_checkpoint("bert")
    prompts, responses = pairs
    rows = [{"id": i, "prompt": p, "response": r} for i, (p, r) in enumerate(zip(prompts, responses))]
    rows.append({"id": 99, "text": "an already formatted text"})
    src, dst = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["--model", str(model_dir), "--input", str(src), "--output", str(dst), "--batch-size", "2"]) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert all({k: r[k] for k in rows[i]} == rows[i] for i, r in enumerate(out))
    scorer = Scorer.from_pretrained(str(model_dir))
    expected = scorer.score_pairs(prompts, responses) + scorer.score_texts(["an already formatted text"])
    assert [r["score"] for r in out] == pytest.approx(expected, abs=1e-5)


def test_preference_rows_give_both_scores_and_accuracy(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("gpt2")
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: Hello! How can I help?",
         "rejected": "\n\nHuman: hi\n\nAssistant: Go away."},
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Blue."},  # a tie is not a win
    ]
    src, dst = write_jsonl(tmp_path / "prefs.jsonl", rows), tmp_path / "scored.jsonl"
    result = run_cli("--model", model_dir, "--input", src, "--output", dst)
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert all(r["correct"] == (r["score_chosen"] > r["score_rejected"]) for r in out)
    assert out[2]["correct"] is False
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["num_pairs"] == 3
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in out) / 3)


BAD_INPUTS = [
    (b'{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n', "bad.jsonl:2: not valid JSON"),
    (b'{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', "bad.jsonl:2: needs 'prompt' and 'response'"),
    (b'{"prompt": "a", "response": 3}\n', "bad.jsonl:1: field 'response' must be a string"),
    (b"", "bad.jsonl: empty file"),
    (b"\n\n", "bad.jsonl: empty file"),
    (b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n', "bad.jsonl:2: not UTF-8"),
    (b'["prompt", "response"]\n', "bad.jsonl:1: expected a JSON object"),
]


@pytest.mark.parametrize("content,message", BAD_INPUTS, ids=lambda x: str(x)[:20])
def test_bad_input_gets_one_line_naming_the_line(make_checkpoint, tmp_path, content, message):
    model_dir, _ = make_checkpoint("bert")
    src = tmp_path / "bad.jsonl"
    src.write_bytes(content)
    dst = tmp_path / "out.jsonl"
    dst.write_text("previous results\n")
    result = run_cli("--model", model_dir, "--input", src, "--output", dst)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert dst.read_text() == "previous results\n"  # nothing overwritten or half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.jsonl"]  # no temp files left


@pytest.mark.parametrize("args,message", [
    (["--model", "no/such-model-anywhere", "p", "r"], "not in the Hugging Face cache and HF_HUB_OFFLINE=1"),
    (["--model", "./not-a-dir-and-not-a-repo-id/x/y", "p", "r"], "is not a directory, an alias"),
    (["p", "r"], "--model is required"),
    (["--model", "aux-roberta"], "nothing to score"),
])
def test_usage_errors_are_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_corrupt_checkpoint_is_one_line(make_checkpoint, tmp_path):
    import shutil

    model_dir, _ = make_checkpoint("bert")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_cli("--model", broken, "p", "r")
    assert result.returncode == 2 and "model.safetensors" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_help_and_list_models():
    result = run_cli("--help")
    assert result.returncode == 0 and "--input" in result.stdout and "--list-models" in result.stdout
    listed = run_cli("--list-models").stdout
    for alias in ("aux-roberta", "aira-bert", "chai-gpt2", "oa-deberta"):
        assert alias in listed


def test_oa_rank_option(make_checkpoint, pairs, tmp_path):
    """--oa-rank: 'prompt[SEP]response' texts score as pairs; near-empty responses score -4."""
    model_dir, _ = make_checkpoint("bert")
    prompts, responses = pairs
    rows = [{"text": f"{prompts[0]}[SEP]{responses[0]}"}, {"text": f"{prompts[1]}[SEP]ok."},
            {"prompt": prompts[2], "response": responses[2]}, {"prompt": prompts[3], "response": "  "}]
    src, dst = write_jsonl(tmp_path / "oa.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["--model", str(model_dir), "--oa-rank", "--input", str(src), "--output", str(dst)]) == 0
    got = [json.loads(line)["score"] for line in dst.read_text().splitlines()]
    expected = Scorer.from_pretrained(str(model_dir)).score_pairs([prompts[0], prompts[2]], [responses[0], responses[2]])
    assert got[0] == pytest.approx(expected[0], abs=1e-6) and got[2] == pytest.approx(expected[1], abs=1e-6)
    assert got[1] == -4.0 and got[3] == -4.0


# --- issue 24: what a new user meets --------------------------------------------------------------

def test_the_summary_names_the_model_as_given_not_its_base(make_checkpoint, tmp_path, monkeypatch):
    """A fine-tune's config.json keeps its base's _name_or_path; the summary reports what the user
    passed, and the directory it resolved to."""
    mine = shutil.copytree(make_checkpoint("bert")[0], tmp_path / "runs" / "mine")
    config = json.loads((mine / "config.json").read_text())
    config["_name_or_path"] = "nreimers/MiniLM-L6-H384-uncased"
    (mine / "config.json").write_text(json.dumps(config))
    src = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    monkeypatch.chdir(tmp_path)
    result = run_cli("--model", "runs/mine", "--input", src, "--output", tmp_path / "out.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"] == "runs/mine" and summary["model_path"] == str(mine.resolve())


def test_output_through_a_symbolic_link_writes_its_target(make_checkpoint, tmp_path):
    """As the shell's `>`: the link stays a link, the file it names gets the scores; a dangling
    link's target is created; a loop or a link to a directory is one line, before the model loads."""
    model_dir, _ = make_checkpoint("bert")
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "response": "hello"}])
    target, link = tmp_path / "results" / "scored.jsonl", tmp_path / "latest.jsonl"
    target.parent.mkdir()
    target.write_text("old scores\n")
    target.chmod(0o640)
    link.symlink_to(target)
    assert main(["--model", str(model_dir), "--input", str(src), "--output", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["score"] == json.loads(link.read_text())["score"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the target keeps its mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["scored.jsonl"]  # no temp file left
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "results" / "new.jsonl")
    assert main(["--model", str(model_dir), "--input", str(src), "--output", str(dangling)]) == 0
    assert dangling.is_symlink() and (tmp_path / "results" / "new.jsonl").is_file()
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    to_dir = tmp_path / "to-dir.jsonl"
    to_dir.symlink_to(target.parent)
    for bad, needle in ((loop, "a symbolic link that cannot be followed"), (to_dir, "is a link to the directory")):
        result = run_cli("--model", model_dir, "--input", src, "--output", bad)
        assert result.returncode == 2 and needle in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_linked_output_folder_on_another_filesystem_is_written_through(make_checkpoint, tmp_path):
    """train.py --output runs/mine where runs/mine links to a folder on another filesystem (scratch):
    every save renames within the real folder's filesystem, and the link stays."""
    from minirm.checkpoint import load_model, save_model

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    model, _ = load_model(make_checkpoint("bert")[0])
    real = Path(tempfile.mkdtemp(dir=shm))
    try:
        link = tmp_path / "mine"
        link.symlink_to(real)
        save_model(model, link)  # a whole model folder replaced: it was a rename across filesystems
        save_model(model, link, into_existing=True)
        assert link.is_symlink() and (real / "model.safetensors").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    finally:
        shutil.rmtree(real, ignore_errors=True)


def test_list_models_and_recipes_fit_an_80_column_terminal():
    from minirm.scoring.cli import list_models
    from minirm.training.recipes import RECIPES, recipe_table

    for text in (list_models(80), recipe_table(80)):
        assert max(map(len, text.splitlines())) <= 80, text
    assert all(name in recipe_table(80) for name in RECIPES)
    wide = recipe_table(400).splitlines()
    assert len(wide) == 1 + len(RECIPES) and wide[0].split()[0] == "recipe"  # a table where it fits
    env = {**os.environ, "COLUMNS": "80"}
    for script, option in (("train.py", "--list-recipes"), ("score.py", "--list-models")):
        out = subprocess.run([sys.executable, str(ROOT / script), option], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 0 and max(map(len, out.stdout.splitlines())) <= 80, out.stdout


CONSOLE_SCRIPTS = {"minirm-score": ("minirm.scoring.cli", "Score (prompt, response) pairs"),
                   "minirm-train": ("minirm.training.cli", "Train a reward model")}


def test_pyproject_declares_the_console_scripts():
    import re

    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    declared = dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section, re.M))
    assert set(declared) == set(CONSOLE_SCRIPTS)
    for name, target in declared.items():
        module, function = target.split(":")
        assert module == CONSOLE_SCRIPTS[name][0]
        assert callable(getattr(__import__(module, fromlist=[function]), function))


@pytest.mark.parametrize("name", list(CONSOLE_SCRIPTS))
def test_console_scripts_and_python_m_work_from_any_directory(name, tmp_path):
    """The installed commands, and `python -m`, from a folder that is not the clone."""
    module, description = CONSOLE_SCRIPTS[name]
    script = shutil.which(name, path=str(Path(sys.executable).parent))
    assert script, f"{name} is not installed beside {sys.executable}: pip install -e . (pyproject's [project.scripts])"
    for argv, prog in (([script], name), ([sys.executable, "-m", module], f"python -m {module}")):
        out = subprocess.run([*argv, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith(f"usage: {prog} "), out.stdout + out.stderr
        assert description in out.stdout and f"  {prog} --" in out.stdout  # the examples name the command
    bad = subprocess.run([script, "--model"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and f"{name}: error:" in bad.stderr


def test_scores_through_the_console_script_from_elsewhere(make_checkpoint, tmp_path):
    script = shutil.which("minirm-score", path=str(Path(sys.executable).parent))
    assert script, "minirm-score is not installed: pip install -e ."
    model_dir, _ = make_checkpoint("bert")
    out = subprocess.run([script, "--model", str(model_dir), "hi", "hello"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(Scorer.from_pretrained(str(model_dir)).score_pairs(["hi"], ["hello"])[0],
                                              abs=1e-6)
