"""Compile report: every attention kernel variant compiled for sm_80 and sm_90, no GPU needed.

    python -m minirm.kernels.aot [--arch sm_80,sm_90] [--json] [--jobs N] [--no-cache] [--write-table]

Triton compiles for a GPU target without a device: ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32))`` runs TTIR -> TTGIR -> LLVM IR -> PTX -> cubin, with the
ptxas that ships in ``triton/backends/nvidia/bin``. The ``cuobjdump`` next to it reads the
cubin's resource usage; this module turns that into one row per variant:

    kernel, arch, head_dim, dtype, causal, BLOCK_M, BLOCK_N, num_warps, num_stages,
    compiled, registers, spill_bytes, shared_bytes, autotune

* ``registers``: REG per thread (255 is the ceiling: at 255 the register allocator is out of
  room and usually spills).
* ``spill_bytes``: STACK + LOCAL bytes per thread. Both are local memory, i.e. spilled
  registers (the kernels call no non-inlined functions, so the stack holds nothing else).
* ``shared_bytes``: the dynamic shared memory the launch asks for (Triton's ``shared``
  metadata: the tile buffers of the software pipeline and the layout conversions). This is the
  number the driver compares with the per-block limit (sm_80 163 KB, sm_90 227 KB, opt-in).
  cuobjdump's SHARED column only shows 1 KB of static shared memory, whatever the tiles.
* ``autotune``: whether the autotuner may pick this config on that architecture, i.e. what
  ``minirm.kernels.attention`` prunes with (the committed table in ``kernels/compile_report/``
  that ``compile_table.choose`` picks for the running Triton).
* a variant of ``backward_preprocess`` has no causal flag and no BLOCK_N (null in JSON);
  its BLOCK_M is its token block.
* the forward, dK/dV and dQ varlen kernels appear twice: under their names as a launch without
  grouped-query attention compiles them (Triton specialises ``group_size == 1`` to a constant),
  and as ``forward_gqa``, ``backward_dkdv_gqa``, ``backward_dq_gqa`` as a grouped launch does
  (``group_size`` a runtime value); a launch prunes with the rows of its own kind
  (``minirm.kernels.attention.table_name``).

A variant is one kernel x head dim x dtype x causal x autotune config x architecture: exactly
what the package can launch on a GPU. Compiling takes 1-10 s per variant, so the sweep runs in
a process pool (``--jobs``, default: all cores) and every result is cached in a JSON file
(``~/.cache/minirm/aot-cache.json``; ``$XDG_CACHE_HOME`` is honoured) keyed by a hash of the
kernel's source (its @triton.jit function and the helpers and constants it uses), the variant and
the Triton version: a warm sweep takes about a second, a cold one of every kernel (~4,000 variants)
well over an hour on two cores. Editing a kernel recompiles its variants only (editing a shared helper,
those of every kernel that uses it); adding a config compiles only its variants.

Stopping: Ctrl-C (or SIGTERM) stops the sweep at once, with one line, exit status 130 (143).
The workers ignore the terminal's Ctrl-C and run in process groups of their own, so the parent
kills each group (the worker and the ptxas it is running) and removes the scratch folder they
shared (``$TMPDIR/minirm-aot-triton-pidN-*``: Triton's cache and the compilers' temporary files,
60-95 MB); what was compiled is in the cache, and the same command continues from there. A
scratch folder left by a run that was killed outright is removed by the next run.

``--write-table`` writes ``kernels/compile_report/triton-<version>.json`` for the running Triton
from a sweep of every kernel (on every architecture, or those given with ``--arch``): the figures
behind the per-architecture pruning in ``minirm.kernels.attention``, stamped with each kernel's
source hash (``source_hashes``, by report name). The rows of the table it replaces whose kernel's
hash still matches are kept as they are; only the variants of kernels whose source changed (or
that the table lacks: a new config, an architecture) are compiled, so an edit to the varlen
kernels does not recompile DeBERTa's. kernels/compile_table.py says which table a launch prunes
with, and tests/test_kernels_aot.py checks that every table is current and, for the running
Triton, truthful.
"""

