"""Broken or unusual checkpoints and tokenizers: one line that names the file, field or option
and says what to do, or a correct result. Never a traceback, never a misleading name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from minirm import MinirmError, Scorer
from minirm.hub import resolve_model
from conftest import PROMPTS, RESPONSES


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text.strip()
    return text


def edit_config(folder, **fields):
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("field, value, should", [
    ("hidden_size", "32", "a positive integer"),
    ("num_attention_heads", 4.0, "a positive integer"),
    ("num_hidden_layers", 0, "a positive integer"),
    ("vocab_size", True, "a positive integer"),
    ("layer_norm_eps", "1e-12", "a non-negative number"),
    ("hidden_dropout_prob", -0.1, "a non-negative number"),
    ("hidden_act", 7, "a string"),
    ("pad_token_id", "0", "an integer"),
])
def test_config_field_of_the_wrong_type_is_named(make_checkpoint, tmp_path, field, value, should):
    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    edit_config(ckpt, **{field: value})
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt))
    assert f"field {field!r} must be {should}, not {json.dumps(value)}" in one_line(err)
    assert "config.json" in one_line(err)


def test_gpt2_config_fields_are_checked_too(make_checkpoint, tmp_path):
    ckpt = copy_checkpoint(make_checkpoint("gpt2")[0], tmp_path / "ckpt")
    edit_config(ckpt, n_embd="32")
    with pytest.raises(MinirmError, match=r"field 'n_embd' must be a positive integer, not \"32\""):
        Scorer.from_pretrained(str(ckpt))


def test_pre_zip_pytorch_model_bin_loads_weights_only(make_checkpoint, tmp_path):
    """PyTorch < 1.6 wrote pickles that mmap cannot read; they load into memory, still weights-only."""
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    import zipfile

    assert not zipfile.is_zipfile(ckpt / "pytorch_model.bin")
    got = Scorer.from_pretrained(str(ckpt)).score_pairs(PROMPTS, RESPONSES)
    want = Scorer.from_pretrained(str(src)).score_pairs(PROMPTS, RESPONSES)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-6, rtol=0)


def test_checkpoint_without_tokenizer_falls_back_to_a_real_repo_id(make_checkpoint, tmp_path):
    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    for f in ckpt.iterdir():
        if f.name != "config.json" and f.suffix != ".safetensors":
            f.unlink()
    with pytest.raises(MinirmError) as err:  # offline, with an empty cache
        Scorer.from_pretrained(str(ckpt))
    message = one_line(err)
    assert "google-bert/bert-base-cased" in message and "is not a directory" not in message
    assert message.startswith(f"{ckpt} ships no tokenizer") and message.endswith("pass --tokenizer DIR_OR_REPO")


def test_missing_tokenizer_directory_is_named_as_tokenizer(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("bert")
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(model_dir), tokenizer=str(tmp_path / "no-such-dir"))
    assert one_line(err).startswith("--tokenizer ") and "--model" not in one_line(err)


@pytest.mark.parametrize("files, option", [("model", "--model"), ("tokenizer", "--tokenizer")])
def test_a_file_where_a_directory_belongs(tmp_path, files, option):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(MinirmError) as err:
        resolve_model(str(tmp_path / "model.safetensors"), files=files)
    assert one_line(err).startswith(f"{option} ") and "is a file; give the directory that holds it" in one_line(err)


def test_tokenizer_json_with_an_empty_vocabulary(make_checkpoint, tmp_path):
    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    raw = json.loads((ckpt / "tokenizer.json").read_text())
    raw["model"]["vocab"] = {}
    raw["added_tokens"] = []
    raw["post_processor"] = None
    (ckpt / "tokenizer.json").write_text(json.dumps(raw))
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt))
    assert "tokenizer.json: its vocabulary is empty" in one_line(err)


# --- issue 24: a base model, non-finite weights, a vocabulary too small --------------------------------------

def base_checkpoint(out, cls_name: str, **overrides):
    """A transformers BERT of another class than a reward model (a base encoder, an MLM, a token
    classifier), saved as transformers saves it, with MiniLM's tokenizer."""
    import transformers as tf

    from conftest import minilm_dir, tiny_config

    torch.manual_seed(0)
    getattr(tf, cls_name)(tiny_config("bert", **overrides)).save_pretrained(out)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, out / name)
    return out


def fail_if_weights_load(monkeypatch):
    import minirm.scoring.scorer

    def boom(*a, **k):
        raise AssertionError("the weights were loaded before the check")

    monkeypatch.setattr(minirm.scoring.scorer, "load_model", boom)


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM", "BertForPreTraining"])
def test_a_base_model_says_it_has_no_reward_head_before_the_weights_load(tmp_path, monkeypatch, cls_name):
    ckpt = base_checkpoint(tmp_path / "base", cls_name)
    fail_if_weights_load(monkeypatch)
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt))
    line = one_line(err)
    assert f"a base model ({cls_name}) with no reward head" in line and f"train.py --model {ckpt}" in line
    assert "incomplete" not in line


