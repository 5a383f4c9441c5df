"""`python train.py --recipe NAME` with no --model and no --data, for every recipe, on an offline
Hugging Face cache that holds each recipe's base model and datasets as they are published.

The cache is laid out as huggingface_hub lays out what it downloads (tests/hub_cache.py).
Some snapshots hold every file, as `hf download` leaves them; others only the data files, as
minirm's own download (data files only) leaves them.

The repos, as published (file paths, branches, column names and nesting):
- openai/webgpt_comparisons, openai/summarize_from_feedback: a loading script and README on
  main, no data; the Hub's Parquet conversion on refs/convert/parquet (`<config>/<split>/0000.parquet`);
  summarize's `axis` rows have another shape, which the comparisons split must never read;
- Anthropic/hh-rlhf: `<subset>/{train,test}.jsonl.gz` and red-team-attempts/red_team_attempts.jsonl.gz,
  transcripts that are not preference pairs and must never be read as training data;
- nicholasKluge/{toxic,reward}-aira-dataset: data/{english,portuguese}-00000-of-00001.parquet;
- ChaiML/20231206_chai_prize_reward_model_data: data/train-00000-of-00001-<hash>.parquet.
The base models are tiny pretraining checkpoints of each family (test_recipes.base_model);
microsoft/deberta-v2-xxlarge is laid out file for file as published: an fp16 pytorch_model.bin
and, for its tokenizer, only spm.model and tokenizer_config.json.

Each run must train (2 steps, finite losses) on exactly the intended files: every loaded
example is traced back to its file through load_examples, which the tests observe unchanged.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import minirm.training.loop
from minirm import MinirmError
from minirm.training.cli import main
from minirm.training.data import read_rows
from minirm.training.recipes import RECIPES
from hub_cache import dir_files, put_snapshot
from conftest import DEBERTA_TOKENIZER_CONFIG
from test_recipes import base_model

PARQUET_BRANCH = "refs/convert/parquet"
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.gz filter=lfs diff=lfs merge=lfs -text\n"


# ---------------------------------------------------------------------------- the cache layout

def parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def jsonl_gz(rows: list[dict]) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


def data_only(files: dict[str, bytes]) -> set[str]:
    """The files minirm's own download fetches from a dataset repo."""
    return {p for p in files if p.endswith((".jsonl", ".jsonl.gz", ".json", ".parquet"))}


# ---------------------------------------------------------------------------- the published rows

S = pa.string()
WEBGPT_SCHEMA = pa.schema([  # webgpt_comparisons.py features, as the Parquet conversion stores them
    ("question", pa.struct([("dataset", S), ("full_text", S), ("id", S)])),
    ("quotes_0", pa.struct([("extract", pa.list_(S)), ("title", pa.list_(S))])),
    ("answer_0", S),
    ("tokens_0", pa.struct([("prefix", pa.list_(pa.int64())), ("completion", pa.list_(pa.int64()))])),
    ("score_0", pa.float32()),
    ("quotes_1", pa.struct([("extract", pa.list_(S)), ("title", pa.list_(S))])),
    ("answer_1", S),
    ("tokens_1", pa.struct([("prefix", pa.list_(pa.int64())), ("completion", pa.list_(pa.int64()))])),
    ("score_1", pa.float32()),
])


def webgpt_row(n: int, answers: tuple[str, str], scores: tuple[float, float]) -> dict:
    question = {"dataset": "eli5", "full_text": f"Why does question {n} matter?", "id": f"q{n}"}
    row = {"question": question}
    for i in (0, 1):
        row[f"quotes_{i}"] = {"extract": [f"An extract for answer {i}."], "title": [f"Page {i} (example.com)"]}
        row[f"answer_{i}"] = answers[i]
        row[f"tokens_{i}"] = {"prefix": [7, 8, 9], "completion": [10, 11]}
        row[f"score_{i}"] = scores[i]
    return row


WEBGPT = [webgpt_row(1, ("It scatters blue light [1].", "It reflects the sea [2]."), (1.0, -1.0)),
          webgpt_row(2, ("Because of gravity.", "Mass bends spacetime [1][2], so things fall."), (-0.5, 0.5)),
          webgpt_row(3, ("Both are fine answers.", "Equally fine, said differently."), (0.0, 0.0)),  # a tie, kept
          webgpt_row(4, ("An answer with no rival.", ""), (1.0, -1.0))]  # empty answer_1: dropped by the adapter

INFO = pa.struct([("id", S), ("post", S), ("title", S), ("subreddit", S), ("site", S), ("article", S)])
SUMMARY = pa.struct([("text", S), ("policy", S), ("note", S)])
COMPARISONS_SCHEMA = pa.schema([("info", INFO), ("summaries", pa.list_(SUMMARY)), ("choice", pa.int32()),
                                ("worker", S), ("batch", S), ("split", S),
                                ("extra", pa.struct([("confidence", pa.int32())]))])