import argparse
import hashlib
import inspect
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

ARCHS = {"sm_80": 80, "sm_90": 90}
# Largest dynamic shared memory one block may opt into (cudaFuncAttributeMaxDynamicSharedMemorySize).
SHARED_LIMITS = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}
DTYPES = ("fp16", "bf16", "fp32")
# DeBERTa's kernels (kernels/deberta.py) are never causal. Which relative terms they add, and
# attention dropout, are compile-time flags, so each set is a kernel of its own in the report:
# "deberta_forward" adds both terms (every published DeBERTa-v2/v3 reward model: pos_att_type
# "p2c|c2p"), "deberta_forward_c2p" and "_p2c" one each, "deberta_forward_dropout" both terms with
# attention dropout (training such a model). Names: minirm.kernels.deberta.table_name.
DEBERTA_FLAGS = {"": (True, True, False), "_c2p": (True, False, False), "_p2c": (False, True, False),
                 "_dropout": (True, True, True)}  # name suffix: (HAS_C2P, HAS_P2C, DROPOUT)
DEBERTA_KERNELS = tuple(f"deberta_{kernel}{suffix}" for kernel in ("forward", "backward_dkdv", "backward_dq")
                        for suffix in DEBERTA_FLAGS)
# The varlen kernels twice: as a launch without grouped-query attention compiles them (Triton turns
# group_size == 1 into a constant, and the dK/dV loop over the group into one iteration), and, with
# _gqa, as a grouped launch does (group_size a runtime value). minirm.kernels.attention.table_name.
VARLEN_GQA_KERNELS = ("forward_gqa", "backward_dkdv_gqa", "backward_dq_gqa")
KERNELS = ("forward", "backward_preprocess", "backward_dkdv", "backward_dq") + VARLEN_GQA_KERNELS + DEBERTA_KERNELS
FIELDS = ("kernel", "arch", "head_dim", "dtype", "causal", "BLOCK_M", "BLOCK_N", "num_warps", "num_stages",
          "compiled", "registers", "spill_bytes", "shared_bytes", "autotune")
VARIANT_FIELDS = FIELDS[:9]
# Bump when the way a variant is compiled or measured changes: it invalidates the cache.
REPORT_VERSION = 1

# Types of the kernels' runtime arguments, by name, as the launch passes them: the tensors of
# the attention dtype, fp32 log-sum-exp and delta, int32 metadata, fp32 scales, int32 sizes.
_TENSOR_ARGS = {"Q", "K", "V", "Out", "dOut", "dQ", "dK", "dV"}
_FP32_TENSOR_ARGS = {"LSE", "Delta", "dC2P", "dP2C"}
_TABLE_ARGS = {"C2P", "P2C"}  # DeBERTa's relative tables: fp32 for fp16 inputs, the input dtype otherwise
_INT32_TENSOR_ARGS = {"cu_seqlens", "tile_seq", "seq_first_tile", "C2P_ROWS", "P2C_ROWS"}
_FLOAT_ARGS = {"softmax_scale", "softmax_scale_log2", "dropout_p"}
_INT_ARGS = {"stride_token", "stride_head", "stride_kv_token", "stride_kv_head", "group_size", "total_tokens",
             "max_seqlen_bucket", "num_seqs", "stride_table_head", "stride_table", "distance_offset", "dropout_seed"}
# At launch Triton marks an int argument divisible by 16 (and a pointer 16-byte aligned) as
# such and specialises the kernel on it. These always are: torch allocations are aligned, the
# kernels' tensors are contiguous (total_tokens, heads, head_dim) with head_dim in 16..128, and
# max_seqlen_bucket is a power of two >= 64. total_tokens and num_seqs are arbitrary, and so is
# group_size in the _gqa kernels (query heads per K/V head; 1 in the others, see VARLEN_GQA_KERNELS).
_DIVISIBLE_INT_ARGS = {"stride_token", "stride_head", "stride_kv_token", "stride_kv_head", "max_seqlen_bucket"}


def _attention():
    from minirm.kernels import attention

    return attention


def _deberta():
    from minirm.kernels import deberta

    return deberta


