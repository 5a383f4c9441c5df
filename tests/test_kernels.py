"""Tests for the Triton varlen attention kernel (kernels/attention.py).

They run on CPU through Triton's interpreter. Triton reads TRITON_INTERPRET when it is imported
(and when @triton.jit defines a kernel), so the variable must be set before the first
`import triton` of the test session: tests/conftest.py sets it, and this module sets it too in
case it runs alone. A check below turns a late setting into one clear collection error.

The interpreter executes every program instance as numpy code, one at a time, so tensors stay
small: few heads, short sequences, and each axis (head dim, dtype, causal, lengths) is covered
without taking the full cross product. Low-precision results are compared with an fp32
reference computed from the same rounded inputs, so the tolerance only has to absorb the
kernel's own rounding.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from minirm.kernels.attention import varlen_attention, varlen_attention_reference  # noqa: E402
from minirm.kernels.attention import (  # noqa: E402
    _attention_forward,
    _fill_tile_map,
    _kernels_interpreted,
    _num_tiles,
    _tile_map_buffers,
)

if not _kernels_interpreted():
    raise RuntimeError("triton was imported before TRITON_INTERPRET=1 was set, so the kernels are compiled for a "
                       "GPU; set the variable before the first `import triton` (tests/conftest.py does)")

# (atol, rtol) per dtype: room for each format's rounding of O(1) values, small enough that a wrong
# mask, scale or rescaling fails (checked by breaking the kernel on purpose).
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}

# Sequence lengths, ragged on purpose: a single token, two tokens, lengths that are not multiples
# of any block size, one exact multiple, and one longer than the largest GPU block (128).
RAGGED_LENGTHS = [1, 2, 17, 64, 127, 150]


def cu_seqlens_for(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def random_qkv(lengths, heads, head_dim, dtype, seed=0, kv_heads=None):
    """q (tokens, heads, head_dim), and k, v with kv_heads heads (default: heads)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(sum(lengths), h, head_dim) for h in (heads, kv_heads or heads, kv_heads or heads)]
    return [torch.randn(shape, generator=generator).to(dtype) for shape in shapes]


def assert_matches_reference(lengths, heads, head_dim, dtype, causal, softmax_scale=None, seed=0, kv_heads=None):
    """Forward output and dq, dk, dv of the kernel against the fp32 PyTorch reference."""
    cu_seqlens = cu_seqlens_for(lengths)
    q, k, v = random_qkv(lengths, heads, head_dim, dtype, seed, kv_heads)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)

    kernel_inputs = [x.clone().requires_grad_() for x in (q, k, v)]
    out = varlen_attention(*kernel_inputs, cu_seqlens, max(lengths), causal=causal, softmax_scale=softmax_scale)
    out.backward(grad_out)

    # The reference sees exactly the same (already rounded) numbers, in fp32.
    reference_inputs = [x.float().requires_grad_() for x in (q, k, v)]
    expected = varlen_attention_reference(*reference_inputs, cu_seqlens, causal=causal, softmax_scale=softmax_scale)
    expected.backward(grad_out.float())

    atol, rtol = TOLERANCES[dtype]
    assert out.dtype == dtype and out.shape == q.shape
    bounds = cu_seqlens.tolist()
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        for name, actual, wanted in [
            ("out", out, expected),
            ("dq", kernel_inputs[0].grad, reference_inputs[0].grad),
            ("dk", kernel_inputs[1].grad, reference_inputs[1].grad),
            ("dv", kernel_inputs[2].grad, reference_inputs[2].grad),
        ]:
            torch.testing.assert_close(
                actual[start:end].float(), wanted[start:end], atol=atol, rtol=rtol,
                msg=lambda text: f"{name} of sequence {index} (length {end - start}): {text}",
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_ragged_batch_matches_reference(causal, dtype):
    assert_matches_reference(RAGGED_LENGTHS, heads=2, head_dim=32, dtype=dtype, causal=causal)


@pytest.mark.parametrize(
    "head_dim, dtype, causal",
    [(16, torch.float32, True), (64, torch.float16, False), (128, torch.bfloat16, True), (128, torch.float32, False)],
    ids=str,
)
def test_head_dims(head_dim, dtype, causal):
    # Includes an empty sequence, which must simply produce no rows.
    assert_matches_reference([5, 0, 33, 70], heads=2, head_dim=head_dim, dtype=dtype, causal=causal)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_batch_of_one(causal):
    assert_matches_reference([133], heads=1, head_dim=32, dtype=torch.float32, causal=causal)


def test_custom_softmax_scale():
    assert_matches_reference([9, 40], heads=3, head_dim=16, dtype=torch.float32, causal=True, softmax_scale=0.3)


# Grouped-query attention: k and v have kv_heads heads, and query head h reads K/V head
# h // (heads // kv_heads). Group sizes 2 and 4 and multi-query (one K/V head), causal and not, head
# dims up to 128 (causal included), on batches skewed in length with a one-token sequence. Group size 1
# (multi-head) is every other test of this file. dk and dv sum over the query heads of a group.
SKEWED_LENGTHS = [1, 70, 3, 33]


@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, dtype, causal",
    [(4, 2, 32, torch.float32, False), (4, 2, 32, torch.bfloat16, True), (8, 2, 16, torch.float16, True),
     (4, 1, 64, torch.float32, False), (4, 1, 128, torch.bfloat16, True), (2, 1, 128, torch.float32, True)],
    ids=str,
)
def test_grouped_query_attention(heads, kv_heads, head_dim, dtype, causal):
    assert_matches_reference(SKEWED_LENGTHS, heads=heads, head_dim=head_dim, dtype=dtype, causal=causal,
                             kv_heads=kv_heads)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_grouped_reference_is_sdpa_with_enable_gqa(causal):
    """The reference the GQA tests use is torch's own GQA, sequence by sequence: values and gradients."""
    lengths, heads, kv_heads = [1, 9, 4], 6, 2
    cu_seqlens = cu_seqlens_for(lengths)
    q, k, v = (x.double().requires_grad_() for x in random_qkv(lengths, heads, 16, torch.float32, kv_heads=kv_heads))
    ours = varlen_attention_reference(q, k, v, cu_seqlens, causal=causal)
    bounds = cu_seqlens.tolist()
    theirs = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(
            *(x[start:end].transpose(0, 1)[None] for x in (q, k, v)), is_causal=causal, enable_gqa=True)[0]
        .transpose(0, 1) for start, end in zip(bounds[:-1], bounds[1:])])
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    for mine, torchs in zip(torch.autograd.grad(ours, (q, k, v), grad), torch.autograd.grad(theirs, (q, k, v), grad)):
        torch.testing.assert_close(mine, torchs)


