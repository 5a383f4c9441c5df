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