def kernel_functions():
    """{kernel name: the @triton.jit function}."""
    attention, deberta = _attention(), _deberta()
    return {
        "forward": attention._attention_forward_kernel,
        "backward_preprocess": attention._attention_backward_preprocess_kernel,
        "backward_dkdv": attention._attention_backward_dkdv_kernel,
        "backward_dq": attention._attention_backward_dq_kernel,
        "forward_gqa": attention._attention_forward_kernel,
        "backward_dkdv_gqa": attention._attention_backward_dkdv_kernel,
        "backward_dq_gqa": attention._attention_backward_dq_kernel,
        **{f"deberta_forward{suffix}": deberta._deberta_forward_kernel for suffix in DEBERTA_FLAGS},
        **{f"deberta_backward_dkdv{suffix}": deberta._deberta_backward_dkdv_kernel for suffix in DEBERTA_FLAGS},
        **{f"deberta_backward_dq{suffix}": deberta._deberta_backward_dq_kernel for suffix in DEBERTA_FLAGS},
    }


def kernel_configs():
    """{kernel name: [(BLOCK_M, BLOCK_N, num_warps, num_stages)]}: every config it can launch with."""
    attention, deberta = _attention(), _deberta()

    def tuples(configs):
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in configs]

    return {
        "forward": tuples(attention._FORWARD_CONFIGS),
        # launched without autotuning: one fixed token block, Triton's default warps and stages
        "backward_preprocess": [(attention._PREPROCESS_BLOCK_T, None, 4, 3)],
        "backward_dkdv": tuples(attention._DKDV_CONFIGS),
        "backward_dq": tuples(attention._DQ_CONFIGS),
        "forward_gqa": tuples(attention._FORWARD_CONFIGS),
        "backward_dkdv_gqa": tuples(attention._DKDV_CONFIGS),
        "backward_dq_gqa": tuples(attention._DQ_CONFIGS),
        **{f"deberta_forward{suffix}": tuples(deberta._DEBERTA_FORWARD_CONFIGS) for suffix in DEBERTA_FLAGS},
        **{f"deberta_backward_dkdv{suffix}": tuples(deberta._DEBERTA_DKDV_CONFIGS) for suffix in DEBERTA_FLAGS},
        **{f"deberta_backward_dq{suffix}": tuples(deberta._DEBERTA_DQ_CONFIGS) for suffix in DEBERTA_FLAGS},
    }


def _kernel_sources():
    """{name: source} of every @triton.jit function and tl.constexpr global of minirm.kernels.attention and
    minirm.kernels.deberta (which imports attention's helpers: each is counted once, where it is defined)."""
    import triton.language as tl

    sources = {}
    for module in (_attention(), _deberta()):
        for name, value in vars(module).items():
            function = getattr(value, "fn", None)  # JITFunction and InterpretedFunction both wrap .fn
            if inspect.isfunction(function) and function.__module__ == module.__name__:
                sources[name] = inspect.getsource(function)
            elif isinstance(value, tl.constexpr) and name not in sources:
                sources[name] = f"{name} = {value.value!r}"
    return sources


def kernel_source_hash(kernel=None):
    """sha256 of the kernels' source: of all of it, or of one kernel (by report name) and what it uses.

    Only @triton.jit functions and tl.constexpr globals enter it: host code, comments outside the
    kernels and the config lists do not (configs are part of each variant instead), so only an
    edit that can change the generated code invalidates the cache and the committed table. One
    kernel's hash covers the helpers and constants its source names, transitively, so editing
    the dK/dV kernel leaves the cached forward variants valid.
    """
    sources = _kernel_sources()
    if kernel is None:
        names = set(sources)
    else:
        names, todo = set(), [kernel_functions()[kernel].__name__]
        while todo:
            name = todo.pop()
            if name not in names:
                names.add(name)
                todo += [other for other in sources if other not in names
                         and re.search(rf"\b{re.escape(other)}\b", sources[name])]
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}\n{sources[name]}\n".encode())
    return digest.hexdigest()[:16]


