"""minirm.training.data: files and Hub datasets -> rows -> adapters -> Examples, on small synthetic data."""

from __future__ import annotations

import errno
import gzip
import json
import sys
import time
import warnings
from pathlib import Path

import pytest

from minirm import MinirmError
from minirm.training.data import ADAPTER_KINDS, ADAPTERS, Example, load_examples, read_rows, split_holdout
from minirm.text.formats import ChatTurn
from minirm.text.records import Sample

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant: It is 4."
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant: Go away."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line_error(match: str, fn, *args, **kwargs) -> str:
    """fn raises a MinirmError matching `match`, in one line; returns the message."""
    with pytest.raises(MinirmError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def adapt(adapter: str, row: dict, where: str = "d.jsonl:1", **kwargs) -> list[Example]:
    return ADAPTERS[adapter](row, where, **kwargs)


# ---------------------------------------------------------------------------- adapters

def test_preference_prompt_chosen_rejected_with_margin():
    [ex] = adapt("preference", {"prompt": "Q?", "chosen": "good", "rejected": "bad", "margin": 2})
    assert ex.samples == [Sample.pair("Q?", "good"), Sample.pair("Q?", "bad")]
    assert ex.margin == 2.0 and ex.target is None and ex.where == "d.jsonl:1"
    assert ADAPTER_KINDS["preference"] == "pairwise"


def test_preference_aira_layout():
    row = {"instruction": "Why is AI Ethics important?", "chosen_response": "Because...", "rejected_response": "Who cares"}
    [ex] = adapt("preference", row)
    assert [(s.prompt, s.response) for s in ex.samples] == [
        ("Why is AI Ethics important?", "Because..."), ("Why is AI Ethics important?", "Who cares")]
    assert ex.samples[0].history == [ChatTurn("user", "Why is AI Ethics important?")]
    assert ex.margin is None


def test_preference_hh_rlhf_transcripts():
    [ex] = adapt("preference", {"chosen": HH_CHOSEN, "rejected": HH_REJECTED})
    chosen, rejected = ex.samples
    conversation = "Human: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?"
    assert (chosen.prompt, chosen.response) == (conversation, "It is 4.")
    assert (rejected.prompt, rejected.response) == (conversation, "Go away.")
    assert chosen.history == [ChatTurn("user", "Hi there"), ChatTurn("bot", "Hello!"), ChatTurn("user", "What is 2+2?")]


def test_preference_conversations_as_skywork_publishes_them():
    chosen = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    rejected = [chosen[0], {"role": "assistant", "content": "5"}]
    [ex] = adapt("preference", {"chosen": chosen, "rejected": rejected})
    assert ex.samples == [Sample.conversation(chosen), Sample.conversation(rejected)]
    assert (ex.samples[0].response, ex.samples[1].response) == ("4", "5")


@pytest.mark.parametrize("row,match", [
    ({"prompt": "Q", "chosen": "a"}, r"d.jsonl:1: missing field 'rejected' \(fields found: prompt, chosen\)"),
    ({"prompt": "Q", "chosen": ["a"], "rejected": "b"},
     r"d.jsonl:1: chosen\[0\] must be an object with a string 'role' and a string 'content', got \"a\""),
    ({"chosen": [{"role": "user", "content": "Q"}], "rejected": "b"}, r"d.jsonl:1: field 'rejected' must be a non-empty"),
    ({"prompt": "Q", "chosen": [{"role": "user", "content": "Q"}], "rejected": [{"role": "user", "content": "R"}]},
     r"'chosen' and 'rejected' are whole conversations, which hold the prompt"),
    ({"instruction": "Q", "chosen_response": "a"}, r"missing field 'rejected_response'"),
    ({"question": "Q", "answer": "a"}, r"d.jsonl:1: the preference adapter needs .*fields found: question, answer"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "margin": "big"}, r"field 'margin' must be a number, got 'big'"),
])
def test_preference_bad_rows(row, match):
    one_line_error(match, adapt, "preference", row)


