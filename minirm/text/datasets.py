"""Dataset rows, for both halves: from a file or a Hub dataset to rows, and a row shaped like a
public dataset to the Samples it holds.

1. `read_rows(source)` reads a local file (.jsonl, .jsonl.gz, .json, .parquet), a directory
   of them, or a Hub dataset id ("org/name": the local cache first, a download only when
   the Hub is reachable) into (where, row) pairs. `where` is "file:LINE" or "file:row N", so
   any later error can point at the row that caused it.
2. An adapter, `ADAPTERS[name](row, where)`, turns one row shaped like a public dataset into
   Examples: [chosen, rejected] for pairwise data, K samples best first for ranking, or one
   sample with a target for regression / classification (`ADAPTER_KINDS` says which).

train.py (minirm/training/data.py) trains on what they return and score.py
(minirm/scoring/evaluate.py) evaluates on it, so a dataset is read and split into samples one
way for both. Every problem is a MinirmError of one line naming the file and row. A malformed
row is never skipped; the only rows an adapter drops are the ones it documents (webgpt's empty
answers).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import MinirmError, first_line
from ..hub import REPO_ID, cached_snapshot, download_hint, hub_cache_dir, hub_errors, require_hub
from .formats import ChatTurn
from .records import Sample, check_conversation_pair, parse_jsonl, transcript_sample

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
# JSON that `datasets` writes beside the data in a saved or Hub dataset: metadata, not rows
METADATA_FILES = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"}


@dataclass
class Example:
    samples: list[Sample]  # pairwise: [chosen, rejected]; ranking: K >= 2, best first; else [one]
    target: float | int | None = None  # regression: reward in [-1, 1]; classification: class label
    margin: float | None = None  # pairwise only: TRL-style margin from a "margin" field
    where: str = ""  # the source row, for error messages


# ---------------------------------------------------------------------------- reading rows

def read_rows(source: str, split: str | None = None, revision: str | None = None) -> list[tuple[str, dict]]:
    """(where, row) for every row of a local file or directory, or of a Hub dataset "org/name".

    `split` keeps the files of a directory or Hub dataset whose path contains it ("train",
    "english", "comparisons/validation"); a single file is read whole. `revision` is for Hub ids.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_dir(path, split, str(path))
    if path.exists():
        if split is not None:  # a split picks files out of a folder; ignoring it would read the wrong rows
            raise MinirmError(f"{source}:{split}: {source} is one file and is read whole; a split selects files "
                              f"of a directory or Hub dataset, so drop ':{split}'")
        return _read_file(path, str(path))
    if REPO_ID.match(source) and not source.endswith(DATA_SUFFIXES):  # "data/train.jsonl" is a missing file
        return _read_dir(_hub_snapshot(source, revision), split, source, hub=True)
    raise MinirmError(f"{source}: no such file or directory, and not a Hub dataset id (org/name)")


def _is_data_file(rel: Path) -> bool:
    hidden = any(part.startswith(".") for part in rel.parts)  # .git, .cache, .gitattributes
    return rel.name.endswith(DATA_SUFFIXES) and not hidden and rel.name not in METADATA_FILES


def _read_dir(folder: Path, split: str | None, label: str, hub: bool = False) -> list[tuple[str, dict]]:
    everything = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    files = [rel for rel in everything if _is_data_file(rel)]
    if not files:
        found = ", ".join(map(str, everything[:10])) + (", ..." if len(everything) > 10 else "") or "nothing"
        hint = ("; a dataset built by a loading script has its Parquet conversion at revision "
                "refs/convert/parquet") if hub else ""
        raise MinirmError(f"{label}: no {', '.join(DATA_SUFFIXES)} files in it (found: {found}){hint}")
    if split is not None:
        matching = [rel for rel in files if split in rel.as_posix()]
        if not matching:
            raise MinirmError(f"{label}: no data file matches split {split!r} "
                              f"(data files: {', '.join(map(str, files[:10]))}); pass a split from these paths")
        files = matching
    rows = []
    for rel in files:
        rows += _read_file(folder / rel, f"{label}/{rel.as_posix()}")
    return rows


