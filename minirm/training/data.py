"""Training data: from a file or a Hub dataset to the Examples a training loop consumes.

The flow is  source -> rows -> adapter -> Examples:

1. `read_rows(source)` reads a local file (.jsonl, .jsonl.gz, .json, .parquet), a directory
   of them, or a Hub dataset id ("org/name": the local cache first, a download only when
   the Hub is reachable) into (where, row) pairs. `where` is "file:LINE" or "file:row N", so
   any later error can point at the row that caused it.
2. An adapter, `ADAPTERS[name](row, where)`, turns one row shaped like a public dataset into
   Examples: [chosen, rejected] for pairwise training, K samples best first for ranking, or
   one sample with a target for regression / classification (`ADAPTER_KINDS` says which).
3. `load_examples` does both for a list of sources; `split_holdout` sets an eval set aside.
4. `encode_examples` tokenizes them once, with the tokenizer's one formatting path (the one
   score.py uses), into the Encoded token lists a training loop batches.

Steps 1 and 2 live in minirm/text/datasets.py, shared with score.py's evaluation, and are
imported here under their old names. A `DataSource` names one source and the adapter that
reads it, as a TrainConfig and the recipes hold them.

Every problem is a MinirmError of one line naming the file and row. A malformed row is never
skipped; the only rows dropped are the ones an adapter drops on purpose and documents
(webgpt's empty answers), and load_examples warns how many.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from functools import partial

from ..errors import MinirmError
from ..text.datasets import (  # noqa: F401 - re-exported: training's names for the shared reading code
    ADAPTER_KINDS, ADAPTERS, CITATION, DATA_SUFFIXES, METADATA_FILES, ROLES, Example, chai, preference, ranking,
    read_rows, regression, summarize, webgpt, _is_number,
)


@dataclass(frozen=True)  # recipes hand their own sources to every run: none may change them
class DataSource:
    source: str  # local file / directory, or a Hub dataset id
    adapter: str  # a name in ADAPTERS
    split: str | None = None
    revision: str | None = None  # Hub datasets: e.g. refs/convert/parquet for script-only repos


@dataclass
class Encoded:
    """One Example as token ids: one token list per sample (chosen, rejected, ...), in its order."""
    ids: list[list[int]]
    target: float | int | None = None
    margin: float | None = None

    @property
    def length(self) -> int:
        return max(len(s) for s in self.ids)


# ---------------------------------------------------------------------------- loading

def load_examples(sources: list[str] | str, adapter: str, split: str | None = None, revision: str | None = None,
                  num_labels: int = 2) -> list[Example]:
    """Every source's rows through one adapter. A source that yields no example is an error."""
    if adapter not in ADAPTERS:
        raise MinirmError(f"unknown data adapter {adapter!r}; choose one of: {', '.join(ADAPTERS)}")
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise MinirmError("no training data given; pass at least one file, directory or Hub dataset id")
    adapt = partial(chai, num_labels=num_labels) if adapter == "chai" else ADAPTERS[adapter]
    examples: list[Example] = []
    for source in sources:
        rows = read_rows(source, split, revision)
        got = [adapt(row, where) for where, row in rows]
        dropped = sum(not g for g in got)
        if dropped == len(rows):
            raise MinirmError(f"{source}: no usable examples ({len(rows)} rows, all dropped by the {adapter!r} "
                              f"adapter's rules; see minirm.text.datasets.{adapter})")
        if dropped:  # deliberate drops (documented by the adapter), reported rather than silent
            warnings.warn(f"{source}: {dropped} of {len(rows)} rows dropped by the {adapter!r} adapter's rules",
                          stacklevel=2)
        examples += [e for g in got for e in g]
    return examples


def split_holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, eval): a seeded permutation picks round(fraction * n) examples for eval (at least 1
    when fraction > 0 and n >= 2, and never all of them); both keep the input order."""
    if not _is_number(fraction) or not 0 <= fraction < 1:
        raise MinirmError(f"eval fraction {fraction!r} must be at least 0 and below 1")
    n = len(examples)
    k = min(max(round(fraction * n), 1), n - 1) if fraction > 0 and n >= 2 else 0
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def encode_examples(examples: list[Example], tokenizer) -> list[Encoded]:
    """Tokenize every sample with the tokenizer's one formatting path, the one score.py uses."""
    flat = [s for ex in examples for s in ex.samples]
    ids = iter(tokenizer.encode_samples(flat))
    out = []
    for ex in examples:
        seqs = [next(ids) for _ in ex.samples]
        if not all(seqs):
            raise MinirmError(f"{ex.where}: a text tokenizes to nothing; give it some content")
        unknown = tokenizer.first_unknown(seqs)
        if unknown is not None:
            raise MinirmError(f"{ex.where}: {tokenizer.unknown_reason(unknown[1])}")
        out.append(Encoded(seqs, ex.target, ex.margin))
    return out