def all_variants(archs=tuple(ARCHS)):
    """Every (kernel, arch, head dim, dtype, causal, config) the package can launch, as dicts."""
    attention = _attention()
    head_dims = attention.SUPPORTED_HEAD_DIMS
    variants = []
    for kernel, configs in kernel_configs().items():
        for arch in archs:
            for head_dim in head_dims:
                for dtype in DTYPES:
                    causals = (None,) if kernel == "backward_preprocess" else (False, True)
                    for causal in ((False,) if kernel in DEBERTA_KERNELS else causals):
                        for block_m, block_n, num_warps, num_stages in configs:
                            variants.append(dict(kernel=kernel, arch=arch, head_dim=head_dim, dtype=dtype,
                                                 causal=causal, BLOCK_M=block_m, BLOCK_N=block_n,
                                                 num_warps=num_warps, num_stages=num_stages))
    return variants


def variant_key(variant):
    return tuple(variant[field] for field in VARIANT_FIELDS)


# ----------------------------------------------------------------------------------------------
# Compiling one variant (in a worker process)
# ----------------------------------------------------------------------------------------------
def _deberta_flags(kernel):
    """(HAS_C2P, HAS_P2C, DROPOUT) of a DeBERTa kernel's report name; Nones for the others."""
    if kernel not in DEBERTA_KERNELS:
        return None, None, None
    return DEBERTA_FLAGS[next((suffix for suffix in DEBERTA_FLAGS if suffix and kernel.endswith(suffix)), "")]


def _signature(function, variant):
    """ASTSource arguments for one variant: (signature, constexprs, attrs)."""
    import triton.language as tl

    attention = _attention()
    dtype = variant["dtype"]
    has_c2p, has_p2c, dropout = _deberta_flags(variant["kernel"])
    constexpr_values = {
        "HEAD_DIM": variant["head_dim"],
        "CAUSAL": variant["causal"],
        "HAS_C2P": has_c2p,
        "HAS_P2C": has_p2c,
        "DROPOUT": dropout,
        "BLOCK_M": variant["BLOCK_M"],
        "BLOCK_N": variant["BLOCK_N"],
        "BLOCK_T": variant["BLOCK_M"],
        # what the GPU launch passes (minirm.kernels.attention._dot_precision)
        "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
        # taken by the kernels before issue 12 (the interpreter's bf16 workaround, now on the
        # host); kept so that the report still runs on that version, for before/after figures
        "DOT_DTYPE": {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32}[dtype],
    }
    signature, constexprs, attrs = {}, {}, {}
    for index, name in enumerate(function.arg_names):
        if name in constexpr_values and function.params[index].is_constexpr:
            signature[name] = "constexpr"
            constexprs[name] = constexpr_values[name]
            continue
        if name == "group_size" and variant["kernel"] not in VARLEN_GQA_KERNELS:
            # what a launch without GQA compiles: Triton specialises an int argument equal to 1 to a constant
            signature[name] = "constexpr"
            constexprs[name] = 1
            continue
        if name in _TENSOR_ARGS:
            signature[name] = f"*{dtype}"
        elif name in _FP32_TENSOR_ARGS:
            signature[name] = "*fp32"
        elif name in _TABLE_ARGS:
            signature[name] = "*fp32" if dtype == "fp16" else f"*{dtype}"
        elif name in _INT32_TENSOR_ARGS:
            signature[name] = "*i32"
        elif name in _FLOAT_ARGS:
            signature[name] = "fp32"
        elif name in _INT_ARGS:
            signature[name] = "i32"
        else:
            raise KeyError(f"minirm.kernels.aot does not know the type of argument {name!r} of {function.__name__}; "
                           f"add it to the tables at the top of kernels/aot.py")
        if signature[name].startswith("*") or name in _DIVISIBLE_INT_ARGS:
            attrs[(index,)] = [["tt.divisibility", 16]]
    del attention
    return signature, constexprs, attrs


