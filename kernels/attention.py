"""Fused variable-length attention in Triton, FlashAttention-2 style (forward and backward).

Reward models score batches of (prompt, response) pairs whose lengths vary a lot. Padding every
sequence to the longest one wastes most of the attention work on padding. Instead we pack the
tokens of all sequences back to back and describe where each sequence starts with
``cu_seqlens`` (the convention FlashAttention made standard)::

    lengths     = [3, 1, 4]
    cu_seqlens  = [0, 3, 4, 8]        # int32, batch + 1 entries, starts at 0
    q, k, v     : (total_tokens=8, heads, head_dim)

Sequence ``b`` owns rows ``cu_seqlens[b]:cu_seqlens[b + 1]`` and attends only to itself.

How the kernels are organised (one program instance = one tile of work):

* forward      one program per (query block, head, sequence). It streams over the key/value
               blocks of its sequence, keeping a running softmax ("online softmax"), so the
               (L x L) score matrix never exists in memory. It writes the output and the
               log-sum-exp (LSE) of every query row.
* backward     1. ``_attention_backward_preprocess_kernel``: delta = rowsum(dO * O) per token.
               2. ``_attention_backward_dkdv_kernel``: one program per key block; it walks over
                  the query blocks and accumulates dK and dV in registers.
               3. ``_attention_backward_dq_kernel``: one program per query block; it walks over
                  the key blocks and accumulates dQ. Splitting dQ from dK/dV means every output
                  element is written by exactly one program: no atomics, deterministic results.
               Both recompute the attention probabilities from Q, K and the saved LSE instead of
               storing them.

Programs whose block starts past the end of their (short) sequence return immediately, and with
``causal=True`` key blocks entirely above the diagonal are never visited.

Where it runs:

* CUDA tensors: compiled kernels, with block sizes picked by ``triton.autotune``.
* ``TRITON_INTERPRET=1`` in the environment *before triton is first imported* (Triton reads it
  when ``@triton.jit`` runs, for these kernels and for triton.language's own helpers):
  Triton's interpreter executes the very same kernels with numpy, one program at a time, with
  small fixed block sizes, on CPU (or CUDA) tensors. This is slow and meant for tests and for
  stepping through the kernels in a debugger.
* CPU tensors otherwise: ``varlen_attention`` raises a RuntimeError rather than silently running
  something else. Use ``varlen_attention_reference`` for plain PyTorch.
"""

import math

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# exp(x) == exp2(x * log2(e)). The hardware has a fast exp2 instruction, so the kernels work in
# base 2: they fold log2(e) into the softmax scale once and then only call tl.exp2.
_LOG2E = tl.constexpr(1.4426950408889634)

_TORCH_TO_TRITON_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


