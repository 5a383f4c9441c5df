"""Evaluation as reward-model papers report it: pairwise accuracy, RewardBench v1 and 2, and the
figures of the seed models' cards.

`score.py --input` takes a JSONL file or a Hub dataset, `ORG/NAME[@REVISION][:SPLIT]`, read by
minirm.text.datasets, the code train.py reads its data with (the cache first, offline-aware,
parquet, revisions). Each row is one of these layouts (`row_layout`), named after the adapter
that reads it:

    pair, text, preference   score.py's own JSONL kinds (minirm/text/records.py): prompt +
                             response, text, chosen + rejected with a prompt or as hh-rlhf
                             transcripts (Anthropic/hh-rlhf); RewardBench v1 rows are of this kind
    preference (Aira)        instruction + chosen_response + rejected_response
                             (nicholasKluge/reward-aira-dataset, toxic-aira-dataset)
    webgpt                   openai/webgpt_comparisons; a tie (score_0 == score_1) is dropped, as
                             the Aira card compares "with a preferred answer only"
    summarize                openai/summarize_from_feedback, comparisons
    chai                     input_text + labels (ChaiML's data): classification accuracy
    best-of-n                RewardBench 2: chosen and rejected are lists

Every sample goes through Scorer.score_samples, the scorer's one pair path, in one call, so a
text that appears twice is scored once (Scorer.score_ids) and a model's chat format applies to
evaluation as it does to scoring.

The figures are computed as reward-bench computes them (github.com/allenai/reward-bench); the
functions below name the file and function each follows.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import MinirmError
from ..hub import ALIASES, REPO_ID, resolve_model
from ..models import by_model_type
from ..text import records
from ..text.datasets import DATA_SUFFIXES, chai, preference, read_rows, summarize, webgpt
from ..text.records import Sample

# ---------------------------------------------------------------------------- RewardBench's constants

# rewardbench/constants.py, EXAMPLE_COUNTS: each subset's weight in its section. math-prm has 447
# prompts but counts 984, "upweighting to be equal to code" (the six hep-* subsets, 6 x 164)
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95,
    "mt-bench-easy": 28, "mt-bench-med": 40, "mt-bench-hard": 37,
    "math-prm": 984,
    "refusals-dangerous": 100, "refusals-offensive": 100,
    "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136,
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
# rewardbench/constants.py, SUBSET_MAPPING: the four sections and their subsets, in its order
SUBSET_MAPPING = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
# analysis/get_benchmark_results.py, get_average_over_rewardbench: the legacy "Prior Sets" column is
# the mean of these allenai/pref-test-sets subsets, weighted 1 against 2 for each section
PRIOR_SETS = ("anthropic_helpful", "anthropic_hhh", "shp", "summarize")
PRIOR_SETS_KEY = "Prior Sets (0.5 weight)"
LEGACY_WEIGHTS = (2, 2, 2, 2, 1)  # Chat, Chat Hard, Safety, Reasoning, Prior Sets
# RewardBench 2's subsets (allenai/reward-bench-2, column "subset"); its leaderboard averages the six
V2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
# the split scripts/run_rm.py and scripts/run_v2.py load: load_dataset(..., split="filtered" / "test")
DEFAULT_SPLITS = {"allenai/reward-bench": "filtered", "allenai/reward-bench-2": "test"}
MODEL_TYPE = "Seq. Classifier"  # reward-bench's model_type for a sequence-classifier reward model
RUN_FIELDS = ("date", "pairs_per_second")  # what differs between two runs that score the same

# ---------------------------------------------------------------------------- reading the input

HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^:@]+))?(?::(?P<split>.+))?$")
ADAPTER_SUFFIXES = (".parquet", ".json", ".jsonl.gz")  # read by minirm.text.datasets; .jsonl as score.py reads it


@dataclass(frozen=True)
class DatasetSpec:
    """A Hub dataset, as --input names it: ORG/NAME[@REVISION][:SPLIT]."""
    repo: str
    revision: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "") + (f":{self.split}" if self.split else "")


def parse_input(text: str) -> Path | DatasetSpec:
    """--input: a local file when one is there, else a Hub dataset ORG/NAME[@REVISION][:SPLIT]."""
    path = Path(text).expanduser()
    if path.exists() or path.is_symlink():
        return path
    m = HUB_SPEC.match(text)
    if m is None or m["repo"].endswith(DATA_SUFFIXES) or not REPO_ID.match(m["repo"]):
        raise MinirmError(f"--input {text}: no such file, and not a Hub dataset ORG/NAME[@REVISION][:SPLIT] "
                          "(e.g. allenai/reward-bench:filtered); check the path")
    repo = m["repo"]
    return DatasetSpec(repo, m["revision"], m["split"] or DEFAULT_SPLITS.get(repo))


def read_input(text: str) -> tuple[str, list[tuple[str, dict]]]:
    """(a label for the input, its (where, row) pairs): a JSONL file as score.py has always read it,
    a .parquet, .json or .jsonl.gz file, or a Hub dataset through minirm.text.datasets.read_rows."""
    source = parse_input(text)
    if isinstance(source, DatasetSpec):
        return str(source), read_rows(source.repo, source.split, source.revision)
    if source.is_dir():
        raise MinirmError(f"{source}: is a directory; --input takes a JSONL file (or .parquet, .json, .jsonl.gz), "
                          "or a Hub dataset ORG/NAME[:SPLIT]")
    if source.name.endswith(ADAPTER_SUFFIXES):
        return str(source), read_rows(str(source))
    try:
        data = source.read_bytes()
    except OSError as e:
        raise MinirmError(f"{source}: cannot be read ({e.strerror})") from None
    rows = records.parse_jsonl(data, str(source))
    if not rows:
        raise MinirmError(f"{source}: empty file, nothing to score; each line should be a JSON object")
    return str(source), rows


# ---------------------------------------------------------------------------- rows -> samples

# the fields each layout adds to its row in the output
SCORE_FIELDS = {"pairwise": records.SCORE_FIELDS["preference"], "best-of-n": ("scores", "results"),
                "chai": ("score", "correct")}
PAIRWISE = ("preference", "aira", "webgpt", "summarize")  # the layouts of chosen-and-rejected rows
ADAPTED = {"aira": preference, "webgpt": webgpt, "summarize": summarize}  # read by minirm.text.datasets


def row_layout(row: dict, where: str) -> str:
    """Which layout a row has (the module docstring lists them): "pair", "text", "preference",
    "aira", "webgpt", "summarize", "chai" or "best-of-n"."""
    if any(isinstance(row.get(f), list) and row[f] and all(isinstance(m, dict) for m in row[f])
           for f in ("chosen", "rejected")):
        return records.check_row(row, where)  # two whole conversations (messages): a preference row
    if isinstance(row.get("chosen"), list) or isinstance(row.get("rejected"), list):
        layout = "best-of-n"
    elif "question" in row and ("answer_0" in row or "answer_1" in row):
        layout = "webgpt"
    elif "summaries" in row and "choice" in row:
        layout = "summarize"
    elif "chosen_response" in row or "rejected_response" in row:
        layout = "aira"
    elif "input_text" in row:
        layout = "chai"
    else:
        return records.check_row(row, where)  # pair, text or preference, checked as score.py always has
    added = SCORE_FIELDS["pairwise" if layout in PAIRWISE else layout]
    taken = [f for f in added if f in row]
    if taken:
        raise MinirmError(f"{where}: already has a {taken[0]!r} field, which the output would overwrite; "
                          "rename or remove it first")
    return layout


ADAPTER_OF = {"aira": "preference"}  # the adapter (minirm.text.datasets) each layout is read by
# why a webgpt row is dropped: a tie has no preferred answer; the adapter drops an empty answer
TIED = "tied (score_0 == score_1: no preferred answer)"
EMPTY = "with an empty answer, or two the same once citations are removed"


@dataclass
class Prepared:
    """The rows to score, their samples in one list, and the rows dropped on purpose."""
    label: str
    rows: list[dict] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    layouts: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each row's samples: [start, end)
    targets: list[int | None] = field(default_factory=list)  # chai rows' labels
    samples: list[Sample] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # "where (field 'chosen')", for one-line errors
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    total: int = 0

    @property
    def adapters(self) -> set[str]:
        return {ADAPTER_OF.get(layout, layout) for layout in self.layouts}

    @property
    def evaluable(self) -> bool:
        """Whether some row has a right answer to measure the model against (a summary to write)."""
        return any(layout in PAIRWISE or layout in ("best-of-n", "chai") for layout in self.layouts)

    @property
    def subsets(self) -> bool:
        """Whether some row with a right answer carries a RewardBench 'subset'."""
        return any("subset" in row for row, layout in zip(self.rows, self.layouts)
                   if layout in PAIRWISE or layout == "best-of-n")

    def dropped_note(self) -> str | None:
        if not self.dropped:
            return None
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items())
        return f"{self.label}: {sum(self.dropped.values())} of {self.total} rows dropped ({reasons})"


def prepare(label: str, located: list[tuple[str, dict]]) -> Prepared:
    """Every row checked and turned into its samples, before any model is loaded."""
    out = Prepared(label, total=len(located))
    for where, row in located:
        layout = row_layout(row, where)
        target = None
        if layout in ADAPTED:
            examples = ADAPTED[layout](row, where)  # checks the row, malformed or not dropped
            drop = EMPTY if not examples else TIED if layout == "webgpt" and _is_tie(row) else None
            if drop:  # webgpt: no preferred answer, or an empty one (the adapter's own rule)
                out.dropped[drop] = out.dropped.get(drop, 0) + 1
                continue
            samples, fields = examples[0].samples, _pair_fields(layout, row)
        elif layout == "chai":
            example = chai(row, where)[0]
            samples, fields, target = example.samples, ("input_text",), example.target
        elif layout == "best-of-n":
            samples, fields = _best_of_n_samples(row, where)
        else:
            samples = records.row_samples(row)  # as score.py has always read its JSONL kinds
            fields = {"pair": ("response",), "text": ("text",), "messages": ("messages",),
                      "preference": ("chosen", "rejected")}[layout]
        _check_subset(row, where)
        start = len(out.samples)
        out.samples += samples
        out.labels += [f"{where} (field {f!r})" for f in fields]
        out.rows.append(row)
        out.wheres.append(where)
        out.layouts.append(layout)
        out.spans.append((start, len(out.samples)))
        out.targets.append(target)
    if not out.rows:
        raise MinirmError(f"{label}: no rows left to score ({out.dropped_note()})")
    v1 = any("subset" in r for r, lay in zip(out.rows, out.layouts) if lay in PAIRWISE)
    if v1 and "best-of-n" in out.layouts:
        raise MinirmError(f"{label}: mixes RewardBench v1 rows (chosen and rejected strings) with RewardBench 2 "
                          "rows (lists); score each dataset on its own")
    return out


def _is_tie(row: dict) -> bool:
    s0, s1 = row.get("score_0"), row.get("score_1")
    return isinstance(s0, (int, float)) and isinstance(s1, (int, float)) and s0 == s1


def _pair_fields(layout: str, row: dict) -> tuple[str, str]:
    if layout == "aira":
        return "chosen_response", "rejected_response"
    if layout == "webgpt":
        best = 1 if row["score_1"] > row["score_0"] else 0
        return f"answer_{best}", f"answer_{1 - best}"
    if layout == "summarize":
        return f"summaries[{row['choice']}]", f"summaries[{1 - row['choice']}]"
    return "chosen", "rejected"


def _check_subset(row: dict, where: str) -> None:
    if "subset" in row and not isinstance(row["subset"], str):
        raise MinirmError(f"{where}: field 'subset' must be a string (the RewardBench subset), "
                          f"got {type(row['subset']).__name__}")


def _best_of_n_samples(row: dict, where: str) -> tuple[list[Sample], list[str]]:
    """A RewardBench 2 row: (prompt, completion) for every chosen, then every rejected completion,
    as scripts/run_v2.py unrolls them (load_bon_dataset_v2: chosen + rejected, in order)."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise MinirmError(f"{where}: a RewardBench 2 row needs 'prompt' as a string (fields found: "
                          f"{', '.join(map(str, row))})")
    for key in ("chosen", "rejected"):
        value = row.get(key)
        if not (isinstance(value, list) and value and all(isinstance(c, str) for c in value)):
            raise MinirmError(f"{where}: {key!r} must be a non-empty list of strings (RewardBench 2 layout)")
    chosen, rejected = row["chosen"], row["rejected"]
    for key, want in (("num_correct", len(chosen)), ("total_completions", len(chosen) + len(rejected))):
        if key in row and row[key] != want:
            raise MinirmError(f"{where}: {key} is {row[key]!r} but the row has {want} such completions; "
                              "fix the row so they agree")
    if "num_incorrect" in row and row["num_incorrect"] != len(rejected):
        raise MinirmError(f"{where}: num_incorrect is {row['num_incorrect']!r} but 'rejected' has {len(rejected)} "
                          "completions; fix the row so they agree")
    if isinstance(row.get("subset"), str) and row["subset"].lower() == "ties":
        _ties_id(row, where)
    samples = [Sample.pair(prompt, c) for c in chosen + rejected]
    fields = [f"chosen[{i}]" for i in range(len(chosen))] + [f"rejected[{i}]" for i in range(len(rejected))]
    return samples, fields


