"""bf16 scoring on CPU, closer to the bf16 matmul peak, with the same products.

oneDNN (the library behind PyTorch's CPU matmuls) runs bf16 on AMX tiles, or with AVX-512
BF16's dot products. nn.Linear hands it the weight in PyTorch's row-major layout on every
call, and oneDNN reorders it into its blocked layout each time, then adds the bias in a second
pass; on this project's 2-core Xeon (AMX) that cost about a third of a bf16 linear layer's time
(BENCHMARKS.md, "CPU efficiency"), and prepacking made scoring 12-18% faster there and 10% on
an AMD EPYC with AVX-512 BF16 and no AMX (benchmarks/bf16_prepack.py). `packing_loader` has
the checkpoint loader reorder each weight once, as it is read, so that no weight ever lives
in both layouts; each call then runs oneDNN's matmul with the bias added in its epilogue: the
products are those of nn.Linear, bit for bit. Where the CPU has neither AMX nor AVX-512 BF16,
oneDNN emulates bf16 and nothing is prepacked (`can_prepack`): that layout was never measured
there, and fp32 is the faster dtype on such a CPU anyway.

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

from .checkpoint import check_finite
from .errors import MinirmError

PACK_ROWS_HINT = 4096  # the number of rows oneDNN tunes the layout for; any row count works


class PrepackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (bf16 on CPU, inference only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS_HINT)
        self.bias = linear.bias  # a meta placeholder while a checkpoint loads (packing_loader)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise MinirmError("this model's linear layers are prepacked for inference (a Scorer's model): call it "
                              "under torch.inference_mode(), or load it with minirm.checkpoint.load_model to train")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware: AMX tiles (Sapphire Rapids and later) or AVX-512
    BF16's dot products (Cooper Lake, AMD Zen 4 and later). oneDNN runs bf16 on any AVX-512 CPU, but
    without these it converts to fp32 first and is slower than fp32 itself."""
    features = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in features)


def can_prepack(dtype: torch.dtype, device: torch.device) -> bool:
    """bf16 on CPU, oneDNN's op exists in this torch build, and the CPU multiplies bf16 natively
    (prepacked was faster than nn.Linear with AMX, and with AVX-512 BF16 alone)."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and native_bf16())


def packing_loader(model: nn.Module):
    """For checkpoint.load_state(replace=...) on a model built on the meta device: each nn.Linear
    weight outside the head (which runs in float32) is laid out for oneDNN as it is read, in bf16,
    and its module swapped for a PrepackedLinear. The row-major weight never exists beside the
    packed one beyond the tensor being read: a bf16 file's is a view of the mapped file, another
    dtype's is cast into one scratch buffer reused for every weight (a fresh cast per weight, freed
    after packing, leaves holes in the heap that hold a fifth of the weights' size again).
    Returns the callable: (our name, tensor as read, dtype, what) -> whether it took the tensor."""
    heads = tuple(name + "." for name in getattr(model, "head_modules", ()))
    scratch = torch.empty(0, dtype=torch.bfloat16)

    def replace(name: str, tensor: torch.Tensor, dtype: torch.dtype, what: str) -> bool:
        nonlocal scratch
        path, _, leaf = name.rpartition(".")
        if leaf != "weight" or dtype != torch.bfloat16 or (path + ".").startswith(heads):
            return False
        linear = model.get_submodule(path)
        if type(linear) is not nn.Linear:
            return False
        if tensor.dtype == dtype and tensor.is_contiguous():
            weight = tensor
        else:
            if scratch.numel() < tensor.numel():
                scratch = torch.empty(tensor.numel(), dtype=dtype)
            weight = scratch[: tensor.numel()].view(tensor.shape).copy_(tensor)
        check_finite(weight, tensor, what)
        linear.weight = nn.Parameter(weight, requires_grad=False)
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, PrepackedLinear(linear))
        return True

    return replace