# ----------------------------------------------------------------------------------------------
# Forward kernel
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attention_forward_kernel(
    Q, K, V, Out, LSE,  # Q, K, V, Out: (total_tokens, heads, HEAD_DIM); LSE: (heads, total_tokens) fp32
    cu_seqlens,  # (batch + 1,) int32
    softmax_scale_log2,  # softmax_scale * log2(e): scores come out in base-2 units
    stride_token, stride_head,  # strides shared by Q, K, V and Out (all contiguous)
    total_tokens,  # row stride of LSE
    max_seqlen_bucket,  # unused by the kernel; only an autotuning key
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,  # dtype fed to tl.dot (see _dot_dtype)
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs, "tf32" otherwise (ignored for 16-bit)
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per inner-loop step
):
    q_block = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)

    seq_start = tl.load(cu_seqlens + seq)
    seq_len = tl.load(cu_seqlens + seq + 1) - seq_start
    q_start = q_block * BLOCK_M
    # The grid is sized for the longest sequence; shorter ones have nothing to do here.
    if q_start >= seq_len:
        return

    # Move every base pointer to token 0 of this sequence and to this head, once. The int64 cast
    # keeps the offset from overflowing on very large packed batches.
    base = seq_start.to(tl.int64) * stride_token + head * stride_head
    Q += base
    K += base
    V += base
    Out += base
    LSE += head * total_tokens + seq_start

    offs_m = q_start + tl.arange(0, BLOCK_M)  # query positions inside the sequence
    offs_n = tl.arange(0, BLOCK_N)  # key positions, relative to the current key block
    offs_d = tl.arange(0, HEAD_DIM)
    query_valid = offs_m < seq_len  # the last query block may run past the sequence end

    q = tl.load(Q + offs_m[:, None] * stride_token + offs_d[None, :], mask=query_valid[:, None], other=0.0)
    q = q.to(DOT_DTYPE)

    # Online softmax state, one entry per query row:
    #   row_max  m_i: largest (base-2) score seen so far
    #   row_sum  l_i: sum of exp2(score - m_i) over the keys seen so far
    #   acc         : sum of exp2(score - m_i) * v over the keys seen so far (unnormalised output)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # With a causal mask, query i only sees keys j <= i, so this query block needs keys up to
    # its own last row; later key blocks are skipped altogether.
    if CAUSAL:
        key_end = tl.minimum(seq_len, q_start + BLOCK_M)
    else:
        key_end = seq_len

    for key_start in range(0, key_end, BLOCK_N):
        offs_key = key_start + offs_n
        key_valid = offs_key < seq_len
        k = tl.load(K + offs_key[:, None] * stride_token + offs_d[None, :], mask=key_valid[:, None], other=0.0)
        v = tl.load(V + offs_key[:, None] * stride_token + offs_d[None, :], mask=key_valid[:, None], other=0.0)

        # scores[i, j] = (q_i . k_j) * softmax_scale * log2(e), accumulated in fp32.
        scores = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=DOT_PRECISION) * softmax_scale_log2
        # Keys past the sequence end (and, if causal, keys after the query) get probability 0.
        allowed = key_valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs_key[None, :] <= offs_m[:, None])
        scores = tl.where(allowed, scores, float("-inf"))

        # Online softmax. Every row has at least one allowed key in the first block (key 0 is
        # allowed for every query, even with the causal mask), so new_max is finite from the
        # first iteration on and the subtractions below never compute -inf - (-inf) = NaN.
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        probs = tl.exp2(scores - new_max[:, None])
        # The old row_sum and acc were computed relative to the old max. Multiplying by
        # exp2(old_max - new_max) re-expresses them relative to the new max, so all terms share
        # one reference point. (On the first block old_max = -inf and the factor is 0.)
        rescale = tl.exp2(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(probs, 1)
        acc = acc * rescale[:, None]
        acc = tl.dot(probs.to(DOT_DTYPE), v.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)
        row_max = new_max

    # softmax(s)_j = exp2(s_j - m) / sum_k exp2(s_k - m): normalise once, at the end.
    out = acc / row_sum[:, None]
    tl.store(Out + offs_m[:, None] * stride_token + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=query_valid[:, None])
    # Log-sum-exp of the scaled scores, in natural-log units: lse = log(sum_j exp(scale * q.k_j)).
    # The backward pass recomputes each probability as exp(scale * q.k_j - lse) without redoing
    # the max/sum reductions. Only 4 bytes per (head, token) are kept, not the L x L matrix.
    lse = (row_max + tl.log2(row_sum)) / _LOG2E
    tl.store(LSE + offs_m, lse, mask=query_valid)


# ----------------------------------------------------------------------------------------------
# Backward kernels
#
# With S = scale * Q K^T, P = softmax(S) (row-wise), O = P V and the incoming gradient dO:
#   dV = P^T dO
#   dP = dO V^T
#   dS = P * (dP - delta),     delta_i = sum_j P_ij dP_ij = dO_i . O_i   (softmax Jacobian)
#   dQ = scale * dS K
#   dK = scale * dS^T Q
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attention_backward_preprocess_kernel(
    Out, dOut, Delta,  # Out, dOut: (total_tokens, heads, HEAD_DIM); Delta: (heads, total_tokens) fp32
    stride_token, stride_head,
    total_tokens,
    HEAD_DIM: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """delta[head, t] = sum_d dO[t, head, d] * O[t, head, d]. Sequence boundaries do not matter."""
    token_block = tl.program_id(0)
    head = tl.program_id(1)
    offs_t = token_block * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    token_valid = offs_t < total_tokens
    offsets = offs_t[:, None].to(tl.int64) * stride_token + head * stride_head + offs_d[None, :]
    out = tl.load(Out + offsets, mask=token_valid[:, None], other=0.0).to(tl.float32)
    d_out = tl.load(dOut + offsets, mask=token_valid[:, None], other=0.0).to(tl.float32)
    tl.store(Delta + head * total_tokens + offs_t, tl.sum(out * d_out, 1), mask=token_valid)


@triton.jit
def _attention_backward_dkdv_kernel(
    Q, K, V, dOut, LSE, Delta,  # inputs
    dK, dV,  # outputs, same layout as K and V
    cu_seqlens,
    softmax_scale,
    stride_token, stride_head,  # shared by all (total_tokens, heads, HEAD_DIM) tensors
    total_tokens,  # row stride of LSE and Delta
    max_seqlen_bucket,  # unused by the kernel; only an autotuning key
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per inner-loop step
    BLOCK_N: tl.constexpr,  # keys per program
):
    """One program owns BLOCK_N keys of one (sequence, head) and accumulates their dK and dV."""
    key_block = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)

    seq_start = tl.load(cu_seqlens + seq)
    seq_len = tl.load(cu_seqlens + seq + 1) - seq_start
    key_start = key_block * BLOCK_N
    if key_start >= seq_len:
        return

    base = seq_start.to(tl.int64) * stride_token + head * stride_head
    Q += base
    K += base
    V += base
    dOut += base
    dK += base
    dV += base
    LSE += head * total_tokens + seq_start
    Delta += head * total_tokens + seq_start

    offs_key = key_start + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    key_valid = offs_key < seq_len

    k = tl.load(K + offs_key[:, None] * stride_token + offs_d[None, :], mask=key_valid[:, None], other=0.0)
    v = tl.load(V + offs_key[:, None] * stride_token + offs_d[None, :], mask=key_valid[:, None], other=0.0)
    k = k.to(DOT_DTYPE)
    v = v.to(DOT_DTYPE)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    softmax_scale_log2 = softmax_scale * _LOG2E

    # With a causal mask, queries before key_start never look at these keys: start there.
    if CAUSAL:
        query_begin = key_start
    else:
        query_begin = 0

    # The tile is computed transposed, (keys x queries), so that dK and dV come out of tl.dot
    # with the keys along the rows, matching the layout they are accumulated in.
    for query_start in range(query_begin, seq_len, BLOCK_M):
        offs_query = query_start + offs_m
        query_valid = offs_query < seq_len
        q = tl.load(Q + offs_query[:, None] * stride_token + offs_d[None, :], mask=query_valid[:, None], other=0.0)
        d_out = tl.load(dOut + offs_query[:, None] * stride_token + offs_d[None, :], mask=query_valid[:, None],
                        other=0.0)
        q = q.to(DOT_DTYPE)
        d_out = d_out.to(DOT_DTYPE)
        lse = tl.load(LSE + offs_query, mask=query_valid, other=0.0)
        delta = tl.load(Delta + offs_query, mask=query_valid, other=0.0)

        # Recompute the probabilities P^T[j, i] = exp(scale * k_j . q_i - lse_i), in base 2.
        scores_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * softmax_scale_log2
        probs_t = tl.exp2(scores_t - lse[None, :] * _LOG2E)
        allowed = query_valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs_query[None, :] >= offs_key[:, None])
        probs_t = tl.where(allowed, probs_t, 0.0)

        dv = tl.dot(probs_t.to(DOT_DTYPE), d_out, dv, input_precision=DOT_PRECISION)  # dV += P^T dO
        d_probs_t = tl.dot(v, tl.trans(d_out), input_precision=DOT_PRECISION)  # (dO V^T)^T
        d_scores_t = probs_t * (d_probs_t - delta[None, :])
        dk = tl.dot(d_scores_t.to(DOT_DTYPE), q, dk, input_precision=DOT_PRECISION)  # dK += dS^T Q

    dk *= softmax_scale  # the scale of S = scale * Q K^T, applied once instead of per tile
    tl.store(dK + offs_key[:, None] * stride_token + offs_d[None, :], dk.to(dK.dtype.element_ty),
             mask=key_valid[:, None])
    tl.store(dV + offs_key[:, None] * stride_token + offs_d[None, :], dv.to(dV.dtype.element_ty),
             mask=key_valid[:, None])


