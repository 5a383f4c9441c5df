"""score.py end to end: arguments, JSONL in and out, order, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from minirm import Scorer
from minirm.cli_score import main

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
