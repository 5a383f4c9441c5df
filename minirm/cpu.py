"""bf16 scoring on CPU, closer to the AMX matmul peak, with the same products.

oneDNN (the library behind PyTorch's CPU matmuls) runs bf16 on AMX tiles. nn.Linear hands it
the weight in PyTorch's row-major layout on every call, and oneDNN reorders it into its
blocked AMX layout each time, then adds the bias in a second pass; on this project's 2-core
machine that costs about a third of a bf16 linear layer's time (BENCHMARKS.md, "CPU
efficiency"). `prepack_linears` reorders every weight once, when the scorer loads, and each
call then runs oneDNN's matmul with the bias added in its epilogue: the products are those
of nn.Linear, bit for bit.

Tried and left out:
- fp32 weights prepacked the same way (the bias in the epilogue instead of MKL's copy of it
  into every output row, 5.5% of fp32 scoring time in the profile): no faster over the
  held-out set (11.67 s and 11.96 s against 11.83 s and 11.93 s, alternating).
- the feed-forward GELU in the matmul's epilogue: 10% faster in bf16, but oneDNN's GELU is
  less exact than torch's: bf16 kept fp32's pairwise decisions on 98.45% of the hh-rlhf
  sample's pairs against 98.71% without it (the bar is 98.5%).

Inference only: oneDNN's prepacked op has no backward, and the packed weight is not a
Parameter; a call with gradients on is refused (train from `checkpoint.load_model`)."""

from __future__ import annotations

import torch
from torch import nn

from .errors import MinirmError

PACK_ROWS_HINT = 4096  # the number of rows oneDNN tunes the layout for; any row count works


class PrepackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (bf16 on CPU, inference only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS_HINT)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise MinirmError("this model's linear layers are prepacked for inference (a Scorer's model): call it "
                              "under torch.inference_mode(), or load it with minirm.checkpoint.load_model to train")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def can_prepack(dtype: torch.dtype, device: torch.device) -> bool:
    """bf16 on CPU, oneDNN's op exists in this torch build, and this CPU has the instructions for it."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def prepack_linears(model: nn.Module) -> int:
    """Swap every bf16 nn.Linear of a CPU model for a PrepackedLinear (a float32 head stays as it
    is); returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(parent, name, PrepackedLinear(child))
                swapped += 1
    return swapped
