"""The candidates section of python -m benchmarks.gpu: kernel versions side by side on the GPU.

Issue 29 asks every GPU run to test a prediction made off the GPU (from the SASS, the registers,
the compile report). A prediction about a kernel change is tested by timing the kernel as it was
beside the kernel as it is, in one process, on the same inputs, with the same launch configs. A
candidate is a copy of kernels/attention.py or kernels/deberta.py from git, taken here:

    python -m benchmarks.gpu_candidates snapshot NAME REV [--file deberta]   # writes .candidates/NAME.py
    python -m benchmarks.gpu_candidates list                                 # what is there, from which commit

.candidates/ is ignored by git: name it in the GPU run's carry, so that it travels with the
working tree ($MINIRM_CANDIDATES names another folder). Then, on the GPU, after the main command
(the section is not part of the default run):

    python -m benchmarks.gpu --out DIR --sections candidates

loads every snapshot and the tree's own kernel files ("current") as modules of their own, each
launched with fixed configs (the autotuner bypassed, so that the versions run the same tiles),
checked against a reference on memory poisoned with NaN, and only then timed:

* attention ("configs"): the varlen forward, bf16, non-causal, 16k tokens in sequences of 4096
  (issue 29's varlen target), head dims 64 and 128, for each config of the version's forward list
  with 64 or more query rows (the warpgroup-MMA configs the SASS predictions are about), in turn
  for every version; checked against SDPA's fp32 math; SDPA's flash backend timed beside them.
  Rows: head dim, candidate, config, relative_error, TFLOP/s, share of the bf16 matmul ceiling,
  ratio to "current" with the same config; "best": each version's fastest config per head dim.
* deberta ("deberta"): disentangled_attention at deberta-v2-xxlarge's shape (24 heads of 64,
  both relative terms, bf16, sequences of 2048), forward and forward + backward, one config per
  kernel (DEBERTA_CONFIGS, clean at that shape on sm_90); checked first on a ragged batch, output
  and all five gradients against the fp64 reference. Rows: candidate, errors, ms per mode, the
  backward's share (fwd+bwd / fwd), ratio to "current".

candidates.png draws the attention configs side by side. In a dry run (CPU, Triton's
interpreter) configs mean nothing (the interpreter runs fixed small blocks): each version is
checked once, at tiny sizes, and nothing is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_context import ROOT, Context

CANDIDATES = Path(os.environ.get("MINIRM_CANDIDATES", ROOT / ".candidates"))  # tests point it elsewhere
KERNEL_FILES = {"attention": "kernels/attention.py", "deberta": "kernels/deberta.py"}
# (head dim, query heads) at 2048 channels, as kernel-speed's fixed sweep; lengths, dtype, causal
CASES = {False: dict(head_dims=[(64, 32), (128, 16)], lengths=[4096] * 4),
         True: dict(head_dims=[(64, 2)], lengths=[40, 17])}
DTYPE = "bfloat16"
# DeBERTa at xxlarge's shape: (lengths timed, heads); the check runs on gpu_kernels' ragged batch
DEBERTA_CASE = {False: ([2048] * 8, 24), True: ([40, 17], 2)}
# One config per DeBERTa kernel (BLOCK_M, BLOCK_N, warps, stages): clean at head dim 64, bf16, sm_90,
# with triton 3.6 and 3.9 (kernels/compile_report/), and the same for every version
DEBERTA_CONFIGS = {"_forward_autotuned": ("_DEBERTA_FORWARD_CONFIGS", "_deberta_forward_kernel", (128, 64, 8, 2)),
                   "_dkdv_autotuned": ("_DEBERTA_DKDV_CONFIGS", "_deberta_backward_dkdv_kernel", (16, 64, 4, 2)),
                   "_dq_autotuned": ("_DEBERTA_DQ_CONFIGS", "_deberta_backward_dq_kernel", (128, 32, 8, 2))}


def load(name: str, path: Path):
    """A kernel file as it is in `path`, imported as a module of its own (minirm_candidate_NAME)."""
    spec = importlib.util.spec_from_file_location(f"minirm_candidate_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Triton reads a @triton.jit function's globals through its module
    spec.loader.exec_module(module)
    return module


def kind_of(path: Path) -> str | None:
    """Which kernel file a snapshot copies, from its first line ("# kernels/deberta.py at ...")."""
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    return next((kind for kind, file in KERNEL_FILES.items() if first.startswith(f"# {file} at ")), None)


def candidates(kind: str = "attention") -> dict[str, Path]:
    """{name: file} of one kernel file: "current" (the tree's) first, then its snapshots by name."""
    snapshots = {path.stem: path for path in sorted(CANDIDATES.glob("*.py")) if kind_of(path) == kind}
    return {"current": ROOT / KERNEL_FILES[kind], **snapshots}


class FixedConfig:
    """Stands in for one of a version's autotuned kernels (e.g. module._forward_autotuned): launches
    `kernel` with one config, filling the tile map as that config's pre_hook would."""

    def __init__(self, kernel, config):
        self.kernel, self.config = kernel, config

    def __getitem__(self, grid):
        kernel, config = self.kernel, self.config

        def launch(*args, **constexprs):
            meta = dict(constexprs, **config.kwargs)
            config.pre_hook(dict(zip(kernel.arg_names, args), **meta))
            kernel[grid](*args, **meta, num_warps=config.num_warps, num_stages=config.num_stages)

        return launch


@contextlib.contextmanager
def fixed(module, launchers: dict):
    """module's autotuned kernels replaced by FixedConfig launchers ({attribute: launcher}) inside."""
    saved = {name: getattr(module, name) for name in launchers}
    for name, launcher in launchers.items():
        setattr(module, name, launcher)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def config_tuple(config) -> tuple:
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages


def candidates_section(ctx: Context) -> None:
    for path in sorted(CANDIDATES.glob("*.py")):
        if kind_of(path) is None:
            ctx.note(f"{path} left out: its first line names no kernel file "
                     f"(python -m benchmarks.gpu_candidates snapshot writes one)")
    attention_part(ctx)
    deberta_part(ctx)
    if ctx.dry_run:
        ctx.note("CPU dry run: each version checked once in the interpreter, at tiny sizes; no config, no timing")


def attention_part(ctx: Context) -> None:
    import torch

    from benchmarks.gpu_kernels import THRESHOLDS, tflops
    from minirm.kernels.bench import attention_flops

    case = CASES[ctx.dry_run]
    dtype, lengths = getattr(torch, DTYPE), case["lengths"]
    versions = candidates("attention")
    ctx.figures.update(dtype=DTYPE, lengths=lengths, causal=False,
                       candidates={name: str(path) for name, path in versions.items()})
    if len(versions) == 1:
        ctx.note("no snapshot of kernels/attention.py in .candidates/: only the current kernel is timed "
                 "(python -m benchmarks.gpu_candidates snapshot NAME REV, and carry .candidates)")
    modules = {name: load(name, path) for name, path in versions.items()}
    for head_dim, heads in case["head_dims"]:
        problem = inputs(ctx, lengths, heads, head_dim, dtype)
        flops = attention_flops(lengths, heads, head_dim, False, "fwd")
        sdpa_ms = None if ctx.dry_run else ctx.bench_ms(problem["sdpa_flash"])
        ctx.figures.setdefault("sdpa_flash", []).append(dict(head_dim=head_dim, heads=heads,
                                                             tflops=tflops(flops, sdpa_ms),
                                                             share=ctx.share(tflops(flops, sdpa_ms))))
        # config by config, every version in turn: a budget cut leaves whole comparisons, not one side
        configs = {name: [config for config in module._FORWARD_CONFIGS if config.kwargs["BLOCK_M"] >= 64]
                   if not ctx.dry_run else [None] for name, module in modules.items()}
        jobs = [(name, versions_configs[i]) for i in range(max(map(len, configs.values())))
                for name, versions_configs in configs.items() if i < len(versions_configs)]
        rows = ctx.each("configs", jobs, lambda job: config_row(ctx, modules[job[0]], job, problem, flops,
                                                                THRESHOLDS[DTYPE], head_dim),
                        label=lambda job: f"head dim {head_dim}, {job[0]} {describe(job[1])}")
        rows = [row for row in rows if row.get("head_dim") == head_dim]
        add_ratios(rows)
        ctx.figures.setdefault("best", []).extend(best_rows(rows, head_dim, sdpa_ms and tflops(flops, sdpa_ms)))
        ctx.save()


def deberta_part(ctx: Context) -> None:
    import torch

    import minirm.kernels.bench as bench
    from benchmarks.gpu_kernels import DRY_LENGTHS, TEST_LENGTHS

    versions = candidates("deberta")
    ctx.figures["deberta_candidates"] = {name: str(path) for name, path in versions.items()}
    modules = {name: load(f"deberta_{name}", path) for name, path in versions.items()}
    lengths, heads = DEBERTA_CASE[ctx.dry_run]
    problem = bench.deberta_problem(lengths, heads, 64, getattr(torch, DTYPE), device=ctx.device)
    check = bench.deberta_problem(DRY_LENGTHS if ctx.dry_run else TEST_LENGTHS, 2 if ctx.dry_run else 4, 64,
                                  getattr(torch, DTYPE), device=ctx.device)
    tiles = {attribute: describe_tuple(config) for attribute, (_, _, config) in DEBERTA_CONFIGS.items()}
    ctx.figures["deberta_shape"] = dict(lengths=lengths, heads=heads, head_dim=64, rows_of_R=problem.n, configs=tiles)
    rows = ctx.each("deberta", list(modules), lambda name: deberta_row(ctx, name, modules[name], check, problem))
    base = next((row for row in rows if row.get("candidate") == "current"), {})
    for row in rows:
        for mode in ("fwd_ms", "fwd_bwd_ms"):
            row[f"{mode}_vs_current"] = row[mode] / base[mode] if row.get(mode) and base.get(mode) else None
    ctx.save()


def deberta_launchers(module) -> dict:
    """{autotuned attribute: FixedConfig} for a DeBERTa version, at DEBERTA_CONFIGS' tiles."""
    launchers = {}
    for attribute, (configs_name, kernel_name, wanted) in DEBERTA_CONFIGS.items():
        config = next((c for c in getattr(module, configs_name) if config_tuple(c) == wanted), None)
        if config is None:
            raise RuntimeError(f"{configs_name} has no config {describe_tuple(wanted)} in this version")
        launchers[attribute] = FixedConfig(getattr(module, kernel_name), config)
    return launchers


def deberta_row(ctx: Context, name: str, module, check, problem) -> dict:
    """One DeBERTa version: its output and five gradients on the check batch against the fp64
    reference, then, if they pass, forward and forward + backward times on the timed batch."""
    import torch

    import minirm.kernels.bench as bench
    from benchmarks.gpu_kernels import THRESHOLDS, relative_error

    def attention(leaves, batch):
        q, k, v, pos_key, pos_query = leaves
        return module.disentangled_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, pos_key, pos_query,
                                             batch.c2p_rows, batch.p2c_rows)

    tensors = [check.q, check.k, check.v, check.pos_key, check.pos_query]
    with fixed(module, {} if ctx.dry_run else deberta_launchers(module)):
        leaves = bench.deberta_leaves(*tensors)
        ctx.poison([check.q.numel() * check.q.element_size(), check.heads * check.q.shape[0] * 4])
        out = attention(leaves, check)
        grad_out = torch.randn(out.shape, generator=torch.Generator(device="cpu").manual_seed(1)).to(out)
        grads = torch.autograd.grad(out, leaves, grad_out)
        reference_leaves = [tensor.detach().double().requires_grad_() for tensor in tensors]
        q, k, v, pos_key, pos_query = reference_leaves
        expected = module.disentangled_attention_reference(q, k, v, check.cu_seqlens, pos_key, pos_query,
                                                           check.c2p_rows, check.p2c_rows)
        expected_grads = torch.autograd.grad(expected, reference_leaves, grad_out.double())
        errors = {f"error_{label}": relative_error(got, want) for label, got, want in
                  zip(["out", "dq", "dk", "dv", "dpos_key", "dpos_query"], [out, *grads], [expected, *expected_grads])}
        worst = max(errors.values())
        row = dict(candidate=name, **errors, passed=worst <= THRESHOLDS[DTYPE])
        if not row["passed"]:
            ctx.fail(f"deberta {name}: relative error {worst:.3g} > {THRESHOLDS[DTYPE]}")
            return row
        if not ctx.dry_run:
            leaves = bench.deberta_leaves(problem.q, problem.k, problem.v, problem.pos_key, problem.pos_query)
            for mode, key in (("fwd", "fwd_ms"), ("fwd+bwd", "fwd_bwd_ms")):
                step = bench.bench_step(lambda: [attention(leaves, problem)], mode)
                row[key] = ctx.bench_ms(step, leaves)
            row["fwd_bwd_over_fwd"] = row["fwd_bwd_ms"] / row["fwd_ms"] if row["fwd_ms"] else None
        return row


