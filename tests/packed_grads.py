"""One check that test_packed.py (every family) and test_deberta.py (every DeBERTa config) share."""

from __future__ import annotations

import torch

from minirm.batching import pad_batch
from minirm.checkpoint import load_model


def assert_packed_grads_match_padded(model_dir, ids: list[list[int]], atol: float = 1e-5) -> None:
    """Every parameter's gradient of a loss on the logits is the same packed as padded (sdpa)."""
    model, _ = load_model(model_dir)  # trainable, as train.py loads it
    input_ids, lengths = pad_batch(ids, 0, "cpu")
    grads = {}
    for backend in ("packed", "sdpa"):
        model.zero_grad()
        model(input_ids, lengths, backend).square().sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["packed"].keys() == grads["sdpa"].keys() and len(grads["sdpa"]) > 10
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grads["packed"][name], grad, atol=atol, rtol=1e-4, msg=name)
