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
from minirm.text.records import Sample
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


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build(tmp_path_factory.mktemp("serve") / "llama", "llama")


def get_reward(scorer, body, **options):
    from minirm.scoring.serve import ServeOptions

    with ServerThread(build_app(scorer, ServeOptions(**options))) as url:
        return httpx.post(f"{url}/get_reward", json=body, timeout=60)


def split_rules(reply):
    logs = reply.json()["extra_logs"]
    n = len(reply.json()["scores"])
    return [next(k.removeprefix("minirm_split_") for k, v in logs.items() if v[i] == 1.0) for i in range(n)]


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_get_reward_scores_a_rendered_query_whole_once_its_padding_is_gone(family, llama, qwen3):
    """The policy rendered the conversation with the same template (OpenRLHF 0.6/0.7 decode it with
    the left padding and the end of sequence): scored whole, as transformers scores
    apply_chat_template's ids: the template's markers stay, the padding goes, BOS is not doubled."""
    model_dir, reference = {"llama": llama, "qwen3": qwen3}[family]
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    conversations = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                     for p, r in zip(PROMPTS, RESPONSES)] + CONVERSATIONS[1:2]
    rendered = [tok.apply_chat_template(m, tokenize=False) for m in conversations]
    pad = tok.pad_token
    queries = [pad * i + text + pad * (2 - i) for i, text in enumerate(rendered)]  # left and right padding
    prompts = [tok.apply_chat_template(m[:-1], tokenize=False, add_generation_prompt=True) for m in conversations]
    reply = get_reward(Scorer.from_pretrained(str(model_dir), dtype="float32"),
                       {"query": queries, "prompts": [pad * i + p for i, p in enumerate(prompts)]})
    assert reply.status_code == 200, reply.text
    expected = reference_scores(model_dir, reference, conversations)
    torch.testing.assert_close(torch.tensor(reply.json()["scores"]), expected, atol=1e-5, rtol=0)
    assert split_rules(reply) == ["whole"] * len(queries)


def test_get_reward_renders_a_plain_query_through_the_reward_models_template(llama):
    """A query without a template's markers (decoded with skip_special_tokens, or a policy without a
    template) is split at its prompt and rendered as a user turn and the reply; without a prompt to
    split it at, it is a 400 that names it."""
    model_dir, reference = llama
    scorer = Scorer.from_pretrained(str(model_dir), dtype="float32")
    cut = "word 'social' , is it rude ?"  # a decode that moved spaces: the "spacing" rule
    prompts, responses = PROMPTS + [cut], RESPONSES + [" Not at all."]
    queries = [p + r for p, r in zip(prompts, responses)]
    queries[-1] = "word'social', is it rude? Not at all."
    reply = get_reward(scorer, {"query": queries, "prompts": prompts})
    assert reply.status_code == 200, reply.text
    pairs = [[{"role": "user", "content": p}, {"role": "assistant", "content": r.strip() if p == cut else r}]
             for p, r in zip(prompts, responses)]
    expected = reference_scores(model_dir, reference, pairs)
    torch.testing.assert_close(torch.tensor(reply.json()["scores"]), expected, atol=1e-5, rtol=0)
    assert split_rules(reply) == ["exact"] * len(PROMPTS) + ["spacing"]
    refused = get_reward(scorer, {"query": ["Q? A."]})  # OpenRLHF 0.5: no prompts, and nothing marks the reply
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("query[0] cannot be split into prompt and response")


def test_get_reward_with_strip_template_renders_another_templates_conversation(llama):
    """A ChatML policy (Qwen) and a Llama 3 reward model: --strip-template chatml takes the turns
    apart and the reward model's own template writes them."""
    model_dir, reference = llama
    messages = CONVERSATIONS[1]
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages[:-1])
    prompt = chatml + "<|im_start|>assistant\n"
    query = prompt + messages[-1]["content"].strip() + "<|im_end|><|endoftext|>"
    scorer = Scorer.from_pretrained(str(model_dir), dtype="float32")
    reply = get_reward(scorer, {"query": [query], "prompts": [prompt]}, strip_template="chatml")
    assert reply.status_code == 200, reply.text
    expected = reference_scores(model_dir, reference, [[*messages[:-1], {"role": "assistant",
                                                                      "content": messages[-1]["content"].strip()}]])
    torch.testing.assert_close(torch.tensor(reply.json()["scores"]), expected, atol=1e-5, rtol=0)


def test_a_rendered_text_row_gets_one_bos(llama):
    model_dir, reference = llama
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    rendered = [tok.apply_chat_template(m, tokenize=False) for m in CONVERSATIONS]
    assert all(text.startswith(tok.bos_token) for text in rendered)
    scorer = Scorer.from_pretrained(str(model_dir), dtype="float32")
    ids = scorer.encode([Sample(None, text) for text in rendered])
    assert all(i.count(tok.bos_token_id) == 1 for i in ids)
    torch.testing.assert_close(torch.tensor(scorer.score_texts(rendered)),
                               reference_scores(model_dir, reference, CONVERSATIONS), atol=1e-5, rtol=0)


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


def test_torchrun_scores_a_chat_model_as_one_process(qwen3, tmp_path):
    """score.py under torchrun (2 CPU processes, gloo) on conversations and pairs: the same output
    file, byte for byte, as one process."""
    from test_hostile_score import score_in_one_and_two_processes

    model_dir, _ = qwen3
    rows = [{"prompt": p * (1 + i % 3), "response": r, "i": i} for i, (p, r) in enumerate(zip(PROMPTS * 3, RESPONSES * 3))]
    rows += [{"messages": m, "i": 100 + i} for i, m in enumerate(CONVERSATIONS * 2)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", str(model_dir), "--device", "cpu", "--dtype", "float32", "--input", str(src),
              "--batch-size", "2"]
    one, two = score_in_one_and_two_processes(common, tmp_path)
    assert two == one and len(one[0].decode().splitlines()) == len(rows)
