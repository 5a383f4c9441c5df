"""Checkpoint IO: every layout transformers writes loads into minirm with the same logits,
broken checkpoints fail with one MinirmError line that names the problem, and what minirm
saves transformers loads back.

Expected logits always come from transformers (or, for the Aira regression model, from
tests/aira_remote_code.py, its published remote code rebuilt on transformers' BertModel); expected error contents come
from the files the test itself wrote.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import minirm
from minirm import MinirmError
from minirm.batching import pad_batch
from conftest import PROMPTS, RESPONSES

ATOL = 1e-5
BERT_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


# --- helpers ------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _hf_tokenizer(tok_dir: str):
    return tf.AutoTokenizer.from_pretrained(tok_dir)


def reference_inputs(family: str, tok_dir: Path) -> dict:
    """A right-padded batch of uneven lengths, tokenized by transformers."""
    tok = _hf_tokenizer(str(tok_dir))
    if family == "gpt2":
        tok.pad_token_id, tok.padding_side = 50256, "right"
        texts = [p + "\n" + r for p, r in zip(PROMPTS, RESPONSES)]
        enc = tok(texts, padding=True, return_tensors="pt")
    else:
        enc = tok(PROMPTS, RESPONSES, truncation=True, max_length=64, padding=True,
                  return_token_type_ids=False, return_tensors="pt")
    assert len(set(enc["attention_mask"].sum(1).tolist())) > 1  # really padded
    return enc


def hf_logits(family: str, hf_model, enc) -> torch.Tensor:
    with torch.no_grad():
        if family == "bert-reward":
            return hf_model(enc["input_ids"], enc["attention_mask"])
        return hf_model(**enc).logits


def minirm_logits(model, enc, pad_id: int) -> torch.Tensor:
    ids = [row[: int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    input_ids, lengths = pad_batch(ids, pad_id, "cpu")
    with torch.no_grad():
        return model(input_ids, lengths)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_safetensors(path: Path, edit) -> dict:
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})
    return state


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, f"MinirmError should be one line, got {msg!r}"
    return msg


# --- layouts ------------------------------------------------------------------------------

def test_sharded_safetensors_load_and_match(make_checkpoint, tmp_path):
    src, hf_model = make_checkpoint("bert")
    out = tmp_path / "sharded"
    hf_model.save_pretrained(out, max_shard_size="20KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and all((out / s).is_file() for s in shards)
    assert not (out / "model.safetensors").exists()

    model, cfg = minirm.load_model(out)
    enc = reference_inputs("bert", src)
    torch.testing.assert_close(minirm_logits(model, enc, cfg.pad_token_id), hf_logits("bert", hf_model, enc),
                               atol=ATOL, rtol=0)


def test_sharded_index_naming_a_missing_shard_is_refused(make_checkpoint, tmp_path):
    _, hf_model = make_checkpoint("bert")
    out = tmp_path / "sharded"
    hf_model.save_pretrained(out, max_shard_size="20KB")
    shard = sorted(set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values()))[-1]
    (out / shard).unlink()
    with pytest.raises(MinirmError) as err:
        minirm.load_model(out)
    assert shard in one_line(err)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_pytorch_bin_only(make_checkpoint, tmp_path, family):
    src, hf_model = make_checkpoint(family)
    out = tmp_path / "bin"
    out.mkdir()
    shutil.copy(src / "config.json", out / "config.json")
    # transformers 5 always writes safetensors, so write the legacy file the way it used to be written
    torch.save(hf_model.state_dict(), out / "pytorch_model.bin")
    assert not list(out.glob("*.safetensors"))

    model, cfg = minirm.load_model(out)
    enc = reference_inputs(family, src)
    pad = 50256 if family == "gpt2" else cfg.pad_token_id
    torch.testing.assert_close(minirm_logits(model, enc, pad), hf_logits(family, hf_model, enc), atol=ATOL, rtol=0)


class _Payload:
    """Unpickling this runs a shell command: what a malicious pytorch_model.bin does."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.sentinel))}",)


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused_without_running(make_checkpoint, tmp_path, zipfile):
    src, _ = make_checkpoint("bert")
    out = tmp_path / "evil"
    out.mkdir()
    shutil.copy(src / "config.json", out / "config.json")
    sentinel = tmp_path / "SENTINEL"
    state = {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2), "payload": _Payload(sentinel)}
    torch.save(state, out / "pytorch_model.bin", _use_new_zipfile_serialization=zipfile)
    assert not sentinel.exists()

    with pytest.raises(MinirmError) as err:
        minirm.load_model(out)
    assert "pytorch_model.bin" in one_line(err)
    assert not sentinel.exists(), "minirm ran code from a pickle"

    # the control: the payload is live, an unsafe load really does run it
    torch.load(out / "pytorch_model.bin", weights_only=False)
    assert sentinel.exists()