def _read_file(path: Path, name: str) -> list[tuple[str, dict]]:
    suffix = next((s for s in DATA_SUFFIXES if path.name.endswith(s)), None)
    if suffix is None:
        raise MinirmError(f"{name}: unsupported file type; use .jsonl, .jsonl.gz, .json or .parquet")
    if suffix == ".parquet":
        rows = _read_parquet(path, name)
    else:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise MinirmError(f"{name}: cannot be read ({e.strerror or type(e).__name__})") from None
        if suffix == ".jsonl.gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
                raise MinirmError(f"{name}: not a valid gzip file ({first_line(e)}); re-compress it with gzip") from None
        rows = _parse_json(data, name) if suffix == ".json" else parse_jsonl(data, name)
    if not rows:
        raise MinirmError(f"{name}: empty, no rows to read; each row should be a JSON object (a Parquet row)")
    return rows


def _parse_json(data: bytes, name: str) -> list[tuple[str, dict]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_no = data[:e.start].count(b"\n") + 1
        raise MinirmError(f"{name}:{line_no}: not UTF-8 text (byte 0x{data[e.start]:02x}); re-encode the file as UTF-8") from None
    if not text.strip():
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise MinirmError(f"{name}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(doc, dict):  # {"data": [...]}: the one list it holds
        lists = [v for v in doc.values() if isinstance(v, list)]
        doc = lists[0] if len(lists) == 1 else None
    if not isinstance(doc, list):
        raise MinirmError(f'{name}: expected a JSON list of objects, or an object holding one such list ({{"data": [...]}})')
    for i, row in enumerate(doc, start=1):
        if not isinstance(row, dict):
            raise MinirmError(f"{name}:row {i}: expected a JSON object, got {type(row).__name__}")
    return [(f"{name}:row {i}", row) for i, row in enumerate(doc, start=1)]


def _read_parquet(path: Path, name: str) -> list[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MinirmError(f"{name}: reading .parquet files needs pyarrow; pip install pyarrow "
                          "(or convert the file to .jsonl)") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowIOError is an OSError, ArrowInvalid a ValueError
        raise MinirmError(f"{name}: cannot be read as Parquet ({first_line(e)})") from None
    return [(f"{name}:row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """The dataset's snapshot folder: from the cache, or downloaded (data files only) if the Hub answers."""
    from huggingface_hub import snapshot_download

    # The cache lookup asks for the data files only, as the download below fetches them (see
    # hub.cached_snapshot), so a dataset minirm downloaded can be read again offline.
    patterns = [f"*{s}" for s in DATA_SUFFIXES]
    cached = cached_snapshot(repo_id, revision, patterns, repo_type="dataset")
    if cached is not None:
        return cached
    hint = download_hint(repo_id, revision, "dataset", "a local data file")
    require_hub(f"dataset {repo_id}", hint)
    with hub_errors(f"dataset {repo_id}", revision, revision_fix="check the revision", hint=hint,
                    unreachable=f"cannot download dataset {repo_id}"):
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=hub_cache_dir(),
                                      allow_patterns=patterns, etag_timeout=10))


# ---------------------------------------------------------------------------- adapters

def _found(row: dict) -> str:
    return ", ".join(map(str, row)) or "none"


def _text(row: dict, where: str, *keys: str) -> str:
    """The first of `keys` present in the row, which must hold a string."""
    key = next((k for k in keys if k in row), None)
    if key is None:
        alternatives = "".join(f" (or {k!r})" for k in keys[1:])
        raise MinirmError(f"{where}: missing field {keys[0]!r}{alternatives} (fields found: {_found(row)})")
    if not isinstance(row[key], str):
        raise MinirmError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__} "
                          f"(fields found: {_found(row)})")
    return row[key]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(row: dict, where: str, key: str) -> float:
    if key not in row:
        raise MinirmError(f"{where}: missing field {key!r} (fields found: {_found(row)})")
    if not _is_number(row[key]):
        raise MinirmError(f"{where}: field {key!r} must be a number, got {row[key]!r}")
    return float(row[key])


def preference(row: dict, where: str) -> list[Example]:
    """Pairwise rows in three layouts, each -> Example([chosen, rejected]):

    - `prompt`, `chosen`, `rejected` strings (TRL's explicit-prompt layout);
    - nicholasKluge/reward-aira-dataset and toxic-aira-dataset: `instruction`, `chosen_response`,
      `rejected_response`;
    - Anthropic/hh-rlhf: `chosen` and `rejected` full transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..."),
      each split into (the conversation before its last assistant turn, that turn) as score.py does;
    - Skywork's preference data and RewardBench 2: `chosen` and `rejected` as whole conversations,
      lists of {"role", "content"} messages, for models that read a chat template.

    An optional numeric `margin` (TRL's RewardTrainer field) becomes Example.margin.
    """
    if any(k in row for k in ("instruction", "chosen_response", "rejected_response")):
        prompt = _text(row, where, "instruction")
        samples = [Sample.pair(prompt, _text(row, where, k)) for k in ("chosen_response", "rejected_response")]
    elif isinstance(row.get("chosen"), list) or isinstance(row.get("rejected"), list):
        check_conversation_pair(row, where)
        samples = [Sample.conversation(row[k]) for k in ("chosen", "rejected")]
    elif "chosen" in row or "rejected" in row:
        chosen, rejected = _text(row, where, "chosen"), _text(row, where, "rejected")
        if "prompt" in row:
            prompt = _text(row, where, "prompt")
            samples = [Sample.pair(prompt, chosen), Sample.pair(prompt, rejected)]
        else:
            samples = [transcript_sample(chosen), transcript_sample(rejected)]
    else:
        raise MinirmError(f"{where}: the preference adapter needs 'prompt', 'chosen' and 'rejected' (or hh-rlhf "
                          "'chosen'/'rejected' transcripts, or 'instruction', 'chosen_response', 'rejected_response'); "
                          f"fields found: {_found(row)}")
    margin = _number(row, where, "margin") if row.get("margin") is not None else None
    return [Example(samples, margin=margin, where=where)]


# citation markers such as "[1]" or "[2, 3]" that point into quotes the model never sees
CITATION = re.compile(r"\[\d+(?:,\s*\d+)*\]")


def webgpt(row: dict, where: str) -> list[Example]:
    """openai/webgpt_comparisons: `question` {`full_text`, ...}, `answer_0/1`, `score_0/1` (scores sum to 0).

    Follows OpenAssistant's reward-model training (model_training/custom_datasets/qa_datasets.py,
    class WebGPT): citation markers are removed from the answers; a row whose answers are
    empty (here: blank) or identical after that is dropped (0 Examples); otherwise the answers
    are ordered by score, and a tie keeps answer_0 first (OA's stable sort, like the older
    `score_0 >= score_1` rule in its instructor/utils.py), so a tie is kept with answer_0 chosen.
    OA also merged rows of one question into a ranking; here each row stays one pair.
    """
    question = row.get("question")
    if not isinstance(question, dict) or not isinstance(question.get("full_text"), str):
        raise MinirmError(f"{where}: webgpt rows need 'question' as an object with a 'full_text' string "
                          f"(fields found: {_found(row)})")
    answers = [CITATION.sub("", _text(row, where, f"answer_{i}")) for i in (0, 1)]
    scores = [_number(row, where, f"score_{i}") for i in (0, 1)]
    if not answers[0].strip() or not answers[1].strip() or answers[0] == answers[1]:
        return []
    best = 1 if scores[1] > scores[0] else 0
    prompt = question["full_text"]
    return [Example([Sample.pair(prompt, answers[best]), Sample.pair(prompt, answers[1 - best])], where=where)]


def summarize(row: dict, where: str) -> list[Example]:
    """openai/summarize_from_feedback, "comparisons" config: `info` {`post`, `article`, `title`, ...},
    `summaries` [{`text`, ...}, {`text`, ...}], `choice` (index of the preferred summary).

    Prompt = the Reddit post (or, for the CNN/DM rows whose post is null, the article) + " TLDR;",
    as OpenAssistant's HFSummary reward data built it. On the Hub the data files are on revision
    refs/convert/parquet (main holds a loading script); use split "comparisons/train".
    """
    info = row.get("info") if isinstance(row.get("info"), dict) else {}
    text = info.get("post") if info.get("post") is not None else info.get("article")
    if not isinstance(text, str):
        raise MinirmError(f"{where}: summarize rows need 'info' with a 'post' (or 'article') string "
                          f"(fields found: {_found(row)})")
    summaries, choice = row.get("summaries"), row.get("choice")
    if not (isinstance(summaries, list) and len(summaries) == 2
            and all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in summaries)):
        raise MinirmError(f"{where}: 'summaries' must be a list of 2 objects with a 'text' string "
                          f"(fields found: {_found(row)})")
    if not isinstance(choice, int) or isinstance(choice, bool) or choice not in (0, 1):
        raise MinirmError(f"{where}: 'choice' must be 0 or 1, got {choice!r}")
    prompt = text + " TLDR;"
    chosen, rejected = summaries[choice]["text"], summaries[1 - choice]["text"]
    return [Example([Sample.pair(prompt, chosen), Sample.pair(prompt, rejected)], where=where)]


