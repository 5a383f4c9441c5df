"""The compile report (kernels/aot.py) and the tables behind the autotuner's pruning (kernels/compile_report/).

A full cold sweep compiles ~4,000 variants (every kernel, with and without grouped-query attention
for the varlen ones, head dim, dtype, causal flag or DeBERTa term set, autotune config and
architecture): well over an hour on two cores, too slow for CI.
So each sweep is committed, one table per Triton release (`python -m minirm.kernels.aot
--write-table`, read by kernels/compile_table.py), and checked here:

* which table a launch prunes with: the running Triton's, else the nearest release's;
* every table is current: each kernel's rows were generated from that kernel's present source (a
  hash of its @triton.jit function and the helpers it uses, stamped per kernel) and the table covers
  exactly the variants the package can launch today, so a kernel or config edit without
  regenerating the table fails; regenerating it recompiles only the kernels that changed;
* every variant compiled for sm_80 and sm_90, keeps at least one config that compiles cleanly
  (no spill, fits in shared memory), and no config the autotuner may pick spills;
* the running Triton's table is truthful: a deterministic sample is compiled afresh, with an empty Triton cache, and
  must reproduce the table's registers, spill and shared memory exactly. The sample is, per
  kernel and architecture (DeBERTa's term and dropout sets, and a varlen kernel with and without
  GQA, counted as one kernel), the pickable config with the most registers (the one closest to
  spilling) and three more pickable ones drawn with a fixed seed: ~60 compiles, ~30 s on two cores.

No GPU needed: Triton compiles for a GPUTarget, with the ptxas and cuobjdump from its wheel.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # as in the rest of the suite; compiling happens in fresh processes

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402

from minirm.kernels import aot, attention, compile_table, deberta  # noqa: E402

REGENERATE = "regenerate it with `python -m minirm.kernels.aot --write-table` under that Triton"
TABLES = compile_table.read_all()


def table_rows(version=None):
    """The rows of one table (default: every architecture's table for the running Triton)."""
    if version is not None:
        return TABLES[version]["rows"]
    return [row for arch in aot.ARCHS for row in TABLES[chosen(arch)]["rows"] if row["arch"] == arch]


def chosen(arch, triton_version=None):
    return compile_table.choose(TABLES, triton_version or triton.__version__, arch)


def variant_of(row):
    return row["kernel"], row["arch"], row["head_dim"], row["dtype"], row["causal"]


def test_which_table_a_launch_prunes_with():
    tables = {"3.6.0": {"archs": ["sm_90"]}, "3.9.0": {"archs": ["sm_80", "sm_90"]}}
    assert compile_table.choose(tables, "3.6.0", "sm_90") == "3.6.0"  # its own
    assert compile_table.choose(tables, "3.6.0", "sm_80") == "3.9.0"  # the only one covering sm_80
    assert compile_table.choose(tables, "3.7.1", "sm_90") == "3.6.0"  # nearest
    assert compile_table.choose(tables, "3.8.0+git4f2c", "sm_90") == "3.9.0"
    assert compile_table.choose(tables, "3.11.0", "sm_90") == "3.9.0"
    assert compile_table.choose({"3.6.0": {"archs": ["sm_90"]}, "3.8.0": {"archs": ["sm_90"]}}, "3.7.0",
                                "sm_90") == "3.8.0"  # a tie goes to the newer release
    assert compile_table.choose(tables, "3.9.0", "sm_100") is None  # nothing covers it: nothing is pruned


def test_the_prune_hook_follows_the_running_triton(monkeypatch):
    """Two tables that disagree about one config: the hook prunes as the running release's says."""
    row = dict(kernel="forward", arch="sm_90", head_dim=64, dtype="bf16", causal=False, BLOCK_M=128, BLOCK_N=64,
               num_warps=4, num_stages=3, compiled=True, registers=200, spill_bytes=0, shared_bytes=32768)
    spilling = dict(row, registers=255, spill_bytes=8)
    fake = {"3.6.0": {"archs": ["sm_90"], "rows": [spilling]}, "3.9.0": {"archs": ["sm_90"], "rows": [row]}}
    monkeypatch.setattr(attention, "_COMPILE_TABLES", fake)
    monkeypatch.setattr(attention, "_TABLE_VARIANTS", {})
    monkeypatch.setattr(attention, "_device_limits", lambda device: ("sm_90", attention._SHARED_MEMORY_LIMITS["sm_90"]))
    autotuner = attention._forward_autotuned
    kept = {}
    for version in ("3.6.0", "3.7.0", "3.9.0"):
        monkeypatch.setattr(triton, "__version__", version)
        configs = autotuner.early_config_prune(autotuner.configs, {"Q": torch.empty(0, dtype=torch.bfloat16)},
                                               HEAD_DIM=64, CAUSAL=False)
        kept[version] = {attention._config_tuple(config) for config in configs}
    assert (128, 64, 4, 3) not in kept["3.6.0"] and (128, 64, 4, 3) not in kept["3.7.0"]
    assert (128, 64, 4, 3) in kept["3.9.0"]
    assert kept["3.6.0"] | {(128, 64, 4, 3)} == kept["3.9.0"]  # everything else is unknown to both: offered


def test_every_architecture_has_a_table():
    assert all(chosen(arch) for arch in aot.ARCHS)


@pytest.mark.parametrize("version", sorted(TABLES))
def test_table_matches_the_kernel_source(version):
    stamped = TABLES[version]["source_hashes"]
    stale = [kernel for kernel in aot.KERNELS if stamped.get(kernel) != aot.kernel_source_hash(kernel)]
    assert not stale and set(stamped) == set(aot.KERNELS), \
        f"kernels changed since kernels/compile_report/triton-{version}.json: {', '.join(stale)}; {REGENERATE}"


def test_writing_a_table_recompiles_only_the_kernels_that_changed(tmp_path, monkeypatch):
    """--write-table keeps the rows of every kernel whose source hash the old table was stamped with
    and compiles the rest: here one kernel's stamp is stale (as after an edit), so only its variants
    are compiled (by a stand-in), and the new table is stamped with every kernel's present hash."""
    arch = "sm_90"
    rows = [row for row in TABLES[chosen(arch)]["rows"] if row["arch"] == arch]
    hashes = {kernel: aot.kernel_source_hash(kernel) for kernel in aot.KERNELS}
    compile_table.write(rows, {**hashes, "backward_dq": "edited"}, triton.__version__, [arch], tmp_path)
    monkeypatch.setattr(compile_table, "TABLE_DIR", tmp_path)
    compiled = []

    def stand_in(variants, **kwargs):
        compiled.extend(variants)
        results = [dict(variant, compiled=True, registers=99, spill_bytes=0, shared_bytes=0) for variant in variants]
        return results, dict(variants=len(variants), cached=0, compiled=len(variants), compile_seconds=0.0,
                             wall_seconds=0.0)

    monkeypatch.setattr(aot, "compile_all", stand_in)
    assert aot.main(["--write-table", "--arch", arch, "--no-cache", "--quiet"]) == 0
    assert {variant["kernel"] for variant in compiled} == {"backward_dq"}
    assert len(compiled) == len([row for row in rows if row["kernel"] == "backward_dq"])
    written = compile_table.read(compile_table.table_path(triton.__version__, tmp_path))
    assert written["source_hashes"] == hashes and written["archs"] == [arch]
    assert [row for row in written["rows"] if row["kernel"] != "backward_dq"] == \
        [row for row in rows if row["kernel"] != "backward_dq"]
    assert {row["registers"] for row in written["rows"] if row["kernel"] == "backward_dq"} == {99}


def test_launches_without_gqa_compile_group_size_as_the_constant_1():
    """Triton specialises an int argument equal to 1 to a constant, so a launch without grouped-query
    attention compiles another kernel than a grouped one (a loop of one iteration over the group):
    the report compiles each as its launches do, under two names."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import JITFunction, native_specialize_impl

    assert native_specialize_impl(BaseBackend, 1, False, True, True)[0] == "constexpr"
    function = JITFunction(aot.kernel_functions()["backward_dkdv"].fn)  # this process interprets its kernels
    for kernel, group_type in (("backward_dkdv", "constexpr"), ("backward_dkdv_gqa", "i32")):
        variant = dict(kernel=kernel, arch="sm_90", head_dim=64, dtype="bf16", causal=True, BLOCK_M=32, BLOCK_N=64,
                       num_warps=4, num_stages=3)
        signature, constexprs, _ = aot._signature(function, variant)
        assert signature["group_size"] == group_type and constexprs.get("group_size", 1) == 1
    assert attention.table_name("forward", 1) == "forward" and attention.table_name("forward", 4) == "forward_gqa"


@pytest.mark.parametrize("version", sorted(TABLES))
def test_table_covers_every_variant_once(version):
    measured = [aot.variant_key(row) for row in table_rows(version)]
    expected = [aot.variant_key(variant) for variant in aot.all_variants(TABLES[version]["archs"])]
    assert len(set(measured)) == len(measured), "duplicate rows"
    missing, extra = set(expected) - set(measured), set(measured) - set(expected)
    assert not missing and not extra, f"{len(missing)} variants missing, {len(extra)} stale: {REGENERATE}"


# Variants whose every config spills with some Triton: the prune hook runs the least-spilling
# one. fp32 at head dim 128 with only DeBERTa's p2c term, triton 3.6: the smallest tile (16 x 16,
# 72 registers) keeps an 8-byte stack frame that 3.9 does not. fp32 at head dim 128 with grouped
# K/V heads, dK/dV on sm_80, triton 3.9: the loop over the group leaves every config a stack frame
# (16 x 32, one stage: 16 bytes; 16 x 16: 40 bytes at 96 registers), where without GQA 16 x 16 is clean.
ALL_CONFIGS_SPILL = {("3.6.0", "deberta_forward_p2c", "sm_90", 128, "fp32", False),
                     ("3.6.0", "deberta_backward_dq_p2c", "sm_90", 128, "fp32", False),
                     ("3.9.0", "backward_dkdv_gqa", "sm_80", 128, "fp32", False),
                     ("3.9.0", "backward_dkdv_gqa", "sm_80", 128, "fp32", True)}


def clean_rows(rows):
    return [row for row in rows if row["spill_bytes"] == 0
            and row["shared_bytes"] <= attention._SHARED_MEMORY_LIMITS[row["arch"]]]


@pytest.mark.parametrize("version", sorted(TABLES))
def test_every_variant_compiles_and_keeps_a_clean_config(version):
    by_variant = defaultdict(list)
    for row in table_rows(version):
        assert row["compiled"], f"does not compile: {row}"
        by_variant[variant_of(row)].append(row)
    assert {arch for _, arch, *_ in by_variant} == set(TABLES[version]["archs"])
    without = {(version, *variant) for variant, rows in by_variant.items() if not clean_rows(rows)}
    assert without == {known for known in ALL_CONFIGS_SPILL if known[0] == version}, \
        "variants whose every config spills or overflows shared memory changed"
    for _, *variant in without:  # each spills only a little, in its best config
        assert min(row["spill_bytes"] for row in by_variant[tuple(variant)]) <= 16


@pytest.mark.parametrize("version", sorted(TABLES))
def test_the_autotuner_never_picks_a_config_that_spills(version):
    """On the Triton a table was made with, pruning by it never leaves a spilling config."""
    picked = 0
    for row in table_rows(version):
        if attention._autotune_may_pick(row, version):
            picked += 1
            assert row["spill_bytes"] == 0, row
            assert row["shared_bytes"] <= attention._SHARED_MEMORY_LIMITS[row["arch"]], row
    assert picked > len(table_rows(version)) // 2  # pruning drops the bad configs, not most of them


# (kernel name in the table, its autotuner, [(runtime arguments of a launch beside Q, its constexprs,
# the causal field of its rows)])
def causal_launches(group_size):
    return [(dict(group_size=group_size), dict(CAUSAL=causal), causal) for causal in (False, True)]


DEBERTA_LAUNCHES = {suffix: ({}, dict(HAS_C2P=c2p, HAS_P2C=p2c, DROPOUT=dropout), False)
                    for suffix, (c2p, p2c, dropout) in aot.DEBERTA_FLAGS.items()}
AUTOTUNED = [(attention.table_name(kernel, group_size), autotuner, causal_launches(group_size))
             for kernel, autotuner in (("forward", attention._forward_autotuned),
                                       ("backward_dkdv", attention._dkdv_autotuned),
                                       ("backward_dq", attention._dq_autotuned))
             for group_size in (1, 4)]
AUTOTUNED += [(f"deberta_{kernel}{terms}", autotuner, [launch])
              for kernel, autotuner in (("forward", deberta._forward_autotuned),
                                        ("backward_dkdv", deberta._dkdv_autotuned),
                                        ("backward_dq", deberta._dq_autotuned))
              for terms, launch in DEBERTA_LAUNCHES.items()]


def test_deberta_launches_read_their_own_rows():
    """The name minirm.kernels.deberta's prune hook builds from a launch's flags is the report's name."""
    for kernel in ("forward", "backward_dkdv", "backward_dq"):
        for suffix, flags in aot.DEBERTA_FLAGS.items():
            assert deberta.table_name(kernel, *flags) == f"deberta_{kernel}{suffix}"
            assert aot._deberta_flags(f"deberta_{kernel}{suffix}") == flags


@pytest.mark.parametrize("arch", sorted(aot.ARCHS))
def test_prune_hook_keeps_exactly_the_clean_configs(monkeypatch, arch):
    """The early_config_prune hook the autotuners run, on a (pretend) GPU of each architecture;
    the varlen hooks read the rows of the kernel name that matches the launch's GQA group size, and
    DeBERTa's those of the name that matches the launch's relative terms."""
    monkeypatch.setattr(attention, "_device_limits", lambda device: (arch, attention._SHARED_MEMORY_LIMITS[arch]))
    rows = table_rows()
    assert {kernel for kernel, _, _ in AUTOTUNED} == set(aot.KERNELS) - {"backward_preprocess"}
    for kernel, autotuner, launches in AUTOTUNED:
        for dtype, torch_dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
            for head_dim in attention.SUPPORTED_HEAD_DIMS:
                for arguments, constexprs, causal in launches:
                    kept = autotuner.early_config_prune(
                        autotuner.configs, {"Q": torch.empty(0, dtype=torch_dtype), **arguments}, HEAD_DIM=head_dim,
                        **constexprs)
                    variant_rows = [row for row in rows if variant_of(row) == (kernel, arch, head_dim, dtype, causal)]
                    expected = {(row["BLOCK_M"], row["BLOCK_N"], row["num_warps"], row["num_stages"])
                                for row in variant_rows if attention._autotune_may_pick(row)}
                    if not expected:  # every config spills: the least-spilling one runs
                        least = min(variant_rows, key=lambda row: (row["spill_bytes"], row["shared_bytes"]))
                        expected = {(least["BLOCK_M"], least["BLOCK_N"], least["num_warps"], least["num_stages"])}
                    assert {attention._config_tuple(config) for config in kept} == expected


def sample_variants():
    """Per (kernel, arch): the pickable config with the most registers and three more pickable ones
    drawn with a fixed seed; plus every backward_preprocess variant for sm_90, which the CLI test
    reads back. Pickable rows are the ones whose figures matter (a pruned config is never run),
    and they compile in about a second each; a spilling one can take a minute."""
    rows = table_rows()
    rng = random.Random(0)
    groups = defaultdict(list)
    for row in rows:
        if attention._autotune_may_pick(row):
            # DeBERTa's term and dropout sets, and a varlen kernel with and without GQA, are one kernel's
            # code: one group, so the sample stays small
            kernel = row["kernel"].removesuffix("_c2p").removesuffix("_p2c").removesuffix("_dropout")
            kernel = kernel.removesuffix("_gqa")
            groups[(kernel, row["arch"])].append(row)
    sample = []
    for _, pickable in sorted(groups.items()):
        sample.append(max(pickable, key=lambda row: (row["registers"], str(aot.variant_key(row)))))
        sample += rng.sample(pickable, 3)
    sample += [row for row in rows if row["kernel"] == "backward_preprocess" and row["arch"] == "sm_90"]
    unique = {aot.variant_key(row): {field: row[field] for field in aot.VARIANT_FIELDS} for row in sample}
    return list(unique.values())


@pytest.fixture(scope="module")
def fresh_sample(tmp_path_factory):
    """The sample compiled now, in parallel, with empty caches; the result cache is kept for the CLI test."""
    cache_path = tmp_path_factory.mktemp("aot") / "aot-cache.json"
    results, stats = aot.compile_all(sample_variants(), jobs=os.cpu_count(), cache_path=cache_path)
    assert stats["cached"] == 0
    return results, cache_path


def test_fresh_compile_reproduces_the_table(fresh_sample):
    """Exactly, where the running Triton has a table of its own. Where it prunes with another
    release's table, the figures are a prediction: the sample must compile, and a pickable config
    that spills here is reported (a slower config, not a wrong one)."""
    results, _ = fresh_sample
    table = {aot.variant_key(row): row for row in table_rows()}
    predicted_wrong = []
    for result in results:
        assert result["compiled"], result
        recorded = table[aot.variant_key(result)]
        measured = {field: result[field] for field in ("registers", "spill_bytes", "shared_bytes")}
        if chosen(result["arch"]) == triton.__version__:
            assert measured == {field: recorded[field] for field in measured}, \
                f"{aot.variant_key(result)} compiles differently than its table says: {REGENERATE}"
        elif attention._autotune_may_pick(recorded) and measured["spill_bytes"]:
            predicted_wrong.append(aot.variant_key(result))
    if predicted_wrong:
        warnings.warn(f"triton {triton.__version__} spills {len(predicted_wrong)} sampled configs that another "
                      f"release's table calls clean, e.g. {predicted_wrong[0]}: add a table for it ({REGENERATE})")


def test_cli_json_rows(fresh_sample):
    """`python -m minirm.kernels.aot --json` prints exactly the documented fields (from the warm cache)."""
    _, cache_path = fresh_sample
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "minirm.kernels.aot", "--json", "--kernel", "backward_preprocess", "--arch", "sm_90",
         "--cache", str(cache_path)],
        cwd=Path(__file__).resolve().parents[1], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "12 from the cache, 0 compiled" in result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 12
    for row in rows:
        assert tuple(row) == aot.FIELDS
        assert row["compiled"] is True and row["autotune"] is True and row["causal"] is None
        assert row["spill_bytes"] == 0 and row["registers"] > 0 and row["shared_bytes"] >= 0


