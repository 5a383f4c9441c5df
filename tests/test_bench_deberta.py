"""Tests for `python -m minirm.kernels.bench --deberta` (kernels/bench.py).

The benchmark itself needs a GPU; what it compares does not. Both providers take their device from
their inputs, so here they run on CPU tensors (the Triton kernel through Triton's interpreter) and
must agree: the triton provider's packed output and gradients against the sdpa-bias provider's
padded ones, at the real tokens. Small position buckets (8 buckets, max_relative_positions 16) let
the 17-token sequence run past the log buckets and the table's clamp.

Triton reads TRITON_INTERPRET when it is first imported, so it is set before anything imports it
(tests/conftest.py sets it too).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from minirm.kernels import bench  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [5, 17, 3]
HEADS, HEAD_DIM = 2, 16
BUCKETS, MAX_DISTANCE = 8, 16


def unpad(padded, lengths):
    """(batch, T, ...) -> (tokens, ...): each sequence's real tokens, packed."""
    return torch.cat([padded[index, :length] for index, length in enumerate(lengths)])


@pytest.fixture(scope="module")
def problem():
    from minirm.kernels.attention import _kernels_interpreted

    if not _kernels_interpreted():
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is first imported")
    torch.manual_seed(0)
    return bench.deberta_problem(LENGTHS, HEADS, HEAD_DIM, torch.float32, device="cpu", buckets=BUCKETS,
                                 max_distance=MAX_DISTANCE)


