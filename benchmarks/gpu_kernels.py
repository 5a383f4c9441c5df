"""The env, kernels and kernel-speed sections of python -m benchmarks.gpu (see benchmarks/gpu.py).

The kernel-speed providers, FLOP counts and DeBERTa problems are python -m minirm.kernels.bench's
(kernels/bench.py), imported: the figures here and there measure the same things.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time

from benchmarks.gpu_context import ROOT, Context
from benchmarks.gpu_lengths import DRY_SCALE, load_lengths


# --------------------------------------------------------------------------------------------------
# env: the machine and its ceilings
# --------------------------------------------------------------------------------------------------
def env(ctx: Context) -> None:
    from importlib.metadata import version

    import torch
    import triton

    figures = ctx.figures
    figures.update(device=str(ctx.device), torch=torch.__version__, triton=triton.__version__,
                   transformers=version("transformers"), tokenizers=version("tokenizers"),
                   triton_interpreter=os.environ.get("TRITON_INTERPRET") == "1")
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        figures.update(gpu=props.name, capability=f"sm_{props.major}{props.minor}", sms=props.multi_processor_count,
                       memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
    ctx.save()
    n = 256 if ctx.dry_run else 8192
    figures["matmul"] = f"{n}^3 bf16"
    figures["matmul_tflops"] = matmul_tflops(ctx, n)
    ctx.save()
    nbytes = 2**24 if ctx.dry_run else 2**30
    figures["copy"] = f"{nbytes / 2**20:.0f} MiB device to device, read + written"
    figures["copy_tbps"] = copy_tbps(ctx, nbytes)
    ctx.save()


def matmul_tflops(ctx: Context, n: int) -> float:
    import torch

    a, b = (torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / (ctx.bench_ms(lambda: a @ b) * 1e-3) / 1e12


def copy_tbps(ctx: Context, nbytes: int) -> float:
    import torch

    source = torch.ones(nbytes, dtype=torch.uint8, device=ctx.device)
    target = torch.empty_like(source)
    return 2 * nbytes / (ctx.bench_ms(lambda: target.copy_(source)) * 1e-3) / 1e12


# --------------------------------------------------------------------------------------------------
# kernels: compiled kernels against their references, on poisoned memory
# --------------------------------------------------------------------------------------------------
# Pass thresholds for |kernel - reference| / |reference| (Frobenius norms over the whole ragged
# batch), per input dtype, for the output and every gradient. The kernels accumulate in fp32; what
# remains is the rounding of each format (fp16 ~5e-4, bf16 ~4e-3 per value, probabilities rounded
# before P @ V, gradients summed over whole sequences), with room to spare. A tile written wrong or
# not at all moves the error by orders of magnitude (a NaN never passes).
THRESHOLDS = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}
# The ragged batch of the CUDA-only tests (tests/test_kernels.py, tests/test_deberta_kernel.py):
# the same lengths give the same Triton argument specialisations, so that pytest, run after the
# cases, finds its kernels compiled. 1000 tokens: past DeBERTa-xxlarge's 256 position buckets.
TEST_LENGTHS, TEST_HEADS = [1, 17, 300, 1000, 64, 129], 4
DRY_LENGTHS, DRY_HEADS = [1, 17, 40], 2
# Grouped-query attention at a Qwen3-0.6B layer's shape (Skywork-Reward-V2-Qwen3-0.6B): 16 query heads
# sharing 8 K/V heads of 128, causal, bf16; in a dry run 4 heads sharing 2 (the interpreter is slow).
GQA = dict(heads=16, kv_heads=8, head_dim=128, causal=True)
DRY_GQA = dict(heads=4, kv_heads=2, head_dim=64, causal=True)
# deberta-v2-xxlarge's positions: log buckets 256, max_relative_positions 512, so R has 512 rows
BUCKETS, MAX_RELATIVE, SPAN = 256, 512, 256
KERNEL_TESTS = ["tests/test_kernels.py", "tests/test_deberta_kernel.py"]
CUDA_TESTS = "compiled_kernels_on_gpu"  # pytest -k: the tests of these files that need a CUDA GPU (they skip on CPU)
DTYPES = ["float16", "bfloat16", "float32"]


def kernel_cases(dry_run: bool) -> list[dict]:
    """Every head dim x dtype x causal (varlen) or x dropout (DeBERTa), and varlen with grouped K/V
    heads at a Qwen3 layer's shape (checked against SDPA's own GQA); in a dry run, a few that cover
    each code path once."""
    if dry_run:
        return [dict(kernel="varlen", head_dim=64, dtype="float16", causal=True),
                dict(kernel="varlen", head_dim=128, dtype="bfloat16", causal=False),
                dict(kernel="varlen-gqa", dtype="bfloat16", **DRY_GQA),
                dict(kernel="deberta", head_dim=64, dtype="bfloat16", dropout=0.1),
                dict(kernel="deberta", head_dim=64, dtype="float32", dropout=0.0)]
    return ([dict(kernel="varlen", head_dim=d, dtype=t, causal=c) for d in (64, 128) for t in DTYPES
             for c in (False, True)]
            + [dict(kernel="varlen-gqa", dtype="bfloat16", **GQA)]
            + [dict(kernel="deberta", head_dim=d, dtype=t, dropout=p) for d in (64, 128) for t in DTYPES
               for p in (0.0, 0.1)])


def kernels(ctx: Context) -> None:
    cases = kernel_cases(ctx.dry_run)
    ctx.figures["thresholds"] = THRESHOLDS
    ctx.figures["reference"] = ("varlen_attention_reference / disentangled_attention_reference on fp64 copies of the "
                                "inputs (they compute in fp32 inside); DeBERTa dropout with the kernel's own draws "
                                "(dropout_keep_mask); varlen-gqa: SDPA with enable_gqa per sequence, on fp64 copies")
    ctx.figures["batch"] = f"lengths {DRY_LENGTHS if ctx.dry_run else TEST_LENGTHS}, " \
                           f"{DRY_HEADS if ctx.dry_run else TEST_HEADS} heads, fresh random inputs per case"
    if ctx.device.type != "cuda":
        ctx.note("no CUDA caching allocator on CPU: outputs are not poisoned; a tile left unwritten would still "
                 "show as an error against the reference")
    # correctness needs no timing: the cases run in parallel processes, which also compile in parallel
    # (and compile what the tests below launch); what is left after them is the tests'
    results = ctx.parallel(check_kernel, len(cases), warm=False, timeout_s=max(30.0, ctx.time_left() - 35))
    rows = ctx.figures.setdefault("cases", [])
    for case, result in zip(cases, results):
        name = " ".join(f"{key}={value}" for key, value in case.items())
        if result is None:
            ctx.record["cut"].append(f"cases: {name}")
        elif "error" in result:
            rows.append({**case, **result})
            ctx.fail(f"{name}: {result['error']}")
        else:
            rows.append(result)
            if not result["passed"]:
                error = result["max_error"]  # "nan" or "inf", strings in JSON, where a value was not finite
                shown = f"{error:.3g}" if isinstance(error, float) else error
                ctx.fail(f"{name}: error {shown}, above the threshold {THRESHOLDS[case['dtype']]:g}")
            if result["poisoned"] is False:
                ctx.note(f"{name}: the poisoned blocks were not reused (a fresh torch.empty did not read NaN)")
    ctx.save()
    ctx.figures["tests"] = cuda_tests(ctx)
    ctx.save()


def check_kernel(ctx: Context, index: int) -> dict:
    """One case: output and gradients of the compiled kernel against the reference (in a worker)."""
    import torch

    case = kernel_cases(ctx.dry_run)[index]
    seed = torch.seed() % 2**31  # fresh inputs every run; the seed is recorded to replay a failure
    generator = torch.Generator(device=ctx.device).manual_seed(seed)
    dtype = getattr(torch, case["dtype"])
    lengths = DRY_LENGTHS if ctx.dry_run else TEST_LENGTHS
    heads, head_dim = case.get("heads", DRY_HEADS if ctx.dry_run else TEST_HEADS), case["head_dim"]
    kv_heads = case.get("kv_heads", heads)
    longest, tokens = max(lengths), sum(lengths)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, device=ctx.device).to(dtype).requires_grad_()

    inputs = [rand(tokens, heads, head_dim), rand(tokens, kv_heads, head_dim), rand(tokens, kv_heads, head_dim)]
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=ctx.device)
    if case["kernel"] == "varlen-gqa":
        from minirm.kernels.attention import varlen_attention

        names = ["out", "dq", "dk", "dv"]

        def kernel(xs):
            return varlen_attention(*xs, cu_seqlens, longest, causal=case["causal"])

        def reference(xs):
            return sdpa_gqa(*xs, cu_seqlens.tolist(), case["causal"])
    elif case["kernel"] == "varlen":
        from minirm.kernels.attention import varlen_attention, varlen_attention_reference

        names = ["out", "dq", "dk", "dv"]

        def kernel(xs):
            return varlen_attention(*xs, cu_seqlens, longest, causal=case["causal"])

        def reference(xs):
            return varlen_attention_reference(*xs, cu_seqlens, causal=case["causal"])
    else:
        from minirm.kernels.deberta import disentangled_attention, disentangled_attention_reference, dropout_keep_mask
        from minirm.kernels.deberta_reference import relative_rows

        names = ["out", "dq", "dk", "dv", "dpos_key", "dpos_query"]
        c2p_rows, p2c_rows = (rows.int() for rows in relative_rows(longest, BUCKETS, MAX_RELATIVE, SPAN, ctx.device))
        inputs += [rand(heads, 2 * SPAN, head_dim) for _ in range(2)]
        p = case["dropout"]
        # odd, so that the kernels compile for the same specialisation as the tests' seed 5
        dropout_seed = 2 * (seed % 2**28) + 3 if p else None
        masks = dropout_keep_mask(cu_seqlens, heads, longest, p, dropout_seed) if p else None

        def kernel(xs):
            return disentangled_attention(*xs[:3], cu_seqlens, longest, *xs[3:], c2p_rows, p2c_rows, dropout_p=p,
                                          dropout_seed=dropout_seed)

        def reference(xs):
            return disentangled_attention_reference(*xs[:3], cu_seqlens, *xs[3:], c2p_rows, p2c_rows, dropout_p=p,
                                                    dropout_masks=masks)

    # the sizes the wrappers' torch.empty asks for: q-sized outputs and gradients, fp32 (heads, tokens) LSE,
    # and with grouped heads the smaller dk and dv
    sizes = [inputs[0].numel() * inputs[0].element_size(), heads * tokens * 4]
    if kv_heads != heads:
        sizes.append(inputs[1].numel() * inputs[1].element_size())
    poisoned = ctx.poison(sizes)
    out = kernel(inputs)
    grad_out = torch.randn(out.shape, generator=generator, device=ctx.device).to(dtype)
    ctx.poison(sizes)
    grads = torch.autograd.grad(out, inputs, grad_out)
    reference_inputs = [x.detach().double().requires_grad_() for x in inputs]
    expected = reference(reference_inputs)
    expected_grads = torch.autograd.grad(expected, reference_inputs, grad_out.double())
    errors = {name: relative_error(got, want)
              for name, got, want in zip(names, [out, *grads], [expected, *expected_grads])}
    worst = max((error if math.isfinite(error) else math.inf) for error in errors.values())
    return {**case, "seed": seed, "poisoned": poisoned, "max_error": worst,
            "passed": worst <= THRESHOLDS[case["dtype"]], **{f"error_{name}": error for name, error in errors.items()}}


def sdpa_gqa(q, k, v, bounds: list[int], causal: bool):
    """(tokens, heads, hd) attention over (tokens, kv_heads, hd) keys and values by torch's own GQA
    (scaled_dot_product_attention with enable_gqa), one sequence at a time: the reference of the
    varlen-gqa case, independent of minirm's."""
    import torch
    import torch.nn.functional as F

    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        q_seq, k_seq, v_seq = (x[start:end].transpose(0, 1)[None] for x in (q, k, v))  # (1, heads, L, hd)
        out = F.scaled_dot_product_attention(q_seq, k_seq, v_seq, is_causal=causal, enable_gqa=True)
        outputs.append(out[0].transpose(0, 1))
    return torch.cat(outputs)