def _ties_id(row: dict, where: str) -> tuple[str, int]:
    """A Ties row's id, "ref:N" or "tied:N" (process_single_model splits it at the colon)."""
    m = re.fullmatch(r"(ref|tied):(\d+)", str(row.get("id")))
    if m is None:
        raise MinirmError(f"{where}: a Ties row's id must be 'ref:N' or 'tied:N' (a prompt's reference and tied "
                          f"rows share N), got {row.get('id')!r}")
    return m[1], int(m[2])


# ---------------------------------------------------------------------------- scoring

def evaluate(scorer, prepared: Prepared, progress: bool = False) -> tuple[list[dict], dict | None]:
    """Score every sample in one call, put the scores back on their rows, and summarize: the
    scored rows in input order, and the summary (None when no row has a right answer)."""
    if "chai" in prepared.layouts and scorer.cfg.num_labels != 2:
        raise MinirmError(f"{prepared.label}: CHAI rows (input_text + labels) are labels of a 2-label classifier; "
                          f"this model has {scorer.cfg.num_labels} label, so it has no class to compare them with")
    start = time.perf_counter()
    scores = scorer.score_samples(prepared.samples, progress=progress, labels=prepared.labels)
    seconds = time.perf_counter() - start
    scored = []
    for row, layout, (a, b), target in zip(prepared.rows, prepared.layouts, prepared.spans, prepared.targets):
        mine = scores[a:b]
        if layout == "best-of-n":
            ties = isinstance(row.get("subset"), str) and row["subset"].lower() == "ties"
            scored.append({**row, "scores": mine, "results": None if ties else best_of_n_result(mine)})
        elif layout == "chai":
            scored.append({**row, "score": mine[0], "correct": predicted_label(mine[0]) == target})
        else:
            scored.append(records.scored_row(row, mine))
    summary = summarize_scores(scorer, prepared, scored)
    if summary is not None:
        summary["pairs_per_second"] = round(len(prepared.samples) / seconds, 2) if seconds > 0 else None
    return scored, summary


