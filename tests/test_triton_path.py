"""The models on packed tokens through the Triton kernel (interpreter mode on CPU) agree with SDPA."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from minirm import Scorer  # noqa: E402
from minirm.batching import pad_batch  # noqa: E402
from minirm.checkpoint import load_model  # noqa: E402

pytest.importorskip("triton")

# head_dim 16, the smallest the kernel takes
WIDE = dict(hidden_size=64, num_attention_heads=4)
WIDE_GPT2 = dict(n_embd=64, n_head=4)


def forward(model, ids, backend):
    input_ids, lengths = pad_batch(ids, 0, "cpu")
    return model(input_ids, lengths, backend)


@pytest.mark.parametrize("family,overrides", [("bert", WIDE), ("roberta", WIDE), ("gpt2", WIDE_GPT2)])
def test_packed_triton_scores_match_sdpa(make_checkpoint, pairs, family, overrides):
    model_dir, _ = make_checkpoint(family, **overrides)
    prompts, responses = pairs
    sdpa = Scorer.from_pretrained(str(model_dir), attention="sdpa").score_pairs(prompts, responses)
    triton = Scorer.from_pretrained(str(model_dir), attention="triton").score_pairs(prompts, responses)
    torch.testing.assert_close(torch.tensor(triton), torch.tensor(sdpa), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,overrides", [("bert", WIDE), ("gpt2", WIDE_GPT2)])
def test_packed_triton_gradients_match_sdpa(make_checkpoint, pairs, family, overrides):
    """Training takes the same packed path: the gradients of every parameter agree."""
    model_dir, _ = make_checkpoint(family, **overrides)
    scorer = Scorer.from_pretrained(str(model_dir))
    model = load_model(model_dir)[0].train()  # trainable, as train.py loads it
    for m in model.modules():  # no dropout, so both passes see the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for attn in (m for m in model.modules() if hasattr(m, "fused_qkv")):
        attn.dropout = 0.0
    ids = scorer.encode_pairs(*pairs)
    grads = {}
    for backend in ("sdpa", "triton"):
        model.zero_grad()
        forward(model, ids, backend).sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["sdpa"].keys() == grads["triton"].keys() and len(grads["sdpa"]) > 10
    for name, g in grads["sdpa"].items():
        torch.testing.assert_close(grads["triton"][name], g, atol=1e-4, rtol=1e-3, msg=name)
