"""Decoder LLM checkpoints: sharded safetensors, base (ForCausalLM / bare) checkpoints whose LM head
transformers drops, old buffers, and minirm's own saves read back by transformers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file
from test_llm_parity import ATOL, VARIANTS, hf_config, hf_logits, hf_model, our_logits, ragged_ids, save_tokenizer

from minirm import MinirmError, Scorer
from minirm.checkpoint import SAFETENSORS_INDEX, checkpoint_files, load_for_training, load_model, save_model

IDS = ragged_ids([25, 25, 11, 3, 1], seed=7)


@pytest.mark.parametrize("variant", ["llama", "qwen3", "gemma2"])
def test_sharded_checkpoints_load_shard_by_shard_into_the_target_dtype(tmp_path, variant):
    reference = hf_model(variant)
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    reference.save_pretrained(tmp_path / "whole")
    shards = checkpoint_files(tmp_path / "sharded")
    assert (tmp_path / "sharded" / SAFETENSORS_INDEX).is_file() and len(shards) > 3
    model, _ = load_model(tmp_path / "sharded")
    torch.testing.assert_close(our_logits(model, IDS, "packed"), hf_logits(reference, IDS), atol=ATOL, rtol=0)
    whole, _ = load_model(tmp_path / "whole")
    for (name, p), (_, q) in zip(model.state_dict().items(), whole.state_dict().items()):
        assert torch.equal(p, q), name
    # bf16 shards of a bf16 checkpoint: every tensor kept in bf16, as read
    reference.to(torch.bfloat16).save_pretrained(tmp_path / "bf16", max_shard_size="40KB")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    half, _ = load_model(tmp_path / "bf16", torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    for (name, p), (_, q) in zip(half.state_dict().items(), whole.state_dict().items()):
        assert torch.equal(p, q.to(torch.bfloat16)), name


@pytest.mark.parametrize("variant, tied", [("llama", False), ("llama", True), ("qwen3", True), ("gemma2", True)])
def test_a_causal_lm_checkpoint_trains_with_a_fresh_score_head(tmp_path, variant, tied):
    """A base ForCausalLM checkpoint: scoring it is one line; training starts a fresh `score` on its
    decoder, dropping lm_head (saved when untied, absent when tied) as transformers drops it."""
    prefix, _ = VARIANTS[variant]
    torch.manual_seed(1)
    base = getattr(tf, f"{prefix}ForCausalLM")(hf_config(variant, tie_word_embeddings=tied)).eval()
    base.save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert ("lm_head.weight" in keys) == (not tied)
    with pytest.raises(MinirmError, match=r"a base model \(.*ForCausalLM\) with no reward head"):
        Scorer.from_pretrained(str(tmp_path))
    model, cfg, fresh = load_for_training(tmp_path, num_labels=1)
    assert fresh == ["score.weight"] and cfg.spec.architecture == f"{prefix}ForSequenceClassification"
    reference = getattr(tf, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path, num_labels=1).eval()
    with torch.no_grad():
        reference.score.weight.copy_(model.score.weight)
    model.eval()
    torch.testing.assert_close(our_logits(model, IDS, "packed"), hf_logits(reference, IDS), atol=ATOL, rtol=0)


def test_a_bare_base_model_and_old_rotary_buffers_load(tmp_path):
    """LlamaModel.save_pretrained has no "model." prefix; older checkpoints saved each layer's
    rotary_emb.inv_freq, which transformers ignores."""
    torch.manual_seed(2)
    bare = tf.LlamaModel(hf_config("llama")).eval()
    bare.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    assert "layers.0.self_attn.q_proj.weight" in state
    state["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model, _, fresh = load_for_training(tmp_path, num_labels=1)
    assert fresh == ["score.weight"]
    torch.testing.assert_close(model.layers[0].attn.q.weight, bare.layers[0].self_attn.q_proj.weight, atol=0, rtol=0)


@pytest.mark.parametrize("variant", ["llama-mqa-wide-tied", "qwen2-window", "qwen3", "gemma2"])
def test_minirm_saves_what_transformers_loads(tmp_path, variant):
    reference = hf_model(variant)
    reference.save_pretrained(tmp_path / "in")
    model, _ = load_model(tmp_path / "in")
    save_model(model, tmp_path / "out")
    prefix, _ = VARIANTS[variant]
    again = getattr(tf, f"{prefix}ForSequenceClassification").from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(hf_logits(again, IDS), hf_logits(reference, IDS), atol=0, rtol=0)


def test_the_llm_families_score_in_bf16_when_published_in_bf16(tmp_path, make_checkpoint):
    """The default dtype follows config.json's for the LLM families (their cards load them in bf16;
    fp32 would double the memory); an fp32 checkpoint and the BERT-era families stay fp32."""
    reference = hf_model("llama")
    for name, model in (("bf16", reference.to(torch.bfloat16)), ("fp32", hf_model("llama"))):
        model.save_pretrained(tmp_path / name)
        save_tokenizer(tmp_path / name)
    assert Scorer.from_pretrained(str(tmp_path / "bf16")).dtype == torch.bfloat16
    assert Scorer.from_pretrained(str(tmp_path / "fp32")).dtype == torch.float32
    assert Scorer.from_pretrained(str(tmp_path / "bf16"), dtype="float32").dtype == torch.float32
    bert_dir, bert = make_checkpoint("bert")
    copy.deepcopy(bert).to(torch.bfloat16).save_pretrained(tmp_path / "bert-bf16")  # the fixture's model stays fp32
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (bert_dir / f).is_file():
            (tmp_path / "bert-bf16" / f).write_bytes((bert_dir / f).read_bytes())
    assert Scorer.from_pretrained(str(tmp_path / "bert-bf16")).dtype == torch.float32