def predicted_label(score: float) -> int:
    """A 2-label model's class from its score P(label 1): argmax of the logits picks label 0 on a tie,
    as the Trainer's accuracy (np.argmax) does, so label 1 only above 0.5."""
    return 1 if score > 0.5 else 0


def best_of_n_result(scores: list[float]) -> float:
    """scripts/run_v2.py's per-prompt result (rewardbench/utils.py, reroll_and_score_dataset): the
    first completion (chosen[0]) must score highest; a tie at the top with k - 1 others earns 1/k."""
    top = max(scores)
    return 1 / sum(s == top for s in scores) if scores[0] == top else 0


def summarize_scores(scorer, prepared: Prepared, scored: list[dict]) -> dict | None:
    pairs = [r for r, lay in zip(scored, prepared.layouts) if lay in PAIRWISE]
    bon = [r for r, lay in zip(scored, prepared.layouts) if lay == "best-of-n"]
    labelled = [r for r, lay in zip(scored, prepared.layouts) if lay == "chai"]
    if not (pairs or bon or labelled):
        return None
    summary = {
        # the model as the user named it, and where that resolved: config.json's _name_or_path names
        # the base model of a fine-tune, the same for every fine-tune of it
        "model": scorer.name or scorer.cfg.family,
        "model_path": str(scorer.path.resolve()) if scorer.path else None,
        "model_type": MODEL_TYPE, "chat_template": chat_template(scorer),
        "dtype": str(scorer.dtype).removeprefix("torch."),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": prepared.label,
    }
    if prepared.dropped:
        summary["dropped"] = dict(prepared.dropped)
    if pairs:
        summary["num_pairs"] = len(pairs)
        summary["accuracy"] = sum(r["correct"] for r in pairs) / len(pairs)
        with_subset = [r for r in pairs if "subset" in r]
        if with_subset:
            per_subset = _per_subset(with_subset, lambda rows: sum(r["correct"] for r in rows) / len(rows))
            _put_subsets(summary, per_subset, with_subset, OWN_KEYS | set(SUBSET_MAPPING))
            summary.update(rewardbench_v1(per_subset))
    if bon:
        summary["num_prompts"] = len(bon)
        per_subset = _per_subset(bon, _v2_subset_score(summary))
        _put_subsets(summary, per_subset, bon, OWN_KEYS)
        summary["average"] = rewardbench_v2_average(per_subset)
    if labelled:
        summary["num_labelled"] = len(labelled)
        summary["label_accuracy"] = sum(r["correct"] for r in labelled) / len(labelled)
    return summary


