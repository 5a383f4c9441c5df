"""The train.py command line: a recipe, overridden by options; nothing the library should own."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import CliParser, MinirmError, cli_main

EPILOG = """examples:
  python train.py --list-recipes
  python train.py --recipe chai --output runs/chai                     # the model card's recipe, its dataset
  python train.py --recipe aira-bert --data pairs.jsonl --model ./bert --max-steps 200 --output runs/aira
  torchrun --nproc_per_node 4 train.py --recipe oa-deberta --output runs/oa   # DDP: NCCL on GPUs, gloo on CPU

--data takes local .jsonl, .jsonl.gz, .json or .parquet files (or a directory of them), or a
Hub dataset id (org/name, optionally org/name:split). Rows are read by the recipe's adapter
(--adapter to change it): preference rows carry prompt + chosen + rejected, instruction +
chosen_response + rejected_response, or hh-rlhf chosen/rejected transcripts; regression rows
prompt + response + reward; chai rows input_text + labels, or messages + label.

OUTPUT gets the trained model in Hugging Face layout (config.json, model.safetensors,
tokenizer.json; score.py and transformers load it), metrics.jsonl, curves.png (with
matplotlib), summary.json and checkpoints/step-N/ for --resume.
"""


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="train.py", description="Train a reward model with a model card's recipe, on minirm's own models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", "-r", help="aux-roberta, aira-bert, aira-regression, chai or oa-deberta")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    g = p.add_argument_group("what to train on")
    g.add_argument("--model", "-m", help="base model or reward checkpoint: directory, Hub repo id or alias "
                                         "(default: the recipe's base model)")
    g.add_argument("--revision", help="Hub revision of --model")
    g.add_argument("--tokenizer", help="tokenizer directory or repo id, when the model ships none")
    g.add_argument("--data", "-d", nargs="+", metavar="FILE_OR_HUB_ID", help="training data (default: the recipe's)")
    g.add_argument("--adapter", help="how --data rows are read: preference, webgpt, summarize, ranking, "
                                     "regression or chai (default: the recipe's)")
    g.add_argument("--eval-data", nargs="+", metavar="FILE_OR_HUB_ID", help="held-out data for evaluation")
    g.add_argument("--eval-fraction", type=float, help="hold out this fraction of --data when there is no "
                                                       "--eval-data (default 0.05)")
    g.add_argument("--output", "-o", help="output directory (default: runs/RECIPE)")
    g = p.add_argument_group("optimisation (defaults: the recipe's)")
    g.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    g.add_argument("--epochs", type=float)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--batch-size", type=int, help="examples per micro-batch per process")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--max-length", type=int, help="truncate each sequence to this many tokens")
    g.add_argument("--schedule", choices=["linear", "cosine", "constant"])
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--max-grad-norm", type=float, help="clip the gradient norm (0: no clipping)")
    g.add_argument("--center-rewards-coefficient", type=float, help="TRL's reward-centering term (pairwise loss)")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="autocast precision (fp16 uses a GradScaler)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction)
    g.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="batch examples of similar length together (default: on)")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("running")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; torchrun sets it per rank)")
    g.add_argument("--attention", choices=["sdpa", "eager", "triton"], help="attention backend (default: sdpa)")
    g.add_argument("--log-every", type=int, default=10, help="write train metrics every N steps (default 10; 0: never)")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: at the end only)")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: at the end only)")
    g.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (default 2; 0: all)")
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    g.add_argument("--overwrite", action="store_true", help="replace the run (trained model, metrics, "
                                                            "checkpoints) already in --output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("CHAI's Pygmalion chat format")
    g.add_argument("--bot-name", help="bot name in the Pygmalion chat format of GPT-2 chat models (default Bot)")
    g.add_argument("--user-name", help="user name in the Pygmalion chat format (default User)")
    g.add_argument("--memory", help="the bot's persona in the Pygmalion chat format (default: empty)")
    return p


def parse_source(text: str, adapter: str):
    """FILE, DIRECTORY, org/name or org/name:split -> DataSource."""
    from pathlib import Path

    from .train import DataSource

    if Path(text).exists() or ":" not in text:
        return DataSource(text, adapter)
    source, split = text.rsplit(":", 1)
    return DataSource(source, adapter, split or None)


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    from .recipes import get_recipe
    from .train import TrainConfig

    if not args.recipe:
        raise MinirmError("--recipe is required; see --list-recipes")
    r = get_recipe(args.recipe)
    adapter = args.adapter or r.adapter
    if args.data:
        data = [parse_source(s, adapter) for s in args.data]
    elif r.data:
        # the recipe's sources exactly as declared: a source is more than its name and split (the
        # script-only repos are read at revision refs/convert/parquet), and a copy made field by
        # field once dropped the revision and read a branch that holds no data
        data = list(r.data)
    else:
        raise MinirmError(f"the {r.name} recipe names no public dataset ({r.notes}); pass --data FILE.jsonl")
    eval_data = [parse_source(s, adapter) for s in args.eval_data or []]

    def pick(name, default):
        value = getattr(args, name)
        return default if value is None else value

    max_steps = args.max_steps if args.max_steps is not None else (None if args.epochs is not None else r.max_steps)
    return TrainConfig(
        model=args.model or r.model, revision=args.revision, tokenizer=args.tokenizer,
        data=data, eval_data=eval_data, eval_fraction=pick("eval_fraction", 0.0 if eval_data else 0.05),
        output=args.output or f"runs/{r.name}", loss=r.loss, num_labels=r.num_labels,
        regression_head=r.regression_head, lr=pick("lr", r.lr), weight_decay=pick("weight_decay", r.weight_decay),
        betas=r.betas, eps=r.eps, schedule=pick("schedule", r.schedule),
        warmup_steps=pick("warmup_steps", r.warmup_steps),
        max_grad_norm=pick("max_grad_norm", r.max_grad_norm) or None,
        center_rewards_coefficient=args.center_rewards_coefficient,
        batch_size=pick("batch_size", r.batch_size), grad_accum=pick("grad_accum", r.grad_accum),
        eval_batch_size=pick("eval_batch_size", r.eval_batch_size), epochs=pick("epochs", r.epochs),
        max_steps=max_steps, max_length=pick("max_length", r.max_length), precision=pick("precision", r.precision),
        gradient_checkpointing=pick("gradient_checkpointing", r.gradient_checkpointing),
        group_by_length=args.group_by_length, device=args.device, attention=args.attention,
        seed=pick("seed", r.seed), log_every=args.log_every, eval_every=args.eval_every,
        save_every=args.save_every, save_total_limit=args.save_total_limit, resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
        chat_names={"bot_name": args.bot_name, "user_name": args.user_name, "memory": args.memory},
    )


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_recipes:
        from .recipes import recipe_table

        print(recipe_table())
        return 0
    from .train import train

    summary = train(config_from_args(args))
    if summary.get("eval") is not None:
        print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main("train.py", run, argv, "resume from the last checkpoint with --resume")
