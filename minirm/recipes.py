"""The training recipes of the seed reward models, one declarative entry each, named after
score.py's aliases. Every field is what the model card (or the training code it points to)
used; `train.py --recipe NAME` turns an entry into a TrainConfig, and every command-line
option overrides the field of the same name.

Each recipe formats its data exactly as score.py scores that model (pairs for BERT,
RoBERTa and DeBERTa; Pygmalion text, truncated from the left, for CHAI's GPT-2), because
both go through RewardTokenizer.encode_samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import MinirmError
from .train import DataSource


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str  # the base model the card starts from
    loss: str
    data: tuple[DataSource, ...]  # () when the card names no public dataset
    adapter: str  # how a user's own --data rows are read
    lr: float
    schedule: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    eval_batch_size: int | None = None
    max_steps: int | None = None
    epochs: float = 1.0
    max_length: int = 512
    precision: str = "fp32"
    seed: int = 42
    num_labels: int = 1
    regression_head: bool = False
    gradient_checkpointing: bool = False
    optimizer: str = "AdamW"  # for the table; Adam is AdamW with weight decay 0
    notes: str = ""
    extra: dict = field(default_factory=dict)


PARQUET = "refs/convert/parquet"
HH_RLHF = DataSource("Anthropic/hh-rlhf", "preference", "train")

RECIPES = {r.name: r for r in [
    Recipe(
        "aux-roberta", model="FacebookAI/roberta-base", loss="pairwise",
        data=(DataSource("nicholasKluge/toxic-aira-dataset", "preference", "english"), HH_RLHF),
        adapter="preference", lr=5e-5, schedule="linear", batch_size=32, max_steps=10_000, max_length=512,
        notes="instruction + chosen/rejected_response; hh-rlhf split at the last assistant turn",
    ),
    Recipe(
        "aira-bert", model="google-bert/bert-base-cased", loss="pairwise",
        data=(DataSource("nicholasKluge/reward-aira-dataset", "preference", "english"),),
        adapter="preference", lr=5e-5, schedule="linear", batch_size=42, max_steps=1_200, max_length=400,
    ),
    Recipe(
        "aira-regression", model="google-bert/bert-base-cased", loss="mse", data=(), adapter="regression",
        lr=1e-4, schedule="constant", optimizer="Adam", batch_size=64, epochs=5, max_length=512,
        regression_head=True, notes="BERT [CLS] -> 128 -> 128 -> 1 head; rewards in [-1, 1]; bring --data",
    ),
    Recipe(
        "chai", model="openai-community/gpt2", loss="cross_entropy",
        data=(DataSource("ChaiML/20231206_chai_prize_reward_model_data", "chai", "train"),),
        adapter="chai", lr=1e-5, schedule="linear", optimizer="Adam", betas=(0.9, 0.999), eps=1e-8,
        batch_size=16, eval_batch_size=64, epochs=3, max_length=1024, precision="fp16", seed=42, num_labels=2,
        notes="Pygmalion format, left truncation, last 10 messages; label 1 = appropriate",
    ),
    Recipe(
        "oa-deberta", model="microsoft/deberta-v2-xxlarge", loss="ranking",
        # these two repos hold a loading script on main; their data is the Hub's parquet conversion
        data=(DataSource("openai/webgpt_comparisons", "webgpt", "train", PARQUET),
              DataSource("openai/summarize_from_feedback", "summarize", "comparisons/train", PARQUET), HH_RLHF),
        adapter="preference", lr=2e-6, schedule="cosine", warmup_steps=600, weight_decay=0.01, max_grad_norm=2.0,
        batch_size=1, grad_accum=12, epochs=2, max_length=512, precision="fp16", gradient_checkpointing=True,
        notes="webgpt ties kept with answer_0 first, as OpenAssistant did; summaries prompt = post + ' TLDR;'; K-wise rank loss",
    ),
]}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise MinirmError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} (see --list-recipes)") from None


def recipe_table() -> str:
    """The recipes as a plain-text table, for --list-recipes."""
    rows = [("recipe", "base model", "loss", "data", "optimizer, schedule", "batch, length, precision")]
    for r in RECIPES.values():
        data = " + ".join(f"{s.source}" + (f":{s.split}" if s.split else "") for s in r.data) or "your --data"
        opt = f"{r.optimizer} {r.lr:g}, {r.schedule}" + (f", warmup {r.warmup_steps}" if r.warmup_steps else "") + (
            f", wd {r.weight_decay:g}" if r.weight_decay else "") + (
            f", clip {r.max_grad_norm:g}" if r.max_grad_norm not in (None, 1.0) else "")
        steps = f"{r.max_steps} steps" if r.max_steps else f"{r.epochs:g} epochs"
        batch = f"bs {r.batch_size}" + (f" x accum {r.grad_accum}" if r.grad_accum > 1 else "") + (
            f", {steps}, max {r.max_length}, {r.precision}")
        rows.append((r.name, r.model, r.loss, data, opt, batch))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