def chat_template(scorer) -> str | None:
    """reward-bench's chat_template field: how the conversation became the model's input. Pair
    models read (prompt, response) with no template (None); GPT-2 models the Pygmalion format; a
    tokenizer that carries its own template: "tokenizer", as reward-bench writes it."""
    spec = scorer.cfg.spec
    if spec.chat_template or getattr(scorer.tokenizer, "chat_template", None):
        return "tokenizer"
    return None if spec.pair_input else "pygmalion"  # the one text format today is CHAI's


def _per_subset(rows: list[dict], score) -> dict[str, float | None]:
    """Each subset's score, in sorted order (reward-bench iterates np.unique(subsets))."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "subset" in r:
            groups.setdefault(r["subset"], []).append(r)
    return {s: score(groups[s]) for s in sorted(groups)}


OWN_KEYS = {"model", "model_path", "model_type", "chat_template", "dtype", "date", "input", "dropped", "num_pairs",
            "accuracy", "num_prompts", "num_labelled", "label_accuracy", "num_per_subset", "average",
            "average_with_prior_sets", PRIOR_SETS_KEY, "ties", "pairs_per_second"}


def _put_subsets(summary: dict, per_subset: dict, rows: list[dict], reserved: set[str]) -> None:
    """Per-subset results at the top level, as run_rm.py and run_v2.py save them (results_grouped)."""
    clash = [s for s in per_subset if s in reserved]
    if clash:
        raise MinirmError(f"subset {clash[0]!r} has the name of a summary field; rename the subset")
    summary.update(per_subset)
    summary["num_per_subset"] = {s: sum(r.get("subset") == s for r in rows) for s in per_subset}


def rewardbench_v1(per_subset: dict[str, float]) -> dict:
    """The section scores, their mean, and the legacy Prior Sets, from per-subset accuracies.

    - Each section: rewardbench/utils.py, calculate_scores_per_section(EXAMPLE_COUNTS, SUBSET_MAPPING,
      metrics): sum(accuracy x EXAMPLE_COUNTS) / sum(EXAMPLE_COUNTS) over the section's subsets present.
      A section with none present is None here (calculate_scores_per_section writes 0, which reads as a
      model that got everything wrong).
    - "average": the mean of the four sections (get_average_over_rewardbench's "average" when there are
      no prior sets), None unless all four are present.
    - PRIOR_SETS_KEY: analysis/get_benchmark_results.py, get_average_over_rewardbench: np.nanmean of the
      anthropic_helpful, anthropic_hhh, shp and summarize accuracies present; "average_with_prior_sets" its
      np.ma.average of [Chat, Chat Hard, Safety, Reasoning, Prior Sets] with weights [2, 2, 2, 2, 1],
      what is missing masked out.
    """
    out: dict = {}
    if any(s in EXAMPLE_COUNTS for s in per_subset):
        sections = {}
        for section, tests in SUBSET_MAPPING.items():
            total_weighted, total_examples = 0, 0
            for test in tests:
                if test in per_subset:
                    total_weighted += per_subset[test] * EXAMPLE_COUNTS[test]
                    total_examples += EXAMPLE_COUNTS[test]
            sections[section] = total_weighted / total_examples if total_examples > 0 else None
        out.update(sections)
        present = [v for v in sections.values() if v is not None]
        out["average"] = sum(present) / len(present) if len(present) == len(sections) else None
    prior = [per_subset[s] for s in PRIOR_SETS if s in per_subset]
    if prior:
        out[PRIOR_SETS_KEY] = sum(prior) / len(prior)
        values = [out.get(s) for s in SUBSET_MAPPING] + [out[PRIOR_SETS_KEY]]
        kept = [(v, w) for v, w in zip(values, LEGACY_WEIGHTS) if v is not None]
        out["average_with_prior_sets"] = sum(v * w for v, w in kept) / sum(w for _, w in kept)
    return out


def _v2_subset_score(summary: dict):
    def score(rows: list[dict]) -> float | None:
        if rows[0]["subset"].lower() == "ties":  # run_v2.py: subset.lower() == "ties"
            value, parts = ties_score(rows)
            summary["ties"] = parts
            return value
        return sum(r["results"] for r in rows) / len(rows)
    return score


def rewardbench_v2_average(per_subset: dict[str, float | None]) -> float | None:
    """RewardBench 2's overall score: the mean of its six subsets (the dataset card: "The RewardBench 2
    leaderboard averages over these six subsets"); None unless all six have a score."""
    values = [per_subset.get(s) for s in V2_SUBSETS]
    return sum(values) / len(values) if all(v is not None for v in values) else None