def webgpt_row(answer_0="Paris is the capital [1].", answer_1="Lyon.", score_0=0.5, score_1=-0.5):
    return {"question": {"dataset": "eli5", "id": "q1", "full_text": "What is the capital of France?"},
            "quotes_0": {"title": ["Paris"], "extract": ["Paris is..."]}, "answer_0": answer_0, "tokens_0": [],
            "score_0": score_0, "quotes_1": {"title": [], "extract": []}, "answer_1": answer_1, "tokens_1": [],
            "score_1": score_1}


def test_webgpt_higher_score_is_chosen_and_citations_are_removed():
    [ex] = adapt("webgpt", webgpt_row())
    q = "What is the capital of France?"
    assert ex.samples == [Sample.pair(q, "Paris is the capital ."), Sample.pair(q, "Lyon.")]
    [ex] = adapt("webgpt", webgpt_row(answer_0="A [1, 2]", answer_1="B [3]", score_0=-1.0, score_1=1.0))
    assert [s.response for s in ex.samples] == ["B ", "A "]


def test_webgpt_tie_keeps_answer_0_as_chosen_like_openassistant():
    [ex] = adapt("webgpt", webgpt_row(answer_0="first", answer_1="second", score_0=0.0, score_1=0.0))
    assert [s.response for s in ex.samples] == ["first", "second"]


@pytest.mark.parametrize("answers", [("", "Lyon."), ("Paris", "  "), ("[1]", "Lyon."), ("Same [1]", "Same [2]")])
def test_webgpt_empty_or_identical_answers_are_dropped(answers):
    assert adapt("webgpt", webgpt_row(*answers)) == []


def test_webgpt_bad_rows():
    row = webgpt_row()
    row["question"] = "plain string"
    one_line_error(r"d.jsonl:1: webgpt rows need 'question' as an object with a 'full_text'", adapt, "webgpt", row)
    row = webgpt_row(score_1=None)
    one_line_error(r"d.jsonl:1: field 'score_1' must be a number, got None", adapt, "webgpt", row)


def test_summarize_post_and_article_rows():
    post_row = {"info": {"id": "t3_x", "post": "My cat ate my homework.", "title": "Cat", "subreddit": "tifu",
                         "site": None, "article": None},
                "summaries": [{"text": " cat ate it", "policy": "a", "note": None},
                              {"text": " homework gone", "policy": "b", "note": None}],
                "choice": 1, "worker": "w", "batch": "b1", "split": "train", "extra": {"confidence": 8}}
    [ex] = adapt("summarize", post_row)
    prompt = "My cat ate my homework. TLDR;"
    assert ex.samples == [Sample.pair(prompt, " homework gone"), Sample.pair(prompt, " cat ate it")]
    cnn_row = dict(post_row, choice=0, info={"id": "cnn1", "post": None, "title": "News", "article": "Rain fell."})
    [ex] = adapt("summarize", cnn_row)
    assert [(s.prompt, s.response) for s in ex.samples] == [("Rain fell. TLDR;", " cat ate it"),
                                                            ("Rain fell. TLDR;", " homework gone")]


