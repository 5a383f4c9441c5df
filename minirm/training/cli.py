"""The train.py command line: a recipe, overridden by options; nothing the library should own.

An option named like a TrainConfig field (--lr is `lr`, --batch-size `batch_size`) sets that
field over the recipe's settings; an option left out keeps the recipe's value, or else
TrainConfig's default. Only a few options are more than a field: --data and --eval-data
(read with --adapter), --output (default runs/RECIPE), --no-progress, the chat names,
--max-grad-norm 0 (no clipping) and --epochs (which drops the recipe's step count).

Run as `python train.py`, as the `minirm-train` console script, or as `python -m minirm.training.cli`.
Everything that imports torch is imported inside `cli_main`, so that a Ctrl-C during start-up
is one line (minirm/errors.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import CliParser, MinirmError, cli_main

EPILOG = """examples:
  {cmd} --list-recipes
  {cmd} --recipe chai --output runs/chai                     # the model card's recipe, its dataset
  {cmd} --recipe aira-bert --data pairs.jsonl --model ./bert --max-steps 200 --output runs/aira
  torchrun --nproc_per_node 4 train.py --recipe oa-deberta --output runs/oa   # DDP: NCCL on GPUs, gloo on CPU

--data takes local .jsonl, .jsonl.gz, .json or .parquet files (or a directory of them), or a
Hub dataset id (org/name, optionally org/name:split). Rows are read by the recipe's adapter
(--adapter to change it): preference rows carry prompt + chosen + rejected, instruction +
chosen_response + rejected_response, or hh-rlhf chosen/rejected transcripts; regression rows
prompt + response + reward; chai rows input_text + labels, or messages + label.

OUTPUT gets the trained model in Hugging Face layout (config.json, model.safetensors,
tokenizer.json; score.py and transformers load it), metrics.jsonl, curves.png (with
matplotlib), summary.json and checkpoints/step-N/ for --resume, saved every 30 minutes by
default: a run stopped by Ctrl-C, a crash or a time limit continues with --resume.
"""


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    """Every option that sets a TrainConfig field has that field's name and no default of its own."""
    from .config import field_defaults

    default = field_defaults()
    p = CliParser(
        prog=prog, description="Train a reward model with a model card's recipe, on minirm's own models.",
        epilog=EPILOG.format(cmd="python " + prog if prog.endswith(".py") else prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    g.add_argument("--shard", choices=["ddp", "fsdp"],
                   help="under torchrun: ddp, each process holds the whole model (default), or fsdp, weights, "
                        "gradients and Adam's state sharded over the processes (for models larger than one GPU)")
    g.add_argument("--group-by-length", action=argparse.BooleanOptionalAction,
                   help="batch examples of similar length together "
                        f"(default: {'on' if default['group_by_length'] else 'off'})")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("running")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; torchrun sets it per rank)")
    g.add_argument("--attention", choices=["packed", "sdpa", "eager", "triton"],
                   help="attention backend (default: packed on CPU; on CUDA triton, or sdpa with attention dropout)")
    g.add_argument("--log-every", type=int,
                   help=f"write train metrics every N steps (default {default['log_every']}; 0: never)")
    g.add_argument("--eval-every", type=int, help="evaluate every N steps (default: at the end only)")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps (default 0: by time alone, "
                                                  "--save-every-minutes)")
    g.add_argument("--save-every-minutes", type=float,
                   help=f"checkpoint when this many minutes have passed since the last one (default "
                        f"{default['save_every_minutes']:g}; 0: never), so that a long run can always --resume")
    g.add_argument("--save-total-limit", type=int,
                   help=f"checkpoints kept (default {default['save_total_limit']}; 0: all)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue from the newest checkpoint in --output")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the run (trained model, metrics, checkpoints) already in --output")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (at a terminal), nor the line every 30 s that replaces it elsewhere")
    g = p.add_argument_group("CHAI's Pygmalion chat format")
    g.add_argument("--bot-name", help="bot name in the Pygmalion chat format of GPT-2 chat models (default Bot)")
    g.add_argument("--user-name", help="user name in the Pygmalion chat format (default User)")
    g.add_argument("--memory", help="the bot's persona in the Pygmalion chat format (default: empty)")
    return p


def parse_source(text: str, adapter: str):
    """FILE, DIRECTORY, org/name or org/name:split -> DataSource."""
    from .data import DataSource

    if Path(text).exists() or ":" not in text:
        return DataSource(text, adapter)
    source, split = text.rsplit(":", 1)
    return DataSource(source, adapter, split or None)


# options that are more than the field of their name (see the module's docstring)
CONVERTED = {"data", "eval_data", "output", "model", "progress", "chat_names"}


def config_from_args(args):
    """The recipe's settings, and over them every option given, field by field: a TrainConfig."""
    from dataclasses import fields

    from .config import TrainConfig
    from .recipes import get_recipe

    if not args.recipe:
        raise MinirmError("--recipe is required; see --list-recipes")
    recipe = get_recipe(args.recipe)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name not in CONVERTED and getattr(args, f.name, None) is not None}
    if args.epochs is not None and args.max_steps is None:
        given["max_steps"] = None  # --max-steps overrides --epochs, so a recipe's step count gives way to --epochs
    if args.max_grad_norm == 0:
        given["max_grad_norm"] = None  # no clipping
    adapter = args.adapter or recipe.adapter
    if args.data:
        given["data"] = [parse_source(s, adapter) for s in args.data]
    elif not recipe.data:
        raise MinirmError(f"the {recipe.name} recipe names no public dataset ({recipe.description}); "
                          "pass --data FILE.jsonl")
    # without --data, the recipe's sources pass through as declared (recipe.config): a copy made field by
    # field once dropped the parquet revision and read a branch that holds no data
    return recipe.config(
        **given, model=args.model or recipe.get("model"), output=args.output or f"runs/{recipe.name}",
        eval_data=[parse_source(s, adapter) for s in args.eval_data or []],
        progress=not args.no_progress,  # a bar at a terminal, else a line every 30 s (console.py)
        chat_names={"bot_name": args.bot_name, "user_name": args.user_name, "memory": args.memory},
    )


def run(argv: list[str] | None = None, prog: str = "train.py") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.list_recipes:
        from .recipes import recipe_table

        print(recipe_table())
        return 0
    from ..devices import closing_process_group
    from .loop import train

    with closing_process_group():  # under torchrun: closed before exit (devices.py)
        summary = train(config_from_args(args))
    if summary.get("eval") is not None:
        print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    # train() attaches what the run left (the last checkpoint, or none yet) to the interrupt it raises;
    # this line is for an interrupt before training started
    return cli_main(prog, lambda a: run(a, prog), argv, "training had not started; nothing was written")


def console_main() -> int:
    """The minirm-train console script."""
    return main(prog="minirm-train")


if __name__ == "__main__":
    sys.exit(main(prog="python -m minirm.training.cli"))
