"""One command that checks and measures every GPU path of minirm, in at most 8 minutes on an H200.

    python -m benchmarks.gpu --out DIR [--sections env,kernels,...] [--dry-run]

Sections, in the order they run (each in a process of its own, with its own time budget: it
starts no new case once the budget is spent, and is killed, with its workers, shortly after; a
failure, a crash or a hung kernel costs that section only):

  env           the GPU, its driver, torch / triton / transformers versions, and the machine's
                own ceilings: an 8192^3 bf16 matmul in TFLOP/s, a device-to-device copy in TB/s
                (bytes read + written). Later throughputs are also given as a share of these.
  kernels       varlen_attention and disentangled_attention, compiled, forward and backward, on a
                ragged batch, against their references on fp64 copies of the inputs: relative error
                |out - ref| / |ref| of the output and every gradient, against a threshold per dtype;
                varlen_attention with grouped K/V heads at a Qwen3-0.6B layer's shape (16 query heads,
                8 K/V heads of 128, causal, bf16) against SDPA with enable_gqa.
                Outputs are poisoned with NaN before each call, DeBERTa's dropout is checked with the
                kernel's own draws. Then the CUDA-only tests (pytest -k compiled_kernels_on_gpu).
  kernel-speed  varlen_attention TFLOP/s, forward and forward + backward, head dims 64 and 128,
                512 to 16k tokens per sequence, 16k tokens per batch, causal and not, against SDPA's
                flash backend; on hh-rlhf pair-length batches against SDPA padded with a mask;
                disentangled_attention at deberta-v2-xxlarge's shape against SDPA with the bias as a
                mask, time and peak memory; grouped-query attention at the Qwen3 layer's shape
                against SDPA with enable_gqa and against the kernel with K/V repeated per query
                head. First calls (compile, autotune) are timed apart.
  scoring       pairs/s of minirm's Scorer (packed, attention on the kernel) against transformers on
                the same random weights and token ids, bert-base-cased, roberta-base, gpt2 and
                deberta-v2-xxlarge (1.5B), bf16 then fp32; the scores' largest difference, peak memory.
  training      steps/s of minirm's pairwise training loop on bert-base against a plain transformers
                loop; ten steps of the oa-deberta recipe (fp16, gradient checkpointing, K-wise rank
                loss) on the 1.5B model: step time, peak memory, finite losses.
  server        score.py --serve on the GPU under 32 concurrent clients, against offline scoring.
  candidates    only when named (--sections candidates), as a second command: snapshots of the
                kernel files (in .candidates/, carried with the tree) against the current ones
                with the same tiles, each checked before it is timed: the varlen forward config
                by config beside SDPA flash, DeBERTa's forward and backward at xxlarge's shape.
                benchmarks/gpu_candidates.py says how to take a snapshot.

Results, written after every section (atomically): DIR/gpu.json (the command, date, device,
versions, and one object per section: name, ok, seconds, figures, error, plus what was cut for
time and notes), DIR/gpu.md (the same as tables) and DIR/*.png plots (with matplotlib).
--sections reruns some sections and merges them into DIR/gpu.json. The exit status is 0 when
every section that ran is ok. Progress goes to stderr.

--dry-run runs every section at tiny sizes on CPU, with the kernels in Triton's interpreter
(TRITON_INTERPRET=1, set before anything imports triton): the same code paths, meaningless
figures, about 40 s on two cores (after env the sections run side by side: they time nothing).
CI runs it (tests/test_gpu_command.py). benchmarks/gpu_context.py explains the compile warm-ups
that keep Triton's compiling and autotuning inside the budgets on the GPU.

On the GPU machine (no network; minirm not installed: it runs from the clone's root): carry the
server's wheels, made here with `bash benchmarks/gpu_wheels.sh` into .whl/, and run

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH; PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu --out $OUT

The hh-rlhf pair lengths come from benchmarks/data/hh_rlhf_lengths.json (python -m
benchmarks.gpu_lengths made it). Scratch files (checkpoints, partial results) go to a work folder
outside DIR (/dev/shm when it has room; gpu.json's "work" names it), so that nothing large lands
in DIR. It is kept, so that a rerun reuses the checkpoints; delete it when done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.gpu_context import ROOT, log, read_json, write_json


@dataclass(frozen=True)
class Section:
    name: str
    budget_s: float  # on the H200; the section stops starting new cases once it is spent
    function: str  # module:function, imported in the section's own process
    about: str
    default: bool = True  # runs without --sections; False: only when named


SECTIONS = {s.name: s for s in [
    Section("env", 15, "benchmarks.gpu_kernels:env", "device, versions, matmul and copy ceilings"),
    Section("kernels", 105, "benchmarks.gpu_kernels:kernels",
            "kernel outputs and gradients vs fp64 reference; CUDA tests"),
    Section("kernel-speed", 125, "benchmarks.gpu_kernels:kernel_speed", "kernel TFLOP/s vs SDPA flash / padded / bias"),
    Section("scoring", 105, "benchmarks.gpu_models:scoring", "Scorer pairs/s vs transformers, 4 models, bf16 + fp32"),
    Section("training", 80, "benchmarks.gpu_models:training",
            "training steps/s vs transformers; oa-deberta recipe on 1.5B"),
    Section("server", 40, "benchmarks.gpu_models:server", "score.py --serve, 32 clients, vs offline"),
    Section("candidates", 150, "benchmarks.gpu_candidates:candidates_section",
            "kernel versions (.candidates/) beside the current ones; only when named", default=False),
]}
# A section gets its budget, then this much more before it is killed (a case in progress cannot
# be interrupted between CUDA kernels): 10 s + 5 %. The default sections' budgets add up to 470 s;
# with every grace spent, 553 s: under the 10 minutes one command may run on the GPU machine.
# candidates (not in the default run) is a second command of its own.
GRACE_S, GRACE_SHARE = 10, 0.05
# a dry run's sections may take this many times their GPU limit: they run side by side on a CPU
# (with CI's other test environment beside them) and measure nothing
DRY_RUN_SLACK = 4
PROG = "python -m benchmarks.gpu"


def usage_error(message: str):
    """A mistake in the command line: one line and exit status 2, before any work starts."""
    print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors too: one line, not usage + line
        usage_error(message)


def parse_args(argv=None):
    names = ", ".join(SECTIONS)
    epilog = "sections (budget on the H200):\n" + "\n".join(
        f"  {s.name:<13} {s.budget_s:>4.0f} s  {s.about}" for s in SECTIONS.values())
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json, gpu.md and the plots")
    defaults = ",".join(s.name for s in SECTIONS.values() if s.default)
    parser.add_argument("--sections", default=defaults,
                        help=f"comma-separated sections to run, merged into an existing DIR/gpu.json "
                             f"(default: {defaults}; choose from {names})")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on CPU, kernels in Triton's interpreter: checks that the script works")
    parser.add_argument("--fail-section", help=argparse.SUPPRESS)  # tests: that section raises at its start
    parser.add_argument("--_section", help=argparse.SUPPRESS)  # internal: run one section in this process
    parser.add_argument("--_worker", help=argparse.SUPPRESS)  # internal: one worker of a section
    parser.add_argument("--_work", type=Path, help=argparse.SUPPRESS)  # internal: the scratch folder
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        usage_error(f"unknown section {unknown[0]!r}; choose from {names}")
    if not wanted:
        usage_error(f"--sections is empty; choose from {names}")
    args.selected = [name for name in SECTIONS if name in wanted]  # in their order: env's ceilings first
    return args


# --------------------------------------------------------------------------------------------------
# The parent: one process per section, results merged and written after each
# --------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton, here and in every child
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # side-by-side sections: one thread each, no oversubscription
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args._section or args._worker:
        return run_child(args)
    out = args.out
    if out.exists() and not out.is_dir():
        usage_error(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    report = read_json(out / "gpu.json") if (out / "gpu.json").exists() else {}
    if report is None:
        usage_error(f"{out / 'gpu.json'} is not valid JSON; delete it or choose another --out")
    if not args.dry_run and not has_cuda():
        usage_error("no CUDA GPU here; rehearse with --dry-run")
    work = work_folder(out)
    command = " ".join([PROG] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    report.update(machine_facts(args.dry_run))
    report.update(command=command, date=now(), dry_run=args.dry_run, work=str(work))
    start = time.monotonic()
    log(f"[gpu] {command}: {', '.join(args.selected)}; work folder {work}")
    for wave in waves(args.selected, args.dry_run):
        runs = [SectionRun(SECTIONS[name], args, out, work) for name in wave]
        while runs:
            finished = next((run for run in runs if run.done()), None)
            if finished is None:
                time.sleep(0.1)
                continue
            runs.remove(finished)
            record = finished.record()
            record.update(command=command, ran_at=now(), dry_run=args.dry_run)
            merge(report, record)
            write_report(out, report, record["name"])
            status = "ok" if record["ok"] else f"NOT OK: {record['error']}"
            log(f"[gpu] {record['name']}: {status} in {record['seconds']:.1f} s "
                f"(total {time.monotonic() - start:.0f} s)")
    ran = [s for s in report["sections"] if s["name"] in args.selected]
    return 0 if all(s["ok"] for s in ran) else 1


def waves(selected: list[str], dry_run: bool) -> list[list[str]]:
    """Which sections run together. On the GPU one at a time, in order: they time things. A dry run
    times nothing, so after env (whose ceilings the others read) the rest run side by side: on two
    cores it takes half as long."""
    if not dry_run:
        return [[name] for name in selected]
    rest = [name for name in selected if name != "env"]
    return ([["env"]] if "env" in selected else []) + ([rest] if rest else [])


class SectionRun:
    """A section in a process group of its own (its workers, pytest and the server inside it), killed
    with all of them once its budget and grace are spent."""

    def __init__(self, section: Section, args, out: Path, work: Path):
        self.section = section
        self.partial = work / "sections" / f"{section.name}.json"
        self.partial.unlink(missing_ok=True)
        command = [sys.executable, "-m", "benchmarks.gpu", "--out", str(out), "--_work", str(work),
                   "--_section", section.name] + (["--dry-run"] if args.dry_run else [])
        if args.fail_section:
            command += ["--fail-section", args.fail_section]
        self.limit = section.budget_s * (1 + GRACE_SHARE) + GRACE_S
        if args.dry_run:  # the budgets are the GPU's; a rehearsal shares two busy cores and times nothing
            self.limit *= DRY_RUN_SLACK
        self.start = time.monotonic()
        self.killed = False
        log(f"[gpu] {section.name}: start (budget {section.budget_s:.0f} s)")
        self.process = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def done(self) -> bool:
        if self.process.poll() is None and time.monotonic() - self.start > self.limit:
            self.killed = True
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.poll() is None:
            return False
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # anything it left running
        except ProcessLookupError:
            pass
        return True

    def record(self) -> dict:
        """What the section saved, with the parent's view of how it ended."""
        record = read_json(self.partial) or {"name": self.section.name, "ok": False, "figures": {}, "cut": [],
                                             "notes": [], "failures": [], "error": None}
        record.update(seconds=round(time.monotonic() - self.start, 1), budget_s=self.section.budget_s)
        status = self.process.returncode
        if self.killed:
            record.update(ok=False, error=f"killed after {self.limit:.0f} s (budget {self.section.budget_s:.0f} s "
                                          "+ grace); the figures measured until then are kept")
        elif status != 0 and record.get("error") is None:
            record.update(ok=False, error=f"the section's process exited with status {status}"
                                          + ("" if self.partial.exists() else " before writing any result"))
        elif not record["ok"] and record.get("error") is None:
            failures = record.get("failures") or ["not ok"]
            record["error"] = f"{len(failures)} failed: " + "; ".join(failures)[:400]
        return record