@triton.jit
def _attention_backward_dq_kernel(
    Q, K, V, dOut, LSE, Delta,  # inputs
    dQ,  # output, same layout as Q
    cu_seqlens,
    softmax_scale,
    stride_token, stride_head,
    total_tokens,
    max_seqlen_bucket,  # unused by the kernel; only an autotuning key
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per inner-loop step
):
    """One program owns BLOCK_M queries of one (sequence, head) and accumulates their dQ."""
    q_block = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)

    seq_start = tl.load(cu_seqlens + seq)
    seq_len = tl.load(cu_seqlens + seq + 1) - seq_start
    q_start = q_block * BLOCK_M
    if q_start >= seq_len:
        return

    base = seq_start.to(tl.int64) * stride_token + head * stride_head
    Q += base
    K += base
    V += base
    dOut += base
    dQ += base
    LSE += head * total_tokens + seq_start
    Delta += head * total_tokens + seq_start

    offs_m = q_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    query_valid = offs_m < seq_len

    q = tl.load(Q + offs_m[:, None] * stride_token + offs_d[None, :], mask=query_valid[:, None], other=0.0)
    d_out = tl.load(dOut + offs_m[:, None] * stride_token + offs_d[None, :], mask=query_valid[:, None], other=0.0)
    q = q.to(DOT_DTYPE)
    d_out = d_out.to(DOT_DTYPE)
    lse_log2 = tl.load(LSE + offs_m, mask=query_valid, other=0.0) * _LOG2E
    delta = tl.load(Delta + offs_m, mask=query_valid, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    softmax_scale_log2 = softmax_scale * _LOG2E

    if CAUSAL:
        key_end = tl.minimum(seq_len, q_start + BLOCK_M)
    else:
        key_end = seq_len

    for key_start in range(0, key_end, BLOCK_N):
        offs_key = key_start + offs_n
        key_valid = offs_key < seq_len
        k = tl.load(K + offs_key[:, None] * stride_token + offs_d[None, :], mask=key_valid[:, None], other=0.0)
        v = tl.load(V + offs_key[:, None] * stride_token + offs_d[None, :], mask=key_valid[:, None], other=0.0)
        k = k.to(DOT_DTYPE)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * softmax_scale_log2
        probs = tl.exp2(scores - lse_log2[:, None])
        allowed = key_valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs_key[None, :] <= offs_m[:, None])
        probs = tl.where(allowed, probs, 0.0)

        d_probs = tl.dot(d_out, tl.trans(v.to(DOT_DTYPE)), input_precision=DOT_PRECISION)  # dO V^T
        d_scores = probs * (d_probs - delta[:, None])
        dq = tl.dot(d_scores.to(DOT_DTYPE), k, dq, input_precision=DOT_PRECISION)  # dQ += dS K

    dq *= softmax_scale
    tl.store(dQ + offs_m[:, None] * stride_token + offs_d[None, :], dq.to(dQ.dtype.element_ty),
             mask=query_valid[:, None])


