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
* attention dropout: the kernels' draws, written out, applied by the reference give the same
  outputs and gradients; checkpointed training replays them;
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

from minirm.kernels.deberta import disentangled_attention, disentangled_attention_reference, dropout_keep_mask  # noqa: E402
from minirm import Scorer  # noqa: E402
from minirm.kernels.deberta_reference import relative_rows  # noqa: E402
from packed_grads import assert_packed_grads_match_padded  # noqa: E402
from test_deberta import CONFIGS, deberta_config, hf_logits, our_logits, random_deberta, save_minilm_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5
# 1, 2, 17 and 80 tokens: 80 is beyond both position tables below (16 and 64 rows), and spans
# three query blocks and five key blocks of the interpreter's tiles (32 x 16): interior and edge
# blocks, as 200 tokens did at a sixth of the interpreter's time
LENGTHS = [17, 1, 80, 2, 17]


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
    # fp16 training runs under autocast, which must not turn the fp32 tables back into fp16
    with torch.autocast("cpu", dtype=torch.float16):
        again, *_ = run_both([17, 30], "c2p+p2c", "clamp", dtype=torch.float16, offset=70.0)
    torch.testing.assert_close(again, out, atol=0, rtol=0)


def test_kernel_rejects_a_short_row_map():
    c2p_rows, p2c_rows, n = row_maps(10, 8, 16)
    q, k, v, cu_seqlens, pos_key, pos_query = packed_inputs([17], 2, 16, n)
    with pytest.raises(ValueError, match="2 \\* max_seqlen - 1 = 33"):
        disentangled_attention(q, k, v, cu_seqlens, 17, pos_key, pos_query, c2p_rows, p2c_rows)
    with pytest.raises(ValueError, match="pos_key must have shape"):
        disentangled_attention(q, k, v, cu_seqlens, 17, pos_key[:, :, :8], None, *row_maps(17, 8, 16)[:2])


# --- attention dropout ---------------------------------------------------------------------------


def test_kernel_dropout_matches_the_reference_with_its_masks():
    """The kernels draw one keep/drop per (head, query token, key) from Philox; dropout_keep_mask
    writes those draws out, and the reference applied with them gives the same output and the
    same gradients: the forward and both backward kernels drop the very same probabilities."""
    lengths, p, seed = [17, 1, 60, 2], 0.3, 1234
    c2p_rows, p2c_rows, n = row_maps(max(lengths), *POSITIONS["log-buckets"])
    q, k, v, cu_seqlens, pos_key, pos_query = packed_inputs(lengths, 2, 16, n)
    masks = dropout_keep_mask(cu_seqlens, 2, max(lengths), p, seed)
    assert [m.shape for m in masks] == [(2, n, n) for n in lengths]
    out = disentangled_attention(q, k, v, cu_seqlens, max(lengths), pos_key, pos_query, c2p_rows, p2c_rows,
                                 dropout_p=p, dropout_seed=seed)
    expected = disentangled_attention_reference(q, k, v, cu_seqlens, pos_key, pos_query, c2p_rows, p2c_rows,
                                                dropout_p=p, dropout_masks=masks)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    inputs = [q, k, v, pos_key, pos_query]
    d_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    for name, a, b in zip("q k v pos_key pos_query".split(), torch.autograd.grad(out, inputs, d_out),
                          torch.autograd.grad(expected, inputs, d_out)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
    # and the dropout is real: without it the output differs by far
    plain = disentangled_attention(q, k, v, cu_seqlens, max(lengths), pos_key, pos_query, c2p_rows, p2c_rows)
    assert (plain - out).abs().max() > 0.1


def test_dropout_draws_keep_the_right_share_and_depend_on_seed_and_head():
    cu_seqlens = torch.tensor([0, 150, 300], dtype=torch.int32)
    masks = dropout_keep_mask(cu_seqlens, 2, 150, 0.1, 7)
    kept = torch.cat([m.flatten() for m in masks]).float()
    assert kept.numel() == 90_000 and abs(kept.mean().item() - 0.9) < 0.005  # 5 standard deviations: 0.005
    assert not torch.equal(masks[0][0], masks[0][1])  # heads draw apart
    assert not torch.equal(masks[0][0], masks[1][0])  # so do sequences
    again = dropout_keep_mask(cu_seqlens, 2, 150, 0.1, 7)
    other = dropout_keep_mask(cu_seqlens, 2, 150, 0.1, 8)
    assert all(torch.equal(a, b) for a, b in zip(masks, again))
    assert not torch.equal(masks[0], other[0])


def test_kernel_rejects_bad_dropout():
    c2p_rows, p2c_rows, n = row_maps(17, 8, 16)
    q, k, v, cu_seqlens, pos_key, pos_query = packed_inputs([17], 2, 16, n)
    with pytest.raises(ValueError, match="dropout_p must be in"):
        disentangled_attention(q, k, v, cu_seqlens, 17, pos_key, pos_query, c2p_rows, p2c_rows, dropout_p=1.0)


# --- the model on the triton backend ------------------------------------------------------------

# head dim 16, the smallest the kernel takes
WIDE = dict(hidden_size=64, num_attention_heads=4)
# single tokens, runs of equal length, and 60 tokens beyond "beyond-buckets"' 8 relative positions
RAGGED = [40, 17, 17, 9, 2, 1]


@pytest.fixture(scope="module")
def make_wide_deberta(tmp_path_factory):
    cache = {}

    def make(name):
        if name not in cache:
            torch.manual_seed(0)
            model = random_deberta(deberta_config(**dict(CONFIGS[name], **WIDE)))
            out = tmp_path_factory.mktemp(f"deberta-wide-{name}")
            model.save_pretrained(out)
            save_minilm_tokenizer(out)
            cache[name] = (out, model)
        return cache[name]

    return make


# the training tests replay dropout draws and checkpointed layers: a full tile, an edge tile and
# lone tokens are enough, and the interpreter's Philox draws cost most of their time
SHORT_RAGGED = [24, 9, 1]


def ragged_ids(seed=5, lengths=RAGGED):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1000, 30000, (n,), generator=g).tolist() for n in lengths]


