"""The candidates section of python -m benchmarks.gpu: versions of the varlen forward kernel, config by config.

Issue 29 asks every GPU run to test a prediction made off the GPU (from the SASS, the registers,
the compile report). A prediction about a kernel change is tested by timing the kernel as it was
beside the kernel as it is, in one process, on the same inputs, with the same launch configs. A
candidate is a copy of kernels/attention.py from git, taken here:

    python -m benchmarks.gpu_candidates snapshot NAME REV    # writes .candidates/NAME.py
    python -m benchmarks.gpu_candidates list                 # what is there, and from which commit

.candidates/ is ignored by git: name it in the GPU run's carry, so that it travels with the
working tree ($MINIRM_CANDIDATES names another folder). Then, on the GPU, after the main command
(the section is not part of the default run):

    python -m benchmarks.gpu --out DIR --sections candidates

loads every .candidates/*.py and the tree's kernels/attention.py ("current") as modules of their
own, and for each head dim of CASES (bf16, non-causal, the varlen target of issue 29: 16k tokens
in sequences of 4096) and each config of that version's own forward block list, launches the
forward with that config alone (the autotuner bypassed: the comparison is per config, as the SASS
predictions are), checks the output against SDPA's fp32 math (gpu_kernels.THRESHOLDS, on memory
poisoned with NaN) and only then times it; a config that spills is timed too (the autotuner
would skip it). SDPA's flash backend is timed on the same inputs in the same run. Rows
("configs"): head dim, candidate, config, relative_error, TFLOP/s, share of the bf16 matmul
ceiling, ratio to "current" with the same config; "best" gives each candidate's fastest config per
head dim, against SDPA flash; candidates.png draws the configs side by side.

In a dry run (CPU, Triton's interpreter) configs mean nothing (the interpreter runs fixed small
blocks): each candidate is checked once per head dim, at tiny sizes, and its timing means nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_context import ROOT, Context

CANDIDATES = Path(os.environ.get("MINIRM_CANDIDATES", ROOT / ".candidates"))  # tests point it elsewhere
KERNEL = "kernels/attention.py"
# (head dim, query heads) at 2048 channels, as kernel-speed's fixed sweep; lengths, dtype, causal
CASES = {False: dict(head_dims=[(64, 32), (128, 16)], lengths=[4096] * 4),
         True: dict(head_dims=[(64, 2)], lengths=[40, 17])}
DTYPE = "bfloat16"


def load(name: str, path: Path):
    """kernels/attention.py as it is in `path`, imported as a module of its own (minirm_candidate_NAME)."""
    spec = importlib.util.spec_from_file_location(f"minirm_candidate_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Triton reads a @triton.jit function's globals through its module
    spec.loader.exec_module(module)
    return module


def candidates() -> dict[str, Path]:
    """{name: file}: "current" (the tree's kernel) first, then the snapshots by name."""
    return {"current": ROOT / KERNEL, **{path.stem: path for path in sorted(CANDIDATES.glob("*.py"))}}


class FixedConfig:
    """Stands in for a version's autotuned forward kernel (module._forward_autotuned): launches the
    kernel with one config, filling the tile map as that config's pre_hook would."""

    def __init__(self, module, config):
        self.module, self.config = module, config

    def __getitem__(self, grid):
        kernel, config = self.module._attention_forward_kernel, self.config

        def launch(*args, **constexprs):
            meta = dict(constexprs, **config.kwargs)
            config.pre_hook(dict(zip(kernel.arg_names, args), **meta))
            kernel[grid](*args, **meta, num_warps=config.num_warps, num_stages=config.num_stages)

        return launch


def candidates_section(ctx: Context) -> None:
    import torch

    from benchmarks.gpu_kernels import THRESHOLDS, tflops
    from minirm.kernels.bench import attention_flops

    case = CASES[ctx.dry_run]
    dtype, lengths = getattr(torch, DTYPE), case["lengths"]
    versions = candidates()
    ctx.figures.update(dtype=DTYPE, lengths=lengths, causal=False,
                       candidates={name: str(path) for name, path in versions.items()})
    if len(versions) == 1:
        ctx.note("no snapshot in .candidates/: only the current kernel is timed "
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
        configs = {name: module._FORWARD_CONFIGS if not ctx.dry_run else [None] for name, module in modules.items()}
        jobs = [(name, versions_configs[i]) for i in range(max(map(len, configs.values())))
                for name, versions_configs in configs.items() if i < len(versions_configs)]
        rows = ctx.each("configs", jobs, lambda job: config_row(ctx, modules[job[0]], job, problem, flops,
                                                                THRESHOLDS[DTYPE], head_dim),
                        label=lambda job: f"head dim {head_dim}, {job[0]} {describe(job[1])}")
        rows = [row for row in rows if row.get("head_dim") == head_dim]
        add_ratios(rows)
        ctx.figures.setdefault("best", []).extend(best_rows(rows, head_dim, sdpa_ms and tflops(flops, sdpa_ms)))
        ctx.save()
    if ctx.dry_run:
        ctx.note("CPU dry run: each candidate checked once per head dim in the interpreter; no config, no timing")


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

    from benchmarks.gpu_kernels import tflops

    name, config = job
    saved = module._forward_autotuned
    if config is not None:
        module._forward_autotuned = FixedConfig(module, config)
    try:
        def call():
            with torch.no_grad():
                return module.varlen_attention(problem["q"], problem["k"], problem["v"], problem["cu_seqlens"],
                                               problem["max_seqlen"])

        ctx.poison([problem["q"].numel() * problem["q"].element_size()])
        out = call()
        reference = problem["reference"]
        error = float((out.float() - reference).norm() / reference.norm())
        row = dict(head_dim=head_dim, candidate=name, config=describe(config), relative_error=error,
                   passed=error <= threshold)
        if not row["passed"]:
            ctx.fail(f"{name} {describe(config)}: relative error {error:.3g} > {threshold}")
            return row
        milliseconds = None if ctx.dry_run else ctx.bench_ms(call)
        row.update(ms=milliseconds, tflops=tflops(flops, milliseconds), share=ctx.share(tflops(flops, milliseconds)))
        return row
    finally:
        module._forward_autotuned = saved


def describe(config) -> str:
    if config is None:
        return "interpreter blocks"
    return f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']} w{config.num_warps} s{config.num_stages}"


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
def snapshot(name: str, revision: str) -> Path:
    """Write kernels/attention.py as of `revision` to .candidates/NAME.py, the commit named in its first line."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    commit = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if commit.returncode:
        raise SystemExit(f"gpu_candidates: error: {revision!r} is not a commit of this repository (git log shows them)")
    source = git("show", f"{commit.stdout.strip()}:{KERNEL}")
    if source.returncode:
        raise SystemExit(f"gpu_candidates: error: {KERNEL} does not exist at {revision}")
    CANDIDATES.mkdir(parents=True, exist_ok=True)
    path = CANDIDATES / f"{name}.py"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"# {KERNEL} at {commit.stdout.strip()} ({revision}): a candidate of benchmarks/gpu_candidates.py\n"
                   + source.stdout, encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_candidates",
                                     description="Snapshots of kernels/attention.py for the GPU command's candidates "
                                                 "section (python -m benchmarks.gpu --sections candidates).")
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("snapshot", help="write kernels/attention.py as of REV to .candidates/NAME.py")
    take.add_argument("name", help="the candidate's name in the results (letters, digits, - and _)")
    take.add_argument("revision", help="a git commit, branch or tag")
    commands.add_parser("list", help="the candidates the section would time")
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        if not args.name.replace("-", "").replace("_", "").isalnum() or args.name == "current":
            parser.error(f"NAME {args.name!r}: use letters, digits, - and _ (and not 'current', the tree's kernel)")
        print(snapshot(args.name, args.revision))
        return 0
    for name, path in candidates().items():
        first = path.read_text(encoding="utf-8").splitlines()[0] if name != "current" else "the working tree"
        print(f"{name:<20} {path}  {first.lstrip('# ')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