def merge(report: dict, record: dict) -> None:
    """Replace the section's record, keeping the others, in the order of SECTIONS."""
    others = [s for s in report.get("sections", []) if s.get("name") != record["name"] and s.get("name") in SECTIONS]
    order = list(SECTIONS)
    report["sections"] = sorted(others + [record], key=lambda s: order.index(s["name"]))


def write_report(out: Path, report: dict, changed: str) -> None:
    from benchmarks.gpu_report import markdown, plot

    report["plots"] = {**report.get("plots", {}), **plot(out, report, changed)}
    write_json(out / "gpu.json", report)
    tmp = out / ".gpu.md.tmp"
    tmp.write_text(markdown(report), encoding="utf-8")
    os.replace(tmp, out / "gpu.md")


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def work_folder(out: Path) -> Path:
    """Scratch space outside DIR: RAM-backed /dev/shm when it has 32 GiB free (the checkpoints are
    ~10 GB), the temp folder otherwise. Kept between runs, so that a rerun reuses the checkpoints."""
    base = Path("/dev/shm")
    if not (base.is_dir() and os.access(base, os.W_OK) and shutil.disk_usage(base).free > 32 * 2**30):
        base = Path(tempfile.gettempdir())
    tag = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]
    work = base / f"minirm-gpu-{os.getuid()}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    return work


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine_facts(dry_run: bool) -> dict:
    """What the parent learns without importing torch: versions, nvidia-smi, the git commit."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("torch", "triton", "transformers", "tokenizers", "safetensors", "numpy", "fastapi", "uvicorn",
                 "pydantic", "matplotlib"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    device = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if not dry_run and shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
        if query.returncode == 0 and query.stdout.strip():
            name, driver, memory = [part.strip() for part in query.stdout.splitlines()[0].split(",")]
            device.update(gpu=name, driver=driver, gpu_memory=memory)
    git = {}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            git = {"commit": head.stdout.strip(), "uncommitted_changes": bool(dirty.stdout.strip())}
    except OSError:
        pass
    return {"device": device, "versions": versions, "git": git or None}


# --------------------------------------------------------------------------------------------------
# A child: one section, or one worker of a section
# --------------------------------------------------------------------------------------------------
def run_child(args) -> int:
    import importlib
    import traceback

    from benchmarks.gpu_context import Context, first_line, run_worker

    if args._worker:
        spec = json.loads(args._worker)
        ctx = Context(spec["section"], args.out, args._work, args.dry_run, float("inf"), worker=spec)
        return run_worker(ctx, spec)
    section = SECTIONS[args._section]
    ctx = Context(section.name, args.out, args._work, args.dry_run, section.budget_s)
    ctx.save()
    try:
        if args.fail_section == section.name:
            raise RuntimeError("failure injected by --fail-section")
        module, function = section.function.split(":")
        getattr(importlib.import_module(module), function)(ctx)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: the record says what stopped it
        traceback.print_exc()
        ctx.record.update(ok=False, error=first_line(error), traceback=traceback.format_exc()[-4000:])
    ctx.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