# --- what a checkpoint holds --------------------------------------------------------------

@pytest.mark.parametrize("family, key", [
    ("bert", "bert.encoder.layer.1.attention.self.query.weight"),
    ("gpt2", "transformer.h.1.attn.c_proj.weight"),  # a transposed Conv1D, named in HF terms
    ("bert-reward", "ff1.bias"),  # the published Aira RewardModel's own module names
])
def test_missing_tensor_is_named(make_checkpoint, tmp_path, family, key):
    src, _ = make_checkpoint(family)
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    edit_safetensors(ckpt / "model.safetensors", lambda s: s.pop(key))
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert key in one_line(err)


@pytest.mark.parametrize("family, key", [
    ("bert", "bert.encoder.layer.2.attention.self.query.weight"),  # a layer the 2-layer config has not
    ("bert", "extra_head.weight"),
    ("gpt2", "transformer.h.0.mlp.c_gate.weight"),
])
def test_unexpected_tensor_is_named(make_checkpoint, tmp_path, family, key):
    src, _ = make_checkpoint(family)
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    edit_safetensors(ckpt / "model.safetensors", lambda s: s.__setitem__(key, torch.zeros(32, 32)))
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert key in one_line(err)


@pytest.mark.parametrize("family, extra", [
    ("bert", {"bert.embeddings.position_ids": torch.arange(512)[None],
              "bert.embeddings.token_type_ids": torch.zeros(1, 512, dtype=torch.long)}),
    ("roberta", {"roberta.embeddings.position_ids": torch.arange(514)[None],
                 "roberta.pooler.dense.weight": torch.zeros(32, 32), "roberta.pooler.dense.bias": torch.zeros(32)}),
    ("gpt2", {"transformer.h.0.attn.bias": torch.tril(torch.ones(1, 1, 16, 16)),
              "transformer.h.0.attn.masked_bias": torch.tensor(-1e4),
              "transformer.h.1.attn.bias": torch.tril(torch.ones(1, 1, 16, 16)),
              "transformer.h.1.attn.masked_bias": torch.tensor(-1e4)}),
])
def test_ignored_buffers_are_accepted(make_checkpoint, tmp_path, family, extra):
    src, hf_model = make_checkpoint(family)
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    edit_safetensors(ckpt / "model.safetensors", lambda s: s.update(extra))
    model, cfg = minirm.load_model(ckpt)
    enc = reference_inputs(family, src)
    pad = 50256 if family == "gpt2" else cfg.pad_token_id
    torch.testing.assert_close(minirm_logits(model, enc, pad), hf_logits(family, hf_model, enc), atol=ATOL, rtol=0)


def test_mis_shaped_tensor_names_tensor_and_both_shapes(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    raw = json.loads((ckpt / "config.json").read_text())
    assert raw["intermediate_size"] == 64 and raw["hidden_size"] == 32
    raw["intermediate_size"] = 128
    (ckpt / "config.json").write_text(json.dumps(raw))
    # the tensors whose shape depends on intermediate_size: (file shape, shape config.json implies)
    affected = {}
    for layer in range(raw["num_hidden_layers"]):
        p = f"bert.encoder.layer.{layer}."
        affected[p + "intermediate.dense.weight"] = ("(64, 32)", "(128, 32)")
        affected[p + "intermediate.dense.bias"] = ("(64)", "(128)")
        affected[p + "output.dense.weight"] = ("(32, 64)", "(32, 128)")
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    msg = one_line(err)
    named = [k for k in affected if repr(k) in msg or f"{k} " in msg or msg.endswith(k)]
    assert len(named) == 1, msg
    in_file, implied = affected[named[0]]
    assert in_file in msg.replace(",)", ")") and implied in msg.replace(",)", ")"), msg


@pytest.mark.parametrize("keep", [0.5, 8 / 1e9], ids=["half", "header-cut"])
def test_truncated_safetensors(make_checkpoint, tmp_path, keep):
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: max(4, int(len(data) * keep))])
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert "model.safetensors" in one_line(err)