# --- stopping a sweep -----------------------------------------------------------------------------

STOP_SCRIPT = """
import signal, sys
# a sweep started from a shell gets Ctrl-C; the test runner's own process may not pass that on
# (pytest-xdist's workers ignore SIGINT, so their children inherit SIG_IGN): start as a shell job does
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
sys.path.insert(0, {tests!r})
import aot_slow
from minirm.kernels import aot
aot.compile_variant = aot_slow.slow_compile
sys.exit(aot.main(["--kernel", "forward", "--arch", "sm_80", "--jobs", "2", "--cache", {cache!r}]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_sweep_stops_at_once_leaving_nothing_behind(tmp_path, signum):
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM: one line, exit 130 or 143 within
    seconds, the compiles done so far cached, no worker or compiler left running, no scratch folder
    left in $TMPDIR; a scratch folder that a run killed outright left is removed, another program's
    folder of the old name is not. The compiles are tests/aot_slow.py's stand-ins (no Triton)."""
    temp, pids, cache = tmp_path / "tmp", tmp_path / "pids", tmp_path / "cache.json"
    temp.mkdir()
    pids.mkdir()
    stale, alive, foreign = temp / "minirm-aot-triton-pid999999999-x1", temp / f"minirm-aot-triton-pid{os.getpid()}-x2", \
        temp / "minirm-aot-triton-abc123"
    for folder in (stale, alive, foreign):
        (folder / "triton-cache").mkdir(parents=True)
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment.update(TMPDIR=str(temp), AOT_TEST_PIDS=str(pids))
    script = STOP_SCRIPT.format(tests=str(Path(__file__).parent), cache=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", script], env=environment, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # a process group of its own, as a shell job has
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.glob("child-*"))) < 2:  # both workers inside a long "ptxas"
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was stopped"
            time.sleep(0.05)
        sent = time.monotonic()
        os.killpg(proc.pid, signum) if signum == signal.SIGINT else proc.send_signal(signum)
        try:
            _, err = proc.communicate(timeout=30)  # EOF only once every process holding stderr has exited
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not stop within 30 s of {signal.Signals(signum).name}; its processes:\n"
                        + session_report(proc.pid))
        code, took = proc.returncode, time.monotonic() - sent
    finally:
        kill_session(proc.pid)  # whatever a failing sweep left running
    lines = err.strip().splitlines()
    assert code == 128 + signum and "Traceback" not in err, err
    assert lines[-1].startswith("python -m minirm.kernels.aot: ") and "the same command continues" in lines[-1], err
    assert took < 10, f"took {took:.1f} s to stop"
    for child in pids.glob("child-*"):
        pid = int(child.name.split("-")[1])
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], \
            f"the compiler {pid} outlived the sweep"
    assert sorted(p.name for p in temp.iterdir()) == sorted([alive.name, foreign.name])
    assert len(json.loads(cache.read_text())) == aot_slow_quick()