def ranking(row: dict, where: str) -> list[Example]:
    """`prompt` + `responses` (K >= 2 strings, best first) -> one Example of K samples."""
    prompt = _text(row, where, "prompt")
    responses = row.get("responses")
    if not (isinstance(responses, list) and len(responses) >= 2 and all(isinstance(r, str) for r in responses)):
        raise MinirmError(f"{where}: 'responses' must be a list of at least 2 strings, best first "
                          f"(fields found: {_found(row)})")
    return [Example([Sample.pair(prompt, r) for r in responses], where=where)]


def regression(row: dict, where: str) -> list[Example]:
    """`prompt` (or `instruction`) + `response` (or `completion`) + `reward`, a number in [-1, 1]."""
    prompt = _text(row, where, "prompt", "instruction")
    response = _text(row, where, "response", "completion")
    if "reward" not in row:
        raise MinirmError(f"{where}: missing field 'reward' (fields found: {_found(row)})")
    reward = row["reward"]
    if not _is_number(reward) or not -1 <= reward <= 1:
        raise MinirmError(f"{where}: reward {reward!r} must be a number in [-1, 1]; rescale the rewards to that range")
    return [Example([Sample.pair(prompt, response)], target=float(reward), where=where)]


ROLES = {"user": "user", "bot": "bot", "assistant": "bot"}