def test_truncated_pytorch_bin(make_checkpoint, tmp_path):
    src, hf_model = make_checkpoint("bert")
    out = tmp_path / "bin"
    out.mkdir()
    shutil.copy(src / "config.json", out / "config.json")
    torch.save(hf_model.state_dict(), out / "pytorch_model.bin")
    data = (out / "pytorch_model.bin").read_bytes()
    (out / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(MinirmError) as err:
        minirm.load_model(out)
    assert "pytorch_model.bin" in one_line(err)


# --- config.json --------------------------------------------------------------------------

def test_unknown_architecture_lists_supported(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    raw = json.loads((ckpt / "config.json").read_text())
    raw.update(architectures=["MambaForCausalLM"], model_type="mamba")
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    msg = one_line(err)
    assert "MambaForCausalLM" in msg
    for supported in ("BertForSequenceClassification", "RobertaForSequenceClassification",
                      "GPT2ForSequenceClassification", "Qwen3ForSequenceClassification", "RewardModel"):
        assert supported in msg


def test_sequence_classification_of_unsupported_base_is_refused(make_checkpoint, tmp_path):
    """A BERT-typed config naming another head must not be built as a BERT classifier."""
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    raw = json.loads((ckpt / "config.json").read_text())
    raw.update(architectures=["ElectraForSequenceClassification"])
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert "ElectraForSequenceClassification" in one_line(err)


def test_invalid_json_config(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    (ckpt / "config.json").write_text('{"model_type": "bert", "hidden_size": 32,')
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert "config.json" in one_line(err)


def test_missing_config(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    (ckpt / "config.json").unlink()
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert "config.json" in one_line(err)


def test_missing_weights(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("bert")
    ckpt = copy_checkpoint(src, tmp_path / "ckpt")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(MinirmError) as err:
        minirm.load_model(ckpt)
    assert str(ckpt) in one_line(err)


# --- saving -------------------------------------------------------------------------------

def _perturb(model, seed: int) -> None:
    """Change every weight, so a save that copied the source file would be caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_save_round_trip_through_transformers(make_checkpoint, tmp_path, family):
    src, _ = make_checkpoint(family)
    model, cfg = minirm.load_model(src)
    _perturb(model, seed=7)
    out = minirm.save_model(model, tmp_path / "saved", tokenizer_dir=src)

    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()

    reloaded, info = tf.AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    reloaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    enc = reference_inputs(family, src)
    pad = 50256 if family == "gpt2" else cfg.pad_token_id
    ours = minirm_logits(model, enc, pad)
    torch.testing.assert_close(ours, hf_logits(family, reloaded, enc), atol=ATOL, rtol=0)
    # and the perturbation was real: the saved model differs from the source
    original = hf_logits(family, make_checkpoint(family)[1], enc)
    assert (ours - original).abs().max() > 1e-3


def test_save_over_existing_directory_replaces_it(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("bert")
    model, _ = minirm.load_model(src)
    parent = tmp_path / "parent"
    out = parent / "model"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    (out / "model.safetensors.index.json").write_text("{}")  # would shadow model.safetensors if left behind

    minirm.save_model(model, out)
    assert sorted(p.name for p in parent.iterdir()) == ["model"]  # no temp or .old directory left behind
    assert not (out / "stale.txt").exists() and not (out / "model.safetensors.index.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    again, _ = minirm.load_model(out)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name

    minirm.save_model(model, out, tokenizer_dir=src)  # and once more, over a complete checkpoint
    assert sorted(p.name for p in parent.iterdir()) == ["model"]
    assert {f for f in BERT_TOKENIZER_FILES} <= {p.name for p in out.iterdir()}


# --- aliases, dtype, device ---------------------------------------------------------------

@pytest.mark.parametrize("family, ours, hf, transpose", [
    ("bert", "encoder.layers.1.attn.q.weight", "bert.encoder.layer.1.attention.self.query.weight", False),
    ("gpt2", "layers.0.attn.qkv.weight", "transformer.h.0.attn.c_attn.weight", True),
])
def test_dtype_and_device_of_loaded_parameters(make_checkpoint, family, ours, hf, transpose):
    src, _ = make_checkpoint(family)
    model, _ = minirm.load_model(src, dtype=torch.bfloat16)
    params = dict(model.named_parameters())
    assert params and all(p.dtype == torch.bfloat16 for p in params.values())
    assert all(t.device.type == "cpu" for t in list(params.values()) + list(model.buffers()))
    assert not model.training
    with safe_open(str(src / "model.safetensors"), framework="pt") as f:
        expected = f.get_tensor(hf)
    expected = (expected.t() if transpose else expected).to(torch.bfloat16)
    assert torch.equal(params[ours].detach(), expected)