def inputs(ctx: Context, lengths, heads, head_dim, dtype) -> dict:
    """q, k, v packed, their cu_seqlens, SDPA's fp32 math reference per sequence, and SDPA's flash call."""
    import torch
    import torch.nn.functional as F

    from benchmarks.gpu_kernels import flash_only

    generator = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), heads, head_dim, generator=generator).to(ctx.device, dtype) for _ in range(3))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=ctx.device)
    padded = [t.view(len(lengths), lengths[0], heads, head_dim).transpose(1, 2) for t in (q, k, v)] \
        if len(set(lengths)) == 1 else None
    reference = torch.cat([F.scaled_dot_product_attention(*(t[start:end].float().transpose(0, 1)[None]
                                                            for t in (q, k, v)))[0].transpose(0, 1)
                           for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())])

    def sdpa_flash():
        with torch.no_grad():
            F.scaled_dot_product_attention(*padded)

    return dict(q=q, k=k, v=v, cu_seqlens=cu_seqlens, max_seqlen=max(lengths), reference=reference,
                sdpa_flash=flash_only(sdpa_flash) if padded is not None else None)


def config_row(ctx: Context, module, job, problem, flops, threshold, head_dim) -> dict:
    """Check one version with one config against the reference; time it only if it passes."""
    import torch

    from benchmarks.gpu_kernels import relative_error, tflops

    name, config = job
    launchers = {} if config is None else {"_forward_autotuned": FixedConfig(module._attention_forward_kernel, config)}
    with fixed(module, launchers):
        def call():
            with torch.no_grad():
                return module.varlen_attention(problem["q"], problem["k"], problem["v"], problem["cu_seqlens"],
                                               problem["max_seqlen"])

        ctx.poison([problem["q"].numel() * problem["q"].element_size()])
        out = call()
        error = relative_error(out, problem["reference"])
        row = dict(head_dim=head_dim, candidate=name, config=describe(config), relative_error=error,
                   passed=error <= threshold)
        if not row["passed"]:
            ctx.fail(f"{name} {describe(config)}: relative error {error:.3g} > {threshold}")
            return row
        milliseconds = None if ctx.dry_run else ctx.bench_ms(call)
        row.update(ms=milliseconds, tflops=tflops(flops, milliseconds), share=ctx.share(tflops(flops, milliseconds)))
        return row