def _conversation(messages, where: str) -> Sample:
    if not isinstance(messages, list) or not messages:
        raise MinirmError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    turns = []
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise MinirmError(f"{where}: messages[{i}] must be {{\"role\": \"user\"|\"bot\"|\"assistant\", "
                              f"\"content\": string}}, got {m!r:.80}")
        turns.append(ChatTurn(ROLES[m["role"]], m["content"]))
    if turns[-1].speaker != "bot":
        raise MinirmError(f"{where}: the last message must be the bot's (or assistant's) reply that the label rates")
    first_user = next((t.message for t in turns if t.speaker == "user"), "")
    return Sample(first_user, turns[-1].message, history=turns[:-1])


def chai(row: dict, where: str, num_labels: int = 2) -> list[Example]:
    """Classification rows -> Example([one sample], target=label):

    - ChaiML/20231206_chai_prize_reward_model_data: `input_text` (already Pygmalion-formatted)
      + `labels` -> Sample(None, input_text);
    - a conversation: `messages` [{role: user|bot|assistant, content}], the last one the reply
      being rated, + `label` -> Sample(first user message, last reply, history=the turns before);
    - `prompt` + `response` + `label` -> Sample.pair.

    Labels are ints in range(num_labels); load_examples passes its num_labels here by keyword.
    """
    if "input_text" in row:
        sample = Sample(None, _text(row, where, "input_text"))
    elif "messages" in row:
        sample = _conversation(row["messages"], where)
    elif "prompt" in row or "response" in row:
        sample = Sample.pair(_text(row, where, "prompt"), _text(row, where, "response"))
    else:
        raise MinirmError(f"{where}: the chai adapter needs 'input_text' + 'labels', 'messages' + 'label', "
                          f"or 'prompt' + 'response' + 'label' (fields found: {_found(row)})")
    key = "labels" if "labels" in row else "label"
    if key not in row:
        raise MinirmError(f"{where}: missing field 'label' (or 'labels') (fields found: {_found(row)})")
    label = row[key]
    if not isinstance(label, int) or isinstance(label, bool):
        raise MinirmError(f"{where}: label {label!r} must be an integer 0..{num_labels - 1}")
    if not 0 <= label < num_labels:
        raise MinirmError(f"{where}: label {label} is out of range for a {num_labels}-label model; "
                          f"labels must be 0..{num_labels - 1}")
    return [Example([sample], target=label, where=where)]


ADAPTERS: dict[str, Callable[[dict, str], list[Example]]] = {
    "preference": preference, "webgpt": webgpt, "summarize": summarize,
    "ranking": ranking, "regression": regression, "chai": chai,
}
ADAPTER_KINDS: dict[str, str] = {
    "preference": "pairwise", "webgpt": "pairwise", "summarize": "pairwise",
    "ranking": "ranking", "regression": "regression", "chai": "classification",
}
