"""python -m benchmarks.gpu --dry-run: the one command that checks and measures every GPU path,
rehearsed on CPU (tiny sizes, kernels in Triton's interpreter), so that it is known to work
before a GPU minute is spent. Its figures mean nothing here; that every section runs, records
what it should, merges reruns and survives a failing neighbour is what is tested."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# per section: figures it must have, and for its main table (name, columns every row must have)
EXPECTED = {
    "env": ({"device", "torch", "triton", "matmul_tflops", "copy_tbps"}, None),
    "kernels": ({"thresholds", "cases", "tests"}, ("cases", {"kernel", "dtype", "seed", "max_error", "passed",
                                                             "error_out", "error_dq", "error_dk", "error_dv"})),
    "kernel-speed": ({"real_lengths", "deberta", "gqa", "fixed", "triton_first_calls_s"},
                     ("fixed", {"head_dim", "causal", "seq_len", "mode", "triton_tflops", "sdpa_flash_tflops",
                                "triton_share", "triton_first_call_s"})),
    "scoring": ({"models"}, ("models", {"model", "dtype", "minirm_pairs_per_s", "transformers_pairs_per_s",
                                        "transformers_sorted_pairs_per_s", "max_abs_diff", "minirm_peak_gib",
                                        "minirm_share"})),
    "training": ({"bert", "recipe"}, ("recipe", {"steps", "step_s", "peak_gib", "losses", "losses_finite"})),
    "server": ({"offline_pairs_per_s", "served_pairs_per_s", "served_vs_offline", "p50_ms", "p99_ms",
                "max_abs_diff_vs_offline"}, None),
}


def gpu_command(out: Path, *args: str) -> subprocess.CompletedProcess:
    # the command sets TRITON_INTERPRET itself in a dry run, before anything imports triton
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def sections(out: Path) -> dict:
    return {s["name"]: s for s in json.loads((out / "gpu.json").read_text())["sections"]}


def remove_work_folder(out: Path) -> None:
    """The command keeps its scratch folder (checkpoints, outside --out) for reruns; tests remove theirs."""
    if (out / "gpu.json").exists():
        shutil.rmtree(json.loads((out / "gpu.json").read_text())["work"], ignore_errors=True)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    done = gpu_command(out, "--dry-run")
    yield out, done
    remove_work_folder(out)


def test_every_section_runs_ok_with_its_figures(dry_run):
    out, done = dry_run
    assert done.returncode == 0, done.stderr[-3000:]
    records = sections(out)
    assert list(records) == list(EXPECTED)
    for name, (keys, main_table) in EXPECTED.items():
        record = records[name]
        assert record["ok"] and record["error"] is None and not record["cut"], (name, record.get("error"))
        assert record["dry_run"] is True and record["seconds"] > 0 and record["budget_s"] > 0
        assert keys <= set(record["figures"]), (name, keys - set(record["figures"]))
        if main_table:
            table, columns = main_table
            rows = record["figures"][table]
            assert rows and all(columns <= set(row) for row in rows), (name, table)
    cases = records["kernels"]["figures"]["cases"]
    assert {case["kernel"] for case in cases} == {"varlen", "varlen-gqa", "deberta"}
    assert all(case["passed"] for case in cases)
    gqa = next(case for case in cases if case["kernel"] == "varlen-gqa")  # grouped K/V heads, against SDPA's GQA
    assert gqa["kv_heads"] < gqa["heads"] and gqa["error_dk"] < 0.03 and gqa["error_dv"] < 0.03
    speed = records["kernel-speed"]["figures"]["gqa"]
    assert speed and all(row["kv_heads"] < row["heads"] and row["triton_tflops"] and row["sdpa_gqa_tflops"]
                         and row["triton_repeated_kv_tflops"] for row in speed)
    # the CUDA-only tests ran and skipped on CPU
    tests = records["kernels"]["figures"]["tests"].values()
    assert all(result["skipped"] >= 1 and not result["failed"] for result in tests)
    assert {row["model"] for row in records["scoring"]["figures"]["models"]} == {
        "bert-base-cased", "roberta-base", "gpt2", "deberta-v2-xxlarge"}
    assert all(row["attention"] == "triton" for row in records["scoring"]["figures"]["models"])
    assert records["training"]["figures"]["recipe"][0]["losses_finite"]
    # progress went to stderr, section by section
    assert all(f"[gpu] {name}: ok" in done.stderr for name in EXPECTED)


def test_report_files_parse(dry_run):
    out, _ = dry_run
    report = json.loads((out / "gpu.json").read_text())
    assert report["command"].startswith("python -m benchmarks.gpu") and "--dry-run" in report["command"]
    assert report["dry_run"] is True and report["date"] and report["versions"]["torch"]
    markdown = (out / "gpu.md").read_text()
    assert all(f"## {name}" in markdown for name in EXPECTED)
    assert "| section | ok |" in markdown
    pytest.importorskip("matplotlib")
    assert (out / "kernel-speed.png").stat().st_size > 0 and (out / "scoring.png").stat().st_size > 0


def test_sections_rerun_merges_and_a_failing_section_does_not_stop_the_next(dry_run, tmp_path):
    out, _ = dry_run
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    before = sections(rerun)
    done = gpu_command(rerun, "--dry-run", "--sections", "env,kernel-speed", "--fail-section", "env")
    remove_work_folder(rerun)
    assert done.returncode == 1  # a section is not ok
    after = sections(rerun)
    assert list(after) == list(EXPECTED)
    assert not after["env"]["ok"] and after["env"]["error"] == "RuntimeError: failure injected by --fail-section"
    assert after["kernel-speed"]["ok"] and after["kernel-speed"]["ran_at"] >= before["kernel-speed"]["ran_at"]
    assert "--sections env,kernel-speed" in after["kernel-speed"]["command"]
    for name in ("kernels", "scoring", "training", "server"):
        assert after[name] == before[name]  # untouched
    assert "Error: RuntimeError: failure injected" in (rerun / "gpu.md").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--sections", "env,nope"], "unknown section 'nope'; choose from env, kernels"),
    (["--sections", ","], "--sections is empty"),
])
def test_a_bad_section_name_is_one_line_and_exit_2(tmp_path, args, needle):
    done = gpu_command(tmp_path, "--dry-run", *args)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and needle in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "gpu.json").exists()
