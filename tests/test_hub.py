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


# --- huggingface_hub's failures: one mapping (hub.hub_errors) for models and datasets ---------

class ConnectError(Exception):
    """Stands in for httpx's connection errors, which are not huggingface_hub's own."""


def hub_failures():
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    response = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co/org/name"))
    return {
        "revision": RevisionNotFoundError("Revision Not Found", response=response),
        "gated": GatedRepoError("Access restricted", response=response),
        "missing": RepositoryNotFoundError("Repository Not Found", response=response),
        "http": HfHubHTTPError("500 Server Error\nInternal Server Error for url", response=response),
        "connect": ConnectError("[Errno 111] Connection refused\nmore"),
    }


MODEL_MESSAGES = {
    "revision": "org/name has no revision 'v9'; check --revision",
    "gated": "org/name is gated; accept its terms on the Hub and log in with `hf auth login`",
    "missing": "org/name was not found on the Hub (or is private); check the name",
    "http": "cannot reach the Hugging Face Hub for org/name (500 Server Error); {hint}",
    "connect": "cannot reach the Hugging Face Hub for org/name (ConnectError); {hint}",
}
DATASET_MESSAGES = {
    "revision": "dataset org/name has no revision 'v9'; check the revision",
    "gated": "dataset org/name is gated; accept its terms on the Hub and log in with `hf auth login`",
    "missing": "dataset org/name was not found on the Hub (or is private); check the name",
    "http": "cannot download dataset org/name (500 Server Error); {hint}",
    "connect": "cannot download dataset org/name ([Errno 111] Connection refused); {hint}",
}


@pytest.fixture
def failing_hub(tmp_path, monkeypatch):
    """A reachable Hub whose downloads raise `failing_hub[0]`; nothing is cached."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("minirm.hub.hub_reachable", lambda: (True, ""))
    failure = [None]

    def snapshot_download(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        raise failure[0]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: ["model.safetensors"])
    return failure


@pytest.mark.parametrize("kind", list(MODEL_MESSAGES))
def test_model_download_failures_are_one_line(failing_hub, kind):
    from minirm.hub import download_hint

    failing_hub[0] = hub_failures()[kind]
    with pytest.raises(MinirmError) as err:
        resolve_model("org/name", revision="v9")
    hint = download_hint("org/name", "v9", "model", "a local checkpoint directory")
    assert str(err.value) == MODEL_MESSAGES[kind].format(hint=hint)


@pytest.mark.parametrize("kind", list(DATASET_MESSAGES))
def test_dataset_download_failures_are_one_line(failing_hub, kind):
    from minirm.training.data import read_rows
    from minirm.hub import download_hint

    failing_hub[0] = hub_failures()[kind]
    with pytest.raises(MinirmError) as err:
        read_rows("org/name", revision="v9")
    hint = download_hint("org/name", "v9", "dataset", "a local data file")
    assert str(err.value) == DATASET_MESSAGES[kind].format(hint=hint)


def test_a_bug_during_a_download_keeps_its_traceback(failing_hub):
    from minirm.training.data import read_rows

    failing_hub[0] = KeyError("a bug, not the network")
    with pytest.raises(KeyError):
        resolve_model("org/name")
    with pytest.raises(KeyError):
        read_rows("org/name")
