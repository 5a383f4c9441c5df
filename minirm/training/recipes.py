"""The training recipes of the seed reward models, named after score.py's aliases.

A recipe is a named set of overrides on TrainConfig: `settings` maps a TrainConfig field to
the value the model card (or the training code it points to) used, and every other field
keeps TrainConfig's default, the one default each setting has. `train.py --recipe NAME`
starts from `recipe.config(...)`, and every command-line option overrides the field of the
same name. The recipe's DataSources pass through as they are (a source is more than its
name and split: the script-only repos are read at revision refs/convert/parquet).

Each recipe formats its data exactly as score.py scores that model (pairs for BERT,
RoBERTa and DeBERTa; Pygmalion text, truncated from the left, for CHAI's GPT-2), because
both go through RewardTokenizer.encode_samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from ..console import fit_table
from ..errors import MinirmError
from .config import TrainConfig, field_defaults
from .data import DataSource


@dataclass(frozen=True)
class Recipe:
    name: str
    settings: Mapping[str, Any]  # TrainConfig field -> value; data is a tuple of DataSources (() for none)
    adapter: str  # how a user's own --data rows are read
    description: str = ""
    optimizer: str = "AdamW"  # the card's name for it, for the table; Adam is AdamW with weight decay 0

    def __post_init__(self):
        unknown = set(self.settings) - {f.name for f in fields(TrainConfig)}
        if unknown:
            raise ValueError(f"recipe {self.name}: {', '.join(sorted(unknown))} is not a TrainConfig field")
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))  # shared: read-only

    def get(self, name: str) -> Any:
        """The value this recipe trains with: its override of the field, or TrainConfig's default."""
        return self.settings[name] if name in self.settings else field_defaults()[name]

    @property
    def data(self) -> tuple[DataSource, ...]:
        return self.settings.get("data", ())

    def config(self, **overrides) -> TrainConfig:
        """A TrainConfig of this recipe's settings, `overrides` (field -> value) applied over them."""
        return TrainConfig(**{**self.settings, "data": list(self.data), **overrides})


PARQUET = "refs/convert/parquet"
HH_RLHF = DataSource("Anthropic/hh-rlhf", "preference", "train")
HELD_OUT = 0.05  # of --data, evaluated on when there is no --eval-data (train.py --help says so)

RECIPES = {r.name: r for r in [
    Recipe(
        "aux-roberta", adapter="preference",
        description="instruction + chosen/rejected_response; hh-rlhf split at the last assistant turn",
        settings=dict(
            model="FacebookAI/roberta-base", loss="pairwise",
            data=(DataSource("nicholasKluge/toxic-aira-dataset", "preference", "english"), HH_RLHF),
            lr=5e-5, schedule="linear", batch_size=32, max_steps=10_000, max_length=512, eval_fraction=HELD_OUT),
    ),
    Recipe(
        "aira-bert", adapter="preference",
        settings=dict(
            model="google-bert/bert-base-cased", loss="pairwise",
            data=(DataSource("nicholasKluge/reward-aira-dataset", "preference", "english"),),
            lr=5e-5, schedule="linear", batch_size=42, max_steps=1_200, max_length=400, eval_fraction=HELD_OUT),
    ),
    Recipe(
        "aira-regression", adapter="regression", optimizer="Adam",
        description="BERT [CLS] -> 128 -> 128 -> 1 head; rewards in [-1, 1]; bring --data",
        settings=dict(
            model="google-bert/bert-base-cased", loss="mse", data=(), regression_head=True,
            lr=1e-4, schedule="constant", batch_size=64, epochs=5, max_length=512, eval_fraction=HELD_OUT),
    ),
    Recipe(
        "chai", adapter="chai", optimizer="Adam",
        description="Pygmalion format, left truncation, last 10 messages; label 1 = appropriate",
        settings=dict(
            model="openai-community/gpt2", loss="cross_entropy", num_labels=2,
            data=(DataSource("ChaiML/20231206_chai_prize_reward_model_data", "chai", "train"),),
            lr=1e-5, schedule="linear", betas=(0.9, 0.999), eps=1e-8, batch_size=16, eval_batch_size=64,
            epochs=3, max_length=1024, precision="fp16", seed=42, eval_fraction=HELD_OUT),
    ),
    Recipe(
        "oa-deberta", adapter="preference",
        description="webgpt ties kept with answer_0 first, as OpenAssistant did; summaries prompt = post + ' TLDR;'; "
                    "K-wise rank loss",
        settings=dict(
            model="microsoft/deberta-v2-xxlarge", loss="ranking",
            # these two repos hold a loading script on main; their data is the Hub's parquet conversion
            data=(DataSource("openai/webgpt_comparisons", "webgpt", "train", PARQUET),
                  DataSource("openai/summarize_from_feedback", "summarize", "comparisons/train", PARQUET), HH_RLHF),
            lr=2e-6, schedule="cosine", warmup_steps=600, weight_decay=0.01, max_grad_norm=2.0,
            batch_size=1, grad_accum=12, epochs=2, max_length=512, precision="fp16", gradient_checkpointing=True,
            eval_fraction=HELD_OUT),
    ),
    Recipe(
        # Skywork-Reward-V2's technical report (arXiv 2507.01352), appendix E, final runs: Bradley-Terry,
        # lr 3e-6 constant, global batch 10,240 pairs, one epoch, 16,384 tokens. Its data (the 26M curated
        # pairs of SynPref-40M) is not published, so there is none to name. The report does not give the
        # precision; bf16 is the published weights' dtype. Checkpointing changes memory, not the result.
        "skywork-v2", adapter="preference",
        description="Skywork-Reward-V2's final settings (arXiv 2507.01352, app. E); its 26M pairs are not "
                    "published: bring --data; 10,240 pairs a step = batch x accum x processes (lower --grad-accum "
                    "by the process count)",
        settings=dict(
            model="Qwen/Qwen3-0.6B", loss="pairwise", data=(),
            lr=3e-6, schedule="constant", batch_size=8, grad_accum=1280, epochs=1, max_length=16_384,
            precision="bf16", gradient_checkpointing=True, eval_fraction=HELD_OUT),
    ),
]}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise MinirmError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} (see --list-recipes)") from None


def recipe_table(width: int | None = None) -> str:
    """The recipes for --list-recipes: a table, or one block per recipe where a table would not fit
    in `width` columns (default: the terminal's)."""
    rows = [("recipe", "base model", "loss", "data", "optimizer, schedule", "batch, length, precision")]
    for r in RECIPES.values():
        v = r.get
        data = " + ".join(f"{s.source}" + (f":{s.split}" if s.split else "") for s in r.data) or "your --data"
        opt = f"{r.optimizer} {v('lr'):g}, {v('schedule')}" + (
            f", warmup {v('warmup_steps')}" if v("warmup_steps") else "") + (
            f", wd {v('weight_decay'):g}" if v("weight_decay") else "") + (
            f", clip {v('max_grad_norm'):g}" if v("max_grad_norm") not in (None, 1.0) else "")
        steps = f"{v('max_steps')} steps" if v("max_steps") else f"{v('epochs'):g} epochs"
        batch = f"bs {v('batch_size')}" + (f" x accum {v('grad_accum')}" if v("grad_accum") > 1 else "") + (
            f", {steps}, max {v('max_length')}, {v('precision')}")
        rows.append((r.name, v("model"), v("loss"), data, opt, batch))
    return fit_table(rows, width)