AXES = pa.struct([("overall", pa.int64()), ("accuracy", pa.int64()), ("coverage", pa.int64()),
                  ("coherence", pa.int64())])
AXIS_SCHEMA = pa.schema([("info", INFO), ("split", S),
                         ("summary", pa.struct([("text", S), ("policy", S), ("note", S), ("axes", AXES)])),
                         ("worker", S), ("batch", S)])


def tldr_info(n: int) -> dict:
    return {"id": f"t3_{n}", "post": f"My cat knocks thing {n} off the table every single morning.",
            "title": "cat trouble", "subreddit": "cats", "site": None, "article": None}


def comparison(info: dict, split: str, choice: int) -> dict:
    return {"info": info, "summaries": [{"text": " Cat pushes things off tables.", "policy": "ref", "note": None},
                                        {"text": " I own a table.", "policy": "sup2", "note": "vague"}],
            "choice": choice, "worker": "w1", "batch": "batch9", "split": split, "extra": {"confidence": 8}}


CNNDM_INFO = {"id": "167f80cc", "post": None, "title": "Midfielder faces action", "subreddit": None,
              "site": "dailymail", "article": "The midfielder was sent off on Monday."}
AXIS_ROW = {"info": CNNDM_INFO, "split": "test", "worker": "w2", "batch": "cnndm1",
            "summary": {"text": "Sent off on Monday.", "policy": "ref", "note": None,
                        "axes": {"overall": 3, "accuracy": 5, "coverage": 4, "coherence": 2}}}


def hh_pair(topic: str) -> dict:
    return {"chosen": f"\n\nHuman: How do I {topic}?\n\nAssistant: Step by step, here is how to {topic} safely.",
            "rejected": f"\n\nHuman: How do I {topic}?\n\nAssistant: Figure it out yourself."}


RED_TEAM = {"transcript": "\n\nHuman: Say something rude.\n\nAssistant: I'd rather not.",
            "min_harmlessness_score_transcript": 1.2, "num_params": 52000000000, "model_type": "plain lm",
            "rating": 0, "task_description": "Try to make it rude", "task_description_harmlessness_score": 0.4,
            "red_team_member_id": "d3b8", "is_upworker": False, "tags": None}

AIRA_SCHEMA = pa.schema([("instruction", S), ("chosen_response", S), ("rejected_response", S)])


def aira_rows(lang: str, n: int) -> list[dict]:
    if lang == "english":
        return [{"instruction": f"What is {k} plus {k}?", "chosen_response": f"{k} plus {k} is {2 * k}.",
                 "rejected_response": "I don't know."} for k in range(n)]
    return [{"instruction": f"Quanto é {k} mais {k}?", "chosen_response": f"{k} mais {k} é {2 * k}.",
             "rejected_response": "Não sei."} for k in range(n)]


CHAI_SCHEMA = pa.schema([("input_text", S), ("labels", pa.int64())])
CHAI_FILE = "data/train-00000-of-00001-95ef3bddb53eb887.parquet"
CHAI = [{"input_text": f"Bot's Persona: kind\n####\n\n<START>\nUser: hi {k}\nBot: "
                       + ("Hello friend, lovely to see you!" if k % 2 else "Leave me alone."), "labels": k % 2}
        for k in range(6)]

# the data files each recipe's sources must read, and how many examples each yields
HH_TRAIN = {f"Anthropic/hh-rlhf/{s}/train.jsonl.gz": n for s, n in
            (("harmless-base", 2), ("helpful-base", 2), ("helpful-online", 1), ("helpful-rejection-sampled", 1))}
EXPECTED = {
    "aux-roberta": {"nicholasKluge/toxic-aira-dataset": {
                        "nicholasKluge/toxic-aira-dataset/data/english-00000-of-00001.parquet": 3},
                    "Anthropic/hh-rlhf": HH_TRAIN},
    "aira-bert": {"nicholasKluge/reward-aira-dataset": {
                      "nicholasKluge/reward-aira-dataset/data/english-00000-of-00001.parquet": 4}},
    "chai": {"ChaiML/20231206_chai_prize_reward_model_data": {
                 f"ChaiML/20231206_chai_prize_reward_model_data/{CHAI_FILE}": 6}},
    "oa-deberta": {"openai/webgpt_comparisons": {"openai/webgpt_comparisons/default/train/0000.parquet": 3},
                   "openai/summarize_from_feedback": {
                       "openai/summarize_from_feedback/comparisons/train/0000.parquet": 3},
                   "Anthropic/hh-rlhf": HH_TRAIN},
}