# the configs whose kernel inputs differ: which relative terms, which position maps (log buckets,
# clamps, sizes, distances beyond them), no relative terms (the varlen kernel), the 1.5B layout.
# share-att-key, conv, conv-tanh-groups, buckets-8-shared and embed-proj change only what the model
# computes before or after attention, on every backend alike: test_deberta.py checks them at parity
KERNEL_CONFIGS = [name for name in CONFIGS
                  if name not in ("share-att-key", "conv", "conv-tanh-groups", "buckets-8-shared", "embed-proj")]


@pytest.mark.parametrize("name", KERNEL_CONFIGS)
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
    assert_packed_grads_match_padded(model_dir, ragged_ids(7, SHORT_RAGGED), 1e-4, backend="triton",
                                     checkpointing=True)


def test_training_with_attention_dropout_on_the_kernel(make_wide_deberta):
    """DeBERTa's configs carry attention dropout (0.1): training runs it in the kernel. The seed
    comes from torch's generator, so activation checkpointing, which replays the RNG, recomputes
    each layer with the same draws: the gradients equal those of a run without checkpointing."""
    from minirm.batching import pad_batch
    from minirm.checkpoint import load_model

    model_dir, _ = make_wide_deberta("xxlarge-like")
    model = load_model(model_dir)[0].train()
    assert model.cfg.attention_dropout == 0.1
    for module in model.modules():  # only attention dropout stays random
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    input_ids, lengths = pad_batch(ragged_ids(lengths=SHORT_RAGGED), 0, "cpu")

    def grads(seed, checkpointing):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        torch.manual_seed(seed)
        model(input_ids, lengths, "triton").square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed, other_seed = grads(0, False), grads(0, True), grads(1, False)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert any((other_seed[name] - grad).abs().max() > 1e-3 for name, grad in plain.items())


