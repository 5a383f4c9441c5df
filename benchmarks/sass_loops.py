"""What one iteration of a kernel's key loop costs in SASS, compiled for a GPU target without a GPU.

    python -m benchmarks.sass_loops [--kernel forward] [--head-dim 64] [--dtype bf16] [--causal]
                                    [--arch sm_90] [--configs 128x64x4x3,...] [--candidate .candidates/NAME.py]
                                    [--no-fp-fusion] [--json]

Triton compiles the kernel (kernels/aot.py's signatures), cuobjdump disassembles the cubin, and
every backward branch marks a loop: its body is the instructions from the branch target to the
branch. The varlen kernels run two loops per program, the interior blocks (no masks, software
pipelined) and the masked edge, so two loop rows per config. For each: instructions per
iteration (one warp's), and the counts that decide the forward's speed on Hopper:

* HGMMA / HMMA   the tensor-core work (wgmma on sm_90 for 64-row warpgroup tiles, mma.sync else);
* MUFU           special-function ops: ex2 of every probability (16 per clock per SM on H100);
* FMUL FADD FFMA FMNMX FSEL   the fp32 softmax arithmetic, which competes for issue slots;
* LDGSTS / UTMALDG   cp.async or TMA loads;
* ATOMG / REDG / MEMBAR   atomics that return a value, fire-and-forget reductions, memory fences
                 (DeBERTa's backward scatters its relative-table gradients with atomics).

--candidate compiles a snapshot of kernels/attention.py (benchmarks/gpu_candidates.py takes
them from git) beside the current kernel, so that a change's effect on the loop is read before a
GPU times it. --no-fp-fusion compiles as Triton does with TRITON_DEFAULT_FP_FUSION=0, the
default it announces for 3.10 (no mul + add contraction into FFMA). Figures are per warp and per
loop iteration; what they predict for speed is in kernels/attention.py's design notes.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHOWN = ["HGMMA", "HMMA", "MUFU", "FMUL", "FADD", "FFMA", "FMNMX", "FSEL", "LDGSTS", "UTMALDG", "ATOMG", "REDG",
         "MEMBAR"]
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+((?:@!?U?P\w+\s+)?)([A-Z][A-Z0-9_.]*)([^;]*);")


def sass_lines(cubin: bytes) -> list[str]:
    """The instruction lines of a cubin's SASS (cuobjdump from Triton's wheel)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([str(tool), "-sass", file.name], capture_output=True, text=True, check=True).stdout
    return [line for line in text.splitlines() if _INSTRUCTION.search(line)]


def loops(lines: list[str]) -> list[collections.Counter]:
    """Opcode counts (without modifiers) of each loop body, in the order the loops appear."""
    instructions = []
    for line in lines:
        match = _INSTRUCTION.search(line)
        instructions.append((int(match.group(1), 16), match.group(3).split(".")[0], match.group(4)))
    bodies = []
    for address, opcode, operands in instructions:
        target = re.search(r"0x([0-9a-f]+)", operands) if opcode == "BRA" else None
        if target and int(target.group(1), 16) < address:
            start = int(target.group(1), 16)
            bodies.append(collections.Counter(op for at, op, _ in instructions if start <= at <= address))
    # the loops that hold tensor-core work: the key (query) loops. The kernels are compiled as
    # launched without grouped-query attention, so no loop over heads encloses them.
    return [body for body in bodies if body["HGMMA"] or body["HMMA"]]


def loop_name(body: collections.Counter) -> str:
    """The masked edge loop selects with its mask (FSEL); the interior loop has no mask."""
    return "edge" if body["FSEL"] else "interior"


def compile_variant(function, kernel: str, arch: str, head_dim: int, dtype: str, causal: bool, config, fp_fusion: bool):
    """(registers, spill bytes, shared bytes, SASS lines) of one variant of `function` (kernel's signature)."""
    from minirm.kernels import aot

    block_m, block_n, num_warps, num_stages = config
    variant = dict(kernel=kernel, arch=arch, head_dim=head_dim, dtype=dtype, causal=causal, BLOCK_M=block_m,
                   BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages)
    compiled = aot.compile_kernel(function, variant, enable_fp_fusion=fp_fusion)
    registers, spill = aot._resource_usage(compiled.asm["cubin"])
    return registers, spill, int(compiled.metadata.shared), sass_lines(compiled.asm["cubin"])


