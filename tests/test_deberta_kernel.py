"""The fused DeBERTa kernel (kernels/deberta.py) in Triton's interpreter.

Three levels, each against the SDPA-with-bias computation that transformers and minirm's
padded path run:
* the kernel alone, against `disentangled_attention_reference` (the (L, L) c2p + p2c bias handed
  to SDPA, per sequence, in fp32): outputs and the gradients of q, k, v and both relative
  projections, for c2p only, p2c only and both, log buckets or a plain clamp, head dims
  16 to 128, fp32 / bf16 / fp16, ragged lengths 1, 2, 17, 200, far beyond the bucket range;
* the model on the triton backend, per DeBERTa config flag of test_deberta.py: logits against
  transformers and every parameter's gradient against the padded sdpa path, with and without
  gradient checkpointing;
* score.py --attention triton --device cpu, against transformers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from kernels.deberta import disentangled_attention, disentangled_attention_reference  # noqa: E402
from minirm import Scorer  # noqa: E402
from minirm.models.deberta import relative_rows  # noqa: E402
from packed_grads import assert_packed_grads_match_padded  # noqa: E402
from test_deberta import CONFIGS, deberta_config, hf_logits, our_logits, random_deberta, save_minilm_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5
# 1, 2, 17 and 200 tokens; 200 is far beyond both position tables below (16 and 64 rows)
LENGTHS = [17, 1, 200, 2, 17]


def packed_inputs(lengths, heads, head_dim, n, dtype=torch.float32, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) + offset).to(dtype).requires_grad_()

    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return (rand(total, heads, head_dim), rand(total, heads, head_dim), rand(total, heads, head_dim), cu_seqlens,
            rand(heads, n, head_dim), rand(heads, n, head_dim))


def row_maps(max_len, buckets, max_distance):
    """DeBERTa's own distance -> row maps (minirm.models.deberta), as int32: (maps, rows of R)."""
    span = buckets if buckets > 0 else max_distance
    c2p, p2c = relative_rows(max_len, buckets, max_distance, span, "cpu")
    return c2p.int(), p2c.int(), 2 * span


# (position_buckets, max_relative_positions): v3-style log buckets, and a plain clamp at +-32
POSITIONS = {"log-buckets": (8, 16), "clamp": (-1, 32)}
TERMS = {"c2p": (True, False), "p2c": (False, True), "c2p+p2c": (True, True)}


def run_both(lengths, terms, positions, head_dim=16, heads=2, dtype=torch.float32, offset=0.0):
    """(kernel output, reference output, kernel inputs, reference inputs): the reference gets fp32
    copies of the same (rounded) values as leaves of its own."""
    c2p_rows, p2c_rows, n = row_maps(max(lengths), *POSITIONS[positions])
    q, k, v, cu_seqlens, pos_key, pos_query = packed_inputs(lengths, heads, head_dim, n, dtype, offset=offset)
    use_c2p, use_p2c = TERMS[terms]
    inputs = [q, k, v] + ([pos_key] if use_c2p else []) + ([pos_query] if use_p2c else [])
    reference_inputs = [t.detach().float().requires_grad_() for t in inputs]

    def call(function, tensors, *extra):
        q, k, v, *relative = tensors
        pos_key = relative.pop(0) if use_c2p else None
        pos_query = relative.pop(0) if use_p2c else None
        return function(q, k, v, cu_seqlens, *extra, pos_key=pos_key, pos_query=pos_query, c2p_rows=c2p_rows,
                        p2c_rows=p2c_rows)

    out = call(disentangled_attention, inputs, max(lengths))
    expected = call(disentangled_attention_reference, reference_inputs)
    return out, expected, inputs, reference_inputs


def check(lengths, terms, positions, head_dim=16, dtype=torch.float32, atol=ATOL, grad_atol=1e-4, offset=0.0):
    out, expected, inputs, reference_inputs = run_both(lengths, terms, positions, head_dim, dtype=dtype,
                                                       offset=offset)
    assert out.dtype == dtype and out.shape == expected.shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=0)
    d_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = torch.autograd.grad(out, inputs, d_out)
    want = torch.autograd.grad(expected, reference_inputs, d_out.float())
    for name, a, b in zip(("q", "k", "v", "relative 1", "relative 2"), got, want):
        assert a.dtype == dtype and torch.isfinite(a).all(), name
        torch.testing.assert_close(a.float(), b, atol=grad_atol, rtol=1e-3 if dtype == torch.float32 else 2e-2,
                                   msg=lambda m, name=name: f"{name}: {m}")


# --- the kernel alone ----------------------------------------------------------------------------


@pytest.mark.parametrize("positions", list(POSITIONS))
@pytest.mark.parametrize("terms", list(TERMS))
def test_kernel_matches_sdpa_with_bias(terms, positions):
    check(LENGTHS, terms, positions)


@pytest.mark.parametrize("head_dim", [16, 32, 64, 128])
def test_kernel_head_dims(head_dim):
    check([17, 1, 40, 2], "c2p+p2c", "log-buckets", head_dim=head_dim)


@pytest.mark.parametrize("lengths", [[1], [2], [1, 1, 1], [16, 32, 48]], ids=str)
def test_kernel_edge_lengths(lengths):
    """Single tokens, and lengths that fill blocks exactly (no masked edge block at all)."""
    check(lengths, "c2p+p2c", "clamp")