def describe(config) -> str:
    return "interpreter blocks" if config is None else describe_tuple(config_tuple(config))


def describe_tuple(config: tuple) -> str:
    block_m, block_n, warps, stages = config
    return f"{block_m}x{block_n} w{warps} s{stages}"


def add_ratios(rows: list[dict]) -> None:
    """Each row's TFLOP/s over current's with the same config (None where either is missing)."""
    current = {row["config"]: row.get("tflops") for row in rows if row.get("candidate") == "current"}
    for row in rows:
        base = current.get(row.get("config"))
        row["vs_current"] = row["tflops"] / base if row.get("tflops") and base else None


def best_rows(rows: list[dict], head_dim: int, sdpa_tflops) -> list[dict]:
    """Per candidate, its fastest passing config (what an autotuner offered all of them would pick)."""
    best = {}
    for row in rows:
        if row.get("tflops") and row["tflops"] > best.get(row["candidate"], {}).get("tflops", 0):
            best[row["candidate"]] = row
    return [dict(head_dim=head_dim, candidate=name, config=row["config"], tflops=row["tflops"], share=row["share"],
                 vs_sdpa_flash=row["tflops"] / sdpa_tflops if sdpa_tflops else None) for name, row in best.items()]


# --------------------------------------------------------------------------------------------------
# Taking snapshots, here (git is not on the GPU machine)
# --------------------------------------------------------------------------------------------------
def snapshot(name: str, revision: str, kind: str = "attention") -> Path:
    """Write a kernel file (KERNEL_FILES[kind]) as of `revision` to .candidates/NAME.py; its first line
    names the file and the commit."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    file = KERNEL_FILES[kind]
    commit = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if commit.returncode:
        raise SystemExit(f"gpu_candidates: error: {revision!r} is not a commit of this repository (git log shows them)")
    source = git("show", f"{commit.stdout.strip()}:{file}")
    if source.returncode:
        raise SystemExit(f"gpu_candidates: error: {file} does not exist at {revision}")
    CANDIDATES.mkdir(parents=True, exist_ok=True)
    path = CANDIDATES / f"{name}.py"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"# {file} at {commit.stdout.strip()} ({revision}): a candidate of benchmarks/gpu_candidates.py\n"
                   + source.stdout, encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_candidates",
                                     description="Snapshots of the kernel files for the GPU command's candidates "
                                                 "section (python -m benchmarks.gpu --sections candidates).")
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("snapshot", help="write a kernel file as of REV to .candidates/NAME.py")
    take.add_argument("name", help="the candidate's name in the results (letters, digits, - and _)")
    take.add_argument("revision", help="a git commit, branch or tag")
    take.add_argument("--file", choices=list(KERNEL_FILES), default="attention",
                      help="which kernel file: kernels/attention.py (default) or kernels/deberta.py")
    commands.add_parser("list", help="the candidates the section would time")
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        if not args.name.replace("-", "").replace("_", "").isalnum() or args.name == "current":
            parser.error(f"NAME {args.name!r}: use letters, digits, - and _ (and not 'current', the tree's kernel)")
        clash = CANDIDATES / f"{args.name}.py"
        if clash.exists() and kind_of(clash) not in (None, args.file):
            parser.error(f"NAME {args.name!r} is a snapshot of {KERNEL_FILES[kind_of(clash)]} already; choose another")
        print(snapshot(args.name, args.revision, args.file))
        return 0
    for kind in KERNEL_FILES:
        for name, path in candidates(kind).items():
            first = path.read_text(encoding="utf-8").splitlines()[0] if name != "current" else "the working tree"
            print(f"{kind:<10} {name:<20} {path}  {first.lstrip('# ')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