# ----------------------------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------------------------
# On a GPU, triton.autotune times each config on the first call for a given key and caches the
# fastest. The key is (head dim, causal, max_seqlen rounded up to a power of two); the autotuner
# also adds the tensor dtypes to it. Benchmarking re-runs the kernel on the real arguments, which
# is safe here because every kernel overwrites its outputs (plain stores, no atomic accumulation),
# so no reset_to_zero is needed. Configs that do not fit in shared memory are skipped.
_AUTOTUNE_KEY = ["HEAD_DIM", "CAUSAL", "max_seqlen_bucket"]


def _configs(block_sizes):
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=num_warps, num_stages=num_stages)
        for block_m, block_n, num_warps, num_stages in block_sizes
    ]


# (BLOCK_M, BLOCK_N, num_warps, num_stages). The forward and dQ programs own many queries and
# stream keys; the dK/dV program owns many keys and streams queries, hence the mirrored shapes.
# Each list has configs that compile for sm_90 (H100) without register spills at head_dim 64
# and at head_dim 128 for fp16/bf16, plus a small last one for fp32 inputs, whose exact fp32
# products run on CUDA cores instead of tensor cores and need more registers per tile.
_FORWARD_CONFIGS = _configs([(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2),
                             (32, 32, 4, 2)])
