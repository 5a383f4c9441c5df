"""The LLM families beyond scoring in-process: the reward server, and training (the pairwise
recipe's loss with bf16 autocast and gradient checkpointing), on tiny chat models whose
tokenizers carry the published Qwen3 and Llama 3.2 chat templates (test_llm_templates.py)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from test_llm_parity import hf_logits
from test_llm_templates import CONVERSATIONS, build
from test_train import cli_args, metrics, pair_rows, write_jsonl

from minirm import Scorer
from minirm.training.cli import main as train_main

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from minirm.scoring.serve import ServerThread, build_app  # noqa: E402

PROMPTS = ["How do I bake bread?", "Is the sky blue?", "Tell me a joke."]
RESPONSES = ["Mix flour, water, salt and yeast.", "Yes, by day.", "Why did the chicken cross the road?"]


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return build(tmp_path_factory.mktemp("serve") / "qwen3", "qwen3")


def reference_scores(model_dir, reference, conversations):
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    ids = [tok.apply_chat_template(m, tokenize=True) for m in conversations]
    ids = [i["input_ids"] if hasattr(i, "keys") else i for i in ids]
    return hf_logits(reference, ids, pad=reference.config.pad_token_id)[:, 0]


def test_the_server_scores_a_chat_model_as_transformers(qwen3):
    model_dir, reference = qwen3
    scorer = Scorer.from_pretrained(str(model_dir), device="cpu")
    pairs = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in zip(PROMPTS, RESPONSES)]
    expected = reference_scores(model_dir, reference, pairs + CONVERSATIONS)
    rows = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES)] + [{"messages": m} for m in CONVERSATIONS]
    with ServerThread(build_app(scorer)) as url:
        scored = httpx.post(f"{url}/score", json={"rows": rows}).json()["rows"]
    torch.testing.assert_close(torch.tensor([r["score"] for r in scored]), expected, atol=1e-5, rtol=0)


def test_the_pairwise_recipe_trains_a_chat_model_in_bf16_with_checkpointing(qwen3, tmp_path):
    """Preference pairs through the chat template, bf16 autocast, each layer recomputed in backward:
    the loss falls, and the saved model scores in transformers as in minirm."""
    model_dir, _ = qwen3
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(16))
    args = cli_args(model_dir, data, tmp_path / "run", steps=12, gradient_checkpointing=None)
    args.remove("None")
    args[args.index("--precision") + 1] = "bf16"
    assert train_main(args) == 0
    losses = [r["loss"] for r in metrics(tmp_path / "run") if r["split"] == "train"]
    assert all(map(torch.isfinite, torch.tensor(losses))) and sum(losses[-4:]) < sum(losses[:4])
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen3ForSequenceClassification"]
    trained = tf.AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    pairs = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in zip(PROMPTS, RESPONSES)]
    expected = reference_scores(out, trained, pairs)
    got = Scorer.from_pretrained(str(out), dtype="float32").score_pairs(PROMPTS, RESPONSES)
    torch.testing.assert_close(torch.tensor(got), expected, atol=1e-5, rtol=0)