def session_report(sid) -> str:
    """Each process of session `sid`: pid, state, what it waits in, its signal masks (for a failure)."""
    lines = []
    for stat in sorted(Path("/proc").glob("[0-9]*/stat")):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid:
                continue
            status = dict(line.split(":\t", 1) for line in (stat.parent / "status").read_text().splitlines()
                          if ":\t" in line)
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")[:80].decode(errors="replace")
            wchan = (stat.parent / "wchan").read_text()
            lines.append(f"{stat.parent.name} {fields[0]} wchan={wchan} threads={status.get('Threads')} "
                         f"SigBlk={status.get('SigBlk')} SigIgn={status.get('SigIgn')} SigCgt={status.get('SigCgt')} "
                         f"{cmd}")
        except (OSError, ValueError, IndexError):
            pass
    return "\n".join(lines)


def kill_session(sid):
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # the session id
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def aot_slow_quick():
    import aot_slow

    return aot_slow.QUICK


def _forward_loops(*flags):
    """benchmarks/sass_loops.py on the forward kernel, head dim 64, bf16, sm_90, 128 x 64 tiles on 4 warps."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.sass_loops", "--configs", "128x64x4x3", "--json", *flags],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {row["loop"]: row for row in map(json.loads, done.stdout.splitlines())}


@pytest.mark.parametrize("flags", [(), ("--no-fp-fusion",)], ids=["fp-fusion", "no-fp-fusion"])
def test_the_forward_scales_each_score_once_inside_an_fma(flags):
    """A 128 x 64 tile on 4 warps is 64 scores per thread and 64 accumulator values (head dim 64). Per
    score the loop needs one ex2 (MUFU) and one FFMA (scale and subtract the max: _scaled_exp2); the
    only per-element FMULs left are the accumulator's rescale. Before issue 29's change the max was
    taken over scaled scores: 64 more FMULs per iteration (569 instead of 509 instructions), and
    without fp fusion (Triton 3.10's announced default) the subtraction became 64 more FADDs."""
    loops = _forward_loops(*flags)
    assert set(loops) == {"interior", "edge"}
    for row in loops.values():
        assert row["HGMMA"] > 0 and row["HMMA"] == 0  # Hopper's warpgroup MMA, not mma.sync
        assert 64 <= row["MUFU"] <= 72 and row["FFMA"] >= 64
        assert row["FMUL"] <= 64 + 8  # the accumulator's rescale, and a few per row
    assert loops["edge"]["FSEL"] >= 64 and loops["interior"]["FSEL"] == 0


def test_deberta_scatters_its_table_gradients_without_fences():
    """The relative-table gradients are added with relaxed atomics: a RED each, no ATOM, and no
    GPU-scope fence in the key loop (tl.atomic_add's default acq_rel fenced every add; issue 29)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.sass_loops", "--kernel", "deberta_backward_dkdv",
                           "--configs", "16x32x8x1", "--json"], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loops = [json.loads(line) for line in done.stdout.splitlines()]
    assert {row["loop"] for row in loops} == {"interior", "edge"}
    for row in loops:
        # a 16 x 32 tile on 8 warps: 512 scores, 2 per thread, each added to its row of the p2c table
        assert row["ATOMG"] == 0 and row["REDG"] >= 2
        assert row["MEMBAR"] <= 4  # the CTA-scope fences before wgmma / mma operands, not one per add