@pytest.mark.parametrize("change,match", [
    ({"choice": 2}, r"'choice' must be 0 or 1, got 2"),
    ({"choice": True}, r"'choice' must be 0 or 1, got True"),
    ({"summaries": [{"text": "only one"}]}, r"'summaries' must be a list of 2 objects"),
    ({"info": {"title": "no text"}}, r"need 'info' with a 'post' \(or 'article'\) string"),
])
def test_summarize_bad_rows(change, match):
    row = {"info": {"post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], "choice": 0, **change}
    one_line_error(r"d.jsonl:1: .*" + match, adapt, "summarize", row)


def test_ranking():
    [ex] = adapt("ranking", {"prompt": "P", "responses": ["best", "middle", "worst"]})
    assert ex.samples == [Sample.pair("P", r) for r in ("best", "middle", "worst")]
    assert ADAPTER_KINDS["ranking"] == "ranking"
    one_line_error(r"d.jsonl:1: 'responses' must be a list of at least 2 strings", adapt, "ranking",
                   {"prompt": "P", "responses": ["alone"]})


def test_regression():
    [ex] = adapt("regression", {"prompt": "P", "response": "R", "reward": -0.25})
    assert ex.samples == [Sample.pair("P", "R")] and ex.target == -0.25
    [ex] = adapt("regression", {"instruction": "I", "completion": "C", "reward": 1})
    assert ex.samples == [Sample.pair("I", "C")] and ex.target == 1.0 and isinstance(ex.target, float)
    assert ADAPTER_KINDS["regression"] == "regression"


@pytest.mark.parametrize("reward,shown", [(1.5, "1.5"), ("high", "'high'"), (True, "True"), (float("nan"), "nan")])
def test_regression_reward_out_of_range_or_not_numeric(reward, shown):
    message = one_line_error(r"d.jsonl:1: reward .* must be a number in \[-1, 1\]", adapt, "regression",
                             {"prompt": "P", "response": "R", "reward": reward})
    assert f"reward {shown} " in message


def test_regression_missing_fields():
    one_line_error(r"missing field 'response' \(or 'completion'\) \(fields found: prompt, reward\)",
                   adapt, "regression", {"prompt": "P", "reward": 0.1})


def test_chai_prize_rows():
    text = "Bot's Persona: kind\n####\n\n<START>\nUser: hi\nBot: hello"
    [ex] = adapt("chai", {"input_text": text, "labels": 1})
    assert ex.samples == [Sample(None, text)] and ex.target == 1
    assert ADAPTER_KINDS["chai"] == "classification"


def test_chai_conversations_and_pairs():
    messages = [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"},
                {"role": "user", "content": "tell me a joke"}, {"role": "assistant", "content": "Why did..."}]
    [ex] = adapt("chai", {"messages": messages, "label": 0})
    assert ex.samples == [Sample("hi", "Why did...", history=[ChatTurn("user", "hi"), ChatTurn("bot", "hello"),
                                                               ChatTurn("user", "tell me a joke")])]
    assert ex.target == 0
    [ex] = adapt("chai", {"messages": [{"role": "bot", "content": "Welcome!"}], "label": 1})
    assert ex.samples == [Sample("", "Welcome!", history=[])]
    [ex] = adapt("chai", {"prompt": "P", "response": "R", "label": 1})
    assert ex.samples == [Sample.pair("P", "R")] and ex.target == 1


@pytest.mark.parametrize("row,match", [
    ({"prompt": "P", "response": "R", "label": 3},
     r"d.jsonl:1: label 3 is out of range for a 2-label model; labels must be 0\.\.1"),
    ({"input_text": "t", "labels": -1}, r"label -1 is out of range"),
    ({"input_text": "t", "labels": True}, r"label True must be an integer 0\.\.1"),
    ({"input_text": "t", "labels": 1.0}, r"label 1.0 must be an integer"),
    ({"input_text": "t"}, r"missing field 'label'"),
    ({"messages": [{"role": "bot", "content": "hi"}, {"role": "user", "content": "bye"}], "label": 1},
     r"the last message must be the bot's"),
    ({"messages": [{"role": "narrator", "content": "x"}], "label": 1}, r"messages\[0\] must be"),
    ({"text": "t", "label": 1}, r"the chai adapter needs .*fields found: text, label"),
])
def test_chai_bad_rows(row, match):
    one_line_error(match, adapt, "chai", row)


def test_num_labels_reaches_chai_through_load_examples(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "P", "response": "R", "label": 3}])
    one_line_error(r"d.jsonl:1: label 3 is out of range for a 2-label model", load_examples, str(data), "chai")
    [ex] = load_examples(str(data), "chai", num_labels=4)
    assert ex.target == 3 and ex.where == f"{data}:1"


# ---------------------------------------------------------------------------- file formats

ROWS = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(3)]


def test_jsonl_with_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n   \n", encoding="utf-8")
    assert read_rows(str(path)) == [(f"{path}:1", ROWS[0]), (f"{path}:3", ROWS[1])]


