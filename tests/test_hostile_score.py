"""score.py against hostile input (issue 10): every user mistake is exit status 2 and one line
naming the file, row or option and how to fix it; nothing half-written; every output line strict JSON."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minirm import Scorer
from minirm.scoring.cli import main
from minirm.errors import MinirmError

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "score.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env=env)


def score_in_one_and_two_processes(common: list[str], out: Path):
    """score.py `common` --output FILE in one process, then under torchrun in two (CPU, gloo):
    each run's (output file's bytes, stdout)."""
    import socket

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(ROOT / "score.py"), *common, "--output", str(out / "one.jsonl")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert one.returncode == 0, one.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), str(ROOT / "score.py"), *common, "--output", str(out / "two.jsonl")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    return ((out / "one.jsonl").read_bytes(), one.stdout), ((out / "two.jsonl").read_bytes(), two.stdout)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line_error(capsys, code, *needles):
    """main() returned 2 with one stderr line holding every needle, and printed nothing else."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().replace("\r", "\n").splitlines() if not ln.startswith("scoring:")]  # tqdm
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.fixture()
def bert(make_checkpoint):
    return str(make_checkpoint("bert")[0])


@pytest.fixture()
def rows_file(tmp_path):
    return write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "response": "hello"}, {"text": "a b c"}])


def fail_if_model_loads(monkeypatch):
    """Make any model load an error, to prove a check ran before it."""
    import minirm.scoring.scorer

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(minirm.scoring.scorer, "load_model", boom)


