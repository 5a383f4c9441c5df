"""benchmarks/gpu_candidates.py: kernel versions side by side in the GPU command's candidates section.

On CPU the section runs in Triton's interpreter (a dry run): what is tested here is that every
snapshot is loaded as a module of its own and checked against SDPA before anything is timed, so
that a wrong version is reported as failing, and how a fixed config is launched on the GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernels" / "attention.py"


def gpu_command(out: Path, candidates: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["MINIRM_CANDIDATES"] = str(candidates)
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(out), "--dry-run", "--sections",
                           "env,candidates"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def candidates_record(out: Path) -> dict:
    report = json.loads((out / "gpu.json").read_text())
    shutil.rmtree(report["work"], ignore_errors=True)
    return next(s for s in report["sections"] if s["name"] == "candidates")


def test_every_snapshot_is_checked_and_a_wrong_one_fails(tmp_path):
    candidates = tmp_path / "candidates"
    candidates.mkdir()
    source = KERNEL.read_text(encoding="utf-8")
    header = "# kernels/attention.py at 0000000 (test): a candidate\n"
    (candidates / "same.py").write_text(header + source, encoding="utf-8")
    shutil.copy(KERNEL, candidates / "no-header.py")  # not a snapshot: noted and left out
    normalised = "_store_rows(Out, offs_m, offs_d, stride_token, seq_len, acc / row_sum[:, None])"
    assert normalised in source  # the line the broken copy changes
    halved = source.replace(normalised, normalised.replace("acc /", "0.5 * acc /"))
    (candidates / "halved.py").write_text(header + halved, encoding="utf-8")
    done = gpu_command(tmp_path / "out", candidates)
    assert done.returncode == 1, done.stderr[-3000:]  # a candidate failed its check: the section is not ok
    record = candidates_record(tmp_path / "out")
    rows = {row["candidate"]: row for row in record["figures"]["configs"]}
    assert all(row["head_dim"] == 64 for row in rows.values())
    assert set(rows) == {"current", "same", "halved"}
    assert rows["current"]["passed"] and rows["same"]["passed"]
    assert rows["same"]["relative_error"] == rows["current"]["relative_error"]
    assert rows["current"]["relative_error"] < 0.03
    assert not rows["halved"]["passed"] and rows["halved"]["relative_error"] > 0.4 and "tflops" not in rows["halved"]
    assert any("halved" in failure for failure in record["failures"])
    assert any("no-header.py" in note for note in record["notes"])
    # the snapshot's own @triton.jit functions ran: "same" and "current" are distinct modules
    assert record["figures"]["candidates"]["same"].endswith("same.py")
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "out" / "candidates.png").stat().st_size > 0


def test_deberta_snapshots_are_checked_with_all_five_gradients(tmp_path):
    candidates = tmp_path / "candidates"
    candidates.mkdir()
    source = (ROOT / "kernels" / "deberta.py").read_text(encoding="utf-8")
    scatter = "d_scores, mask=valid, sem=\"relaxed\")"
    assert scatter in source  # the relative-table gradients' scatter, which the broken copy doubles
    header = "# kernels/deberta.py at 0000000 (test): a candidate\n"
    (candidates / "same-deberta.py").write_text(header + source, encoding="utf-8")
    (candidates / "doubled.py").write_text(header + source.replace(scatter, "2 * " + scatter), encoding="utf-8")
    done = gpu_command(tmp_path / "out", candidates)
    assert done.returncode == 1, done.stderr[-3000:]
    record = candidates_record(tmp_path / "out")
    rows = {row["candidate"]: row for row in record["figures"]["deberta"]}
    assert set(rows) == {"current", "same-deberta", "doubled"}
    assert rows["current"]["passed"] and rows["same-deberta"]["passed"] and rows["current"]["error_dpos_key"] < 0.03
    assert not rows["doubled"]["passed"] and rows["doubled"]["error_dpos_query"] > 0.5
    assert rows["doubled"]["error_out"] == rows["current"]["error_out"]  # only the table gradients changed
    assert record["failures"] == [next(f for f in record["failures"] if "doubled" in f)]
    # the attention part saw no attention snapshot: the DeBERTa copies are not mistaken for one
    assert [row["candidate"] for row in record["figures"]["configs"]] == ["current"]


def test_the_deberta_configs_exist_and_compile_cleanly_at_xxlarge_shape():
    """DEBERTA_CONFIGS launch every DeBERTa version with the same tiles: each must be in the kernel's
    config list and clean (no spill) at head dim 64, bf16, sm_90 in every committed compile table."""
    from benchmarks.gpu_candidates import DEBERTA_CONFIGS, FixedConfig, deberta_launchers, load

    module = load("deberta_test", ROOT / "kernels" / "deberta.py")
    launchers = deberta_launchers(module)
    assert set(launchers) == set(DEBERTA_CONFIGS) and all(isinstance(x, FixedConfig) for x in launchers.values())
    names = {"_forward_autotuned": "deberta_forward", "_dkdv_autotuned": "deberta_backward_dkdv",
             "_dq_autotuned": "deberta_backward_dq"}
    tables = sorted((ROOT / "kernels" / "compile_report").glob("triton-*.json"))
    assert tables
    for path in tables:
        rows = {tuple(row[:9]): row for row in json.loads(path.read_text())["rows"]}
        for attribute, (_, _, tiles) in DEBERTA_CONFIGS.items():
            row = rows[(names[attribute], "sm_90", 64, "bf16", False, *tiles)]
            assert row[9] and row[11] == 0, (path.name, row)  # compiled, no spill


def test_without_snapshots_only_current_runs_with_a_note(tmp_path):
    done = gpu_command(tmp_path / "out", tmp_path / "none")
    assert done.returncode == 0, done.stderr[-3000:]
    record = candidates_record(tmp_path / "out")
    assert [row["candidate"] for row in record["figures"]["configs"]] == ["current"]
    assert any("no snapshot" in note for note in record["notes"])


def test_the_default_run_leaves_the_candidates_section_out():
    from benchmarks.gpu import SECTIONS, parse_args

    assert "candidates" in SECTIONS and not SECTIONS["candidates"].default
    args = parse_args(["--out", "x", "--dry-run"])
    assert "candidates" not in args.selected and args.selected[0] == "env"
    assert parse_args(["--out", "x", "--sections", "candidates"]).selected == ["candidates"]


def test_a_fixed_config_launches_its_blocks_warps_and_stages_after_its_pre_hook():
    from benchmarks.gpu_candidates import FixedConfig

    calls = []

    class Kernel:
        arg_names = ["Q", "n"]

        def __getitem__(self, grid):
            return lambda *args, **meta: calls.append(("launch", grid, args, meta))

    config = SimpleNamespace(kwargs={"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3,
                             pre_hook=lambda nargs: calls.append(("pre_hook", nargs)))
    FixedConfig(Kernel(), config)["grid"]("q", 5, HEAD_DIM=64)
    assert calls == [
        ("pre_hook", {"Q": "q", "n": 5, "HEAD_DIM": 64, "BLOCK_M": 128, "BLOCK_N": 64}),
        ("launch", "grid", ("q", 5), {"HEAD_DIM": 64, "BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}),
    ]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="snapshots come from git; this copy is not a clone")
def test_snapshot_writes_the_kernel_at_a_commit_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    import benchmarks.gpu_candidates as candidates

    monkeypatch.setattr(candidates, "CANDIDATES", tmp_path)
    assert candidates.main(["snapshot", "head", "HEAD"]) == 0
    written = (tmp_path / "head.py").read_text(encoding="utf-8")
    committed = subprocess.run(["git", "show", "HEAD:kernels/attention.py"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
    assert written.startswith("# kernels/attention.py at ") and written.split("\n", 1)[1] == committed
    with pytest.raises(SystemExit, match="'no-such-rev' is not a commit"):
        candidates.main(["snapshot", "x", "no-such-rev"])
    with pytest.raises(SystemExit):
        candidates.main(["snapshot", "current", "HEAD"])
    assert "not 'current'" in capsys.readouterr().err
    assert candidates.main(["snapshot", "head-deberta", "HEAD", "--file", "deberta"]) == 0
    assert (tmp_path / "head-deberta.py").read_text(encoding="utf-8").startswith("# kernels/deberta.py at ")
    assert list(candidates.candidates("attention")) == ["current", "head"]
    assert list(candidates.candidates("deberta")) == ["current", "head-deberta"]
    with pytest.raises(SystemExit):
        candidates.main(["snapshot", "head", "HEAD", "--file", "deberta"])  # "head" copies attention.py
    assert "already" in capsys.readouterr().err
    assert candidates.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "attention  head " in listed and "deberta    head-deberta " in listed
