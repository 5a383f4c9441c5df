"""One check that test_packed.py (every family) and test_deberta.py (every DeBERTa config) share."""

from __future__ import annotations

import torch

from minirm.batching import pad_batch
from minirm.checkpoint import load_model


def assert_packed_grads_match_padded(model_dir, ids: list[list[int]], atol: float = 1e-5, backend: str = "packed",
                                     checkpointing: bool = False) -> None:
    """Every parameter's gradient of a loss on the logits is the same on `backend` ("packed" or
    "triton") as padded (sdpa); with `checkpointing`, the packed pass recomputes each layer."""
    model, _ = load_model(model_dir)  # trainable, as train.py loads it
    input_ids, lengths = pad_batch(ids, 0, "cpu")
    grads = {}
    for name in (backend, "sdpa"):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing and name == backend
        model(input_ids, lengths, name).square().sum().backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[backend].keys() == grads["sdpa"].keys() and len(grads["sdpa"]) > 10
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grads[backend][name], grad, atol=atol, rtol=1e-4, msg=name)