_DKDV_CONFIGS = _configs([(32, 128, 8, 3), (32, 64, 4, 3), (64, 128, 8, 2), (32, 64, 8, 3), (64, 64, 8, 2),
                          (16, 32, 4, 2)])
_DQ_CONFIGS = _configs([(128, 32, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3), (64, 32, 8, 3), (64, 64, 8, 2),
                        (32, 32, 4, 2)])

_forward_autotuned = triton.autotune(configs=_FORWARD_CONFIGS, key=_AUTOTUNE_KEY)(_attention_forward_kernel)
_dkdv_autotuned = triton.autotune(configs=_DKDV_CONFIGS, key=_AUTOTUNE_KEY)(_attention_backward_dkdv_kernel)
_dq_autotuned = triton.autotune(configs=_DQ_CONFIGS, key=_AUTOTUNE_KEY)(_attention_backward_dq_kernel)

# Under the interpreter every program runs as numpy code, one after another; small fixed blocks
# keep tests fast and make even short test sequences span several blocks. BLOCK_M != BLOCK_N so
# that the causal-diagonal logic is exercised with unequal tiles, as on the GPU.
_INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 16}
_INTERPRETER_DKDV_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 32}
_PREPROCESS_BLOCK_T = 64
# The launch grid is (query or key blocks, heads, sequences); CUDA caps its 2nd and 3rd sizes.
_MAX_GRID_Z = 65535