def test_row_maps_match_the_model_indices(problem):
    """The kernel's 1-D maps and the sdpa path's (T, T) indices name the rows transformers' own
    build_relative_position reads (c2p: bucket(i - j) + span; p2c: span - bucket(j - i)), and
    reach past the buckets."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    T = problem.max_seqlen
    x = torch.zeros(1, T, 4)
    rel_pos = build_relative_position(x, x, BUCKETS, MAX_DISTANCE)[0]  # (T, T): bucket(i - j)
    expected_c2p = torch.clamp(rel_pos + BUCKETS, 0, 2 * BUCKETS - 1) - problem.first_row
    expected_p2c = torch.clamp(BUCKETS - rel_pos.T, 0, 2 * BUCKETS - 1) - problem.first_row
    c2p_index, p2c_index = bench.sdpa_bias_indices(problem)
    assert torch.equal(c2p_index, expected_c2p) and torch.equal(p2c_index, expected_p2c)
    positions = torch.arange(T)
    distance = positions[:, None] - positions[None, :] + T - 1
    assert torch.equal(problem.c2p_rows.long()[distance], expected_c2p)
    assert torch.equal(problem.p2c_rows.long()[distance], expected_p2c)
    # R has 2 * 8 rows; distances up to 16 reach past the last bucket, to both of R's ends
    assert problem.first_row == 0 and problem.n == 2 * BUCKETS
    assert int(problem.c2p_rows.min()) == 0 and int(problem.c2p_rows.max()) == 2 * BUCKETS - 1
    assert problem.pos_key.shape == (HEADS, problem.n, HEAD_DIM)
    assert problem.c2p_rows.dtype == torch.int32 and problem.c2p_rows.shape == (2 * T - 1,)


def test_default_row_maps_are_deberta_xxlarge():
    c2p_rows, p2c_rows = bench.deberta_row_maps(4096, bench.DEBERTA_BUCKETS, bench.DEBERTA_MAX_RELATIVE)
    assert c2p_rows.shape == (2 * 4096 - 1,)
    assert int(c2p_rows.min()) == 0 and int(c2p_rows.max()) == 511  # R: 512 rows, clamped at both ends
    assert int(c2p_rows[4095]) == 256  # distance 0
    assert torch.equal(c2p_rows, p2c_rows)  # the buckets are symmetric
    # a 128-token batch reads only the rows of distances -127 .. 127, as the model keeps them
    short = bench.deberta_problem([128], 1, 16, torch.float32, device="cpu")
    assert (short.first_row, short.n) == (256 - 127, 255)
    assert int(short.c2p_rows.min()) == 0 and int(short.c2p_rows.max()) == 254


def test_providers_agree_forward_and_backward(problem):
    triton_run, triton_inputs = bench.triton_deberta(problem)
    sdpa_run, sdpa_inputs = bench.sdpa_bias(problem)

    (triton_out,) = triton_run()
    (sdpa_out,) = sdpa_run()
    assert triton_out.shape == (sum(LENGTHS), HEADS, HEAD_DIM)
    assert sdpa_out.shape == (len(LENGTHS), HEADS, max(LENGTHS), HEAD_DIM)
    sdpa_packed = unpad(sdpa_out.transpose(1, 2), LENGTHS)
    torch.testing.assert_close(triton_out, sdpa_packed, atol=1e-5, rtol=1e-5)

    grad_out = torch.randn_like(triton_out)
    triton_out.backward(grad_out)
    sdpa_out.backward(bench.pad_tokens(grad_out, LENGTHS, max(LENGTHS)).transpose(1, 2))
    names = ["q", "k", "v", "pos_key", "pos_query"]
    for name, triton_input, sdpa_input in zip(names, triton_inputs, sdpa_inputs):
        assert triton_input.grad is not None and sdpa_input.grad is not None, name
        assert torch.isfinite(triton_input.grad).all() and torch.isfinite(sdpa_input.grad).all(), name
        sdpa_grad = unpad(sdpa_input.grad, LENGTHS) if name in ("q", "k", "v") else sdpa_input.grad
        torch.testing.assert_close(triton_input.grad, sdpa_grad, atol=1e-4, rtol=1e-4, msg=name)
        assert triton_input.grad.abs().sum() > 0, name


@pytest.mark.parametrize("provider", ["triton", "sdpa-bias"])
def test_benchmark_steps_run(problem, provider):
    """The steps the benchmark times, as it builds them: forward, then forward + backward."""
    run, inputs = bench.DEBERTA_PROVIDERS[provider](problem)
    bench.bench_step(run, "fwd")()
    assert all(tensor.grad is None for tensor in inputs)
    bench.bench_step(run, "fwd+bwd")()
    for tensor in inputs:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_parse_args():
    args = bench.parse_args(["--deberta"])
    assert args.deberta
    assert (args.heads, args.head_dim) == (bench.DEBERTA_HEADS, 64)
    assert args.plot == bench.DEBERTA_PLOT
    args = bench.parse_args(["--deberta", "--heads", "4", "--head-dim", "32", "--plot", "x.png"])
    assert (args.heads, args.head_dim, args.plot) == (4, 32, Path("x.png"))
    args = bench.parse_args([])
    assert not args.deberta
    assert (args.heads, args.plot) == (bench.DEFAULT_HEADS, bench.DEFAULT_PLOT)


def test_help():
    result = subprocess.run([sys.executable, "-m", "minirm.kernels.bench", "--deberta", "--help"], check=False, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--deberta" in result.stdout


def test_main_without_cuda_exits_cleanly(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: main would run the benchmark")
    assert bench.main(["--deberta"]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_out_of_memory_is_reported_not_raised():
    def provider(problem):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert bench.deberta_measure(provider, None, "fwd") == (None, None)
    row = bench.deberta_row({"mode": "fwd"}, {"triton": 1.0, "sdpa-bias": None}, {"triton": 2.0, "sdpa-bias": None})
    assert row["speedup"] is None and row["memory saving"] is None


def test_tables_and_plot(monkeypatch, tmp_path, capsys):
    """The two --deberta workloads, their tables and the plot, with the measurement stubbed out
    (it needs CUDA): on CPU, tiny shapes, synthetic lengths."""
    measured = []

    def fake_measure(provider, problem, mode):
        measured.append((provider, problem.max_seqlen, mode))
        if provider is bench.sdpa_bias and problem.max_seqlen == 4096:
            return None, None  # as if out of memory
        return (2.0, 300.0) if provider is bench.sdpa_bias else (1.0, 100.0)

    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "deberta_measure", fake_measure)
    args = bench.parse_args(["--deberta", "--data", str(tmp_path / "missing.jsonl"), "--batch-size", "4",
                             "--num-batches", "2", "--heads", "2", "--head-dim", "16", "--fixed-tokens", "4096",
                             "--plot", str(tmp_path / "deberta.png")])
    real_rows = bench.bench_deberta_real_lengths(args, torch.float16)
    fixed_rows = bench.bench_deberta_fixed_lengths(args, torch.float16)
    bench.plot_deberta(real_rows, fixed_rows, args.plot)
    out = capsys.readouterr().out
    assert "synthetic lognormal lengths" in out and "not DeBERTa's own tokenizer" in out
    assert [row["mode"] for row in real_rows] == bench.MODES
    assert real_rows[0]["triton ms"] == 2.0 and real_rows[0]["sdpa-bias ms"] == 4.0  # summed over 2 batches
    assert real_rows[0]["speedup"] == 2.0 and real_rows[0]["memory saving"] == 3.0
    assert [row["seq_len"] for row in fixed_rows] == bench.FIXED_SEQ_LENS * len(bench.MODES)
    assert [row["batch"] for row in fixed_rows[:6]] == [32, 16, 8, 4, 2, 1]
    assert [row["n"] for row in fixed_rows[:6]] == [255, 385, 511, 512, 512, 512]  # as rows_read in the model
    assert fixed_rows[-1]["sdpa-bias ms"] is None and fixed_rows[-1]["speedup"] is None
    assert len(measured) == len(bench.MODES) * len(bench.DEBERTA_PROVIDERS) * (2 + len(bench.FIXED_SEQ_LENS))
    assert "memory saving" in out
    pytest.importorskip("matplotlib")
    assert args.plot.exists()


def test_the_other_design_computes_the_same_attention():
    """benchmarks/deberta_designs.py compares the shipped kernel's compile figures with a per-tile
    design's; that comparison means something only if the per-tile kernel is right."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "deberta_designs.py"
    spec = importlib.util.spec_from_file_location("deberta_designs", path)
    designs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(designs)
    assert designs.check_in_interpreter()
