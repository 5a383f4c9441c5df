"""The score.py command line: argument parsing and output, nothing the library should own.

Run as `python score.py`, as the `minirm-score` console script, or as `python -m minirm.scoring.cli`.
This module imports torch only once the command line has been read, inside `cli_main`, so that a
Ctrl-C during start-up is one line (minirm/errors.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import CliParser, MinirmError, cli_main

EPILOG = """examples:
  {cmd} --model aux-roberta "How do I bake bread?" "Mix flour, water, salt and yeast..."
  {cmd} --model chai-gpt2 --json "Hi!" "Hello there." "Go away."
  {cmd} --model ./my-checkpoint --input pairs.jsonl --output scored.jsonl
  {cmd} --model oa-deberta --input allenai/reward-bench:filtered --output scored.jsonl --plot rb.png
  {cmd} --model aux-roberta --card-eval

input JSONL rows carry "prompt" + "response", "text" (pre-formatted), or "chosen" + "rejected"
(with or without "prompt"; without it they are hh-rlhf transcripts). Output rows keep every
input field and add "score" (or "score_chosen", "score_rejected" and "correct").
--input also reads a Hub dataset ORG/NAME[@REVISION][:SPLIT] (the cache first): RewardBench v1
and 2, and the rows of Anthropic/hh-rlhf, openai/webgpt_comparisons (ties dropped),
openai/summarize_from_feedback, the Aira datasets and ChaiML's data (docs/scoring.md).
"""


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (argparse turns the ValueError into one usage line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _is_text(value: str) -> bool:
    """False for a str holding lone surrogates (how Python keeps undecodable argv bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def build_parser(prog: str = "score.py") -> argparse.ArgumentParser:
    p = CliParser(
        prog=prog, description="Score (prompt, response) pairs with a reward model, as transformers does.",
        epilog=EPILOG.format(cmd="python " + prog if prog.endswith(".py") else prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", nargs="?", help="the prompt (omit with --input)")
    p.add_argument("responses", nargs="*", metavar="response", help="one or more responses to score")
    p.add_argument("--model", "-m", help="alias, Hub repo id or local checkpoint directory")
    p.add_argument("--revision", help="Hub branch, tag, commit or refs/pr/N (default: main)")
    p.add_argument("--tokenizer", help="tokenizer directory or repo id, when the model ships none")
    p.add_argument("--input", "-i", help="JSONL file of records to score, or a Hub dataset ORG/NAME[@REVISION][:SPLIT]")
    p.add_argument("--output", "-o", help="JSONL file to write (default: stdout)")
    p.add_argument("--json", action="store_true", help="print JSON instead of plain numbers (or of --card-eval's table)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sequences per forward pass (default 32)")
    p.add_argument("--max-length", type=positive_int, help="truncate to this many tokens (default 512)")
    p.add_argument("--truncation-side", choices=["left", "right"],
                   help="default: left for GPT-2 models (keep the conversation's end), right otherwise")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: float32; bfloat16 for the LLM families (Llama, Qwen, Gemma 2) when the checkpoint is bf16")
    p.add_argument("--attention", choices=["packed", "sdpa", "eager", "triton"],
                   help="packed: no padding, attention per sequence (default on CPU); sdpa: padded batch with a mask; "
                        "eager: padded, written out; triton: the varlen kernel (default on CUDA)")
    p.add_argument("--alpha", type=float, help="output scale of the older Aira regression model (its forward argument; default 1)")
    p.add_argument("--bot-name", help="bot name in the Pygmalion chat format of GPT-2 chat models (default Bot)")
    p.add_argument("--user-name", help="user name in the Pygmalion chat format (default User)")
    p.add_argument("--memory", help="bot persona in the Pygmalion chat format (default: empty)")
    p.add_argument("--oa-rank", action="store_true",
                   help="OpenAssistant's rank_model_fn: 'text' rows are 'prompt[SEP]response', and a response "
                        "of fewer than 4 distinct characters scores -4")
    p.add_argument("--summary", metavar="JSON", help="with --input or --card-eval: write the summary to this "
                                                     "file, with the run's date and pairs/s")
    p.add_argument("--plot", metavar="PNG", help="with a RewardBench --input: draw each subset's accuracy, the "
                                                 "section scores marked (needs matplotlib)")
    p.add_argument("--card-eval", nargs="?", const="", metavar="CARD",
                   help="evaluate the model on its model card's datasets and print the card's figures beside "
                        "minirm's (CARD: aux-roberta, aira-bert, aira-regression, chai-gpt2; default: --model's)")
    p.add_argument("--list-models", action="store_true", help="list the model aliases and exit")
    g = p.add_argument_group("serving (pip install -e '.[serve]')")
    g.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve the model over HTTP: OpenRLHF's POST /get_reward, POST /score, GET /health, "
                        "GET /metrics (host default 127.0.0.1)")
    g.add_argument("--max-batch-tokens", type=positive_int,
                   help="padded tokens per forward across requests (default 16384 on a GPU, 1024 on CPU)")
    g.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a request waits for others to batch with (default 0: requests that "
                        "arrive during a forward are batched into the next one)")
    g.add_argument("--max-queue-tokens", type=positive_int, default=1 << 21,
                   help="tokens waiting before a request that would add more gets 503 and retries; an idle "
                        "server takes a request of any size (default 2097152)")
    g.add_argument("--max-body-mb", type=positive_int, default=256,
                   help="largest request body in MiB; a larger one gets 413 (default 256)")
    g.add_argument("--strip-template", choices=["chatml", "llama3", "llama2", "gemma"],
                   help="read the conversation in each prompt by this chat template's markers and give it to "
                        "the model as its card formats one (markers removed)")
    return p


def list_models(width: int | None = None) -> str:
    """The aliases as a table that fits the terminal (`width` columns; default: the terminal's)."""
    from ..console import fit_table
    from ..hub import ALIAS_NOTES, ALIASES

    return fit_table([("alias", "Hub repo", "how it scores")]
                     + [(alias, repo, ALIAS_NOTES[alias]) for alias, repo in ALIASES.items()], width)


def check_arguments(args) -> None:
    """What the command line alone can tell is wrong, before anything is read or loaded."""
    if not args.model:
        raise MinirmError("--model is required (an alias, a Hub repo id or a directory); see --list-models")
    for option, value in (("--input", args.input), ("--output", args.output), ("--model", args.model),
                          ("--plot", args.plot), ("--summary", args.summary)):
        if value is not None and not value.strip():
            what = "directory, repo id or alias" if option == "--model" else "file path"
            raise MinirmError(f"{option} is empty; give a {what}")
    texts = [("PROMPT", args.prompt)] + [(f"RESPONSE {i}", r) for i, r in enumerate(args.responses, 1)] + [
        ("--bot-name", args.bot_name), ("--user-name", args.user_name), ("--memory", args.memory)]
    for name, value in texts:
        if value is not None and not _is_text(value):
            raise MinirmError(f"{name} is not valid UTF-8 text (undecodable bytes in the argument); pass it as UTF-8")
    if args.serve is not None:
        offline = [o for o, v in (("--card-eval", args.card_eval), ("--plot", args.plot),
                                  ("--summary", args.summary)) if v is not None]
        if offline:
            raise MinirmError(f"{offline[0]} is for offline evaluation; drop it with --serve")
        if args.input or args.prompt or args.output:
            raise MinirmError("--serve answers requests; drop --input, --output and PROMPT RESPONSE")
        if args.json or args.oa_rank:
            raise MinirmError(f"{'--json' if args.json else '--oa-rank'} is for offline scoring; the server "
                              "always answers JSON and scores what it is sent, so drop it")
        return
    if args.card_eval is not None:
        if args.input or args.prompt or args.responses:
            raise MinirmError("--card-eval reads the card's own datasets; drop --input and PROMPT RESPONSE")
        if args.output or args.plot:
            raise MinirmError(f"--card-eval prints the card's table; for per-row scores run --input DATASET "
                              f"{'--output FILE' if args.output else '--plot PNG'} (the table names each DATASET)")
        return
    if args.input and (args.prompt or args.responses):
        raise MinirmError("give either --input FILE or PROMPT RESPONSE..., not both")
    if not args.input and not args.responses:
        raise MinirmError("nothing to score: give PROMPT RESPONSE [RESPONSE ...], --input FILE.jsonl (or a Hub "
                          "dataset ORG/NAME:SPLIT) or --card-eval")
    if args.output and not args.input:
        raise MinirmError("--output needs --input; with PROMPT RESPONSE the scores go to stdout")
    if args.plot and not args.input:
        raise MinirmError("--plot draws the per-subset accuracy of an --input dataset; give --input")
    if args.summary and not args.input:
        raise MinirmError("--summary needs --input (or --card-eval); with PROMPT RESPONSE there is no summary")


def load_scorer(args, device=None):
    from .scorer import Scorer

    scorer = Scorer.from_pretrained(
        args.model, revision=args.revision, device=device or args.device, dtype=args.dtype,
        max_length=args.max_length, truncation_side=args.truncation_side, tokenizer=args.tokenizer,
        attention=args.attention, batch_size=args.batch_size, alpha=args.alpha,
        chat_names={"bot_name": args.bot_name, "user_name": args.user_name, "memory": args.memory},
    )
    scorer.oa_rank = args.oa_rank
    return scorer


def run(argv: list[str] | None = None, prog: str = "score.py") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.list_models:
        print(list_models())
        return 0
    check_arguments(args)
    if args.serve is not None:
        return run_server(args)
    from ..devices import closing_process_group, setup_distributed

    d, device = setup_distributed(args.device)
    with closing_process_group():  # under torchrun: closed before exit (devices.py)
        return score_file_or_pairs(args, d, device)


def score_file_or_pairs(args, d, device) -> int:
    """The scoring run of one torchrun rank (or the only process): rank 0 prints or writes."""
    from ..attention import check_backend
    from ..text import records
    from ..text.records import Sample
    from . import evaluate

    # everything the user can get wrong is checked before the model loads: options, paths, input
    if args.attention:
        check_backend(args.attention, device)
    if args.output:
        records.check_output_path(args.output)
    if args.plot:
        evaluate.check_plot(args.plot)
    if args.summary:
        records.check_output_path(args.summary, "--summary")
    if args.card_eval is not None:
        card = evaluate.find_card(args.card_eval, args.model, args.revision)
        data = evaluate.read_card_data(evaluate.CARDS[card])
        scorer = load_scorer(args, device)
        scorer.shard = (d.rank, d.world)
        result = evaluate.card_eval(scorer, card, data, progress=d.main)
        if d.main:
            if args.summary:
                records.write_jsonl_atomic(args.summary, [result])
            print(json.dumps(result) if args.json else evaluate.card_table(result))
        return 0
    prepared = evaluate.prepare(*evaluate.read_input(args.input)) if args.input else None
    if args.summary and not prepared.evaluable:
        raise MinirmError(f"--summary: no row of {prepared.label} has a right answer to measure (chosen and "
                          "rejected, or a label), so there is no summary; drop --summary")
    if args.plot and not prepared.subsets:
        raise MinirmError(f"--plot draws each subset's accuracy, but no row of {prepared.label} has a 'subset' "
                          "field (RewardBench's rows do); drop --plot")
    scorer = load_scorer(args, device)
    scorer.shard = (d.rank, d.world)
    if prepared is None:
        scores = scorer.score_samples([Sample.pair(args.prompt, r) for r in args.responses],
                                      labels=[f"RESPONSE {i}" for i in range(1, len(args.responses) + 1)])
        if d.main:
            print_scores(args, scores)
            evaluate.warn(scorer.tokenizer.cut_note())
        return 0
    if d.main:
        evaluate.warn(prepared.dropped_note())
    # a bar at a terminal; elsewhere (nohup, Slurm) a line every 30 s, none for a shorter run (console.py)
    scored, summary = evaluate.evaluate(scorer, prepared, progress=d.main)
    if not d.main:
        return 0  # under torchrun, rank 0 writes the one output, in input order
    evaluate.warn(scorer.tokenizer.cut_note())  # under torchrun: of rank 0's share
    scored = [evaluate.jsonable(row) for row in scored]
    if args.output:
        records.write_jsonl_atomic(args.output, scored)
    else:
        for row in scored:
            print(records.dumps_row(row))
    if args.plot:
        evaluate.plot_summary(summary, args.plot)
    if args.summary:  # the whole summary, the run's date and speed included
        records.write_jsonl_atomic(args.summary, [evaluate.jsonable(summary)])
    if summary:
        # the printed line leaves out the run's date and speed: the same scores print the same line,
        # and a torchrun's equals one process's
        printed = {k: v for k, v in summary.items() if k not in evaluate.RUN_FIELDS}
        print(json.dumps(evaluate.jsonable(printed)), file=sys.stderr if not args.output else sys.stdout)
    return 0


def print_scores(args, scores: list[float]) -> None:
    if args.json:
        print(json.dumps([{"prompt": args.prompt, "response": r, "score": s} for r, s in zip(args.responses, scores)],
                         ensure_ascii=False, indent=2, allow_nan=False))
    else:
        print("\n".join(f"{s:.6f}" for s in scores))


def run_server(args) -> int:
    """score.py --serve: options and address checked, then the model loaded once and served."""
    from importlib.util import find_spec

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if find_spec(m) is None]
    if missing:
        raise MinirmError(f"--serve needs {', '.join(missing)}: pip install -e '.[serve]'")
    from ..attention import check_backend
    from ..devices import check_device
    from .serve import ServeOptions, check_port, parse_address, serve

    check_port(*parse_address(args.serve))
    options = ServeOptions(max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
                           max_queue_tokens=args.max_queue_tokens, max_body_mb=args.max_body_mb,
                           strip_template=args.strip_template)
    if args.attention:
        check_backend(args.attention, check_device(args.device))
    serve(load_scorer(args), args.serve, options)
    return 0


def score_rows(scorer, rows: list[dict], progress: bool = False,
               where: list[str] | None = None) -> tuple[list[dict], dict | None]:
    """Score every row; preference rows get both scores and a reward-bench style summary
    (minirm/scoring/evaluate.py). `where` names each row ("file:LINE") for errors about one sample."""
    from .evaluate import evaluate, prepare

    located = list(zip(where or [f"row {i + 1}" for i in range(len(rows))], rows))
    return evaluate(scorer, prepare("rows", located), progress=progress)


def main(argv: list[str] | None = None, prog: str = "score.py") -> int:
    return cli_main(prog, lambda a: run(a, prog), argv, "no output file was written")


def console_main() -> int:
    """The minirm-score console script."""
    return main(prog="minirm-score")


if __name__ == "__main__":
    sys.exit(main(prog="python -m minirm.scoring.cli"))