def test_grouped_gradients_are_deterministic():
    """dk and dv of a K/V head sum its group's query heads in one program, in a fixed order: no atomics."""
    lengths = [40, 7]
    q, k, v = (x.requires_grad_() for x in random_qkv(lengths, 4, 16, torch.float32, kv_heads=1))
    runs = []
    for _ in range(2):
        out = varlen_attention(q, k, v, cu_seqlens_for(lengths), max(lengths), causal=True)
        runs.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_max_seqlen_larger_than_needed():
    # Callers that pad to a fixed length pass that length: it only bounds the launch grid and picks
    # the autotuning bucket.
    lengths = [3, 20]
    cu_seqlens = cu_seqlens_for(lengths)
    q, k, v = random_qkv(lengths, 2, 16, torch.float32)
    out = varlen_attention(q, k, v, cu_seqlens, max_seqlen=100)
    torch.testing.assert_close(out, varlen_attention_reference(q, k, v, cu_seqlens))


@pytest.mark.parametrize("block", [16, 32, 128])
def test_tile_map_launches_only_tiles_with_work(block):
    """Tile t of the launch grid -> (sequence, block): in order, every block once, no idle tiles but the tail."""
    lengths = [1, 0, 300, 17, 0, 0, block, block + 1, 2 * block - 1, 5]
    cu_seqlens = cu_seqlens_for(lengths)
    total, num_seqs = sum(lengths), len(lengths)
    tile_seq, seq_first_tile, _ = _tile_map_buffers(cu_seqlens, total, max(lengths), [block])
    nargs = dict(cu_seqlens=cu_seqlens, tile_seq=tile_seq, seq_first_tile=seq_first_tile, total_tokens=total,
                 num_seqs=num_seqs)
    _fill_tile_map(nargs, block)
    grid = _num_tiles(total, num_seqs, max(lengths), block)
    expected = [(seq, index) for seq, length in enumerate(lengths) for index in range(-(-length // block))]
    assert len(expected) <= grid < len(expected) + num_seqs  # the grid is a bound known without a sync
    mapped = tile_seq[:grid].tolist()
    assert mapped[len(expected):] == [num_seqs] * (grid - len(expected))  # idle tail: exits at once
    first = seq_first_tile.tolist()
    assert [(seq, tile - first[seq]) for tile, seq in enumerate(mapped[:len(expected)])] == expected
    # Equal lengths (a padded batch, or a fixed-length benchmark): the grid is exact.
    assert _num_tiles(7 * 300, 7, 300, block) == 7 * -(-300 // block)


def test_long_sequences_hit_interior_and_edge_blocks():
    # Under the interpreter's 32/16 blocks a 200-token sequence has unmasked interior key and query
    # blocks on both sides of the causal diagonal, plus a partial edge block; 48 is a whole number
    # of blocks (no partial edge), 31 and 33 straddle one block boundary.
    assert_matches_reference([200, 48, 31, 33], heads=1, head_dim=16, dtype=torch.float32, causal=True)
    assert_matches_reference([200, 48, 31, 33], heads=1, head_dim=16, dtype=torch.float16, causal=False)


def test_log_sum_exp_saved_for_backward():
    lengths = [1, 37]
    cu_seqlens = cu_seqlens_for(lengths)
    q, k, v = random_qkv(lengths, 2, 32, torch.float32)
    scale = 32 ** -0.5
    for causal in (False, True):
        _, lse = _attention_forward(q, k, v, cu_seqlens, max(lengths), causal, scale)
        assert lse.shape == (2, sum(lengths)) and lse.dtype == torch.float32
        for start, end in [(0, 1), (1, 38)]:
            scores = torch.einsum("qhd,khd->hqk", q[start:end], k[start:end]) * scale
            if causal:
                length = end - start
                scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
            torch.testing.assert_close(lse[:, start:end], torch.logsumexp(scores, dim=-1))


def test_non_contiguous_inputs():
    # q, k, v sliced out of one fused projection, as models produce them.
    lengths = [7, 30]
    cu_seqlens = cu_seqlens_for(lengths)
    qkv = torch.randn(sum(lengths), 3, 2, 32, requires_grad=True)
    q, k, v = qkv.unbind(dim=1)
    assert not q.is_contiguous()
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), causal=True)
    out.sum().backward()
    kernel_grad = qkv.grad.clone()

    qkv.grad = None
    expected = varlen_attention_reference(*qkv.unbind(dim=1), cu_seqlens, causal=True)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernel_grad, qkv.grad, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------
def valid_inputs():
    lengths = [3, 5]
    q, k, v = random_qkv(lengths, 2, 16, torch.float32)
    return dict(q=q, k=k, v=v, cu_seqlens=cu_seqlens_for(lengths), max_seqlen=5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(q=a["q"][:, 0]), "shape"),
        (lambda a: a.update(k=a["k"][:4]), "k and v must have the same shape"),
        (lambda a: a.update(k=a["k"][:, :1]), "k and v must have the same shape"),
        (lambda a: a.update(k=a["k"][:4], v=a["v"][:4]), "total_tokens=8, kv_heads, head_dim=16"),
        (lambda a: a.update(q=torch.zeros(8, 3, 16), k=torch.zeros(8, 2, 16), v=torch.zeros(8, 2, 16)),
         "2 heads must divide q's 3 heads"),
        (lambda a: a.update(v=a["v"].half()), "same dtype"),
        (lambda a: a.update(q=a["q"].double(), k=a["k"].double(), v=a["v"].double()), "not supported"),
        (lambda a: a.update(**{name: a[name][..., :8].contiguous() for name in "qkv"}), "head_dim 8"),
        (lambda a: a.update(cu_seqlens=a["cu_seqlens"].long()), "int32"),
        (lambda a: a.update(cu_seqlens=torch.zeros(1, dtype=torch.int32)), "batch \\+ 1"),
        (lambda a: a.update(**{name: torch.zeros(1, 1, 16).expand(8, 65536, 16) for name in "qkv"}),
         "at most 65535 heads"),
        (lambda a: a.update(cu_seqlens=torch.tensor([0, 3, 7], dtype=torch.int32)), "total_tokens=8"),
        (lambda a: a.update(cu_seqlens=torch.tensor([0, 6, 3, 8], dtype=torch.int32)), "non-decreasing"),
        (lambda a: a.update(max_seqlen=4), "smaller than the longest"),
        (lambda a: a.update(max_seqlen=0), "positive"),
        (lambda a: a.update(max_seqlen=5.0), "positive Python int"),
        (lambda a: a.update(q=a["q"].numpy()), "torch.Tensor"),
        (lambda a: a.update(softmax_scale=-0.25), "softmax_scale must be a positive finite number, got -0.25"),
        (lambda a: a.update(softmax_scale=0.0), "positive finite"),
        (lambda a: a.update(softmax_scale=float("inf")), "positive finite"),
        (lambda a: a.update(softmax_scale=float("nan")), "positive finite"),
        (lambda a: a.update(softmax_scale=torch.tensor(-0.25)), "positive finite"),
        (lambda a: a.update(softmax_scale="0.25"), "positive finite"),
        (lambda a: a.update(softmax_scale=True), "positive finite"),
    ],
)
def test_invalid_inputs_raise_value_error(change, message):
    arguments = valid_inputs()
    change(arguments)
    with pytest.raises(ValueError, match=message):
        varlen_attention(**arguments)