def relative_error(actual, expected) -> float:
    """|actual - expected| / |expected|, Frobenius norms in fp64 (NaN if actual holds a NaN)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = float(expected.norm())
    return float((actual - expected).norm()) / (scale if scale > 0 else 1.0)


def cuda_tests(ctx: Context) -> dict:
    """The CUDA-only tests of the kernel test files (pytest -k compiled_kernels_on_gpu: they run the
    compiled kernels against the references, in a fresh process without TRITON_INTERPRET), one
    process per file, side by side."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    start = time.monotonic()
    processes = {name: subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name,
                                         "-k", CUDA_TESTS], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
                 for name in KERNEL_TESTS}
    results = {}
    for name, process in processes.items():
        try:
            output, _ = process.communicate(timeout=max(10.0, ctx.time_left()))
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            killed = True
        counts = {word.rstrip("s") if word.startswith("error") else word: int(number)
                  for number, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", output[-2000:])}
        result = dict(passed=counts.get("passed", 0), failed=counts.get("failed", 0), errors=counts.get("error", 0),
                      skipped=counts.get("skipped", 0), exit_status=process.returncode, killed=killed,
                      seconds=round(time.monotonic() - start, 1))
        bad = killed or result["failed"] or result["errors"] or process.returncode != 0
        bad = bad or result["passed"] + result["skipped"] == 0  # the tests were renamed: -k selects nothing
        if ctx.device.type == "cuda" and result["skipped"]:
            bad = True  # on a GPU nothing should skip
        if bad:
            result["output_tail"] = output[-3000:]
            ctx.fail(f"pytest {name} -k {CUDA_TESTS}: " + ("killed for time" if killed else
                                                        f"{result['passed']} passed, {result['failed']} failed, "
                                                        f"{result['errors']} errors, {result['skipped']} skipped"))
        results[name] = result
    if ctx.device.type != "cuda":
        ctx.note(f"pytest -k {CUDA_TESTS} on CPU: the tests skip (no CUDA device)")
    return results


# --------------------------------------------------------------------------------------------------
# kernel-speed: TFLOP/s against SDPA, time and memory of DeBERTa's kernel
# --------------------------------------------------------------------------------------------------
MODES = ["fwd", "fwd+bwd"]
SPEED_DTYPE = "bfloat16"
# {dry run?: sizes}. Fixed: (lengths, tokens per batch, heads x head dim), as python -m
# minirm.kernels.bench --fixed-tokens / --fixed-width; real pair lengths: (sequences per batch,
# batches, clip, heads, head dim); DeBERTa: (lengths, tokens per batch, heads)
FIXED = {False: ([512, 1024, 2048, 4096, 8192, 16384], 16384, 2048), True: ([32], 64, 128)}
REAL = {False: (32, 4, 512, 12, 64), True: (4, 1, 48, 2, 64)}
DEBERTA = {False: ([512, 2048], 16384, 24), True: ([32], 64, 2)}
# grouped-query attention at GQA's shape (DRY_GQA's in a dry run): (lengths, tokens per batch)
GQA_SPEED = {False: ([1024, 4096], 16384), True: ([32], 64)}


def speed_cases(dry_run: bool) -> list[dict]:
    """Real pair lengths first, then DeBERTa at xxlarge's shape, then grouped-query attention at a
    Qwen3 layer's shape, then the fixed-length sweep, non-causal (the encoders') before causal: if
    the budget runs out, causal head dim 128 goes first."""
    lengths = FIXED[dry_run][0]
    return ([dict(kind="real", causal=c) for c in (False, True)]
            + [dict(kind="deberta", seq_len=n) for n in DEBERTA[dry_run][0]]
            + [dict(kind="gqa", seq_len=n) for n in GQA_SPEED[dry_run][0]]
            + [dict(kind="fixed", head_dim=d, causal=c, seq_len=n) for c in (False, True) for d in (64, 128)
               for n in lengths])


def kernel_speed(ctx: Context) -> None:
    cases = speed_cases(ctx.dry_run)
    ctx.figures["dtype"] = SPEED_DTYPE
    ctx.figures["flops"] = ("forward 4 * sum(L^2) * heads * head_dim, halved if causal; fwd+bwd 3.5 x forward; "
                            "padding not counted (python -m minirm.kernels.bench's rule)")
    ctx.parallel(speed_case, len(cases), warm=True, timeout_s=0.3 * ctx.time_left())
    for kind, group in (("real", "real_lengths"), ("deberta", "deberta"), ("gqa", "gqa"), ("fixed", "fixed")):
        ctx.each(group, [case for case in cases if case["kind"] == kind], lambda case: speed_rows(ctx, case),
                 label=lambda case: " ".join(f"{k}={v}" for k, v in case.items() if k != "kind"))
    firsts = [row.get("triton_first_call_s") for group in ("real_lengths", "deberta", "gqa", "fixed")
              for row in ctx.figures.get(group, [])]
    ctx.figures["triton_first_calls_s"] = round(sum(s for s in firsts if s is not None), 2)
    if ctx.device.type != "cuda":
        ctx.note("CPU dry run: one timed call per figure, kernels interpreted, no peak memory")


def speed_case(ctx: Context, index: int):
    """A case of the sweep, in a compile warm-up worker."""
    speed_rows(ctx, speed_cases(ctx.dry_run)[index])


def speed_rows(ctx: Context, case: dict) -> list[dict]:
    import minirm.kernels.bench as bench

    bench.DEVICE = str(ctx.device)  # bench's providers allocate on bench.DEVICE
    return {"real": real_rows, "deberta": deberta_rows, "gqa": gqa_rows, "fixed": fixed_rows}[case["kind"]](
        ctx, case, bench)


def flash_only(run):
    """run() under SDPA's FlashAttention backend only (an error, not a silent fallback, where it cannot)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return run()

    return flash


def measure(ctx: Context, bench, run, inputs, mode: str, memory: bool = False):
    """(first call s, median ms, peak MiB or None) of one provider's step."""
    step = bench.bench_step(run, mode)
    first = ctx.timed(step)
    milliseconds = ctx.bench_ms(step, inputs)
    for tensor in inputs:
        tensor.grad = None  # so that the peak counts the gradients a fresh step allocates
    return first, milliseconds, (ctx.peak_mib(step) if memory else None)


def tflops(flops: float, milliseconds: float | None) -> float | None:
    return None if milliseconds is None else flops / (milliseconds * 1e-3) / 1e12


def ratio(a, b):
    return None if a is None or not b else a / b


def fixed_rows(ctx: Context, case: dict, bench) -> list[dict]:
    import torch

    _, tokens, width = FIXED[ctx.dry_run]
    head_dim, causal, seq_len = case["head_dim"], case["causal"], case["seq_len"]
    heads, lengths = width // head_dim, [seq_len] * max(1, tokens // seq_len)
    dtype = getattr(torch, SPEED_DTYPE)
    triton_run, triton_inputs = bench.triton_varlen(lengths, heads, head_dim, causal, dtype)
    sdpa_run, sdpa_inputs = bench.sdpa_padded(lengths, heads, head_dim, causal, dtype)  # equal lengths: no mask
    rows = []
    for mode in MODES:
        flops = bench.attention_flops(lengths, heads, head_dim, causal, mode)
        first, triton_ms, _ = measure(ctx, bench, triton_run, triton_inputs, mode)
        sdpa_ms = None if ctx.warming else measure(ctx, bench, flash_only(sdpa_run), sdpa_inputs, mode)[1]
        triton, sdpa = tflops(flops, triton_ms), tflops(flops, sdpa_ms)
        rows.append(dict(head_dim=head_dim, heads=heads, causal=causal, seq_len=seq_len, batch=len(lengths), mode=mode,
                         triton_tflops=triton, sdpa_flash_tflops=sdpa, speedup=ratio(triton, sdpa),
                         triton_share=ctx.share(triton), sdpa_flash_share=ctx.share(sdpa), triton_first_call_s=first))
    return rows


def gqa_rows(ctx: Context, case: dict, bench) -> list[dict]:
    """varlen_attention with grouped K/V heads (read in place) against SDPA's own GQA (enable_gqa:
    FlashAttention where it takes it) on equal lengths, and against the kernel on the same queries
    with K/V repeated to one head per query head (what grouping saves or costs the kernel)."""
    import torch
    import torch.nn.functional as F

    from minirm.kernels.attention import varlen_attention

    shape = DRY_GQA if ctx.dry_run else GQA
    heads, kv_heads, head_dim, causal = shape["heads"], shape["kv_heads"], shape["head_dim"], shape["causal"]
    seq_len, count = case["seq_len"], max(1, GQA_SPEED[ctx.dry_run][1] // case["seq_len"])
    lengths, total = [seq_len] * count, seq_len * count
    dtype, device = getattr(torch, SPEED_DTYPE), ctx.device

    def tensor(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    grouped = [tensor(total, heads, head_dim), tensor(total, kv_heads, head_dim), tensor(total, kv_heads, head_dim)]
    repeated = [tensor(total, heads, head_dim) for _ in range(3)]
    padded = [tensor(count, h, seq_len, head_dim) for h in (heads, kv_heads, kv_heads)]  # equal lengths: no mask

    def kernel(xs):
        return lambda: [varlen_attention(*xs, cu_seqlens, seq_len, causal=causal)]

    def sdpa():
        return [F.scaled_dot_product_attention(*padded, is_causal=causal, enable_gqa=True)]

    rows = []
    for mode in MODES:
        flops = bench.attention_flops(lengths, heads, head_dim, causal, mode)  # per query head, as for MHA
        first, grouped_ms, _ = measure(ctx, bench, kernel(grouped), grouped, mode)
        _, repeated_ms, _ = measure(ctx, bench, kernel(repeated), repeated, mode)
        sdpa_ms, backend = None, None
        if not ctx.warming:
            try:
                sdpa_ms, backend = measure(ctx, bench, flash_only(sdpa), padded, mode)[1], "flash"
            except RuntimeError:  # this torch's FlashAttention does not take enable_gqa: SDPA's own choice
                sdpa_ms, backend = measure(ctx, bench, sdpa, padded, mode)[1], "default"
        triton, sdpa_tflops = tflops(flops, grouped_ms), tflops(flops, sdpa_ms)
        rows.append(dict(seq_len=seq_len, batch=len(lengths), heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                         causal=causal, mode=mode, triton_tflops=triton,
                         triton_repeated_kv_tflops=tflops(flops, repeated_ms), sdpa_gqa_tflops=sdpa_tflops,
                         sdpa_backend=backend, speedup=ratio(triton, sdpa_tflops),
                         triton_share=ctx.share(triton), triton_first_call_s=first))
    return rows


def real_rows(ctx: Context, case: dict, bench) -> list[dict]:
    import torch

    per_batch, count, clip, heads, head_dim = REAL[ctx.dry_run]
    scale = DRY_SCALE if ctx.dry_run else 1  # interpreted kernels: shorter sequences
    lengths = [max(1, min(clip, n // scale)) for chosen, rejected, _ in load_lengths() for n in (chosen, rejected)]
    batches = [lengths[i:i + per_batch] for i in range(0, per_batch * count, per_batch)]  # pairs stay together
    dtype, causal = getattr(torch, SPEED_DTYPE), case["causal"]
    rows = []
    for mode in MODES:
        flops = sum(bench.attention_flops(batch, heads, head_dim, causal, mode) for batch in batches)
        firsts, triton_ms, sdpa_ms = [], [], []
        for batch in batches:  # times summed over the batches
            run, inputs = bench.triton_varlen(batch, heads, head_dim, causal, dtype)
            first, milliseconds, _ = measure(ctx, bench, run, inputs, mode)
            firsts.append(first)
            triton_ms.append(milliseconds)
            if not ctx.warming:
                run, inputs = bench.sdpa_padded(batch, heads, head_dim, causal, dtype)  # padded, with the mask
                sdpa_ms.append(measure(ctx, bench, run, inputs, mode)[1])
        triton = None if ctx.warming else tflops(flops, sum(triton_ms))
        sdpa = None if ctx.warming else tflops(flops, sum(sdpa_ms))
        flat = [n for batch in batches for n in batch]
        rows.append(dict(causal=causal, mode=mode, batches=len(batches), sequences=len(flat),
                         mean_len=round(sum(flat) / len(flat), 1), max_len=max(flat), heads=heads, head_dim=head_dim,
                         triton_tflops=triton, sdpa_padded_tflops=sdpa, speedup=ratio(triton, sdpa),
                         triton_share=ctx.share(triton), sdpa_padded_share=ctx.share(sdpa),
                         triton_first_call_s=sum(firsts)))
    return rows


def deberta_rows(ctx: Context, case: dict, bench) -> list[dict]:
    import torch

    _, tokens, heads = DEBERTA[ctx.dry_run]
    seq_len = case["seq_len"]
    lengths = [seq_len] * max(1, tokens // seq_len)
    problem = bench.deberta_problem(lengths, heads, 64, getattr(torch, SPEED_DTYPE), device=ctx.device)
    rows = []
    for mode in MODES:
        run, inputs = bench.triton_deberta(problem)
        first, triton_ms, triton_mib = measure(ctx, bench, run, inputs, mode, memory=True)
        sdpa_ms = sdpa_mib = None
        if not ctx.warming:
            run, inputs = bench.sdpa_bias(problem)
            try:
                _, sdpa_ms, sdpa_mib = measure(ctx, bench, run, inputs, mode, memory=True)
            except torch.cuda.OutOfMemoryError:
                ctx.note(f"sdpa-bias ran out of GPU memory at {seq_len} tokens, {mode}")
            del run, inputs
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(dict(seq_len=seq_len, batch=len(lengths), heads=heads, head_dim=64, rows_of_R=problem.n, mode=mode,
                         triton_ms=triton_ms, sdpa_bias_ms=sdpa_ms, speedup=ratio(sdpa_ms, triton_ms),
                         triton_mib=triton_mib, sdpa_bias_mib=sdpa_mib, memory_saving=ratio(sdpa_mib, triton_mib),
                         triton_first_call_s=first))
    return rows

