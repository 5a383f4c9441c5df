"""Reading JSONL records and turning each into what a model scores.

A row carries one of:
- "prompt" and "response"               -> one score
- "text" (already formatted)            -> one score
- "chosen" and "rejected" (+ "prompt")  -> two scores, and pairwise accuracy
  Without "prompt", chosen/rejected are full hh-rlhf transcripts ("\n\nHuman: ...
  \n\nAssistant: ..."), split into the conversation and its last assistant turn.
- "messages" (a list of {"role", "content"}) -> one score: a whole conversation, ending in the
  assistant turn being scored, for models that read their tokenizer's chat template; "chosen"
  and "rejected" may be such lists too (the Skywork preference data's layout)

Every problem names the file and line, and nothing is skipped silently.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinirmError, first_line
from .formats import ChatTurn

KINDS = {
    "pair": ("prompt", "response"),
    "text": ("text",),
    "preference": ("chosen", "rejected"),
    "messages": ("messages",),
}


@dataclass
class Sample:
    """One thing to score: a (prompt, response) pair, a pre-formatted text (prompt=None), or a
    whole conversation (`messages`, for chat-template models; prompt None, response its last turn)."""

    prompt: str | None
    response: str
    history: list[ChatTurn] | None = None  # the conversation, for chat-formatted models
    messages: list[dict] | None = None  # {"role", "content"} messages as given, the last one scored

    @classmethod
    def conversation(cls, messages: list[dict]) -> "Sample":
        return cls(None, messages[-1]["content"] if messages else "", messages=messages)

    @classmethod
    def pair(cls, prompt: str, response: str) -> "Sample":
        """A single exchange: the prompt is the user's one turn of the conversation."""
        return cls(prompt, response, history=[ChatTurn("user", prompt)])


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL file to score, each validated before any work is done."""
    return [row for _, row in read_jsonl_located(path)]


def read_jsonl_located(path: str | Path) -> list[tuple[str, dict]]:
    """Like read_jsonl, with each row's "file:LINE", so later errors can name it."""
    path = Path(path)
    if path.is_dir():
        raise MinirmError(f"{path}: is a directory; --input takes a JSONL file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MinirmError(f"{path}: cannot be read ({e.strerror})") from None
    rows = []
    for where, row in parse_jsonl(data, str(path)):
        check_row(row, where)
        rows.append((where, row))
    if not rows:
        raise MinirmError(f"{path}: empty file, nothing to score; each line should be a JSON object")
    return rows


def parse_jsonl(data: bytes, name: str) -> list[tuple[str, dict]]:
    """JSONL bytes -> ("name:LINE", object) pairs; blank lines are skipped, anything else bad stops."""
    rows = []
    for line_no, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")  # tolerate a byte-order mark
        except UnicodeDecodeError as e:
            raise MinirmError(f"{name}:{line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                              "re-encode the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float,
                             object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise MinirmError(f"{name}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
        except _DuplicateKey as e:
            raise MinirmError(f"{name}:{line_no}: field {e.args[0]!r} appears twice in one object, and only one "
                              "value can be used; keep one") from None
        except _NonFinite as e:
            raise MinirmError(f"{name}:{line_no}: {e.args[0]} is not a finite number, which strict JSON cannot "
                              "hold; write null or a string instead") from None
        except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits, or nesting too deep
            raise MinirmError(f"{name}:{line_no}: cannot be read as JSON ({first_line(e, 120).split(':')[0]}); "
                              "fix or remove the line") from None
        if not isinstance(row, dict):
            raise MinirmError(f"{name}:{line_no}: expected a JSON object, got {type(row).__name__}")
        if _MAYBE_SURROGATE.search(line):  # only a \uD800-\uDFFF escape can put a lone surrogate in a str
            field = _surrogate_field(row)
            if field is not None:
                raise MinirmError(f"{name}:{line_no}: field {field!r} holds a lone surrogate escape (\\ud800-\\udfff "
                                  "without its pair), which is not text; fix or remove it")
        rows.append((f"{name}:{line_no}", row))
    return rows


def check_row(row: dict, where: str) -> str:
    """A row to score: its kind, after checking it has no field the output would overwrite."""
    kind = row_kind(row, where)
    taken = [f for f in SCORE_FIELDS[kind] if f in row]
    if taken:  # the output would overwrite it, and the input's value would be lost without a word
        raise MinirmError(f"{where}: already has a {taken[0]!r} field, which the output would overwrite; "
                          "rename or remove it first")
    return kind


def scored_row(row: dict, scores: list[float]) -> dict:
    """The row with the fields score.py adds: "score", or for a preference row both scores and
    whether the chosen one won (a tie is not a win, as reward-bench counts it)."""
    if len(scores) == 2:
        return {**row, "score_chosen": scores[0], "score_rejected": scores[1], "correct": scores[0] > scores[1]}
    return {**row, "score": scores[0]}


def rows_to_samples(rows: list[dict], names: list[str]) -> tuple[list[Sample], list[int], list[str]]:
    """Every sample of every (checked) row, in order, with its row's index and a label naming the
    row and the field it came from, e.g. "in.jsonl:4 (field 'chosen')"."""
    samples, owners, labels = [], [], []
    for i, (row, name) in enumerate(zip(rows, names)):
        kind = row_kind(row, name)
        fields = {"preference": ("chosen", "rejected"), "text": ("text",), "messages": ("messages",)}.get(
            kind, ("response",))
        for sample, f in zip(row_samples(row), fields):
            samples.append(sample)
            owners.append(i)
            labels.append(f"{name} (field {f!r})")
    return samples, owners, labels


def rows_with_scores(rows: list[dict], owners: list[int], scores: list[float]) -> list[dict]:
    """Each row with its samples' scores put back (see scored_row)."""
    per_row: dict[int, list[float]] = {}
    for i, s in zip(owners, scores):
        per_row.setdefault(i, []).append(s)
    return [scored_row(row, per_row[i]) for i, row in enumerate(rows)]


def parse_strict_json(text: str):
    """json.loads for strict JSON: NaN, infinities, float overflow and repeated keys are a
    ValueError with a short reason."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise ValueError(f"field {e.args[0]!r} appears twice in one object") from None
    except _NonFinite as e:
        raise ValueError(f"{e.args[0]} is not a finite number") from None


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str):
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to infinity, which no JSON line can hold
        raise _NonFinite(f"{text} (out of the range of a float)")
    return value


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads keeps the last of two equal keys; for a row that silently drops a value."""
    row = dict(pairs)
    if len(row) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return row


_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """True for a str that cannot be encoded as UTF-8: a \ud800-\udfff without its pair."""
    return _SURROGATE.search(text) is not None


def _surrogate_field(row: dict) -> str | None:
    """The top-level field (or key) of a parsed row that holds a lone surrogate, if any."""
    def bad(value) -> bool:
        if isinstance(value, str):
            return has_lone_surrogate(value)
        if isinstance(value, dict):
            return any(bad(k) or bad(v) for k, v in value.items())
        if isinstance(value, list):
            return any(bad(v) for v in value)
        return False

    for key, value in row.items():
        if bad(key) or bad(value):
            return key  # shown with !r, which escapes the surrogate
    return None


# the fields score.py adds to a row of each kind
SCORE_FIELDS = {"pair": ("score",), "text": ("score",), "messages": ("score",),
                "preference": ("score_chosen", "score_rejected", "correct")}


def row_kind(row: dict, where: str) -> str:
    """"pair", "text", "preference" or "messages"; a row that fits two kinds is refused, not guessed at."""
    kinds = [kind for kind in ("preference", "pair", "text", "messages") if all(f in row for f in KINDS[kind])]
    if len(kinds) > 1:
        both = " and ".join("+".join(repr(f) for f in KINDS[k]) for k in kinds)
        raise MinirmError(f"{where}: has {both} fields, so what to score is ambiguous; keep one kind per row")
    for kind in kinds:
        if kind == "messages":
            check_messages(row["messages"], where, "messages")
            return kind
        if kind == "preference" and isinstance(row["chosen"], list):  # conversations (Skywork, RewardBench 2 style)
            check_conversation_pair(row, where)
            return kind
        for f in KINDS[kind] + (("prompt",) if kind == "preference" and "prompt" in row else ()):
            if not isinstance(row[f], str):
                raise MinirmError(f"{where}: field {f!r} must be a string, got {type(row[f]).__name__}")
        return kind
    found = ", ".join(sorted(row)) or "none"
    raise MinirmError(
        f"{where}: needs 'prompt' and 'response', 'text', 'chosen' and 'rejected', or 'messages' fields "
        f"(found: {found})"
    )


def check_conversation_pair(row: dict, where: str) -> None:
    """A preference row whose `chosen` and `rejected` are whole conversations (message lists)."""
    for f in ("chosen", "rejected"):
        check_messages(row.get(f), where, f)
    if "prompt" in row:
        raise MinirmError(f"{where}: 'chosen' and 'rejected' are whole conversations, which hold the prompt: "
                          "drop the 'prompt' field, or give chosen and rejected as strings")


def check_messages(messages, where: str, field: str = "messages") -> None:
    """A conversation to score: a non-empty list of {"role": str, "content": str} objects."""
    if not isinstance(messages, list) or not messages:
        raise MinirmError(f"{where}: field {field!r} must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise MinirmError(f"{where}: {field}[{i}] must be an object with a string 'role' and a string 'content', "
                              f"got {json.dumps(m, ensure_ascii=False)[:80]}")


HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_transcript(transcript: str) -> list[ChatTurn]:
    """hh-rlhf '\n\nHuman: ...\n\nAssistant: ...' -> turns. Text before the first marker is ignored."""
    parts = HH_TURN.split(transcript)
    return [ChatTurn("user" if who == "Human" else "bot", msg.strip()) for who, msg in zip(parts[1::2], parts[2::2])]


def transcript_sample(transcript: str) -> Sample:
    """A transcript as (conversation before the last assistant turn, that turn)."""
    turns = parse_transcript(transcript)
    if not turns or turns[-1].speaker != "bot":
        return Sample(None, transcript)  # not a transcript: score the text as it is
    cut = transcript.rfind("\n\nAssistant:")
    prompt = transcript[:cut].strip()
    return Sample(prompt, turns[-1].message, history=turns[:-1])


def row_samples(row: dict) -> list[Sample]:
    """The samples of one validated row: one, or two (chosen, rejected) for preference rows."""
    kind = row_kind(row, "row")
    if kind == "pair":
        return [Sample.pair(row["prompt"], row["response"])]
    if kind == "text":
        return [Sample(None, row["text"])]
    if kind == "messages":
        return [Sample.conversation(row["messages"])]
    if isinstance(row["chosen"], list):  # two whole conversations, each scored by the chat template
        return [Sample.conversation(row[k]) for k in ("chosen", "rejected")]
    if "prompt" in row:
        return [Sample.pair(row["prompt"], row[k]) for k in ("chosen", "rejected")]
    return [transcript_sample(row[k]) for k in ("chosen", "rejected")]


def dumps_row(row) -> str:
    """One output line: strict JSON (no NaN or infinities), the one way every writer makes a line."""
    return json.dumps(row, ensure_ascii=False, allow_nan=False)


def writable_ancestor(folder: Path, option: str, shown: Path | None = None) -> Path:
    """The nearest existing folder at or above `folder`, checked to be a folder we can create
    files in; otherwise one line naming `option` and `shown` (the path the user gave, default
    `folder`). Missing folders below it are created on writing."""
    shown = shown or folder
    ancestor = folder
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent  # a dangling link stops the walk: the probe below reports it
    if ancestor.exists() and not ancestor.is_dir():
        where = "is a file" if ancestor == shown else f"cannot be made: {ancestor} is a file"
        raise MinirmError(f"{option} {shown} {where}, not a directory; give a path inside a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):  # a real file: os.access says yes to root
            pass
    except OSError as e:
        raise MinirmError(f"{option} {shown}: cannot write in {ancestor} ({e.strerror or e}); "
                          "give a path in a writable directory") from None
    return ancestor


def write_target(path: str | Path, option: str = "--output") -> Path:
    """The file that writing `path` replaces: a symbolic link is written through to the file it names,
    as shell redirection (`>`) writes, so the link stays a link and its target gets the new content
    (a dangling link's target is created). Replacing the link itself would leave the target stale."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        return Path(os.path.realpath(path))  # dangling: its target, as far as it resolves
    except OSError as e:
        raise MinirmError(f"{option} {path}: a symbolic link that cannot be followed ({e.strerror}); "
                          "give a file path") from None


def check_output_path(path: str | Path, option: str = "--output") -> None:
    """Fail now, before any work, if `path` cannot be written as a file (one line naming it);
    a symbolic link is checked at its target, where the file is written (`write_target`)."""
    shown, path = Path(path), write_target(path, option)
    if path != shown:
        if path.is_dir():
            raise MinirmError(f"{option} {shown}: is a link to the directory {path}; give a file path")
        if path.exists() and not path.is_file():
            raise MinirmError(f"{option} {shown}: links to {path}, which is not a regular file; give another path")
        writable_ancestor(path.parent, option, shown=shown)
        return
    if path.is_dir():
        raise MinirmError(f"{option} {path}: is a directory; give a file path such as {path / 'scored.jsonl'}")
    if path.exists() and not path.is_file():
        raise MinirmError(f"{option} {path}: exists and is not a regular file; give another path")
    writable_ancestor(path.parent, option, shown=path)


def _new_file_mode(path: Path) -> int:
    """The mode the written file should get: an existing file keeps its own, a new one what the umask gives."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_jsonl_atomic(path: str | Path, rows) -> None:
    """Write every row or nothing: a temp file beside the target, then os.replace.

    Every line is strict JSON (a NaN or infinity raises ValueError before the target is
    touched); an OS failure is one MinirmError line naming the path, and leaves no temp file.
    A symbolic link is written through: its target is replaced, the link stays (`write_target`)."""
    path = write_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise MinirmError(f"{path}: cannot be written ({e.strerror}); nothing was written") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(dumps_row(row) + "\n")
            os.fchmod(f.fileno(), _new_file_mode(path))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise MinirmError(f"{path}: cannot be written ({e.strerror}); the file was left as it was") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