def parse_config(text: str):
    try:
        block_m, block_n, warps, stages = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write a config as BLOCK_MxBLOCK_NxWARPSxSTAGES, e.g. 128x64x4x3")
    return block_m, block_n, warps, stages


def main(argv=None) -> int:
    from minirm.kernels import aot

    parser = argparse.ArgumentParser(prog="python -m benchmarks.sass_loops", description=__doc__.split("\n\n")[0])
    kernels = [name for name in aot.kernel_functions() if name != "backward_preprocess"]
    parser.add_argument("--kernel", default="forward", choices=kernels, metavar="KERNEL",
                        help="a kernel by its compile-report name: forward, backward_dkdv, backward_dq (and _gqa), "
                             "deberta_forward, deberta_backward_dkdv, ... (default: forward)")
    parser.add_argument("--head-dim", type=int, default=64, choices=[16, 32, 64, 128])
    parser.add_argument("--dtype", default="bf16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--arch", default="sm_90", choices=sorted(aot.ARCHS))
    parser.add_argument("--configs", type=lambda text: [parse_config(part) for part in text.split(",")],
                        help="BLOCK_MxBLOCK_NxWARPSxSTAGES, comma-separated (default: the kernel's own list)")
    parser.add_argument("--candidate", type=Path, help="a snapshot of kernels/attention.py to compile beside it")
    parser.add_argument("--no-fp-fusion", action="store_true", help="compile without mul + add contraction")
    parser.add_argument("--json", action="store_true", help="one JSON object per loop instead of the table")
    args = parser.parse_args(argv)
    if args.candidate and args.kernel not in ("forward", "backward_dkdv", "backward_dq"):
        parser.error(f"--candidate snapshots kernels/attention.py: --kernel {args.kernel} is not one of its kernels")
    if args.candidate and not args.candidate.is_file():
        parser.error(f"--candidate {args.candidate}: no such file (python -m benchmarks.gpu_candidates list)")

    versions = {"current": aot.kernel_functions()[args.kernel]}
    if args.candidate:
        from benchmarks.gpu_candidates import load

        module = load(args.candidate.stem, args.candidate)
        names = {"forward": "_attention_forward_kernel", "backward_dkdv": "_attention_backward_dkdv_kernel",
                 "backward_dq": "_attention_backward_dq_kernel"}
        versions[args.candidate.stem] = getattr(module, names[args.kernel])
    configs = args.configs or aot.kernel_configs()[args.kernel]
    import triton

    if not args.json:
        print(f"command: python -m benchmarks.sass_loops {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
        print(f"{args.kernel}, head dim {args.head_dim}, {args.dtype}, {'causal' if args.causal else 'non-causal'}, "
              f"{args.arch}, triton {triton.__version__}, fp fusion {'off' if args.no_fp_fusion else 'on'}; "
              "instructions per warp and loop iteration (the interior loop and the masked edge)\n")
        print(f"| config | version | registers / spill | shared | loop | instructions | {' | '.join(SHOWN)} |")
        print("|---|---|---|---:|---|---:|" + "---:|" * len(SHOWN))
    for config in configs:
        for name, function in versions.items():
            registers, spill, shared, lines = compile_variant(function, args.kernel, args.arch, args.head_dim,
                                                              args.dtype, args.causal, config, not args.no_fp_fusion)
            label = "x".join(map(str, config))
            for body in loops(lines):
                which = loop_name(body)
                if args.json:
                    print(json.dumps(dict(config=label, version=name, registers=registers, spill_bytes=spill,
                                          shared_bytes=shared, loop=which, instructions=sum(body.values()),
                                          **{op: body[op] for op in SHOWN})), flush=True)
                    continue
                counts = " | ".join(str(body[op]) for op in SHOWN)
                print(f"| {label} | {name} | {registers} / {spill} | {shared} | {which} | {sum(body.values())} | "
                      f"{counts} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