# bf16 keeps 8 bits (2^-8 relative), fp16 11; the reference is fp32 on the same rounded inputs
@pytest.mark.parametrize("dtype,atol,grad_atol", [(torch.bfloat16, 2e-2, 5e-2), (torch.float16, 3e-3, 1e-2)])
def test_kernel_half_precision(dtype, atol, grad_atol):
    check([17, 1, 60, 2], "c2p+p2c", "log-buckets", dtype=dtype, atol=atol, grad_atol=grad_atol)


def test_fp16_scores_beyond_fp16_range_stay_finite():
    """Entries around 70 in every input: each of q.k, q.Pk and k.Pq is ~16 x 70^2 = 78,400, past
    fp16's largest value, 65,504. The kernel keeps scores in fp32 (the tables too, for fp16), so
    the softmax sees the right numbers instead of inf."""
    out, expected, inputs, _ = run_both([17, 30], "c2p+p2c", "clamp", dtype=torch.float16, offset=70.0)
    q, k = inputs[0].float().transpose(0, 1), inputs[1].float().transpose(0, 1)  # (heads, tokens, head_dim)
    assert (q @ k.transpose(1, 2)).min() > 65504
    assert torch.isinf(q.half() @ k.half().transpose(1, 2)).all()  # what a score written out in fp16 becomes
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0, rtol=1e-3)  # fp16's own rounding of ~70: 2^-11


def test_kernel_rejects_a_short_row_map():
    c2p_rows, p2c_rows, n = row_maps(10, 8, 16)
    q, k, v, cu_seqlens, pos_key, pos_query = packed_inputs([17], 2, 16, n)
    with pytest.raises(ValueError, match="2 \\* max_seqlen - 1 = 33"):
        disentangled_attention(q, k, v, cu_seqlens, 17, pos_key, pos_query, c2p_rows, p2c_rows)
    with pytest.raises(ValueError, match="pos_key must have shape"):
        disentangled_attention(q, k, v, cu_seqlens, 17, pos_key[:, :, :8], None, *row_maps(17, 8, 16)[:2])


# --- the model on the triton backend ------------------------------------------------------------

# head dim 16, the smallest the kernel takes
WIDE = dict(hidden_size=64, num_attention_heads=4)
MODEL_CONFIGS = [name for name in CONFIGS if name != "embed-proj"] + ["embed-proj"]
# single tokens, runs of equal length, and 60 tokens beyond "beyond-buckets"' 8 relative positions
RAGGED = [60, 17, 17, 9, 2, 1]


@pytest.fixture(scope="module")
def make_wide_deberta(tmp_path_factory):
    cache = {}

    def make(name):
        if name not in cache:
            torch.manual_seed(0)
            overrides = dict(CONFIGS[name], **WIDE)
            if name == "embed-proj":
                overrides["embedding_size"] = 32
            if overrides.get("conv_groups", 1) > 1:
                overrides["conv_groups"] = 4
            model = random_deberta(deberta_config(**overrides))
            out = tmp_path_factory.mktemp(f"deberta-wide-{name}")
            model.save_pretrained(out)
            save_minilm_tokenizer(out)
            cache[name] = (out, model)
        return cache[name]

    return make


def ragged_ids(seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1000, 30000, (n,), generator=g).tolist() for n in RAGGED]


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_on_the_kernel_matches_transformers_and_sdpa_gradients(make_wide_deberta, name):
    model_dir, hf_model = make_wide_deberta(name)
    scorer = Scorer.from_pretrained(str(model_dir), attention="triton")
    ids = ragged_ids()
    torch.testing.assert_close(our_logits(scorer, ids, "triton"), hf_logits(hf_model, ids), atol=ATOL, rtol=0)
    assert_packed_grads_match_padded(model_dir, ids, 1e-4, backend="triton")


def test_training_with_gradient_checkpointing_on_the_kernel(make_wide_deberta):
    """The 1.5B recipe trains with gradient checkpointing: each layer's kernel runs again in the
    backward pass, and every gradient still equals the padded path's."""
    model_dir, _ = make_wide_deberta("xxlarge-like")
    assert_packed_grads_match_padded(model_dir, ragged_ids(7), 1e-4, backend="triton", checkpointing=True)


def test_the_kernel_is_the_cuda_default_for_deberta():
    from minirm.attention import choose_backend
    from minirm.models import supports_triton

    assert supports_triton("deberta-v2")
    # where the kernel cannot serve (an old GPU, an odd head dim) sdpa takes over, as for BERT
    assert choose_backend(None, torch.device("cpu"), 64, torch.bfloat16, supports_triton("deberta-v2")) == "packed"


def test_score_cli_on_the_kernel_matches_transformers(make_wide_deberta, pairs, tmp_path):
    """TRITON_INTERPRET=1 python score.py --attention triton --device cpu, against transformers."""
    model_dir, hf_model = make_wide_deberta("xxlarge-like")
    prompts, responses = pairs
    rows = tmp_path / "pairs.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(prompts, responses)))
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(ROOT / "score.py"), "--model", str(model_dir), "--attention", "triton",
                           "--device", "cpu", "--input", str(rows)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    scores = [json.loads(line)["score"] for line in done.stdout.splitlines() if line.strip()]
    ids = Scorer.from_pretrained(str(model_dir)).encode_pairs(prompts, responses)
    expected = hf_logits(hf_model, ids)[:, 0]
    torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-4, rtol=0)