def dataset_repos() -> dict[tuple[str, str], tuple[dict[str, bytes], bool]]:
    """(repo id, revision) -> (its files, whether the snapshot holds only the data files)."""
    def card(name: str) -> bytes:
        return f"---\npretty_name: {name}\n---\n# Dataset Card for {name}\n".encode()

    hh = {".gitattributes": GITATTRIBUTES, "README.md": card("HH-RLHF"),
          "red-team-attempts/red_team_attempts.jsonl.gz": jsonl_gz([RED_TEAM, RED_TEAM])}
    for path, n in HH_TRAIN.items():
        subset = path.split("/")[2]
        hh[f"{subset}/train.jsonl.gz"] = jsonl_gz([hh_pair(f"{subset} task {k}") for k in range(n)])
        hh[f"{subset}/test.jsonl.gz"] = jsonl_gz([hh_pair(f"held-out {subset} task")])

    def aira(name: str, english: int, portuguese: int) -> dict[str, bytes]:
        return {".gitattributes": GITATTRIBUTES, "LICENSE": b"Apache License 2.0\n", "README.md": card(name),
                "data/english-00000-of-00001.parquet": parquet(aira_rows("english", english), AIRA_SCHEMA),
                "data/portuguese-00000-of-00001.parquet": parquet(aira_rows("portuguese", portuguese), AIRA_SCHEMA)}

    return {
        ("openai/webgpt_comparisons", "main"): (
            {".gitattributes": GITATTRIBUTES, "README.md": card("WebGPT Comparisons"),
             "webgpt_comparisons.py": b"# the datasets loading script (never run by minirm)\nimport datasets\n"}, False),
        ("openai/webgpt_comparisons", PARQUET_BRANCH): (
            {".gitattributes": GITATTRIBUTES, "default/train/0000.parquet": parquet(WEBGPT, WEBGPT_SCHEMA)}, True),
        ("openai/summarize_from_feedback", "main"): (
            {".gitattributes": GITATTRIBUTES, "README.md": card("Summarize from Feedback"),
             "summarize_from_feedback.py": b"# the datasets loading script (never run by minirm)\nimport datasets\n"},
            False),
        ("openai/summarize_from_feedback", PARQUET_BRANCH): (
            {".gitattributes": GITATTRIBUTES,
             "comparisons/train/0000.parquet": parquet([comparison(tldr_info(k), "train", k % 2) for k in range(3)],
                                                       COMPARISONS_SCHEMA),
             "comparisons/validation/0000.parquet": parquet([comparison(tldr_info(9), "valid1", 0),
                                                            comparison(CNNDM_INFO, "valid2", 1)], COMPARISONS_SCHEMA),
             "axis/test/0000.parquet": parquet([AXIS_ROW, AXIS_ROW], AXIS_SCHEMA),
             "axis/validation/0000.parquet": parquet([dict(AXIS_ROW, split="valid2")], AXIS_SCHEMA)}, True),
        ("Anthropic/hh-rlhf", "main"): (hh, False),
        ("nicholasKluge/toxic-aira-dataset", "main"): (aira("Toxic-Aira Dataset", 3, 2), True),
        ("nicholasKluge/reward-aira-dataset", "main"): (aira("Reward-Aira Dataset", 4, 3), False),
        ("ChaiML/20231206_chai_prize_reward_model_data", "main"): (
            {".gitattributes": GITATTRIBUTES, "README.md": card("20231206_chai_prize_reward_model_data"),
             CHAI_FILE: parquet(CHAI, CHAI_SCHEMA)}, True),
    }


BASE_MODELS = {"FacebookAI/roberta-base": "roberta", "google-bert/bert-base-cased": "bert",
               "openai-community/gpt2": "gpt2", "microsoft/deberta-v2-xxlarge": "deberta"}


def as_deberta_v2_xxlarge(model_dir: Path, spm_model: Path) -> dict[str, bytes]:
    """microsoft/deberta-v2-xxlarge's files: config.json, an fp16 pytorch_model.bin, and for its
    tokenizer only spm.model and a two-field tokenizer_config.json (no tokenizer.json)."""
    state = {k: v.half() for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return {".gitattributes": GITATTRIBUTES, "README.md": b"# DeBERTa V2 XXLarge\n",
            "config.json": (model_dir / "config.json").read_bytes(), "pytorch_model.bin": buf.getvalue(),
            "spm.model": spm_model.read_bytes(), "tokenizer_config.json": json.dumps(DEBERTA_TOKENIZER_CONFIG).encode()}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, bpe_files, deberta_spm) -> Path:
    cache = tmp_path_factory.mktemp("hub")
    for repo_id, family in BASE_MODELS.items():
        model = base_model(family, tmp_path_factory.mktemp(family), bpe_files)
        if family == "deberta":
            files = as_deberta_v2_xxlarge(model, deberta_spm)
        else:
            files = {**dir_files(model), "README.md": b"# model card\n"}
        put_snapshot(cache, "model", repo_id, files)
    for (repo_id, revision), (files, only_data) in dataset_repos().items():
        put_snapshot(cache, "dataset", repo_id, files, revision, data_only(files) if only_data else None)
    return cache