_RESOURCE_PATTERN = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def _resource_usage(cubin):
    """(registers, stack + local bytes) of the one kernel in a cubin, read by cuobjdump."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", file.name], capture_output=True, text=True,
                              check=True).stdout
    matches = _RESOURCE_PATTERN.findall(text)
    if len(matches) != 1:
        raise RuntimeError(f"expected one function in cuobjdump's output, got:\n{text}")
    _, registers, stack, _, local = matches[0]
    return int(registers), int(stack) + int(local)


def compile_kernel(function, variant, **options):
    """Triton's compiled kernel for one variant of `function` (a @triton.jit function with the
    arguments of variant["kernel"]); `options` go to triton.compile beside the variant's warps and
    stages (benchmarks/sass_loops.py passes enable_fp_fusion)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if not isinstance(function, triton.runtime.JITFunction):
        raise RuntimeError("the kernels were built for Triton's interpreter (TRITON_INTERPRET=1); "
                           "compiling needs a process without it")
    signature, constexprs, attrs = _signature(function, variant)
    source = ASTSource(fn=function, signature=signature, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", ARCHS[variant["arch"]], 32)
    return triton.compile(source, target=target, options=dict(num_warps=variant["num_warps"],
                                                              num_stages=variant["num_stages"], **options))


def compile_variant(variant):
    """Compile one variant; returns (variant, result dict, seconds). Never raises."""
    start = time.perf_counter()
    try:
        compiled = compile_kernel(kernel_functions()[variant["kernel"]], variant)
        registers, spill_bytes = _resource_usage(compiled.asm["cubin"])
        result = dict(compiled=True, registers=registers, spill_bytes=spill_bytes,
                      shared_bytes=int(compiled.metadata.shared))
    except Exception as error:  # a variant that does not compile is a row of the report, not a crash
        message = f"{type(error).__name__}: {error}".strip().splitlines()
        result = dict(compiled=False, registers=None, spill_bytes=None, shared_bytes=None,
                      error=message[0][:300] if message else type(error).__name__)
    return variant, result, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------
# The worker processes
# ----------------------------------------------------------------------------------------------
SCRATCH_PREFIX = "minirm-aot-triton-pid"  # + the parent's pid + "-": the next run knows whether it is alive


def _worker(function, connection, scratch):
    """A compile worker: its own process group (so the parent can kill it with the ptxas it runs), its
    Triton cache and temporary files in the run's scratch folder; compiles what it is sent until None."""
    os.setpgrp()
    os.environ["TRITON_CACHE_DIR"] = os.path.join(scratch, "triton-cache")
    os.environ["TMPDIR"] = os.path.join(scratch, "tmp")  # ptxas' and cuobjdump's files go with the scratch folder
    tempfile.tempdir = None
    # Triton 3.9 warns that the default will change; keep today's default (fusion on), quietly.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    while True:
        try:
            item = connection.recv()
        except EOFError:  # the parent is gone
            return
        if item is None:
            return
        connection.send(function(item))


def _pool_map(function, items, jobs, scratch):
    """Yield function(item) for every item, in the order they finish, from `jobs` spawned processes.

    The workers start with SIGINT blocked (the mask is inherited through exec, and by the compilers
    they run), so the terminal's Ctrl-C reaches this process alone; a Ctrl-C that arrives while they
    start is delivered once they have. The caller stops them with `_stop_workers` in a finally."""
    context = multiprocessing.get_context("spawn")
    (Path(scratch) / "tmp").mkdir(parents=True, exist_ok=True)
    workers = []
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for _ in range(jobs):
            here, there = context.Pipe()
            process = context.Process(target=_worker, args=(function, there, scratch), daemon=True)
            process.start()
            there.close()
            workers.append((process, here))
        yield workers  # first, so that the caller holds them (to stop them) before a Ctrl-C can arrive
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    pending = iter(items)
    busy = {}
    for process, connection in workers:
        item = next(pending, None)
        connection.send(item)
        if item is not None:
            busy[connection] = process
    while busy:
        # with a timeout: a Ctrl-C that the kernel hands to another thread of this process (an
        # imported library's) sets Python's flag without waking this wait, so wake twice a second
        # to let the main thread raise it; without one, the sweep went on until a compile finished
        for ready in wait(list(busy) + [process.sentinel for process in busy.values()], timeout=0.5):
            connection = ready if ready in busy else None
            if connection is None:  # a sentinel: a worker that exits with work in hand has died
                dead = next(p for p in busy.values() if p.sentinel == ready)
                raise RuntimeError(f"a compile worker died (exit code {dead.exitcode}); run again to continue")
            try:
                result = connection.recv()
            except EOFError:
                continue  # its sentinel says how it died
            item = next(pending, None)
            connection.send(item)
            if item is None:
                busy.pop(connection)
            yield result


def _stop_workers(workers, scratch):
    """Kill every worker's process group (the worker and the compiler it runs), wait for them, and
    remove the scratch folder: what an interrupted sweep would otherwise leave behind."""
    for process, connection in workers:
        if process.exitcode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # not its own group leader yet
                process.kill()
        connection.close()
    for process, _ in workers:
        process.join()
    shutil.rmtree(scratch, ignore_errors=True)


def remove_stale_scratch(directory=None):
    """Remove the scratch folders of earlier runs that were killed outright (their pid is gone)."""
    removed = []
    for folder in Path(directory or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that run is alive
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:
            continue
    return removed


# ----------------------------------------------------------------------------------------------
# The sweep: cache + process pool
# ----------------------------------------------------------------------------------------------
def default_cache_path():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "minirm" / "aot-cache.json"


def _cache_key(variant, source_hashes, triton_version):
    source_hash = source_hashes[variant["kernel"]]
    text = json.dumps([REPORT_VERSION, source_hash, triton_version, list(variant_key(variant))])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _load_cache(path):
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path, cache):
    path = Path(os.path.realpath(path))  # a linked cache file is written through, the link kept
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(cache, file)
    os.replace(temporary, path)


def compile_all(variants, jobs=None, cache_path=None, progress=None, source_hashes=None):
    """Compile variants (cached, in parallel); returns (results in variant order, stats dict).
    `source_hashes` ({kernel: hash}) keys the cache; by default, the present source's.

    Each result is the variant plus compiled/registers/spill_bytes/shared_bytes (and error when
    it did not compile). Works from a process whose kernels run in the interpreter too: the
    workers are fresh processes started without TRITON_INTERPRET.
    """
    import triton

    source_hashes = source_hashes or {kernel: kernel_source_hash(kernel) for kernel in KERNELS}
    cache = _load_cache(cache_path) if cache_path else {}
    keys = [_cache_key(variant, source_hashes, triton.__version__) for variant in variants]
    results = {key: cache[key] for key in keys if key in cache}
    todo = [(key, variant) for key, variant in zip(keys, variants) if key not in results]
    todo = list({key: variant for key, variant in todo}.values())  # duplicates compile once
    stats = dict(variants=len(variants), cached=len(variants) - len(todo), compiled=len(todo), compile_seconds=0.0)
    started = time.perf_counter()
    if todo:
        jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
        remove_stale_scratch()
        # Fresh interpreters (spawn: no inherited Triton state) that compile for real: started
        # without TRITON_INTERPRET, with an empty Triton cache in a scratch folder removed at the end.
        scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        saved = os.environ.pop("TRITON_INTERPRET", None)
        results_of = _pool_map(compile_variant, todo, jobs, scratch)
        workers = []
        try:
            workers = next(results_of)
            for done, (variant, result, seconds) in enumerate(results_of, start=1):
                key = _cache_key(variant, source_hashes, triton.__version__)
                results[key] = dict(result, seconds=round(seconds, 2))
                stats["compile_seconds"] += seconds
                if cache_path and result["compiled"]:  # failures are retried next time
                    cache[key] = results[key]
                    if done % 32 == 0:
                        _save_cache(cache_path, cache)
                if progress:
                    progress(done, len(todo), variant, result)
        finally:
            # a second Ctrl-C would interrupt the cleanup half-way, which is what leaves folders behind
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                _stop_workers(workers, scratch)
                if saved is not None:
                    os.environ["TRITON_INTERPRET"] = saved
                if cache_path:
                    _save_cache(cache_path, cache)
            finally:
                signal.signal(signal.SIGINT, previous)
    stats["wall_seconds"] = time.perf_counter() - started
    rows = []
    for key, variant in zip(keys, variants):
        result = {name: value for name, value in results[key].items() if name != "seconds"}
        rows.append(dict(variant, **result))
    return rows, stats


def current_table_rows(variants, triton_version, source_hashes, directory=None):
    """{variant key: row} of the running Triton's committed table, for the variants whose kernel's
    source hash (`source_hashes`: {kernel: hash} of the present source) is the one the table was
    stamped with, on an architecture the table covers: what --write-table keeps instead of
    compiling again."""
    from minirm.kernels import compile_table

    path = compile_table.table_path(triton_version, directory or compile_table.TABLE_DIR)
    if not path.exists():
        return {}
    table = compile_table.read(path)
    stamped = table.get("source_hashes", {})
    rows = {variant_key(row): row for row in table["rows"]
            if row["arch"] in table["archs"] and stamped.get(row["kernel"]) == source_hashes.get(row["kernel"])}
    return {key: rows[key] for key in map(variant_key, variants) if key in rows}


def report_rows(results):
    """Rows with exactly FIELDS: the compile results plus whether the autotuner may pick each."""
    attention = _attention()
    rows = []
    for result in results:
        row = {field: result.get(field) for field in FIELDS if field != "autotune"}
        may_pick = getattr(attention, "_autotune_may_pick", None)
        row["autotune"] = bool(may_pick(row)) if may_pick else True
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def format_table(rows):
    columns = [("kernel", "kernel"), ("arch", "arch"), ("head_dim", "hdim"), ("dtype", "dtype"),
               ("causal", "causal"), ("BLOCK_M", "BM"), ("BLOCK_N", "BN"), ("num_warps", "warps"),
               ("num_stages", "stages"), ("compiled", "ok"), ("registers", "regs"), ("spill_bytes", "spill"),
               ("shared_bytes", "shared"), ("autotune", "autotune")]
    table = [[_cell(row[field]) for field, _ in columns] for row in rows]
    widths = [max(len(title), *(len(line[i]) for line in table)) for i, (_, title) in enumerate(columns)]
    lines = ["  ".join(title.rjust(width) for (_, title), width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in table]
    return "\n".join(lines)


def summary(rows):
    """Per kernel and arch: variants, compiled, spilling, offered to the autotuner, register range."""
    lines = ["", ("kernel                arch   variants  compiled  spill>0  autotune  regs (autotune)  "
                  "max spill (all)")]
    groups = {}
    for row in rows:
        groups.setdefault((row["kernel"], row["arch"]), []).append(row)
    for (kernel, arch), group in groups.items():
        compiled = [row for row in group if row["compiled"]]
        spilling = [row for row in compiled if row["spill_bytes"]]
        picked = [row for row in group if row["autotune"]]
        registers = [row["registers"] for row in picked if row["registers"] is not None]
        register_range = f"{min(registers)}-{max(registers)}" if registers else "-"
        max_spill = max((row["spill_bytes"] for row in compiled), default=0)
        lines.append(f"{kernel:<21} {arch:<6} {len(group):>8}  {len(compiled):>8}  {len(spilling):>7}  "
                     f"{len(picked):>8}  {register_range:>15}  {max_spill:>15}")
    return "\n".join(lines)


PROGRESS_EVERY_S = 15.0  # seconds between progress lines
SECONDS_PER_VARIANT = 2.5  # one core's time per variant, on average over a cold sweep (the first line's estimate)



def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirm.kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default=",".join(ARCHS),
                        help=f"comma-separated targets out of {', '.join(ARCHS)} (default: all)")
    parser.add_argument("--kernel", default=",".join(KERNELS), help="comma-separated kernels (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="compile processes (default: all cores)")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"cache file (default: {default_cache_path()})")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--write-table", action="store_true",
                        help="write kernels/compile_report/triton-<running version>.json from the sweep "
                             "(needs every kernel; covers the archs swept)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser.parse_args(argv)


def main(argv=None):
    """The command: Ctrl-C or SIGTERM at any moment (importing Triton, compiling, writing) is one
    line and exit status 130 or 143, the sweep's workers stopped and its scratch folder removed."""
    from minirm.errors import raise_interrupted

    counted = {"done": 0, "line": 0.0, "cache": None}
    # SIGTERM (kill, a scheduler's time limit) stops the sweep as Ctrl-C does, cleanup included
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        return _sweep(parse_args(argv), counted)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        kept = f"cached in {counted['cache']}" if counted["cache"] else "not kept (--no-cache)"
        print(f"python -m minirm.kernels.aot: {'interrupted' if signum == signal.SIGINT else 'stopped by SIGTERM'} "
              f"after {counted['done']} compiles, {kept}; the same command continues from there",
              file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sweep(args, counted):
    from minirm.console import duration

    archs = [arch.strip() for arch in args.arch.split(",") if arch.strip()]
    kernels = [kernel.strip() for kernel in args.kernel.split(",") if kernel.strip()]
    for value, known, what in ((archs, ARCHS, "arch"), (kernels, KERNELS, "kernel")):
        unknown = [item for item in value if item not in known]
        if unknown:
            print(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
            return 2
    if args.write_table and sorted(kernels) != sorted(KERNELS):
        print("--write-table needs every kernel: leave out --kernel", file=sys.stderr)
        return 2
    import triton

    variants = [variant for variant in all_variants(archs) if variant["kernel"] in kernels]
    # Hashed once, before anything compiles: the table's stamp must name the source the workers
    # compiled (the cache keys do too), even if a kernel file is edited while a long sweep runs
    # (inspect reads the source from the file, by line number, when it is asked).
    source_hashes = {kernel: kernel_source_hash(kernel) for kernel in KERNELS}
    # --write-table keeps the rows of the table it replaces whose kernel did not change
    kept = current_table_rows(variants, triton.__version__, source_hashes) if args.write_table else {}
    cache_path = counted["cache"] = None if args.no_cache else (args.cache or default_cache_path())
    jobs = args.jobs or os.cpu_count() or 1
    started = time.monotonic()

    def progress(done, total, variant, result):
        counted["done"] = done
        if counted["line"] == 0.0 and not args.quiet:  # the first result: say how big the sweep is
            estimate = duration(total * SECONDS_PER_VARIANT / jobs)
            print(f"compiling {total} variants in {jobs} processes, about {estimate} at a few seconds each "
                  "(Ctrl-C stops; what is compiled stays in the cache)", file=sys.stderr, flush=True)
            counted["line"] = time.monotonic()
        if args.quiet:
            return
        now = time.monotonic()
        if now - counted["line"] >= PROGRESS_EVERY_S or done == total or not result["compiled"]:
            counted["line"] = now
            status = "" if result["compiled"] else f"  FAILED: {result.get('error')}"
            elapsed = now - started
            left = f", about {duration((total - done) * elapsed / done)} left" if done < total else ""
            print(f"  compiled {done}/{total} ({100 * done / total:.0f}%), {duration(elapsed)} elapsed{left}{status}",
                  file=sys.stderr, flush=True)

    swept, stats = compile_all([variant for variant in variants if variant_key(variant) not in kept],
                               jobs=args.jobs, cache_path=cache_path, progress=progress, source_hashes=source_hashes)
    swept = {variant_key(result): result for result in swept}
    results = [kept.get(variant_key(variant)) or swept[variant_key(variant)] for variant in variants]
    rows = report_rows(results)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
        print(summary(rows))
    if not args.quiet:
        from_table = f"{len(kept)} kept from the table (kernel unchanged), " if args.write_table else ""
        print(f"\n{len(variants)} variants, {from_table}{stats['cached']} from the cache, {stats['compiled']} compiled "
              f"in {stats['wall_seconds']:.1f} s wall ({stats['compile_seconds']:.0f} s of compiling, "
              f"{args.jobs or os.cpu_count()} processes); triton {triton.__version__}", file=sys.stderr)
    failed = [row for row in results if not row["compiled"]]
    if args.write_table:
        from minirm.kernels import compile_table

        if failed:
            print(f"not writing the table: {len(failed)} variants did not compile", file=sys.stderr)
            return 1
        path = compile_table.write(rows, source_hashes, triton.__version__, archs)
        print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