def test_jsonl_gz(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode()))
    assert read_rows(str(path)) == [(f"{path}:{i + 1}", r) for i, r in enumerate(ROWS)]
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    one_line_error(r"bad.jsonl.gz: not a valid gzip file", read_rows, str(tmp_path / "bad.jsonl.gz"))


def test_json_list_and_object_holding_a_list(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    assert read_rows(str(tmp_path / "list.json")) == [(f"{tmp_path}/list.json:row {i + 1}", r) for i, r in enumerate(ROWS)]
    (tmp_path / "obj.json").write_text(json.dumps({"version": 2, "data": ROWS[:2]}))
    assert [r for _, r in read_rows(str(tmp_path / "obj.json"))] == ROWS[:2]
    (tmp_path / "two.json").write_text(json.dumps({"a": ROWS, "b": ROWS}))
    one_line_error(r"two.json: expected a JSON list of objects, or an object holding one such list",
                   read_rows, str(tmp_path / "two.json"))
    (tmp_path / "strs.json").write_text(json.dumps([ROWS[0], "oops"]))
    one_line_error(r"strs.json:row 2: expected a JSON object, got str", read_rows, str(tmp_path / "strs.json"))
    (tmp_path / "broken.json").write_text('[\n  {"a": 1},\n  {"a": }\n]')
    one_line_error(r"broken.json:3: not valid JSON", read_rows, str(tmp_path / "broken.json"))


def test_directory_is_read_recursively_sorted_and_filtered_by_split(tmp_path):
    write_jsonl(tmp_path / "ds" / "data" / "train-00001.jsonl", [ROWS[1]])
    write_jsonl(tmp_path / "ds" / "data" / "train-00000.jsonl", [ROWS[0]])
    write_jsonl(tmp_path / "ds" / "data" / "test.jsonl", [ROWS[2]])
    (tmp_path / "ds" / "README.md").write_text("# not data")
    (tmp_path / "ds" / "dataset_infos.json").write_text("{}")
    ds = str(tmp_path / "ds")
    assert [r for _, r in read_rows(ds)] == [ROWS[2], ROWS[0], ROWS[1]]
    train = read_rows(ds, split="train")
    assert [w for w, _ in train] == [f"{ds}/data/train-00000.jsonl:1", f"{ds}/data/train-00001.jsonl:1"]
    message = one_line_error(r"no data file matches split 'validation'", read_rows, ds, split="validation")
    assert "data/test.jsonl" in message and "data/train-00000.jsonl" in message
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    one_line_error(r"empty: no \.jsonl, \.jsonl\.gz, \.json, \.parquet files in it \(found: notes.txt\)",
                   read_rows, str(tmp_path / "empty"))


def test_load_examples_concatenates_sources(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    b = write_jsonl(tmp_path / "b.jsonl", ROWS[2:])
    examples = load_examples([str(a), str(b)], "preference")
    assert [e.samples[0].response for e in examples] == ["c0", "c1", "c2"]
    assert [e.where for e in examples] == [f"{a}:1", f"{a}:2", f"{b}:1"]
    one_line_error(r"unknown data adapter 'dpo'; choose one of: preference, webgpt", load_examples, str(a), "dpo")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"input_text": "hi", "labels": 1}, {"input_text": "yo", "labels": 0}]), path)
    assert read_rows(str(path)) == [(f"{path}:row 1", {"input_text": "hi", "labels": 1}),
                                    (f"{path}:row 2", {"input_text": "yo", "labels": 0})]
    assert [e.target for e in load_examples(str(path), "chai")] == [1, 0]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    one_line_error(r"bad.parquet: cannot be read as Parquet", read_rows, str(tmp_path / "bad.parquet"))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow...` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    one_line_error(r"train.parquet: reading \.parquet files needs pyarrow; pip install pyarrow",
                   read_rows, str(tmp_path / "train.parquet"))


# ---------------------------------------------------------------------------- read errors

def test_malformed_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + '\n{"prompt": "p", \n')
    one_line_error(r"data.jsonl:3: not valid JSON \(.* at column \d+\); fix or remove the line", read_rows, str(path))


def test_row_that_is_not_an_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    one_line_error(r"data.jsonl:2: expected a JSON object, got list", read_rows, str(path))


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"prompt": "caf\xe9"}\n')
    one_line_error(r"data.jsonl:2: not UTF-8 text \(byte 0xe9 at column 16\); re-encode", read_rows, str(path))
    (tmp_path / "d.json").write_bytes(b'[\n{"a": "\xff"}\n]')
    one_line_error(r"d.json:2: not UTF-8 text", read_rows, str(tmp_path / "d.json"))


@pytest.mark.parametrize("name,content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n  \n"), ("empty.json", "[]")])
def test_empty_files(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    one_line_error(rf"{name}: empty, no rows to read", read_rows, str(tmp_path / name))


def test_missing_unknown_and_unreadable_sources(tmp_path):
    one_line_error(r"nope.jsonl: no such file or directory, and not a Hub dataset id", read_rows, str(tmp_path / "nope.jsonl"))
    one_line_error(r"^data/train.jsonl: no such file or directory", read_rows, "data/train.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    one_line_error(r"data.csv: unsupported file type; use \.jsonl, \.jsonl\.gz, \.json or \.parquet",
                   read_rows, str(tmp_path / "data.csv"))


def test_unreadable_file(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "locked.jsonl", ROWS)

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 0 does not stop root, who may run the tests
    one_line_error(r"locked.jsonl: cannot be read \(Permission denied\)", read_rows, str(path))


def test_dataset_with_no_usable_examples(tmp_path):
    path = write_jsonl(tmp_path / "ties.jsonl", [webgpt_row(answer_0=""), webgpt_row(answer_1="[2]")])
    one_line_error(r"ties.jsonl: no usable examples \(2 rows, all dropped by the 'webgpt' adapter's rules",
                   load_examples, str(path), "webgpt")


def test_deliberate_drops_are_reported(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", [webgpt_row(), webgpt_row(answer_0="")])
    with pytest.warns(UserWarning, match=r"w.jsonl: 1 of 2 rows dropped by the 'webgpt' adapter's rules"):
        examples = load_examples(str(path), "webgpt")
    assert len(examples) == 1 and examples[0].where == f"{path}:1"


# ---------------------------------------------------------------------------- Hub datasets

SHA_MAIN, SHA_V2 = "a" * 40, "b" * 40


def fake_dataset_cache(root: Path, repo_id: str, snapshots: dict[str, tuple[str, dict[str, str]]]) -> Path:
    """root/datasets--org--name/{refs/<ref>, snapshots/<sha>/<files>}, files symlinked into blobs like the real cache."""
    repo = root / ("datasets--" + repo_id.replace("/", "--"))
    for ref, (sha, files) in snapshots.items():
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
        for rel, text in files.items():
            blob = repo / "blobs" / f"{sha[:8]}-{rel.replace('/', '-')}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_text(text)
            (repo / "snapshots" / sha / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / "snapshots" / sha / rel).symlink_to(blob)
    return root


def jsonl_text(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_hub_dataset_from_the_cache_offline(tmp_path, monkeypatch):
    files = {"data/train.jsonl": jsonl_text(ROWS[:2]), "data/test.jsonl": jsonl_text(ROWS[2:]),
             "README.md": "# card", ".gitattributes": "*.jsonl filter=lfs"}
    cache = fake_dataset_cache(tmp_path / "hub", "org/prefs", {
        "main": (SHA_MAIN, files), "v2": (SHA_V2, {"data/train.jsonl": jsonl_text(ROWS[2:])})})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert read_rows("org/prefs", split="train") == [("org/prefs/data/train.jsonl:1", ROWS[0]),
                                                     ("org/prefs/data/train.jsonl:2", ROWS[1])]
    assert [w for w, _ in read_rows("org/prefs")] == ["org/prefs/data/test.jsonl:1", "org/prefs/data/train.jsonl:1",
                                                      "org/prefs/data/train.jsonl:2"]
    assert [r for _, r in read_rows("org/prefs", revision="v2")] == ROWS[2:]
    assert [r for _, r in read_rows("org/prefs", revision=SHA_V2)] == ROWS[2:]
    examples = load_examples("org/prefs", "preference", split="test")
    assert examples[0].samples == [Sample.pair("p2", "c2"), Sample.pair("p2", "r2")]


def test_hub_dataset_with_only_a_loading_script(tmp_path, monkeypatch):
    cache = fake_dataset_cache(tmp_path / "hub", "openai/scripted", {"main": (SHA_MAIN, {"scripted.py": "# script"})})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    one_line_error(r"openai/scripted: no .* files in it \(found: scripted.py\); .* refs/convert/parquet",
                   read_rows, "openai/scripted")


def test_uncached_hub_dataset_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    start = time.monotonic()
    message = one_line_error(r"dataset org/missing is not in the Hugging Face cache and HF_HUB_OFFLINE=1",
                             read_rows, "org/missing")
    assert time.monotonic() - start < 5
    assert "`hf download org/missing --repo-type dataset`" in message and "or pass a local data file" in message
    message = one_line_error(r"not in the Hugging Face cache", load_examples, ["org/missing"], "preference",
                             revision="v1")
    assert "--repo-type dataset --revision v1`" in message