def test_the_kernel_is_the_cuda_default_for_deberta(make_wide_deberta, make_checkpoint):
    from minirm.attention import choose_backend
    from minirm.config import ModelConfig
    from minirm.models import kernel_trains, supports_triton

    assert supports_triton("deberta-v2")
    # DeBERTa's kernel trains with attention dropout (0.1 in these configs, as in xxlarge's); the
    # varlen kernel, which serves BERT and a DeBERTa without relative terms, has none
    deberta, absolute_only = (ModelConfig.from_file(make_wide_deberta(name)[0] / "config.json")
                              for name in ("xxlarge-like", "absolute-only"))
    bert = ModelConfig.from_file(make_checkpoint("bert", **WIDE)[0] / "config.json")
    assert deberta.attention_dropout == absolute_only.attention_dropout == bert.attention_dropout == 0.1
    assert kernel_trains(deberta) and not kernel_trains(absolute_only) and not kernel_trains(bert)
    # where the kernel cannot serve (an old GPU, an odd head dim) sdpa takes over, as for BERT
    assert choose_backend(None, torch.device("cpu"), 64, torch.bfloat16, supports_triton("deberta-v2")) == "packed"


def test_score_cli_on_the_kernel_matches_transformers(make_wide_deberta, pairs, tmp_path):
    """TRITON_INTERPRET=1 python score.py --attention triton --device cpu, against transformers, on
    the 1.5B model's layout (the other layouts on the kernel: the model test above)."""
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


# --- compiled: the CPU error here, the GPU run where there is one ---------------------------------

CPU_WITHOUT_INTERPRETER = """
import torch
from minirm.kernels.deberta import disentangled_attention

x = torch.randn(5, 2, 16)
rows = torch.zeros(9, dtype=torch.int32)
try:
    disentangled_attention(x, x, x, torch.tensor([0, 5], dtype=torch.int32), 5, torch.randn(2, 4, 16), None, rows)
except RuntimeError as error:
    print("refused:", error)
"""

COMPILED_ON_GPU = """
import torch
from minirm.kernels.deberta import disentangled_attention, disentangled_attention_reference, dropout_keep_mask
from minirm.kernels.deberta_reference import relative_rows

torch.manual_seed(0)
lengths = [1, 17, 300, 1000, 64, 129]  # 1000 tokens: past xxlarge's 256 buckets
T = max(lengths)
cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
c2p_rows, p2c_rows = (rows.int() for rows in relative_rows(T, 256, 512, 256, "cuda"))
for head_dim in (64, 128):
    for dtype, tolerance in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2), (torch.float32, 1e-4)):
        for dropout_p in (0.0, 0.1):
            inputs = [torch.randn(sum(lengths), 4, head_dim, device="cuda", dtype=dtype, requires_grad=True)
                      for _ in range(3)]
            inputs += [torch.randn(4, 512, head_dim, device="cuda", dtype=dtype, requires_grad=True) for _ in range(2)]
            q, k, v, pos_key, pos_query = inputs
            out = disentangled_attention(q, k, v, cu_seqlens, T, pos_key, pos_query, c2p_rows, p2c_rows,
                                         dropout_p=dropout_p, dropout_seed=5)
            grad_out = torch.randn_like(out)
            out.backward(grad_out)
            masks = dropout_keep_mask(cu_seqlens, 4, T, dropout_p, 5) if dropout_p else None
            reference = [x.detach().float().requires_grad_() for x in inputs]
            expected = disentangled_attention_reference(*reference[:3], cu_seqlens, *reference[3:], c2p_rows, p2c_rows,
                                                        dropout_p=dropout_p, dropout_masks=masks)
            expected.backward(grad_out.float())
            for name, actual, wanted in [("out", out, expected)] + [
                    (name, x.grad, y.grad) for name, x, y in zip("q k v pos_key pos_query".split(), inputs, reference)]:
                torch.testing.assert_close(actual.float(), wanted, atol=tolerance, rtol=tolerance,
                                           msg=lambda text: f"{name} {head_dim} {dtype} {dropout_p}: {text}")
print("ok")
"""


def test_compiled_kernel_refuses_cpu_tensors_without_the_interpreter():
    from test_kernels import run_without_interpreter

    result = run_without_interpreter(CPU_WITHOUT_INTERPRETER)
    assert result.returncode == 0, result.stderr
    assert "refused: disentangled_attention runs Triton kernels and got cpu tensors" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_gpu():
    from test_kernels import run_without_interpreter

    result = run_without_interpreter(COMPILED_ON_GPU)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