def test_a_base_model_without_architectures_is_named_by_its_weights(tmp_path):
    """No "architectures" in config.json: the missing head tensors say it is a base model."""
    ckpt = base_checkpoint(tmp_path / "base", "BertModel")
    config = json.loads((ckpt / "config.json").read_text())
    del config["architectures"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt))
    assert "a base model with no reward head (classifier.weight, classifier.bias missing)" in one_line(err)


def test_another_tasks_head_is_not_scored_as_a_reward(tmp_path, monkeypatch):
    """A 2-label token classifier has a classifier of a reward model's shape: it would load, and
    score [CLS]'s token tag as a reward. It is refused, naming its class."""
    ckpt = base_checkpoint(tmp_path / "ner", "BertForTokenClassification", num_labels=2)
    fail_if_weights_load(monkeypatch)
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt))
    assert "a BertForTokenClassification checkpoint, not a reward model" in one_line(err)


def test_a_base_model_still_trains(tmp_path):
    from minirm.checkpoint import load_for_training

    ckpt = base_checkpoint(tmp_path / "base", "BertModel")
    _, _, fresh = load_for_training(ckpt)
    assert fresh == ["head.classifier.weight", "head.classifier.bias"]


def poison(ckpt, name: str, value: float):
    from safetensors.torch import save_file

    state = load_file(str(ckpt / "model.safetensors"))
    state[name] = state[name].clone()
    state[name].view(-1)[3] = value
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "infinity")])
def test_non_finite_weights_are_named_at_load_for_scoring_and_training(make_checkpoint, tmp_path, value, kind):
    from minirm.checkpoint import load_for_training

    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    name = "bert.encoder.layer.1.attention.self.query.weight"
    poison(ckpt, name, value)
    for load in (lambda: Scorer.from_pretrained(str(ckpt)), lambda: Scorer.from_pretrained(str(ckpt), dtype="bfloat16"),
                 lambda: load_for_training(ckpt)):
        with pytest.raises(MinirmError) as err:
            load()
        line = one_line(err)
        assert f"tensor {name!r} holds {kind} in 1 of its" in line and "damaged" in line
        assert "overflow" not in line and "--dtype" not in line


def test_weights_beyond_float16_are_named_with_a_dtype_that_holds_them(make_checkpoint, tmp_path):
    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    name = "bert.encoder.layer.0.output.dense.weight"
    poison(ckpt, name, 1e6)
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt), dtype="float16")
    line = one_line(err)
    assert f"tensor {name!r} holds values up to 1e+06, beyond float16's range" in line and "bfloat16 or float32" in line
    Scorer.from_pretrained(str(ckpt), dtype="bfloat16")  # bf16 holds it


def test_a_non_finite_score_blames_the_activations_and_offers_a_wider_dtype():
    from minirm.scoring.scorer import overflow_reason

    assert "score with --dtype bfloat16 or float32" in overflow_reason(float("inf"), torch.float16)
    assert "score with --dtype float32" in overflow_reason(float("nan"), torch.bfloat16)
    fp32 = overflow_reason(float("nan"), torch.float32)
    assert "overflowed float32" in fp32 and "--dtype" not in fp32


def test_a_vocabulary_smaller_than_the_tokenizer_is_one_line_before_the_weights_load(make_checkpoint, tmp_path,
                                                                                  monkeypatch):
    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    edit_config(ckpt, vocab_size=1000)
    fail_if_weights_load(monkeypatch)
    with pytest.raises(MinirmError) as err:
        Scorer.from_pretrained(str(ckpt))
    line = one_line(err)
    assert "tokenizer.json: its vocabulary has ids up to 30521, but the model's config.json has vocab_size 1000" in line
    edit_config(ckpt, vocab_size=30522, pad_token_id=40000)
    with pytest.raises(MinirmError, match="its padding id is 40000, but the model's config.json has vocab_size 30522"):
        Scorer.from_pretrained(str(ckpt))


def test_an_added_token_past_the_vocabulary_names_the_row(make_checkpoint, tmp_path, capsys):
    """A tokenizer whose added tokens lie beyond the model's vocab_size: texts without them score,
    a text holding one is refused with its row and token, in scoring and in training."""
    from tokenizers import Tokenizer

    from minirm.scoring.cli import main
    from minirm.training.cli import main as train_main

    ckpt = copy_checkpoint(make_checkpoint("bert")[0], tmp_path / "ckpt")
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    tok.add_special_tokens(["<|im_start|>"])  # id 30522 = vocab_size
    tok.save(str(ckpt / "tokenizer.json"))
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "hi", "response": "fine"}) + "\n"
                    + json.dumps({"prompt": "<|im_start|>user hi", "response": "fine"}) + "\n")
    assert main(["--model", str(ckpt), "hi", "fine"]) == 0
    capsys.readouterr()
    assert main(["--model", str(ckpt), "--input", str(rows)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{rows}:2" in err and "'<|im_start|>' (id 30522), beyond the model's vocab_size 30522" in err
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p, "chosen": "good", "rejected": "bad"}) + "\n"
                             for p in ["a", "b", "<|im_start|> c", "d"]))
    assert train_main(["--recipe", "aira-bert", "--model", str(ckpt), "--data", str(prefs), "--output",
                       str(tmp_path / "run"), "--max-steps", "1", "--eval-fraction", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{prefs}:3" in err and "<|im_start|>" in err
