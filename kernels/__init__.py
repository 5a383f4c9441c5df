"""Triton kernels for minirm.

varlen_attention            fused FlashAttention-2 style attention over packed variable-length
                            sequences (forward and backward in Triton).
varlen_attention_reference  the same computation in plain PyTorch, one sequence at a time.

Importing this package needs neither a GPU nor TRITON_INTERPRET; see kernels/attention.py for
where the kernels run.
"""

from kernels.attention import varlen_attention, varlen_attention_reference

__all__ = ["varlen_attention", "varlen_attention_reference"]
