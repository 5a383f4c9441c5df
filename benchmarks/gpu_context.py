"""What every section of python -m benchmarks.gpu works with: its `Context`.

A section runs in a process of its own (benchmarks/gpu.py starts it). The Context holds its
time budget, the device, the figures it has measured so far (saved after every case, so that
a section killed for time still reports what it got), and the helpers all sections share:
timers, peak memory, the caching-allocator poison, shares of the machine's ceilings, and
worker processes for the work that runs in parallel.

Why worker processes: Triton compiles each kernel config the first time it runs, about a
second each, one at a time, and the autotuner runs every clean config of a kernel for every
new (head dim, causal, length bucket, dtype) and argument specialisation (Triton specialises
integer arguments divisible by 16 or equal to 1). A section meets a few hundred of these. So
a section that would otherwise compile for minutes first runs a *compile warm-up*: its own
cases, in parallel worker processes that launch each config once without timing it (worker w
compiles config w % 8 of every kernel) and write the binaries to Triton's on-disk cache. The
section then runs its cases for real, one at a time: the autotuner still times every config,
but each compile is a cache read. The kernels section's correctness cases need no timing at
all, so its workers are the real run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The most clean configs any autotuned kernel offers (kernels/attention.py _FORWARD_BLOCKS):
# warm-up worker w compiles config w % WARM_CONFIGS of every kernel.
WARM_CONFIGS = 8


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")[:400]


def plain(value):
    """value with every NaN or infinity spelled as a string ("nan", "inf"): strict JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def write_json(path: Path, data) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plain(data), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Context:
    """One section's run: budget, device, figures; or one worker's share of a section's units."""

    def __init__(self, section: str, out: Path, work: Path, dry_run: bool, budget_s: float, worker: dict | None = None):
        import torch

        self.section, self.out, self.work, self.dry_run = section, out, work, dry_run
        self.worker = worker  # None in the section's own process
        self.warming = bool(worker and worker["warm"])
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.record = {"name": section, "ok": True, "figures": {}, "cut": [], "notes": [], "failures": [],
                       "error": None}
        env = next((s for s in (read_json(out / "gpu.json") or {}).get("sections", []) if s.get("name") == "env"), None)
        self.ceilings = env["figures"] if env and env.get("ok") and env.get("dry_run") == dry_run else {}

    # --- the record --------------------------------------------------------------------------------
    @property
    def figures(self) -> dict:
        return self.record["figures"]

    def note(self, text: str) -> None:
        if text not in self.record["notes"]:
            self.record["notes"].append(text)

    def fail(self, text: str) -> None:
        self.record["ok"] = False
        self.record["failures"].append(text)

    def save(self) -> None:
        if self.worker is None:
            self.record["seconds"] = round(time.monotonic() - self.started, 2)
            write_json(self.work / "sections" / f"{self.section}.json", self.record)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def each(self, group: str, cases: list, run, label=str) -> list:
        """run(case) for each case while the budget lasts, its row(s) appended to figures[group]
        and saved at once. A case that raises becomes a row with its error (the section is then
        not ok) and the next case runs; once the budget is spent the rest are listed as cut."""
        rows = self.figures.setdefault(group, [])
        for case in cases:
            name = f"{group}: {label(case)}"
            if self.time_left() <= 0:
                self.record["cut"].append(name)
                continue
            start = time.monotonic()
            try:
                result = run(case)
            except Exception as error:  # one case's failure is a row of the report, not the end of the section
                traceback.print_exc()
                result = {"case": label(case), "error": first_line(error)}
                self.fail(f"{name}: {first_line(error)}")
            rows.extend(result if isinstance(result, list) else [result])
            log(f"  {self.section}: {name} ({time.monotonic() - start:.1f} s, {self.time_left():.0f} s left)")
            self.save()
        return rows

    # --- timing and memory ----------------------------------------------------------------------------
    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn) -> float:
        """Seconds of one call of fn, the device synchronised before and after."""
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def bench_ms(self, fn, grad_to_none=()) -> float | None:
        """Median milliseconds per call: triton.testing.do_bench on the GPU (25 ms warm-up, 100 ms
        of calls, the L2 cache flushed between them), one timed call on CPU (the dry run: the
        figure means nothing there). None while warming up."""
        if self.warming:
            fn()
            return None
        if self.device.type == "cuda":
            import triton.testing

            return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=list(grad_to_none) or None,
                                           return_mode="median")
        for tensor in grad_to_none:
            tensor.grad = None
        return 1e3 * self.timed(fn)

    def peak_mib(self, fn) -> float | None:
        """MiB allocated at the peak of one fn() beyond what was allocated before it (CUDA only)."""
        import torch

        if self.device.type != "cuda" or self.warming:
            return None
        self.sync()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    def share(self, value: float | None, ceiling: str = "matmul_tflops") -> float | None:
        """value as a share of the env section's ceiling (None without an env section of this mode)."""
        top = self.ceilings.get(ceiling)
        return None if value is None or not top else value / top

    def poison(self, nbytes: list[int], copies: int = 4) -> bool | None:
        """Fill `copies` blocks of each size with 0xFF bytes (NaN in fp16, bf16 and fp32) and free them:
        the CUDA caching allocator keeps them and hands them out again, so the torch.empty of a kernel
        wrapper that asks for one of these sizes gets NaN, and a tile the kernel forgets to write
        stays NaN. Returns whether a fresh torch.empty of the first size came back poisoned; None on
        CPU, where freed memory is not kept like that (the check then rests on the reference)."""
        import torch

        if self.device.type != "cuda":
            return None
        blocks = [torch.full((n,), 255, dtype=torch.uint8, device=self.device) for n in nbytes for _ in range(copies)]
        del blocks
        probe = torch.empty(nbytes[0], dtype=torch.uint8, device=self.device)
        return bool((probe == 255).all())

    # --- worker processes -----------------------------------------------------------------------------
    def parallel(self, function, units: int, warm: bool, jobs: int | None = None, timeout_s: float | None = None):
        """function(ctx, index) for index in range(units), in worker processes; returns the results
        in index order (None for a unit whose worker did not finish).

        With warm=True this is the compile warm-up: worker w forces config w % WARM_CONFIGS of every
        autotuned kernel and runs the units of its slice once, untimed. Otherwise the workers share
        the units out and run them for real."""
        if units == 0:
            return []
        if warm and self.dry_run:
            return self._dry_warm_up(function, units)
        cpus = os.cpu_count() or 1
        jobs = jobs or (1 if self.dry_run else cpus)
        configs = min(WARM_CONFIGS, jobs) if warm and not self.dry_run else 1
        slices = max(1, min(units, jobs // configs))
        name = f"{function.__module__}:{function.__name__}"
        folder = self.work / "workers" / f"{self.section}-{function.__name__}"
        for stale in folder.glob("*.json"):
            stale.unlink()
        start = time.monotonic()
        processes = []
        for w in range(configs * slices):
            spec = dict(function=name, section=self.section, worker=w, slices=slices, configs=configs, units=units,
                        warm=warm, folder=str(folder))
            command = [sys.executable, "-m", "benchmarks.gpu", "--out", str(self.out), "--_work", str(self.work),
                       "--_worker", json.dumps(spec)] + (["--dry-run"] if self.dry_run else [])
            processes.append(subprocess.Popen(command, cwd=ROOT))
        timeout_s = self.time_left() if timeout_s is None else timeout_s
        for process in processes:
            try:
                process.wait(timeout=max(1.0, start + timeout_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        results = [None] * units
        for part in folder.glob("*.json"):
            for index, result in (read_json(part) or {}).items():
                results[int(index)] = result
        done = sum(result is not None for result in results)
        what = "compile warm-up" if warm else "parallel run"
        self.figures.setdefault("workers", {})[function.__name__] = dict(
            kind=what, processes=len(processes), units=units, finished=done, seconds=round(time.monotonic() - start, 1))
        if done < units:
            self.note(f"{what} of {function.__name__}: {units - done} of {units} units did not finish in "
                      f"{timeout_s:.0f} s")
        errors = [result["error"] for result in results if result and "error" in result]
        if warm and errors:  # the section's own run will meet the error again, or compile what was missed
            self.note(f"compile warm-up of {function.__name__}: {len(errors)} units failed, first: {errors[0]}")
        log(f"  {self.section}: {what} of {function.__name__}, {units} units in {len(processes)} processes: "
            f"{time.monotonic() - start:.1f} s")
        return results

    def _dry_warm_up(self, function, units: int) -> list:
        """A dry run compiles nothing (the kernels are interpreted), so its warm-up only walks the
        warm-up's code once: unit 0, here, untimed, instead of a process per config. An error here
        is the section's (where on the GPU it would only be a note): the dry run is there to find it."""
        start = time.monotonic()
        self.warming = True
        try:
            result = function(self, 0)
        finally:
            self.warming = False
        self.figures.setdefault("workers", {})[function.__name__] = dict(
            kind="compile warm-up (dry run: unit 0, in this process)", processes=0, units=units, finished=1,
            seconds=round(time.monotonic() - start, 1))
        return [result] + [None] * (units - 1)


def run_worker(ctx: Context, spec: dict) -> int:
    """A worker's life: its slice of the units, each result saved as soon as it is known."""
    import importlib

    module, name = spec["function"].split(":")
    function = getattr(importlib.import_module(module), name)
    if spec["warm"] and not ctx.dry_run:
        compile_one_config(spec["worker"] % spec["configs"])
    results = {}
    mine = range(spec["worker"] // spec["configs"], spec["units"], spec["slices"])
    for index in mine:
        try:
            result = function(ctx, index)
            results[index] = {} if result is None else result  # a warm-up unit returns nothing: done
        except Exception as error:
            traceback.print_exc()
            results[index] = {"error": first_line(error)}
        write_json(Path(spec["folder"]) / f"worker-{spec['worker']}.json", results)
    return 0


def compile_one_config(index: int) -> None:
    """Make every Triton autotuner in this process run only its index-th clean config (modulo how
    many it has), once and untimed: what it launches is compiled into Triton's disk cache."""
    from triton.runtime.autotuner import Autotuner

    prune = Autotuner.prune_configs

    def one_config(self, kwargs):
        configs = prune(self, kwargs)
        return [configs[index % len(configs)]]

    def run_once(kernel_call, quantiles=None, **_):
        kernel_call()
        return [0.0, 0.0, 0.0] if quantiles else 0.0

    Autotuner.prune_configs = one_config
    Autotuner.do_bench = property(lambda self: run_once)

