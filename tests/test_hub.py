"""Model names through a fake Hugging Face cache, laid out like the real one, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from minirm import MinirmError, Scorer
from minirm.hub import ALIASES, resolve_model
from hub_cache import dir_files, put_snapshot

SHA_MAIN = "a" * 40
SHA_PR = "b" * 40


def fake_cache(root: Path, repo_id: str, snapshots: dict[str, tuple[str, Path]]) -> Path:
    """root/models--org--name/ holding each ref's commit, with the files of a checkpoint directory."""
    for ref, (sha, src) in snapshots.items():
        put_snapshot(root, "model", repo_id, dir_files(src), revision=ref, commit=sha)
    return root


@pytest.mark.parametrize("alias,family", [("aux-roberta", "roberta"), ("aira-bert", "bert"), ("chai-gpt2", "gpt2")])
def test_alias_resolves_through_the_cache_offline(make_checkpoint, pairs, tmp_path, monkeypatch, alias, family):
    model_dir, _ = make_checkpoint(family)
    cache = fake_cache(tmp_path / "hub", ALIASES[alias], {"main": (SHA_MAIN, model_dir)})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model(alias)
    assert resolved == cache / f"models--{ALIASES[alias].replace('/', '--')}" / "snapshots" / SHA_MAIN
    prompts, responses = pairs
    via_alias = Scorer.from_pretrained(alias).score_pairs(prompts, responses)
    via_dir = Scorer.from_pretrained(str(model_dir)).score_pairs(prompts, responses)
    # two separately loaded models: equal weights, but not necessarily the same last float bit
    torch.testing.assert_close(torch.tensor(via_alias), torch.tensor(via_dir), atol=1e-6, rtol=0)
    assert resolve_model(ALIASES[alias]) == resolved  # the repo id works as well


def test_revision_is_passed_through(make_checkpoint, tmp_path, monkeypatch):
    main_dir, _ = make_checkpoint("bert", seed=0)
    other_dir, _ = make_checkpoint("bert", seed=1)
    repo = ALIASES["aira-bert"]
    cache = fake_cache(tmp_path / "hub", repo, {"main": (SHA_MAIN, main_dir), "v2": (SHA_PR, other_dir)})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve_model("aira-bert").name == SHA_MAIN
    assert resolve_model("aira-bert", revision="v2").name == SHA_PR
    assert resolve_model("aira-bert", revision=SHA_PR).name == SHA_PR
    a = Scorer.from_pretrained("aira-bert").score_pairs(["p"], ["r"])
    b = Scorer.from_pretrained("aira-bert", revision="v2").score_pairs(["p"], ["r"])
    assert a != b  # different weights really were loaded


def test_uncached_model_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(MinirmError, match=r"not in the Hugging Face cache and HF_HUB_OFFLINE=1; .*hf download"):
        resolve_model("chai-gpt2")


def test_unreachable_hub_fails_fast_without_offline_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused at once
    with pytest.raises(MinirmError, match="the Hub is unreachable"):
        resolve_model("chai-gpt2")


def test_gpt2_model_without_tokenizer_uses_the_cached_gpt2_tokenizer(make_checkpoint, tmp_path, monkeypatch):
    """The CHAI repo ships no tokenizer (its card loads 'gpt2's): minirm falls back to openai-community/gpt2."""
    model_dir, _ = make_checkpoint("gpt2")
    weights_only, tokenizer_only = tmp_path / "weights", tmp_path / "tok"
    weights_only.mkdir(), tokenizer_only.mkdir()
    for f in model_dir.iterdir():
        is_tok = f.name.startswith(("tokenizer", "vocab", "merges", "special"))
        shutil.copy(f, (tokenizer_only if is_tok else weights_only) / f.name)
    cache = fake_cache(tmp_path / "hub", "openai-community/gpt2", {"main": (SHA_MAIN, tokenizer_only)})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    got = Scorer.from_pretrained(str(weights_only)).score_texts(["Bot: hi"])
    want = Scorer.from_pretrained(str(model_dir)).score_texts(["Bot: hi"])
    # two separately loaded models: equal weights, but not necessarily the same last float bit
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-6, rtol=0)


def test_a_model_minirm_downloaded_reads_back_offline(make_checkpoint, tmp_path, monkeypatch):
    """minirm downloads config, tokenizer files and one kind of weights; huggingface_hub lists the
    repo's every file beside them (trees/<commit>.json). The lookup must not call that incomplete."""
    model_dir, _ = make_checkpoint("roberta")
    files = {**dir_files(model_dir), "README.md": b"# card\n", "pytorch_model.bin": b"weights, not fetched",
             "onnx/model.onnx": b"not fetched"}
    fetched = {f for f in files if f in dir_files(model_dir)}
    cache = tmp_path / "hub"
    put_snapshot(cache, "model", ALIASES["aux-roberta"], files, fetched=fetched)
    tokenizer_only = {f for f in fetched if f != "model.safetensors"}  # the gpt2 tokenizer fallback's download
    put_snapshot(cache, "model", "openai-community/gpt2", files, fetched=tokenizer_only)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    scores = Scorer.from_pretrained("aux-roberta").score_pairs(["Hi"], ["Hello!"])
    want = Scorer.from_pretrained(str(model_dir)).score_pairs(["Hi"], ["Hello!"])
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(want), atol=1e-6, rtol=0)
    assert (resolve_model("openai-community/gpt2", files="tokenizer") / "tokenizer.json").is_file()
    with pytest.raises(MinirmError, match="not in the Hugging Face cache"):  # no weights there: not a model
        resolve_model("openai-community/gpt2")
