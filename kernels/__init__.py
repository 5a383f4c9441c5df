"""Triton kernels for minirm.

varlen_attention                  fused FlashAttention-2 style attention over packed variable-length
                                  sequences (forward and backward in Triton).
varlen_attention_reference        the same computation in plain PyTorch, one sequence at a time.
disentangled_attention            DeBERTa's attention (content plus the c2p and p2c relative terms),
                                  fused the same way: kernels/deberta.py.
disentangled_attention_reference  the same with the (L, L) bias written out and handed to SDPA.

Importing this package needs neither a GPU nor TRITON_INTERPRET; see kernels/attention.py for
where the kernels run.
"""

from kernels.attention import varlen_attention, varlen_attention_reference
from kernels.deberta import disentangled_attention, disentangled_attention_reference

__all__ = ["varlen_attention", "varlen_attention_reference", "disentangled_attention",
           "disentangled_attention_reference"]