def _kernels_interpreted():
    """True if @triton.jit built the kernels for Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    ours = isinstance(_attention_forward_kernel, InterpretedFunction)
    if ours != isinstance(tl.zeros, InterpretedFunction):
        raise RuntimeError(
            "TRITON_INTERPRET changed between importing triton and importing kernels.attention, so "
            "half of the kernel code would be interpreted and half compiled. Set it (or unset it) "
            "before triton is first imported.")
    return ours


def _launch(kernel, autotuned_kernel, interpreter_blocks, grid, *args, **constexprs):
    """Run `kernel` under the interpreter with fixed blocks, or its autotuned version on a GPU."""
    if _kernels_interpreted():
        kernel[grid](*args, **constexprs, **interpreter_blocks)
    else:
        autotuned_kernel[grid](*args, **constexprs)


def _dot_dtype(dtype):
    """The dtype that tl.dot multiplies in.

    The input dtype on a GPU (tensor cores take fp16/bf16 directly). Triton's interpreter cannot
    multiply bfloat16 matrices (triton-lang/triton#11584: it multiplies the raw bit patterns), so
    there bf16 tiles are widened to fp32 after loading; loads and stores stay bf16.
    """
    if dtype == torch.bfloat16 and _kernels_interpreted():
        return tl.float32
    return _TORCH_TO_TRITON_DTYPE[dtype]


def _dot_precision(dtype):
    # fp32 inputs get true fp32 products ("ieee") rather than TF32, matching PyTorch's default
    # for fp32 matmuls; for fp16/bf16 inputs the setting has no effect.
    return "ieee" if dtype == torch.float32 else "tf32"


def _max_seqlen_bucket(max_seqlen):
    """Round up to a power of two (at least 64) so autotuning happens once per size range."""
    return max(64, triton.next_power_of_2(max_seqlen))


# ----------------------------------------------------------------------------------------------
# Host-side wrappers
# ----------------------------------------------------------------------------------------------
def _attention_forward(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale):
    """Returns (out, lse); lse is fp32 of shape (heads, total_tokens), in natural-log units."""
    total_tokens, heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    out = torch.empty_like(q)
    lse = torch.empty((heads, total_tokens), dtype=torch.float32, device=q.device)

    def grid(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads, batch)

    _launch(
        _attention_forward_kernel, _forward_autotuned, _INTERPRETER_BLOCKS, grid,
        q, k, v, out, lse, cu_seqlens, softmax_scale * math.log2(math.e),
        q.stride(0), q.stride(1), total_tokens, _max_seqlen_bucket(max_seqlen),
        HEAD_DIM=head_dim, CAUSAL=causal, DOT_DTYPE=_dot_dtype(q.dtype), DOT_PRECISION=_dot_precision(q.dtype),
    )
    return out, lse


def _attention_backward(d_out, q, k, v, out, lse, cu_seqlens, max_seqlen, causal, softmax_scale):
    """Returns (dq, dk, dv) given the upstream gradient d_out and what the forward saved."""
    total_tokens, heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    d_out = d_out.contiguous()  # shares q's strides from here on
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    delta = torch.empty_like(lse)

    _attention_backward_preprocess_kernel[(triton.cdiv(total_tokens, _PREPROCESS_BLOCK_T), heads)](
        out, d_out, delta, q.stride(0), q.stride(1), total_tokens,
        HEAD_DIM=head_dim, BLOCK_T=_PREPROCESS_BLOCK_T,
    )

    common_args = (cu_seqlens, softmax_scale, q.stride(0), q.stride(1), total_tokens, _max_seqlen_bucket(max_seqlen))
    constexprs = dict(HEAD_DIM=head_dim, CAUSAL=causal, DOT_DTYPE=_dot_dtype(q.dtype),
                      DOT_PRECISION=_dot_precision(q.dtype))

    def dkdv_grid(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_N"]), heads, batch)

    def dq_grid(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads, batch)

    _launch(_attention_backward_dkdv_kernel, _dkdv_autotuned, _INTERPRETER_DKDV_BLOCKS, dkdv_grid,
            q, k, v, d_out, lse, delta, dk, dv, *common_args, **constexprs)
    _launch(_attention_backward_dq_kernel, _dq_autotuned, _INTERPRETER_BLOCKS, dq_grid,
            q, k, v, d_out, lse, delta, dq, *common_args, **constexprs)
    return dq, dk, dv


class _VarlenAttentionFunction(torch.autograd.Function):
    """Autograd glue: the forward saves the output and LSE, the backward runs the Triton kernels."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale):
        out, lse = _attention_forward(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.max_seqlen = max_seqlen
        ctx.causal = causal
        ctx.softmax_scale = softmax_scale
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = _attention_backward(d_out, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.causal,
                                         ctx.softmax_scale)
        return dq, dk, dv, None, None, None, None


def _validate(q, k, v, cu_seqlens, max_seqlen):
    for name, tensor in (("q", q), ("k", k), ("v", v), ("cu_seqlens", cu_seqlens)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if q.dim() != 3:
        raise ValueError(f"q must have shape (total_tokens, heads, head_dim), got {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {q.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    if not (q.device == k.device == v.device == cu_seqlens.device):
        raise ValueError(f"q, k, v and cu_seqlens must be on the same device, got {q.device}, {k.device}, "
                         f"{v.device}, {cu_seqlens.device}")
    head_dim = q.shape[2]
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} is not supported; use one of {SUPPORTED_HEAD_DIMS}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with batch + 1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.numel() - 1 > _MAX_GRID_Z:
        raise ValueError(f"at most {_MAX_GRID_Z} sequences per call (the CUDA grid's third dimension), "
                         f"got {cu_seqlens.numel() - 1}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 1:
        raise ValueError(f"max_seqlen must be a positive Python int, got {max_seqlen!r}")
    # Checking the values of cu_seqlens needs them on the host. On a GPU that would force a
    # device-to-host sync on every call, so, like FlashAttention, we trust them there.
    if cu_seqlens.device.type == "cpu":
        bounds = cu_seqlens.tolist()
        lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
        if bounds[0] != 0 or bounds[-1] != q.shape[0] or min(lengths) < 0:
            raise ValueError(f"cu_seqlens must be non-decreasing from 0 to total_tokens={q.shape[0]}, "
                             f"got {bounds}")
        if max(lengths) > max_seqlen:
            raise ValueError(f"max_seqlen={max_seqlen} is smaller than the longest sequence ({max(lengths)})")


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=False, softmax_scale=None):
    """Scaled dot-product attention over packed variable-length sequences (differentiable).

    Args:
        q, k, v: (total_tokens, heads, head_dim) tensors, fp16/bf16/fp32, head_dim in 16/32/64/128.
            The tokens of all sequences are packed back to back, without padding.
        cu_seqlens: int32 tensor (batch + 1,): cumulative sequence lengths, starting at 0 and
            ending at total_tokens. Sequence b is rows cu_seqlens[b]:cu_seqlens[b + 1].
        max_seqlen: int, the length of the longest sequence. It sizes the launch grid, so it
            must not be smaller than the true maximum (checked for CPU cu_seqlens only).
        causal: if True, query i of a sequence attends keys j <= i of that sequence (GPT-2);
            if False, every token attends its whole sequence (BERT, RoBERTa).
        softmax_scale: multiplier of q.k before the softmax; defaults to 1 / sqrt(head_dim).

    Returns:
        (total_tokens, heads, head_dim) tensor with the dtype of q. Softmax and accumulation
        run in fp32.

    Raises:
        ValueError: malformed inputs.
        RuntimeError: CPU tensors while the kernels are compiled for the GPU, i.e. without
            TRITON_INTERPRET=1 set before triton was imported (see varlen_attention_reference
            for plain PyTorch).
    """
    _validate(q, k, v, cu_seqlens, max_seqlen)
    if q.device.type != "cuda" and not _kernels_interpreted():
        raise RuntimeError(
            f"varlen_attention runs Triton kernels and got {q.device.type} tensors: move them to a CUDA "
            f"device, or set TRITON_INTERPRET=1 in the environment before triton is first imported to run "
            f"the kernels (slowly) in Triton's interpreter. varlen_attention_reference is the plain "
            f"PyTorch version.")
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[2])
    # The kernels assume one contiguous (total_tokens, heads, head_dim) layout for every tensor.
    # .contiguous() is free when that already holds; when it copies, autograd routes the
    # gradient back through the copy.
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _VarlenAttentionFunction.apply(q, k, v, cu_seqlens, max_seqlen, bool(causal), float(softmax_scale))


def varlen_attention_reference(q, k, v, cu_seqlens, causal=False, softmax_scale=None):
    """Plain PyTorch varlen attention: a loop over sequences, computed in fp32, cast back.

    Same inputs and output as varlen_attention (without max_seqlen); differentiable by autograd.
    Slow, but it is the definition the Triton kernels are tested against.
    """
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[2])
    bounds = cu_seqlens.tolist()
    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        # (length, heads, head_dim) -> (heads, length, head_dim): one attention matrix per head.
        q_seq, k_seq, v_seq = (x[start:end].float().transpose(0, 1) for x in (q, k, v))
        scores = q_seq @ k_seq.transpose(1, 2) * softmax_scale
        if causal:
            length = end - start
            future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        outputs.append((scores.softmax(dim=-1) @ v_seq).transpose(0, 1))
    return torch.cat(outputs).to(q.dtype)