# --- 1. the output path ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parent_is_file", "output_is_dir", "proc", "deep_under_file"])
def test_unwritable_output_fails_before_loading(bert, rows_file, tmp_path, capsys, monkeypatch, kind):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    out = {"parent_is_file": tmp_path / "afile" / "out.jsonl", "output_is_dir": tmp_path / "adir",
           "proc": Path("/proc/minirm-test/out.jsonl"), "deep_under_file": tmp_path / "afile" / "a" / "b.jsonl"}[kind]
    fail_if_model_loads(monkeypatch)
    code = main(["--model", bert, "--input", str(rows_file), "--output", str(out)])
    one_line_error(capsys, code, "--output", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "in.jsonl"]  # nothing left behind
    assert list((tmp_path / "adir").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_fails_before_loading(bert, rows_file, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        fail_if_model_loads(monkeypatch)
        code = main(["--model", bert, "--input", str(rows_file), "--output", str(ro / "out.jsonl")])
        one_line_error(capsys, code, "--output", "cannot write")
    finally:
        ro.chmod(0o755)


def test_output_in_new_folders_is_created(bert, rows_file, tmp_path):
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    assert main(["--model", bert, "--input", str(rows_file), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert not [p for p in out.parent.iterdir() if p.name != "out.jsonl"]  # no probe or temp file left


def test_failure_at_final_write_is_one_line(bert, rows_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    code = main(["--model", bert, "--input", str(rows_file), "--output", str(out)])
    one_line_error(capsys, code, str(out), "Permission denied")
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- 2. permissions ------------------------------------------------------------------------


def test_new_output_gets_umask_mode_and_existing_keeps_its_mode(tmp_path):
    from minirm.text.records import write_jsonl_atomic

    old = os.umask(0o027)
    try:
        write_jsonl_atomic(tmp_path / "new.jsonl", [{"a": 1}])
        assert stat.S_IMODE((tmp_path / "new.jsonl").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    for mode in (0o644, 0o600, 0o664, 0o444):
        path = tmp_path / f"existing-{mode:o}.jsonl"
        path.write_text("old\n")
        path.chmod(mode)
        write_jsonl_atomic(path, [{"a": 1}])
        assert stat.S_IMODE(path.stat().st_mode) == mode
        assert path.read_text() == '{"a": 1}\n'


def test_cli_output_default_mode(bert, rows_file, tmp_path):
    out = tmp_path / "out.jsonl"
    old = os.umask(0o022)
    try:
        assert main(["--model", bert, "--input", str(rows_file), "--output", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_error_after_scoring_is_the_only_stderr_line(bert, rows_file, tmp_path):
    """Run as a script (stderr captured, not a terminal): no progress bar before the error line."""
    out = tmp_path / "out.jsonl"
    out.mkdir()
    result = run_cli("--model", bert, "--input", rows_file, "--output", out)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "is a directory" in result.stderr
    result = run_cli("--model", bert, "--input", rows_file, "--output", tmp_path / "ok.jsonl")
    assert result.returncode == 0 and result.stderr == "", result.stderr


# --- 3. --max-length -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "-512", "abc", "1.5"])
def test_max_length_not_positive_is_a_usage_error(value):
    result = run_cli("--model", "x", "--max-length", value, "a", "b")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("score.py: error: argument --max-length"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["1", "2", "3", "4"])
def test_max_length_below_special_tokens_names_the_minimum(bert, rows_file, capsys, value):
    long_rows = rows_file.parent / "long.jsonl"
    write_jsonl(long_rows, [{"prompt": "word " * 50, "response": "other " * 50}])
    code = main(["--model", bert, "--input", str(long_rows), "--max-length", value])
    one_line_error(capsys, code, f"--max-length {value}", "at least 5")  # [CLS] a [SEP] b [SEP]


def test_max_length_minimum_works(bert, tmp_path, capsys):
    long_rows = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 50, "response": "other " * 50}])
    assert main(["--model", bert, "--input", str(long_rows), "--max-length", "5"]) == 0
    assert "score" in json.loads(capsys.readouterr().out)


def test_max_length_api(make_checkpoint):
    model_dir = str(make_checkpoint("bert")[0])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(MinirmError, match="--max-length"):
            Scorer.from_pretrained(model_dir, max_length=bad)
    with pytest.raises(MinirmError, match="at least 5"):
        Scorer.from_pretrained(model_dir, max_length=4)
    roberta = str(make_checkpoint("roberta")[0])  # <s> a </s></s> b </s>
    with pytest.raises(MinirmError, match="at least 6"):
        Scorer.from_pretrained(roberta, max_length=5)
    assert len(Scorer.from_pretrained(roberta, max_length=6).score_pairs(["word " * 40], ["other " * 40])) == 1
    gpt2 = str(make_checkpoint("gpt2")[0])  # one text, no special tokens: 1 token is enough
    assert len(Scorer.from_pretrained(gpt2, max_length=1).score_texts(["a long text " * 20])) == 1


@pytest.mark.parametrize("value", ["0", "-4", "x"])
def test_batch_size_not_positive_is_a_usage_error(value):
    result = run_cli("--model", "x", "--batch-size", value, "a", "b")
    assert result.returncode == 2 and "argument --batch-size" in result.stderr and "Traceback" not in result.stderr


# --- 4. --device -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["banana", "cuda", "cuda:9", "cuda:-1", "", "meta:0"])
def test_bad_device_is_one_line_before_loading(bert, rows_file, capsys, monkeypatch, device):
    if device.startswith("cuda") and device != "cuda:-1" and torch.cuda.is_available() and device != "cuda:9":
        pytest.skip("CUDA is available")
    fail_if_model_loads(monkeypatch)
    code = main(["--model", bert, "--input", str(rows_file), "--device", device])
    one_line_error(capsys, code, "--device")


def test_bad_device_api(bert):
    with pytest.raises(MinirmError, match="--device 'banana'"):
        Scorer.from_pretrained(bert, device="banana")


# --- 5. --attention triton off CUDA -----------------------------------------------------------


def test_triton_on_cpu_without_interpreter_is_one_line(bert, rows_file, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fail_if_model_loads(monkeypatch)
    code = main(["--model", bert, "--input", str(rows_file), "--device", "cpu", "--attention", "triton"])
    one_line_error(capsys, code, "--attention triton", "sdpa", "TRITON_INTERPRET=1")
    with pytest.raises(MinirmError, match="--attention triton"):
        Scorer.from_pretrained(bert, device="cpu", attention="triton")


# --- 6. lone surrogates --------------------------------------------------------------------------


@pytest.mark.parametrize("line,field", [
    ('{"text": "\\ud800"}', "text"),
    ('{"prompt": "ok", "response": "x\\udfffy"}', "response"),
    ('{"text": "fine", "meta": {"note": ["\\uDBFF"]}}', "meta"),
    ('{"text": "fine", "\\ud800": 1}', "\\ud800"),
])
def test_lone_surrogate_names_file_line_and_field(bert, tmp_path, capsys, monkeypatch, line, field):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n\n' + line + "\n", encoding="utf-8")
    fail_if_model_loads(monkeypatch)
    code = main(["--model", bert, "--input", str(src)])
    one_line_error(capsys, code, f"{src}:3", f"field '{field}'", "surrogate")


def test_surrogate_pairs_are_fine(bert, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "emoji \\ud83d\\ude00 here", "note": "\\u00e9"}\n', encoding="utf-8")
    assert main(["--model", bert, "--input", str(src)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "emoji \U0001F600 here" and "score" in row


# --- 7. non-finite numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_rejected_with_file_line(bert, tmp_path, capsys, monkeypatch, literal):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n{"text": "a", "weight": [1, ' + literal + "]}\n", encoding="utf-8")
    fail_if_model_loads(monkeypatch)
    code = main(["--model", bert, "--input", str(src)])
    one_line_error(capsys, code, f"{src}:2", literal, "not a finite number", "null")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("to_file", [False, True])
def test_non_finite_score_stops_naming_the_row(bert, tmp_path, capsys, monkeypatch, bad, to_file):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine"}, {"text": "overflow"}, {"text": "also fine"}])
    real = Scorer.logits_to_scores

    def overflow(self, logits):
        scores = real(self, logits).clone()
        scores[logits.size(0) - 1] = bad  # the shortest sequence of the batch: "fine"
        return scores

    monkeypatch.setattr(Scorer, "logits_to_scores", overflow)
    out = tmp_path / "out.jsonl"
    code = main(["--model", bert, "--input", str(src), "--batch-size", "8"] + (["--output", str(out)] if to_file else []))
    captured = capsys.readouterr()
    line = one_line_error_from(captured, code)
    # float32 is already the widest: no dtype to suggest (the weights are checked finite at load)
    assert f"{src}:1" in line and "overflowed float32" in line and "--dtype" not in line
    assert captured.out == "" and not out.exists()


def one_line_error_from(captured, code):
    lines = [ln for ln in captured.err.strip().replace("\r", "\n").splitlines() if not ln.startswith("scoring:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_writer_refuses_non_json(tmp_path):
    from minirm.text.records import write_jsonl_atomic

    path = tmp_path / "out.jsonl"
    with pytest.raises(ValueError):
        write_jsonl_atomic(path, [{"score": 1.0}, {"score": float("nan")}])
    assert not path.exists() and list(tmp_path.iterdir()) == []


# --- 8. per-row errors name file:line ---------------------------------------------------------------


def test_empty_text_names_file_and_line(make_checkpoint, tmp_path, capsys):
    gpt2 = str(make_checkpoint("gpt2")[0])
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": "b"}\n\n{"text": ""}\n{"text": "c"}\n', encoding="utf-8")
    code = main(["--model", gpt2, "--input", str(src)])
    one_line_error(capsys, code, f"{src}:4", "'text'", "tokenizes to nothing")


def test_empty_preference_side_names_field(make_checkpoint, tmp_path, capsys):
    gpt2 = str(make_checkpoint("gpt2")[0])
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"chosen": "good", "rejected": ""}])
    code = main(["--model", gpt2, "--input", str(src)])
    one_line_error(capsys, code, f"{src}:2", "'rejected'")


# --- 12. Python API arguments --------------------------------------------------------------------------


@pytest.fixture()
def scorer(make_checkpoint):
    return Scorer.from_pretrained(str(make_checkpoint("bert")[0]))


@pytest.mark.parametrize("call,exc,message", [
    (lambda s: s.score_pairs([None], ["x"]), TypeError, "prompts[0] must be a str, got NoneType; use score_texts"),
    (lambda s: s.score_pairs("abc", "xyz"), TypeError, "prompts must be a list of strings, not a single str"),
    (lambda s: s.score_pairs(["a", "b"], ["x", 3]), TypeError, "responses[1] must be a str, got int"),
    (lambda s: s.score_pairs([b"a"], ["x"]), TypeError, "prompts[0] must be a str, got bytes"),
    (lambda s: s.score_pairs(["a"], b"x"), TypeError, "responses must be a list of strings, not a single bytes"),
    (lambda s: s.score_pairs(["a"], 5), TypeError, "responses must be a list of strings, got int"),
    (lambda s: s.score_pairs(["a", "b"], ["x"]), ValueError, "differ in length"),
    (lambda s: s.score_texts([1, 2]), TypeError, "texts[0] must be a str, got int"),
    (lambda s: s.score_texts("abc"), TypeError, "texts must be a list of strings"),
    (lambda s: s.score_texts(["ok", "\ud800"]), ValueError, "texts[1] holds a lone surrogate"),
    (lambda s: s.encode_pairs(["a"], [None]), TypeError, "responses[0] must be a str"),
])
def test_api_rejects_bad_arguments(scorer, call, exc, message):
    with pytest.raises(exc) as info:
        call(scorer)
    assert message in str(info.value)


def test_api_accepts_tuples_and_generators(scorer):
    a = scorer.score_pairs(("hi", "yo"), (r for r in ["hello", "hey"]))
    assert a == scorer.score_pairs(["hi", "yo"], ["hello", "hey"])
    assert scorer.score_texts([]) == []


# --- variants found by trying --------------------------------------------------------------------------


@pytest.mark.parametrize("value,needle", [("1e999", "not a finite number"), ("-1e999", "not a finite number"),
                                          ("9" * 5000, "cannot be read as JSON")])
def test_numbers_out_of_range_name_file_line(bert, tmp_path, capsys, monkeypatch, value, needle):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n{"text": "a", "x": ' + value + "}\n", encoding="utf-8")
    fail_if_model_loads(monkeypatch)
    code = main(["--model", bert, "--input", str(src)])
    one_line_error(capsys, code, f"{src}:2", needle)


@pytest.mark.parametrize("option", ["--output", "--input"])
def test_empty_path_option_is_one_line(bert, rows_file, capsys, option):
    args = ["--model", bert, "--input", str(rows_file), "--output", "out.jsonl"]
    args[args.index(option) + 1] = ""
    code = main(args)
    one_line_error(capsys, code, f"{option} is empty")


def test_input_directory_is_one_line(bert, tmp_path, capsys):
    code = main(["--model", bert, "--input", str(tmp_path)])
    one_line_error(capsys, code, str(tmp_path), "is a directory")


def test_undecodable_argument_is_one_line(bert):
    result = subprocess.run([sys.executable.encode(), str(ROOT / "score.py").encode(), b"--model", bert.encode(),
                             b"hi", b"caf\xe9"], capture_output=True, cwd=ROOT, timeout=120)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and err.strip().count("\n") == 0 and "RESPONSE 1" in err, err


def test_positional_nonfinite_score_names_the_response(bert, capsys, monkeypatch):
    monkeypatch.setattr(Scorer, "logits_to_scores", lambda self, logits: torch.full((logits.size(0),), float("nan")))
    code = main(["--model", bert, "--json", "hi", "hello", "hey"])
    captured = capsys.readouterr()
    line = one_line_error_from(captured, code)
    assert "RESPONSE" in line and "overflowed float32" in line and "--dtype" not in line and captured.out == ""


# --- variants: options that would do nothing, or do the wrong thing, for this model -------------

@pytest.mark.parametrize("argv, needle", [
    (["--alpha", "2"], "--alpha applies only to the Aira regression model"),
    (["--bot-name", "Ann"], "--bot-name: the Pygmalion chat format is for GPT-2 chat models"),
    (["--user-name", "Bo", "--memory", ""], "--user-name, --memory: the Pygmalion chat format"),
    (["--max-length", "3"], "use at least 5"),
    (["--max-length", "99999"], "exceeds this model's"),
    (["--revision", "v2"], "--revision v2 applies to Hub repos"),
], ids=["alpha", "bot-name", "user-name+memory", "max-length-short", "max-length-long", "revision-local"])
def test_options_the_model_cannot_take_fail_before_the_weights_load(bert, capsys, monkeypatch, argv, needle):
    fail_if_model_loads(monkeypatch)
    line = one_line_error(capsys, main(["--model", bert, *argv, "hi", "hello"]), needle)
    assert "drop" in line or "use" in line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_alpha_must_be_finite(make_checkpoint, capsys, monkeypatch, value):
    model_dir = str(make_checkpoint("bert-reward")[0])
    fail_if_model_loads(monkeypatch)
    capsys.readouterr()
    one_line_error(capsys, main(["--model", model_dir, f"--alpha={value}", "hi", "hello"]),
                   "--alpha must be a finite number")


def test_chat_names_shape_the_gpt2_text(make_checkpoint):
    from minirm.text.records import Sample

    scorer = Scorer.from_pretrained(str(make_checkpoint("gpt2")[0]), chat_names={"bot_name": "Ann", "memory": "kind"})
    assert scorer.tokenizer.format_text(Sample.pair("hi", "yo")) == "Ann's Persona: kind\n####\n\n<START>\nUser: hi\nAnn: yo"
    plain = Scorer.from_pretrained(str(make_checkpoint("gpt2")[0]))
    assert plain.tokenizer.format_text(Sample.pair("hi", "yo")) == "Bot's Persona: \n####\n\n<START>\nUser: hi\nBot: yo"


def test_a_checkpoint_with_no_tokenizer_is_never_loaded_for_nothing(make_checkpoint, tmp_path, capsys, monkeypatch):
    """The tokenizer is found before the weights load: a missing one costs no load time."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    src = make_checkpoint("bert")[0]
    for name in ("config.json", "model.safetensors"):
        (ckpt / name).write_bytes((src / name).read_bytes())
    fail_if_model_loads(monkeypatch)
    one_line_error(capsys, main(["--model", str(ckpt), "hi", "hello"]), "ships no tokenizer", "--tokenizer")


# --- variants: rows whose meaning is unclear, or whose values the output would lose ---------------

@pytest.mark.parametrize("line, needle", [
    ('{"prompt": "a", "response": "b", "prompt": "c"}', "field 'prompt' appears twice"),
    ('{"prompt": "a", "response": "b", "meta": {"k": 1, "k": 2}}', "field 'k' appears twice"),
    ('{"text": "a", "prompt": "x", "response": "y"}', "'prompt'+'response' and 'text' fields"),
    ('{"chosen": "a", "rejected": "b", "text": "c"}', "'chosen'+'rejected' and 'text' fields"),
    ('{"prompt": "a", "response": "b", "score": 7}', "already has a 'score' field"),
    ('{"chosen": "a", "rejected": "b", "correct": true}', "already has a 'correct' field"),
], ids=["duplicate", "nested-duplicate", "pair+text", "preference+text", "score", "correct"])
def test_ambiguous_or_clashing_rows_name_file_and_line(bert, tmp_path, capsys, monkeypatch, line, needle):
    fail_if_model_loads(monkeypatch)
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "fine", "response": "row"}\n' + line + "\n", encoding="utf-8")
    one_line_error(capsys, main(["--model", bert, "--input", str(src), "--output", str(tmp_path / "out.jsonl")]),
                   f"{src}:2:", needle)
    assert not (tmp_path / "out.jsonl").exists()