def test_unreachable_hub_fails_fast_without_offline_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused at once
    one_line_error(r"dataset org/missing is not in the Hugging Face cache and the Hub is unreachable",
                   read_rows, "org/missing")


def test_reachable_hub_downloads_only_data_files(tmp_path, monkeypatch):
    """No network in tests: snapshot_download is faked, to check what minirm asks it for."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("minirm.hub.hub_reachable", lambda: (True, ""))
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        folder = tmp_path / "downloaded"
        write_jsonl(folder / "data" / "train.jsonl", ROWS[:1])
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert read_rows("org/fresh", revision="v3") == [("org/fresh/data/train.jsonl:1", ROWS[0])]
    cached, download = calls
    assert cached["local_files_only"] and cached["repo_type"] == download["repo_type"] == "dataset"
    assert download["revision"] == "v3" and download["cache_dir"] == str(tmp_path / "hub")
    assert sorted(download["allow_patterns"]) == ["*.json", "*.jsonl", "*.jsonl.gz", "*.parquet"]


def test_local_path_wins_over_a_hub_id(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "org" / "name" / "train.jsonl", ROWS[:1])
    monkeypatch.chdir(tmp_path)
    assert read_rows("org/name") == [("org/name/train.jsonl:1", ROWS[0])]


# ---------------------------------------------------------------------------- holdout

def examples(n: int) -> list[Example]:
    return [Example([Sample.pair(f"p{i}", "r")], where=f"d.jsonl:{i + 1}") for i in range(n)]


def test_split_holdout_is_deterministic_disjoint_and_sized():
    data = examples(10)
    train, held = split_holdout(data, 0.2, seed=0)
    assert len(held) == 2 and len(train) == 8
    assert split_holdout(data, 0.2, seed=0) == (train, held)
    assert {e.where for e in train}.isdisjoint(e.where for e in held)
    assert sorted(e.where for e in train + held) == sorted(e.where for e in data)
    assert train == [e for e in data if e in train]  # input order kept
    splits = {tuple(e.where for e in split_holdout(data, 0.2, seed=s)[1]) for s in range(10)}
    assert len(splits) > 1  # the seed matters


@pytest.mark.parametrize("n,fraction,want", [(10, 0.0, 0), (10, 0.01, 1), (10, 0.35, 4), (2, 0.5, 1), (3, 0.9, 2),
                                             (1, 0.5, 0), (0, 0.5, 0), (1000, 0.1, 100)])
def test_split_holdout_sizes(n, fraction, want):
    train, held = split_holdout(examples(n), fraction, seed=1)
    assert len(held) == want and len(train) == n - want


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan")])
def test_split_holdout_rejects_bad_fractions(fraction):
    one_line_error(r"eval fraction .* must be at least 0 and below 1", split_holdout, examples(4), fraction, 0)


def test_no_warnings_on_clean_data(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_examples(str(path), "preference")) == 3
