"""The packed layout, the CPU default: the models drop the padding after the embeddings, and
attention runs over each run of equal-length sequences with no mask. Its logits equal
transformers' and the padded path's, and so do its gradients, on ragged batches with runs of
equal lengths and sequences of one and two tokens. (DeBERTa's own cases are in test_deberta.py.)"""

from __future__ import annotations

import pytest
import torch

from minirm import Scorer
from minirm.attention import AttentionBatch, choose_backend
from minirm.batching import pad_batch
from minirm.checkpoint import load_model
from minirm.training.loop import read_model_config
from minirm.training.config import TrainConfig
from packed_grads import assert_packed_grads_match_padded

ATOL = 1e-5
# runs of equal length (7 x 3, 30 x 2) beside single sequences, the shortest lengths included
LENGTHS = [30, 30, 17, 7, 7, 7, 2, 1]


def ragged_ids(lengths, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 1000, (n,), generator=g).tolist() for n in lengths]  # no pad / eos ids


def hf_logits(family: str, hf_model, ids, pad_id: int) -> torch.Tensor:
    input_ids, lengths = pad_batch(ids, pad_id, "cpu")
    mask = (torch.arange(input_ids.size(1))[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        if family == "bert-reward":  # the Aira remote code returns the scores themselves
            return hf_model(input_ids, mask)
        return hf_model(input_ids=input_ids, attention_mask=mask).logits


def test_runs_of_equal_length_are_contiguous_views_of_the_pack():
    batch = AttentionBatch.build(torch.tensor([3, 3, 5, 1, 1, 1, 3]), 5, backend="packed")
    assert batch.packed
    assert batch.runs == [(0, 2, 3), (6, 1, 5), (11, 3, 1), (14, 1, 3)]  # (first token, sequences, length)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "bert-reward"])
def test_packed_logits_match_transformers_and_padded(make_checkpoint, family):
    model_dir, hf_model = make_checkpoint(family)
    scorer = Scorer.from_pretrained(str(model_dir))
    assert scorer.attention == "packed"  # the CPU default
    ids = ragged_ids(LENGTHS)
    input_ids, lengths = pad_batch(ids, scorer.tokenizer.pad_id, "cpu")
    with torch.no_grad():
        packed = scorer.model(input_ids, lengths, "packed")
        padded = scorer.model(input_ids, lengths, "sdpa")
    torch.testing.assert_close(packed, hf_logits(family, hf_model, ids, scorer.tokenizer.pad_id), atol=ATOL, rtol=0)
    torch.testing.assert_close(packed, padded, atol=ATOL, rtol=0)
    # one sequence alone, and a batch with no padding at all (a single run)
    with torch.no_grad():
        alone = scorer.model(*pad_batch(ids[2:3], scorer.tokenizer.pad_id, "cpu"), "packed")
        same = scorer.model(*pad_batch(ids[3:6], scorer.tokenizer.pad_id, "cpu"), "packed")
    torch.testing.assert_close(alone, packed[2:3], atol=ATOL, rtol=0)
    torch.testing.assert_close(same, packed[3:6], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "bert-reward"])
def test_packed_gradients_match_padded(make_checkpoint, family):
    """Training takes the packed path on CPU: every parameter's gradient equals the padded path's."""
    model_dir, _ = make_checkpoint(family)
    assert_packed_grads_match_padded(model_dir, ragged_ids(LENGTHS, seed=1), ATOL)


def test_training_defaults_to_packed_on_cpu(make_checkpoint):
    model_dir, _ = make_checkpoint("bert")
    *_, backend = read_model_config(TrainConfig(str(model_dir), [], "unused"), torch.device("cpu"))
    assert backend == "packed"
    # on CUDA the kernel is the default, and a model with attention dropout keeps sdpa there
    assert choose_backend(None, torch.device("cuda"), 64, torch.float32, kernel_ok=False) == "sdpa"


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_bf16_prepacked_linears_change_no_score(make_checkpoint, pairs, family):
    """bf16 on CPU, the scorer swaps nn.Linear for oneDNN's prepacked matmul: the same products."""
    from minirm.cpu import PrepackedLinear, can_prepack

    if not can_prepack(torch.bfloat16, torch.device("cpu")):
        pytest.skip("this CPU or torch build has no oneDNN bf16 path")
    model_dir, _ = make_checkpoint(family)
    fast = Scorer.from_pretrained(str(model_dir), dtype="bfloat16")
    assert any(isinstance(m, PrepackedLinear) for m in fast.model.modules())
    assert not any(type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16 for m in fast.model.modules())
    plain = Scorer.from_pretrained(str(model_dir), dtype="bfloat16")
    plain.model, _ = load_model(model_dir, torch.bfloat16, torch.device("cpu"))  # nn.Linear as loaded
    plain.model.float_head()
    assert any(type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16 for m in plain.model.modules())
    prompts, responses = pairs
    assert fast.score_pairs(prompts, responses) == plain.score_pairs(prompts, responses)


@pytest.mark.parametrize("amx, avx512_bf16, packs", [(True, True, True), (False, True, True), (False, False, False)])
def test_prepacking_is_decided_by_the_cpus_bf16_instructions(monkeypatch, amx, avx512_bf16, packs):
    """Prepacked where the CPU multiplies bf16 natively: AMX (Sapphire Rapids), or AVX-512 BF16
    without AMX (AMD Zen 4: measured 1.10x over nn.Linear, benchmarks/bf16_prepack.py); not where
    oneDNN would emulate bf16, a layout never measured there."""
    from minirm import cpu

    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("this torch build or CPU has no oneDNN bf16 path at all")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert cpu.can_prepack(torch.bfloat16, torch.device("cpu")) is packs
    assert not cpu.can_prepack(torch.float32, torch.device("cpu"))


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "bert-reward"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_scores_come_from_a_float32_head(make_checkpoint, pairs, family, dtype):
    """The encoder runs in half precision, the head in float32: a score rounded to bf16 would keep
    8 significant bits, and near scores of a chosen and a rejected response would tie."""
    model_dir, _ = make_checkpoint(family)
    scorer = Scorer.from_pretrained(str(model_dir), dtype=dtype)
    head = [getattr(scorer.model, name) for name in scorer.model.head_modules]
    assert all(p.dtype == torch.float32 for m in head for p in m.parameters())
    assert next(iter(scorer.model.parameters())).dtype == getattr(torch, dtype)
    ids = scorer.encode_pairs(*pairs)
    with torch.no_grad():
        logits = scorer.model(*pad_batch(ids, scorer.tokenizer.pad_id, "cpu"), scorer.attention)
    assert logits.dtype == torch.float32
    reference = Scorer.from_pretrained(str(model_dir)).score_pairs(*pairs)
    torch.testing.assert_close(torch.tensor(scorer.score_pairs(*pairs)), torch.tensor(reference),
                               atol=5e-2, rtol=2e-2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_unmasked_attention_is_sdpa_without_a_mask(causal, with_bias):
    """The written-out attention that packed runs use for dropout on CPU, at dropout 0, against SDPA."""
    from minirm.attention import unmasked_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 9, 8, generator=g) for _ in range(3))  # (count, nh, L, hs)
    bias = torch.randn(3, 4, 9, 9, generator=g) if with_bias else None
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal)
    torch.testing.assert_close(unmasked_attention(q, k, v, bias, 0.0, None, causal), expected, atol=1e-6, rtol=0)
    # with dropout, each kept probability is scaled by 1 / (1 - p), as F.dropout does
    torch.manual_seed(0)
    dropped = unmasked_attention(q, k, v, bias, 0.5, None, causal)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, expected)


def test_a_scorers_prepacked_model_refuses_gradients(make_checkpoint):
    """oneDNN's prepacked op has no backward: a forward with gradients on is one line, not silently
    untrained weights."""
    from minirm import MinirmError
    from minirm.cpu import PrepackedLinear, can_prepack

    if not can_prepack(torch.bfloat16, torch.device("cpu")):
        pytest.skip("this CPU or torch build has no oneDNN bf16 path")
    model_dir, _ = make_checkpoint("bert")
    scorer = Scorer.from_pretrained(str(model_dir), dtype="bfloat16")
    assert any(isinstance(m, PrepackedLinear) for m in scorer.model.modules())
    ids, lengths = pad_batch(ragged_ids(LENGTHS), 0, "cpu")
    with pytest.raises(MinirmError, match="prepacked for inference.*load_model to train"):
        scorer.model(ids, lengths, "packed")
    with torch.inference_mode():
        assert torch.isfinite(scorer.model(ids, lengths, "packed")).all()