def _prompt_stats(samples: list[tuple[bool, float]], where: str) -> tuple[bool, float | None, float]:
    """rewardbench/utils.py, _compute_prompt_stats: (every correct answer above the best incorrect one,
    best - worst correct score (None with one correct answer), worst correct - best incorrect)."""
    correct = [s for ok, s in samples if ok]
    incorrect = [s for ok, s in samples if not ok]
    if not correct or not incorrect:
        raise MinirmError(f"{where}: a Ties prompt needs correct and incorrect completions")
    spread = max(correct) - min(correct) if len(correct) > 1 else None
    margin = min(correct) - max(incorrect)
    return margin > 0, spread, margin


def ties_score(rows: list[dict]) -> tuple[float | None, dict]:
    """The Ties subset's score: rewardbench/utils.py, process_single_model, which run_v2.py calls.

    Rows are grouped by id "ref:N" / "tied:N"; in each, completion i is correct when i < num_correct.
      ref_accuracy, tied_accuracy  mean over the ref (resp. tied) prompts of "worst correct > best incorrect"
                                   (0 when there are none)
    Over the prompts N with both a ref and a tied row, with d = the tied row's best - worst correct score,
    m_t = its worst correct - best incorrect and m_r the same for the ref row:
      correctness_preferred        mean of m_t > d
      correctness_preferred_hard   mean of min(m_r, m_t) > d
      correctness_margin_score     mean of tanh(min(m_r, m_t) / d - 1), 0 where that is NaN (0 / 0)
    score = 0.30 tied_accuracy + 0.30 ref_accuracy + 0.20 correctness_preferred
            + 0.20 correctness_preferred_hard + 0.01 correctness_margin_score
    With no prompt that has both rows the means are NaN in reward-bench; here the score is None.
    """
    grouped: dict[tuple[str, int], list[tuple[bool, float]]] = {}
    where: dict[tuple[str, int], str] = {}
    for r in rows:
        key = _ties_id(r, f"row id {r.get('id')!r}")
        n = len(r["chosen"])  # num_correct, checked equal to len(chosen)
        grouped.setdefault(key, []).extend((i < n, s) for i, s in enumerate(r["scores"]))
        where.setdefault(key, f"Ties prompt {key[0]}:{key[1]}")
    ref, tied = {}, {}
    for (kind, pid), samples in grouped.items():
        stats = _prompt_stats(samples, where[(kind, pid)])
        (ref if kind == "ref" else tied)[pid] = stats
    ref_accuracy = _mean([s[0] for s in ref.values()]) if ref else 0.0
    tied_accuracy = _mean([s[0] for s in tied.values()]) if tied else 0.0
    both = sorted(set(ref) & set(tied))
    for pid in both:
        if tied[pid][1] is None:
            raise MinirmError(f"Ties prompt tied:{pid}: has one correct completion; a tied prompt needs at least "
                              "two (its best - worst correct spread is what the score compares)")
    parts = {"ref_accuracy": ref_accuracy, "tied_accuracy": tied_accuracy, "num_ref": len(ref),
             "num_tied": len(tied), "num_both": len(both)}
    if not both:
        parts.update(correctness_preferred=None, correctness_preferred_hard=None, correctness_margin_score=None)
        return None, parts
    spread = [tied[p][1] for p in both]
    margin_tied = [tied[p][2] for p in both]
    margin_hard = [min(ref[p][2], tied[p][2]) for p in both]
    preferred = _mean([m > d for m, d in zip(margin_tied, spread)])
    preferred_hard = _mean([m > d for m, d in zip(margin_hard, spread)])
    margin_score = _mean([_tanh_ratio_minus_one(m, d) for m, d in zip(margin_hard, spread)])
    score = (0.30 * tied_accuracy + 0.30 * ref_accuracy + 0.20 * preferred + 0.20 * preferred_hard
             + 0.01 * margin_score)
    parts.update(correctness_preferred=preferred, correctness_preferred_hard=preferred_hard,
                 correctness_margin_score=margin_score)
    return score, parts


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _tanh_ratio_minus_one(numerator: float, denominator: float) -> float:
    """np.nan_to_num(np.tanh(numerator / denominator - 1), nan=0.0) for float64 numbers: x / 0 is
    +-inf (tanh +-1), 0 / 0 is NaN (0)."""
    if denominator == 0:
        if numerator == 0 or math.isnan(numerator):
            return 0.0
        return math.copysign(1.0, numerator) * math.copysign(1.0, denominator)
    value = math.tanh(numerator / denominator - 1)
    return 0.0 if math.isnan(value) else value


