"""bf16 scoring on CPU, closer to the AMX matmul peak.

oneDNN (the library behind PyTorch's CPU matmuls) multiplies bf16 on AMX tiles. nn.Linear
hands it the weight in PyTorch's row-major layout on every call, and oneDNN reorders it
into its blocked AMX layout each time, then adds the bias in a second pass; on this
project's 2-core machine that costs about a third of a bf16 linear layer's time
(BENCHMARKS.md, "CPU efficiency"). `prepack_linears` reorders every weight once, when the
scorer loads, and each call then runs oneDNN's matmul with the bias fused: the products are
the same, bit for bit. It also moves the feed-forward GELU into the matmul's epilogue, where
it runs on the fp32 accumulator before the one rounding to bf16 (about 10% faster; the
scores move within bf16's rounding, tested against fp32).

Inference only: oneDNN's prepacked op has no backward, so training never uses it."""

from __future__ import annotations

import torch
from torch import nn

from .models.common import gelu_exact, gelu_tanh

PACK_ROWS_HINT = 4096  # the number of rows oneDNN tunes the layout for; any row count works


class PrepackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (bf16 on CPU, inference only)."""

    def __init__(self, linear: nn.Linear, activation: str = "none", algorithm: str = ""):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS_HINT)
        self.bias = linear.bias
        self.activation, self.algorithm = activation, algorithm  # oneDNN post-op, e.g. "gelu" / "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, self.activation, [],
                                                  self.algorithm)


def can_prepack(dtype: torch.dtype, device: torch.device) -> bool:
    """oneDNN's bf16 path exists in this torch build and this CPU has the instructions for it."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported())


# activations oneDNN can apply to the accumulator before rounding to bf16: (post-op, algorithm)
FUSABLE = {gelu_exact: ("gelu", "none"), gelu_tanh: ("gelu", "tanh")}


def prepack_linears(model: nn.Module) -> int:
    """Swap every nn.Linear of a bf16 CPU model for a PrepackedLinear; returns how many.

    A feed-forward block's `act(up(x))` (BERT's EncoderLayer, GPT-2's Block) becomes one call:
    the GELU runs in oneDNN's epilogue on the fp32 accumulator, which saves a pass over the
    widest activation and one bf16 rounding."""
    swapped = 0
    for parent in list(model.modules()):
        fused = FUSABLE.get(getattr(parent, "act", None)) if isinstance(getattr(parent, "up", None), nn.Linear) else None
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PrepackedLinear(child, *(fused if name == "up" and fused else ())))
                swapped += 1
        if fused:
            parent.act = identity
    return swapped


def identity(x: torch.Tensor) -> torch.Tensor:
    return x