def run_without_interpreter(script):
    """Run a Python script in a fresh process in which TRITON_INTERPRET was never set.

    Triton reads the variable when it is imported, so this process (interpreted kernels) cannot
    test the compiled path or the CPU error; a subprocess can.
    """
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], env=environment,
                          capture_output=True, text=True, timeout=600)


CPU_WITHOUT_INTERPRETER = """
import torch
from minirm.kernels import attention  # importing needs neither a GPU nor TRITON_INTERPRET
cu_seqlens = torch.tensor([0, 3], dtype=torch.int32)
q = torch.randn(3, 2, 16)
try:
    attention.varlen_attention(q, q, q, cu_seqlens, 3)
except RuntimeError as error:
    print(error)
"""


def test_cpu_without_interpreter_raises_clear_error():
    result = run_without_interpreter(CPU_WITHOUT_INTERPRETER)
    assert result.returncode == 0, result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout and "CUDA" in result.stdout


# ----------------------------------------------------------------------------------------------
# Compiled kernels, only where a CUDA GPU is present (skipped on CPU-only machines and in CI)
# ----------------------------------------------------------------------------------------------
COMPILED_ON_GPU = """
import torch
from minirm.kernels.attention import varlen_attention, varlen_attention_reference

torch.manual_seed(0)
lengths = [1, 17, 300, 1000, 64, 129]
cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")


def check(heads, kv_heads, head_dim, dtype, causal, tolerance):
    # k and v have kv_heads heads (grouped-query attention when fewer than q's: dK/dV summed over each group)
    q = torch.randn(sum(lengths), heads, head_dim, device="cuda", dtype=dtype, requires_grad=True)
    k, v = (torch.randn(sum(lengths), kv_heads, head_dim, device="cuda", dtype=dtype, requires_grad=True)
            for _ in range(2))
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), causal=causal)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    reference_inputs = [x.detach().float().requires_grad_() for x in (q, k, v)]
    expected = varlen_attention_reference(*reference_inputs, cu_seqlens, causal=causal)
    expected.backward(grad_out.float())
    # On the GPU the probabilities are also rounded to fp16/bf16 before the P @ V product.
    case = f"heads {heads}/{kv_heads} {head_dim} {dtype} {causal}"
    for name, actual, wanted in [("out", out, expected)] + [
            (name, x.grad, y.grad) for name, x, y in zip("qkv", (q, k, v), reference_inputs)]:
        torch.testing.assert_close(actual.float(), wanted, atol=tolerance, rtol=tolerance,
                                   msg=lambda text: f"{name} {case}: {text}")


for head_dim in (64, 128):
    for dtype, tolerance in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2), (torch.float32, 1e-4)):
        for causal in (False, True):
            check(4, 4, head_dim, dtype, causal, tolerance)
# grouped-query attention: 4 query heads sharing 2 K/V heads
check(4, 2, 128, torch.bfloat16, True, 5e-2)
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_gpu():
    result = run_without_interpreter(COMPILED_ON_GPU)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_interpreter_turns_one_element_arrays_into_ints():
    """Triton 3.6's interpreter calls int() on one-element arrays, which NumPy 2.4 refuses; importing
    minirm.kernels.attention teaches it to squeeze first (kernels/_triton_compat.py). On a Triton
    that already squeezes, nothing is patched and this holds as it is."""
    from triton.runtime import interpreter

    from minirm.kernels import _triton_compat

    assert _triton_compat._index_of_one_element_array(interpreter) == 7
    assert not _triton_compat.interpreter_needs_patch()
