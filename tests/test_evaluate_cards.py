"""`score.py --card-eval`: each seed model evaluated on its model card's dataset, the card's figure
printed beside minirm's, on an offline Hugging Face cache of the datasets as published.

The datasets are test_recipe_hub.dataset_repos(): Anthropic/hh-rlhf (`<subset>/test.jsonl.gz`),
openai/webgpt_comparisons and openai/summarize_from_feedback (the Hub's Parquet conversion on
refs/convert/parquet) and ChaiML/20231206_chai_prize_reward_model_data, in their published layout
(see that file's docstring). The models are tiny checkpoints from conftest.make_checkpoint; the
expected figures come from transformers' scores (the reference), one pair at a time, on rows whose
(prompt, response) split is written out here by the adapters' documented rules.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf

from minirm import Scorer
from minirm.scoring import evaluate
from minirm.scoring.cli import main
from minirm.training.recipes import RECIPES
from hub_cache import dir_files, put_snapshot
from test_recipe_hub import data_only, dataset_repos

HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, make_checkpoint):
    """The card datasets as published, and Aux-RewardModel under its repo id (for the alias path)."""
    cache = tmp_path_factory.mktemp("hub")
    for (repo_id, revision), (files, only_data) in dataset_repos().items():
        put_snapshot(cache, "dataset", repo_id, files, revision, data_only(files) if only_data else None)
    roberta_dir, _ = make_checkpoint("roberta")
    put_snapshot(cache, "model", "nicholasKluge/Aux-RewardModel", {**dir_files(roberta_dir), "README.md": b"# Aux\n"})
    return cache


def pair_reference(model_dir, score, pairs: list[tuple[str, str, str]]) -> float:
    """Pairwise accuracy of (prompt, chosen, rejected) triples under transformers' scores: chosen
    strictly above rejected. `score(encoding)` is the model's score of one tokenized pair."""
    tok = tf.AutoTokenizer.from_pretrained(model_dir)

    def one(p, r):
        with torch.no_grad():
            return score(tok(p, r, truncation=True, max_length=512, return_tensors="pt",
                             return_token_type_ids=False))
    correct = 0
    for p, c, r in pairs:
        sc, sr = one(p, c), one(p, r)
        assert abs(sc - sr) > 5e-5, "fixture pair scores too close to compare robustly"
        correct += sc > sr
    return correct / len(pairs)


def logit0(model):
    return lambda enc: model(**enc).logits[0, 0].item()


# the pairs each dataset's rows hold, split by hand:
# hh-rlhf: the conversation before the last assistant turn, then that turn (test_recipe_hub.hh_pair)
HH_TEST = [(f"Human: How do I held-out {s} task?", f"Step by step, here is how to held-out {s} task safely.",
            "Figure it out yourself.") for s in HH_SUBSETS]
# webgpt: citation markers removed, the higher score_i first; row 3 is a tie and row 4 has an empty
# answer: both dropped (test_recipe_hub.WEBGPT)
WEBGPT_PAIRS = [("Why does question 1 matter?", "It scatters blue light .", "It reflects the sea ."),
                ("Why does question 2 matter?", "Mass bends spacetime , so things fall.", "Because of gravity.")]
# summarize, comparisons/validation: the post (or the article when there is none) + " TLDR;", the
# summaries in `choice` order (test_recipe_hub.comparison)
SUMMARIZE_VALIDATION = [
    ("My cat knocks thing 9 off the table every single morning. TLDR;", " Cat pushes things off tables.",
     " I own a table."),
    ("The midfielder was sent off on Monday. TLDR;", " I own a table.", " Cat pushes things off tables.")]


