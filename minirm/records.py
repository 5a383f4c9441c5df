"""Reading JSONL records and turning each into what a model scores.

A row carries one of:
- "prompt" and "response"               -> one score
- "text" (already formatted)            -> one score
- "chosen" and "rejected" (+ "prompt")  -> two scores, and pairwise accuracy
  Without "prompt", chosen/rejected are full hh-rlhf transcripts ("\n\nHuman: ...
  \n\nAssistant: ..."), split into the conversation and its last assistant turn.

Every problem names the file and line, and nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import MinirmError
from .formats import ChatTurn

KINDS = {
    "pair": ("prompt", "response"),
    "text": ("text",),
    "preference": ("chosen", "rejected"),
}


@dataclass
class Sample:
    """One thing to score: a (prompt, response) pair, or a pre-formatted text (prompt=None)."""

    prompt: str | None
    response: str
    history: list[ChatTurn] | None = None  # the conversation, for chat-formatted models

    @classmethod
    def pair(cls, prompt: str, response: str) -> "Sample":
        """A single exchange: the prompt is the user's one turn of the conversation."""
        return cls(prompt, response, history=[ChatTurn("user", prompt)])


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL file to score, each validated before any work is done."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MinirmError(f"{path}: cannot be read ({e.strerror})") from None
    rows = []
    for where, row in parse_jsonl(data, str(path)):
        row_kind(row, where)
        rows.append(row)
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
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MinirmError(f"{name}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise MinirmError(f"{name}:{line_no}: expected a JSON object, got {type(row).__name__}")
        rows.append((f"{name}:{line_no}", row))
    return rows


def row_kind(row: dict, where: str) -> str:
    for kind, fields in (("preference", KINDS["preference"]), ("pair", KINDS["pair"]), ("text", KINDS["text"])):
        if all(f in row for f in fields):
            for f in fields + (("prompt",) if kind == "preference" and "prompt" in row else ()):
                if not isinstance(row[f], str):
                    raise MinirmError(f"{where}: field {f!r} must be a string, got {type(row[f]).__name__}")
            return kind
    found = ", ".join(sorted(row)) or "none"
    raise MinirmError(
        f"{where}: needs 'prompt' and 'response', 'text', or 'chosen' and 'rejected' fields (found: {found})"
    )


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
    if "prompt" in row:
        return [Sample.pair(row["prompt"], row[k]) for k in ("chosen", "rejected")]
    return [transcript_sample(row[k]) for k in ("chosen", "rejected")]


def write_jsonl_atomic(path: str | Path, rows) -> None:
    """Write every row or nothing: a temp file beside the target, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