# ---------------------------------------------------------------------------- output

def jsonable(value):
    """A Parquet row's value as strict JSON holds it: a non-finite float (pandas' NaN for a missing
    number) becomes null, bytes a latin-1 string, a date or time its ISO form, anything else its str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def plot_summary(summary: dict, path: str | Path) -> Path:
    """A PNG of each subset's score, grouped by RewardBench section, each section's score marked as a
    line across its bars (RewardBench 2: the average across all); written atomically."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(summary.get("num_per_subset", {}))
    v2 = "num_prompts" in summary
    groups: list[tuple[str | None, list[str]]] = []
    if not v2 and any(s in EXAMPLE_COUNTS for s in subsets):
        placed = set()
        for section, tests in SUBSET_MAPPING.items():
            mine = [t for t in tests if t in subsets]
            if mine:
                groups.append((section, mine))
                placed.update(mine)
        prior = [s for s in PRIOR_SETS if s in subsets]
        if prior:
            groups.append((PRIOR_SETS_KEY, prior))
            placed.update(prior)
        rest = [s for s in subsets if s not in placed]
        if rest:
            groups.append((None, rest))
    else:
        ordered = [s for s in V2_SUBSETS if s in subsets] if v2 else []
        groups.append(("average" if v2 else None, ordered + [s for s in subsets if s not in ordered]))
    names = [s for _, members in groups for s in members]
    values = [summary[s] if summary[s] is not None else 0.0 for s in names]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.6))
    y = list(range(len(names)))[::-1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    at = 0
    for k, (section, members) in enumerate(groups):
        ys = y[at:at + len(members)]
        color = colors[k % len(colors)]
        ax.barh(ys, values[at:at + len(members)], color=color, alpha=0.75)
        mark = summary.get(section) if section else None
        if isinstance(mark, (int, float)):
            label = f"{section} {mark:.1%}"
            ax.vlines(mark, min(ys) - 0.45, max(ys) + 0.45, colors=color, linestyles="--", linewidth=2, label=label)
        at += len(members)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy" if not v2 else "score")
    overall = summary.get("average")
    title = f"{summary.get('model')} on {summary.get('input')}"
    if isinstance(overall, (int, float)):
        title += f": average {overall:.1%}"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    target = records.write_target(path, "--plot")
    tmp = target.with_name(f".{target.name}.tmp.png")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MinirmError(f"--plot {path}: cannot be written ({e.strerror or e}); nothing was written") from None
    finally:
        plt.close(fig)
    return target


def check_plot(path: str) -> None:
    """--plot, before anything is scored: matplotlib is there and the path can be written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MinirmError("--plot needs matplotlib: pip install matplotlib (or -e '.[plot]')") from None
    records.check_output_path(path, "--plot")


# ---------------------------------------------------------------------------- the model cards' tables

PARQUET = "refs/convert/parquet"  # the Hub's Parquet conversion of a script-only dataset


@dataclass(frozen=True)
class CardFigure:
    """One figure of a model card: the dataset it was measured on and the card's value."""
    dataset: DatasetSpec
    adapter: str  # the layout its rows have: a name in minirm.text.datasets.ADAPTERS
    metric: str  # "accuracy" (pairwise: chosen above rejected) or "label_accuracy" (a classifier's)
    figure: float
    note: str = ""


@dataclass(frozen=True)
class Card:
    title: str
    repo: str
    figures: tuple[CardFigure, ...]


# The datasets and adapters are the training recipes' (minirm/training/recipes.py); a test checks
# that they agree. The figures are the cards' own.
HH_TEST = CardFigure(DatasetSpec("Anthropic/hh-rlhf", None, "test"), "preference", "accuracy", 0.6156)
WEBGPT_NOTE = "comparisons with a preferred answer only: ties dropped"
CARDS = {
    "aux-roberta": Card("Aux-RewardModel", "nicholasKluge/Aux-RewardModel", (HH_TEST,)),
    "aira-bert": Card("RewardModel (Aira)", "nicholasKluge/RewardModel", (
        CardFigure(DatasetSpec("openai/webgpt_comparisons", PARQUET, "train"), "webgpt", "accuracy", 0.5502,
                   WEBGPT_NOTE),)),
    "aira-regression": Card("RewardModel (Aira), the older regression model", "nicholasKluge/RewardModel", (
        CardFigure(DatasetSpec("openai/webgpt_comparisons", PARQUET, "train"), "webgpt", "accuracy", 0.5354,
                   WEBGPT_NOTE),
        CardFigure(DatasetSpec("openai/summarize_from_feedback", PARQUET, "comparisons/validation"), "summarize",
                   "accuracy", 0.9980, "the card does not name the split; the comparisons' validation split"))),
    "chai-gpt2": Card("CHAI_alignment_reward_model", "Jellywibble/CHAI_alignment_reward_model", (
        CardFigure(DatasetSpec("ChaiML/20231206_chai_prize_reward_model_data", None, "train"), "chai",
                   "label_accuracy", 0.7005,
                   "the card's evaluation set was held out of this data and is not published: this is all of it, "
                   "training rows included, so expect a higher figure"),)),
}


def find_card(name: str | None, model: str, revision: str | None) -> str:
    """The card --card-eval reproduces: `name` when given; else the one of --model's alias or repo,
    where a checkpoint of the older Aira regression model (model_type bert-reward) is that card's."""
    if name:
        if name not in CARDS:
            raise MinirmError(f"--card-eval {name}: no such card; choose one of {', '.join(CARDS)}")
        return name
    model_dir = resolve_model(model, revision)
    try:
        model_type = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None  # the scorer's own checks name what is wrong with config.json
    family = by_model_type(model_type)
    if family is not None and family.regression is not None:  # the older Aira regression model's layout
        return "aira-regression"
    repo = ALIASES.get(model, model)
    for key, card in CARDS.items():
        if model == key or repo == card.repo:
            return key
    raise MinirmError(f"--card-eval: no card figures for --model {model}; name the card whose table to reproduce, "
                      f"--card-eval NAME ({', '.join(CARDS)})")


def read_card_data(card: Card) -> list[Prepared]:
    """Every dataset of the card, read and checked before the model loads."""
    prepared = []
    for fig in card.figures:
        spec = fig.dataset
        p = prepare(str(spec), read_rows(spec.repo, spec.split, spec.revision))
        if p.adapters != {fig.adapter}:
            raise MinirmError(f"{spec}: its rows are not in the {fig.adapter} layout the card was measured on "
                              f"(found: {', '.join(sorted(p.adapters))})")
        prepared.append(p)
    return prepared


def card_eval(scorer, card_name: str, prepared: list[Prepared], progress: bool = False) -> dict:
    card = CARDS[card_name]
    results = []
    info = None
    for fig, p in zip(card.figures, prepared):
        _, summary = evaluate(scorer, p, progress)
        info = info or summary
        results.append({"dataset": str(fig.dataset), "metric": fig.metric, "card": fig.figure,
                        "minirm": summary[fig.metric], "rows": summary.get("num_pairs", summary.get("num_labelled")),
                        "dropped": dict(p.dropped), "note": fig.note,
                        "pairs_per_second": summary["pairs_per_second"]})
    keys = ("model", "model_path", "model_type", "chat_template", "dtype", "date")
    return {"card": card_name, "card_title": card.title, "card_repo": card.repo,
            **{k: info[k] for k in keys}, "results": results}


def card_table(result: dict) -> str:
    """The card's figures beside minirm's, one block per dataset, with what was dropped and why, and
    the command that writes the per-row scores."""
    lines = [f"{result['card_title']} ({result['card_repo']}): the card's figures, and minirm's "
             f"({result['model']}, {result['dtype']})"]
    for r in result["results"]:
        unit = "pairs" if r["metric"] == "accuracy" else "rows"
        lines += ["", r["dataset"],
                  f"  {r['metric'].replace('_', ' ')}: card {r['card']:.2%}, minirm {r['minirm']:.2%} "
                  f"({r['rows']} {unit})"]
        if r["dropped"]:
            lines.append("  dropped: " + ", ".join(f"{n} {reason}" for reason, n in r["dropped"].items()))
        if r["note"]:
            lines.append(f"  note: {r['note']}")
    lines += ["", f"per-row scores: score.py --model {result['model']} --input DATASET --output scored.jsonl"]
    return "\n".join(lines)


def warn(note: str | None) -> None:
    if note:
        print(f"note: {note}", file=sys.stderr)