def run_card(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_aux_roberta_card_by_its_alias(hub, make_checkpoint, monkeypatch, capsys):
    """The documented command, `score.py --model aux-roberta --card-eval`: the model and the data
    from the cache, the card's 61.56% on Anthropic/hh-rlhf's test split beside minirm's figure."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    model_dir, model = make_checkpoint("roberta")
    want = pair_reference(model_dir, logit0(model), HH_TEST)
    result = run_card(capsys, "--model", "aux-roberta", "--card-eval")
    assert result["card"] == "aux-roberta" and result["card_repo"] == "nicholasKluge/Aux-RewardModel"
    (row,) = result["results"]
    assert row["dataset"] == "Anthropic/hh-rlhf:test" and row["card"] == 0.6156 and row["rows"] == 4
    assert row["minirm"] == want and row["metric"] == "accuracy"

    assert main(["--model", "aux-roberta", "--card-eval"]) == 0  # the table
    table = capsys.readouterr().out
    assert "Aux-RewardModel" in table and "61.56%" in table and f"{want:.2%}" in table
    assert "Anthropic/hh-rlhf:test" in table


def test_aira_bert_card_drops_webgpt_ties(hub, make_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    model_dir, model = make_checkpoint("bert")
    want = pair_reference(model_dir, logit0(model), WEBGPT_PAIRS)
    result = run_card(capsys, "--model", str(model_dir), "--card-eval", "aira-bert")
    (row,) = result["results"]
    assert row["dataset"] == "openai/webgpt_comparisons@refs/convert/parquet:train" and row["card"] == 0.5502
    assert row["rows"] == 2 and row["minirm"] == want
    assert row["dropped"] == {evaluate.TIED: 1,
                              evaluate.EMPTY: 1}


def test_older_aira_regression_card_found_by_model_type(hub, make_checkpoint, monkeypatch, capsys):
    """A bert-reward checkpoint (the older Aira regression model) gets that card's two figures."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    model_dir, reference = make_checkpoint("bert-reward")

    def score(enc):  # the published remote code's forward (tests/aira_remote_code.py), alpha 1
        return reference(enc["input_ids"], enc["attention_mask"])[0, 0].item()
    result = run_card(capsys, "--model", str(model_dir), "--card-eval")
    assert result["card"] == "aira-regression"
    webgpt_row, summarize_row = result["results"]
    assert webgpt_row["card"] == 0.5354 and webgpt_row["minirm"] == pair_reference(model_dir, score, WEBGPT_PAIRS)
    assert summarize_row["dataset"] == "openai/summarize_from_feedback@refs/convert/parquet:comparisons/validation"
    assert summarize_row["card"] == 0.9980 and summarize_row["rows"] == 2
    assert summarize_row["minirm"] == pair_reference(model_dir, score, SUMMARIZE_VALIDATION)


def test_chai_card_is_label_accuracy(hub, make_checkpoint, monkeypatch, capsys):
    """ChaiML's rows are (input_text, labels): the model's class is the argmax of its two logits
    (the Trainer's accuracy), label 1 = appropriate; the card's 0.7005."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    model_dir, model = make_checkpoint("gpt2")
    from test_recipe_hub import CHAI

    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    hits = 0
    for row in CHAI:
        with torch.no_grad():
            logits = model(**tok(row["input_text"], return_tensors="pt")).logits[0]
        assert abs(logits[1] - logits[0]).item() > 5e-5
        hits += int(torch.argmax(logits).item() == row["labels"])
    result = run_card(capsys, "--model", str(model_dir), "--card-eval", "chai-gpt2")
    (row,) = result["results"]
    assert row["card"] == 0.7005 and row["metric"] == "label_accuracy" and row["rows"] == len(CHAI)
    assert row["minirm"] == hits / len(CHAI)
    assert result["chat_template"] == "pygmalion"


def test_card_datasets_are_the_recipes(monkeypatch):
    """Each card's dataset is read as the training recipe reads it: the same repo, revision and
    adapter (minirm/training/recipes.py; scoring cannot import training, so a test holds them equal)."""
    sources = {(s.source, s.revision, s.adapter) for r in RECIPES.values() for s in r.data}
    for card in evaluate.CARDS.values():
        for fig in card.figures:
            assert (fig.dataset.repo, fig.dataset.revision, fig.adapter) in sources, fig


def one_line_error(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_card_eval_mistakes_are_one_line(hub, make_checkpoint, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    roberta = str(make_checkpoint("roberta")[0])
    one_line_error(capsys, main(["--model", roberta, "--card-eval", "nope"]), "no such card", "aux-roberta")
    one_line_error(capsys, main(["--model", roberta, "--card-eval"]), "no card figures for --model",
                   "--card-eval NAME")
    one_line_error(capsys, main(["--model", roberta, "--card-eval", "--input", "x.jsonl"]), "drop --input")
    one_line_error(capsys, main(["--model", roberta, "--card-eval", "--output", str(tmp_path / "o.jsonl")]),
                   "--input DATASET --output FILE")
    # a 1-label model on CHAI's labels: known once its config is read
    one_line_error(capsys, main(["--model", roberta, "--card-eval", "chai-gpt2"]), "2-label classifier")
    # a card whose dataset is not cached: before the model loads
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(Scorer, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    one_line_error(capsys, main(["--model", roberta, "--card-eval", "aux-roberta"]),
                   "dataset Anthropic/hh-rlhf", "HF_HUB_OFFLINE=1")
