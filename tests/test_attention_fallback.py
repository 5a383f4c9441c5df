"""Where the triton kernel cannot serve (issue 12, part 4): by default the models fall back to SDPA
with one line on stderr saying why, once; an explicit --attention triton there is a one-line error.
A CUDA device is described, never used: torch.device("cuda") allocates nothing, and the GPU's
compute capability is the only thing read from it (monkeypatched here)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import minirm.attention as A  # noqa: E402
from minirm import MinirmError, Scorer  # noqa: E402

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(A, "_FALLBACKS_SHOWN", set())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def test_the_kernel_is_the_default_where_it_serves():
    assert A.choose_backend(None, CUDA, 64, torch.bfloat16, kernel_ok=True) == "triton"
    assert A.choose_backend(None, torch.device("cpu"), 64, torch.float32, kernel_ok=True) == "packed"
    assert A.choose_backend(None, torch.device("cpu"), 64, torch.float32, kernel_ok=False) == "packed"
    assert A.choose_backend(None, CUDA, 64, torch.float32, kernel_ok=False) == "sdpa"  # DeBERTa's bias


@pytest.mark.parametrize("case, reason", [
    ("old-gpu", "compute capability is 7.5; the kernel needs 8.0"),
    ("head-dim", "head dim 80 is not one the kernel takes (16, 32, 64, 128)"),
    ("dtype", "the kernel does not take float64"),
    ("no-triton", "Triton is not installed"),
])
def test_fallback_prints_one_line_once_and_explicit_triton_is_an_error(monkeypatch, capsys, case, reason):
    head_dim, dtype = (80, torch.float32) if case == "head-dim" else (64, torch.float64 if case == "dtype" else torch.float16)
    if case == "old-gpu":
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    if case == "no-triton":
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert A.choose_backend(None, CUDA, head_dim, dtype, kernel_ok=True) == "sdpa"
    assert A.choose_backend(None, CUDA, head_dim, dtype, kernel_ok=True) == "sdpa"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err and err.startswith("minirm: attention runs on sdpa")
    with pytest.raises(MinirmError) as e:
        A.choose_backend("triton", CUDA, head_dim, dtype, kernel_ok=True)
    explicit = "needs the triton package (pip install triton)" if case == "no-triton" else reason
    assert explicit in str(e.value) and str(e.value).endswith("use --attention sdpa")


def test_scorer_on_cpu_refuses_triton_without_the_interpreter_before_loading(make_checkpoint, monkeypatch):
    import minirm.scoring.scorer

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(minirm.scoring.scorer, "load_model", lambda *a, **k: pytest.fail("loaded before the check"))
    with pytest.raises(MinirmError, match="--attention triton runs on CUDA, not cpu"):
        Scorer.from_pretrained(str(make_checkpoint("bert")[0]), attention="triton", device="cpu")