@pytest.fixture
def files_read(monkeypatch) -> dict[str, Counter]:
    """Source id -> Counter of the data file behind each example the run loaded from it.
    load_examples is observed, not changed: the run trains on what it returns."""
    read: dict[str, Counter] = {}
    load_examples = minirm.training.loop.load_examples

    def observed(source, adapter, *args, **kwargs):
        examples = load_examples(source, adapter, *args, **kwargs)
        read.setdefault(source, Counter()).update(ex.where.rsplit(":", 1)[0] for ex in examples)
        return examples

    monkeypatch.setattr(minirm.training.loop, "load_examples", observed)
    return read


def train_recipe(name: str, *extra: str) -> dict:
    """`train.py --recipe NAME` and tiny-run options only, in the current directory: no --model,
    no --data, no --output (the run writes to runs/NAME)."""
    argv = ["--recipe", name, "--max-steps", "2", "--batch-size", "2", "--max-length", "64", "--log-every", "1",
            "--no-progress", *extra]
    assert main(argv) == 0
    out = Path("runs") / name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and (out / "model.safetensors").is_file()
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    config = json.loads((out / "train_config.json").read_text())
    recipe = RECIPES[name]
    assert config["model"] == recipe.get("model")  # the recipe's base model, from the cache
    assert config["data"] == [asdict(s) for s in recipe.data]  # every source as declared, revision included
    return json.loads((out / "config.json").read_text())


@pytest.mark.parametrize("name, architecture, extra", [
    ("aux-roberta", "RobertaForSequenceClassification", ()),
    ("aira-bert", "BertForSequenceClassification", ()),
    ("chai", "GPT2ForSequenceClassification", ()),
    # fp16 + gradient checkpointing as the recipe has them; one micro-batch per step keeps it fast
    ("oa-deberta", "DebertaV2ForSequenceClassification", ("--grad-accum", "1")),
])
def test_recipe_trains_on_its_published_data_from_the_cache(name, architecture, extra, hub_cache, files_read,
                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.chdir(tmp_path)
    if name == "oa-deberta":  # webgpt's empty-answer row is the one dropped, and said so
        with pytest.warns(UserWarning, match=r"openai/webgpt_comparisons: 1 of 4 rows dropped"):
            saved = train_recipe(name, *extra)
    else:
        saved = train_recipe(name, *extra)
    assert saved["architectures"] == [architecture]
    assert {source: dict(files) for source, files in files_read.items()} == EXPECTED[name]
    # the trained model carries a tokenizer.json, also when its base had only spm.model
    assert (Path("runs") / name / "tokenizer.json").is_file()


def test_aira_regression_recipe_without_data_asks_for_it(hub_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    out = tmp_path / "out"
    assert main(["--recipe", "aira-regression", "--max-steps", "2", "--no-progress", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train.py: error: the aira-regression recipe names no public dataset")
    assert err.rstrip().endswith("pass --data FILE.jsonl")
    assert not out.exists()  # refused before any work


def test_a_dataset_minirm_downloaded_reads_back_offline(hub_cache, monkeypatch):
    """minirm downloads a dataset's data files only, and huggingface_hub records the repo's whole
    file list beside them: the cache lookup must not call that snapshot incomplete."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    repo = hub_cache / "datasets--ChaiML--20231206_chai_prize_reward_model_data"
    commit = (repo / "refs" / "main").read_text()
    listed = json.loads((repo / "trees" / f"{commit}.json").read_text())["files"]
    assert "README.md" in listed and not (repo / "snapshots" / commit / "README.md").exists()
    rows = read_rows("ChaiML/20231206_chai_prize_reward_model_data", split="train")
    assert [row for _, row in rows] == CHAI


def test_the_parquet_branch_is_read_only_at_its_revision(hub_cache, monkeypatch):
    """main holds the loading script; the data is on refs/convert/parquet, at refs/refs/convert/parquet."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    assert (hub_cache / "datasets--openai--webgpt_comparisons" / "refs" / "refs" / "convert" / "parquet").is_file()
    with pytest.raises(MinirmError, match=r"no \.jsonl.* files in it \(found: .*README\.md, "
                                          r"webgpt_comparisons\.py\).*refs/convert/parquet"):
        read_rows("openai/webgpt_comparisons", split="train")
    rows = read_rows("openai/webgpt_comparisons", split="train", revision=PARQUET_BRANCH)
    assert [row["question"]["id"] for _, row in rows] == ["q1", "q2", "q3", "q4"]
    assert rows[0][1]["quotes_0"] == {"extract": ["An extract for answer 0."], "title": ["Page 0 (example.com)"]}
