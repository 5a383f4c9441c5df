"""A stand-in for kernels/aot.py's compile_variant, for the interrupt test in tests/test_kernels_aot.py.

Its first variants "compile" at once; the rest run a child process, as Triton runs ptxas, that
would take a minute, and write a temporary file where ptxas would (the worker's TMPDIR). Each
child's pid is written to $AOT_TEST_PIDS, so the test can check that none outlives the sweep.
"""

import os
import subprocess
import tempfile
import time
from pathlib import Path

QUICK = 3  # variants that finish at once (per worker), so that the cache has something to keep


def slow_compile(variant):
    start = time.perf_counter()
    marks = Path(os.environ["AOT_TEST_PIDS"])
    done = len(list(marks.glob("quick-*")))
    if done < QUICK:
        (marks / f"quick-{os.getpid()}-{time.monotonic_ns()}").touch()
        result = dict(compiled=True, registers=32, spill_bytes=0, shared_bytes=0)
        return variant, result, time.perf_counter() - start
    with tempfile.NamedTemporaryFile(prefix="ptxas-", delete=False):  # left behind if the worker is killed
        pass
    child = subprocess.Popen(["sleep", "60"])
    (marks / f"child-{child.pid}").touch()
    child.wait()
    return variant, dict(compiled=True, registers=32, spill_bytes=0, shared_bytes=0), time.perf_counter() - start
