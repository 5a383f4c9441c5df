"""DeBERTa's disentangled attention, fused in Triton over packed variable-length sequences.

DeBERTa-v2/v3 scores query i against key j of the same sequence with up to three dot products
(see minirm/models/deberta.py for the model's side)::

    s[i, j] = scale * ( q_i . k_j                    content -> content
                      + q_i . Pk[c2p_row(i - j)]     content -> position  ("c2p")
                      + k_j . Pq[p2c_row(i - j)] )   position -> content  ("p2c")
    scale   = 1 / sqrt(head_dim * (1 + number of relative terms))

Pk and Pq are the relative-position table R projected, per head, by the key and query
projections (the model's own, or its content ones with share_att_key): (heads, n, head_dim)
each. c2p_row and p2c_row map a distance i - j to a row of them; they carry everything the
model's config says about positions (log buckets or not, max_relative_positions, the clamp at
the table's ends), so the kernel knows nothing of bucketing: it reads two int32 vectors indexed
by i - j + max_seqlen - 1.

transformers, and minirm's sdpa path, write the two relative terms out as a (B, heads, T, T)
float bias and hand it to attention as a mask: memory grows as T^2, padded pairs cost as much as
real ones, and no flash kernel runs. Here nothing of size T x T exists.

How the relative terms get into the tile
----------------------------------------
Two ways were on the table (issue 15):

1. Tables, then a gather. Before the kernel, per head, two GEMMs give each token's products
   with every relative row: c2p_table = Q Pk^T and p2c_table = K Pq^T, (heads, tokens, n).
   Inside the tile, s[i, j] adds c2p_table[i, c2p_row(i - j)] and p2c_table[j, p2c_row(i - j)]:
   two gathered loads per score, from rows that stay in L2 while the program walks its
   sequence (a query's row of c2p_table is n values, 1 KB in bf16 for xxlarge's n = 512).
2. Rows per tile. Each tile projects just the relative rows its distances reach (at most
   BLOCK_M + BLOCK_N - 1 of them) with an extra tl.dot, and skews them into place with
   tl.gather.

This kernel does (1), for these reasons, counted and compiled rather than timed (no GPU was lent
to the session that wrote it; kernels/bench.py --deberta is ready for one). The compile figures
come from benchmarks/deberta_designs.py, which writes (2) out as a forward kernel, checks it
against the reference in the interpreter, and compiles both (head dim 64, bf16, triton 3.9.0):

    config       design   sm_80 regs / spill   sm_90 regs / spill   sm_90 shared   HMMA per key block
    128x64, 8w   (1)           255 / 64             240 / 0            64 KB              64
                 (2)            32 / 8520           255 / 2224        112 KB             256
    64x32, 4w    (1)           255 / 0              236 / 0            32 KB              32
                 (2)            32 / 6024           255 / 640          56 KB             128
    32x32, 4w    (1)           168 / 0              156 / 0            12 KB              16
                 (2)           254 / 0              204 / 0            20 KB              48

  (2) does 3-4 times the tensor-core work per key block (HMMA on sm_80 count fixed-size MMAs),
  and its two (BLOCK_M x window) product tiles spill in every config but the smallest.

* Work. (1) adds 2 * tokens * n * head_dim multiply-adds per term, as tensor-core GEMMs outside
  the kernel; n <= 2 * span (512 for xxlarge and v3, fewer for short batches: the model keeps only
  the rows its longest sequence reaches). (2) adds, per term and on every tile, a
  BLOCK_M x (BLOCK_M + BLOCK_N) x head_dim dot: 2 to 3 times the tile's q.k dot. With both terms
  the forward does 3 to 4 times the FLOPs of plain attention (q.k and p.v), and the backward
  redoes that work in both of its kernels, plus the dots for the rows' gradients.
* Backward. With (1) the gradient of a score lands in one cell of a table row that one program
  owns (dC2P rows belong to the query block's program, dP2C rows to the key block's), so the
  atomics only merge the duplicates inside a tile (distances that share a log bucket); the
  projections' own gradients are then plain GEMMs that autograd derives from the tables. With
  (2) every tile would scatter-add into the shared relative rows, across all programs.
* Memory. The tables are linear in T: 2 * tokens * heads * n values (fp32 gradients in the
  backward), against the bias's B * heads * T^2, which the sdpa path also pays for the
  (B, heads, T, n) products it gathers from.

The kernels are the varlen kernels of kernels/attention.py with the relative terms added where
scores are formed: the same tile map over packed sequences, the same online softmax, the same
split into unmasked interior and masked edge blocks, the same three-kernel backward (delta, then
dK/dV per key block, then dQ per query block), all sharing attention.py's helpers. Scores, the
softmax and every accumulator stay in fp32 (DeBERTa is known to overflow fp16); for fp16 inputs
the tables are fp32 too.

Attention dropout (training): each probability gets one Philox draw (tl.rand) keyed by the seed
plus the head and counted by query token * max_seqlen + key, so the forward and both backward
kernels draw the same numbers whatever their tiles, and no mask is stored. The softmax sums
every probability; the output and dV see the kept ones, scaled by 1 / (1 - p); dP reaches only
them; delta = rowsum(dO * O) is unchanged. A compile-time flag: inference kernels carry none of it.

Gradients: dQ, dK, dV from the kernels; d(c2p_table) and d(p2c_table) from the dQ and dK/dV
kernels with tl.atomic_add, and from them the gradients of Q, K, Pk and Pq through the two
GEMMs (autograd). Float atomics add in no fixed order, so the relative gradients can differ in
the last bits from run to run where distances share a bucket.

Relaxed atomics, planned off the GPU (issue 29)
-----------------------------------------------
``python -m benchmarks.sass_loops --kernel deberta_backward_dkdv`` (and ``deberta_backward_dq``;
triton 3.9.0, sm_90, bf16, head dim 64, xxlarge's shape; no GPU) showed each table-gradient add
compiled as ATOM plus memory fences: tl.atomic_add's default semantics are acq_rel, which orders
every add against all of the warp's other memory traffic, though nothing in the kernel reads the
tables back. With sem="relaxed" each add is a fire-and-forget RED. Per warp and key-loop
iteration: dK/dV 32x128 on 8 warps 1003 -> 872 instructions, 16 ATOM -> 16 RED, 16 GPU-scope
fences (MEMBAR.ALL.GPU) -> 0, spill 24 -> 16 bytes; 16x64 on 4 warps 512 -> 446, 8 fences -> 0;
dQ 128x32 on 8 warps 901 -> 771, 16 fences -> 0. (The 3-4 MEMBAR left per iteration are
CTA-scope, before wgmma reads an operand staged in shared memory, as in the varlen kernels.)
The instruction count is the smaller part: a GPU-scope fence stalls its warp until the warp's
earlier stores and atomics are visible device-wide, hundreds of cycles, 16 times an iteration.

With one 8-warp program per SM (255 registers), the fences outweighed the iteration's own work
(about a thousand clocks). Predicted, timed by ``python -m benchmarks.gpu --sections candidates``
against a snapshot of the fenced kernel with the same tiles: forward + backward at least 1.5x
faster, the forward within 3 %; and in kernel-speed's deberta rows, forward + backward within 4x
the forward's time, as a backward of 2.5x the forward's work plus the table gradients should be. The gradients are the same sums in another order (as
before, float atomics fix no order). The compile tables move a little both ways (triton 3.9: 15
of the 1152 backward config rows change sides, 10 of them to clean, mostly on sm_80; none at
xxlarge's head dim 64 in bf16 on sm_90; every variant keeps a clean config).

Still open, from the same report: at xxlarge's shape, with triton 3.9, dK/dV keeps only
16-query tiles clean (32x128 on 8 warps sits at 255 registers, 16 bytes spilled; triton 3.6, the
GPU machine's, compiles the 32-query tiles clean at 254); each score costs two dependent
gathers per relative term (row index, then table value: LDG 80 and ~240 address instructions an
iteration), which is where the rest of the loop goes.
"""

import math

import torch
import triton
import triton.language as tl

from minirm.kernels.attention import (
    _INTERPRETER_BLOCKS,
    _INTERPRETER_DKDV_BLOCKS,
    _LOG2E,
    _PREPROCESS_BLOCK_T,
    _attention_backward_preprocess_kernel,
    _configs,
    _dot_precision,
    _fill_key_tiles,
    _fill_query_tiles,
    _head_offset,
    _kernel_dtype,
    _kernels_interpreted,
    _launch,
    _load_rows,
    _load_values,
    _locate_tile,
    _max_seqlen_bucket,
    _num_tiles,
    _prune_configs,
    _row_offsets,
    _store_rows,
    _tile_map_buffers,
    _validate,
)


# ----------------------------------------------------------------------------------------------
# Helpers (inlined by Triton)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _relative_scores(scores, C2P, P2C, C2P_ROWS, P2C_ROWS, queries, keys, seq_len, stride_table, distance_offset,
                     HAS_C2P: tl.constexpr, HAS_P2C: tl.constexpr):
    """scores + c2p_table[i, c2p_row(i - j)] + p2c_table[j, p2c_row(i - j)], in fp32.

    `queries` and `keys` are positions inside the sequence, shaped to broadcast to the tile:
    (BLOCK_M, 1) and (1, BLOCK_N) for a (queries x keys) tile, the other way round for a
    transposed one. Positions past the sequence end read the last real one instead, so every
    load stays inside the tables; the caller masks those scores.
    """
    i = tl.minimum(queries, seq_len - 1)
    j = tl.minimum(keys, seq_len - 1)
    distance = i - j + distance_offset  # index into the distance -> row maps
    if HAS_C2P:
        scores += tl.load(C2P + i * stride_table + tl.load(C2P_ROWS + distance)).to(tl.float32)
    if HAS_P2C:
        scores += tl.load(P2C + j * stride_table + tl.load(P2C_ROWS + distance)).to(tl.float32)
    return scores


@triton.jit
def _scatter_relative(d_scores, dTABLE, ROWS, owners, others, owner_is_query: tl.constexpr, seq_len, stride_table,
                      distance_offset):
    """dtable[owner, row(i - j)] += d_scores for every (owner, other) of the tile.

    The owner (the query for c2p, the key for p2c) is one this program alone handles, so the
    atomics only merge the tile's own duplicates: distances that share a row of the table.
    Relaxed: nothing in the kernel reads the table back, and the kernel's end orders the adds
    before the GEMMs that do. Triton's default (acq_rel) fences every add: on sm_90 each became
    ATOM + MEMBAR, where relaxed gives a fire-and-forget RED (issue 29's notes in the header).
    """
    if owner_is_query:
        distance = owners - others + distance_offset
    else:
        distance = others - owners + distance_offset
    valid = (owners < seq_len) & (others < seq_len)
    distance = tl.where(valid, distance, distance_offset)
    tl.atomic_add(dTABLE + owners * stride_table + tl.load(ROWS + distance), d_scores, mask=valid, sem="relaxed")


@triton.jit
def _dropout_keep(dropout_seed, query_tokens, keys, max_seqlen, dropout_p):
    """Which attention probabilities dropout keeps (True) for the tile's (query, key) pairs.

    One uniform draw per (head, query token, key) from Philox, keyed by the seed plus the head
    and counted by query_token * max_seqlen + key: the forward and both backward kernels draw
    the same numbers whatever their tile shapes. query_tokens are packed token indices, keys
    positions inside the sequence, shaped to broadcast to the tile as in _relative_scores.
    """
    return tl.rand(dropout_seed + tl.program_id(1), query_tokens * max_seqlen + keys) >= dropout_p


@triton.jit
def _table_offset(seq_start, stride_table_head, stride_table):
    """Offset of (token 0 of the sequence, this program's head) in a (heads, tokens, n) table."""
    return tl.program_id(1).to(tl.int64) * stride_table_head + seq_start.to(tl.int64) * stride_table


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _deberta_forward_key_blocks(acc, row_max, row_sum, q, K, V, C2P, P2C, C2P_ROWS, P2C_ROWS, offs_m, offs_d,
                                stride_token, stride_table, distance_offset, seq_start, seq_len, softmax_scale_log2,
                                dropout_p, dropout_seed, key_begin, key_end,
                                HAS_C2P: tl.constexpr, HAS_P2C: tl.constexpr, DROPOUT: tl.constexpr,
                                MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online softmax over the key blocks [key_begin, key_end) of one query block (MASKED: the
    partial block at the sequence end)."""
    for key_start in tl.range(key_begin, key_end, BLOCK_N, num_stages=1 if MASKED else None):
        offs_key = _row_offsets(tl.multiple_of(key_start, BLOCK_N), BLOCK_N)
        k = _load_rows(K, offs_key, offs_d, stride_token, seq_len, MASKED)
        v = _load_rows(V, offs_key, offs_d, stride_token, seq_len, MASKED)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # q.k, fp32
        scores = _relative_scores(scores, C2P, P2C, C2P_ROWS, P2C_ROWS, offs_m[:, None], offs_key[None, :], seq_len,
                                  stride_table, distance_offset, HAS_C2P, HAS_P2C)
        scores *= softmax_scale_log2
        if MASKED:
            scores = tl.where((offs_key < seq_len)[None, :], scores, float("-inf"))

        # the online softmax of kernels/attention.py: rescale what came before to the new max
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        probs = tl.exp2(scores - new_max[:, None])
        rescale = tl.exp2(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(probs, 1)
        acc = acc * rescale[:, None]
        if DROPOUT:  # the softmax sums every probability; only the kept ones reach the output
            keep = _dropout_keep(dropout_seed, seq_start + offs_m[:, None], offs_key[None, :], distance_offset + 1,
                                 dropout_p)
            probs = tl.where(keep, probs / (1.0 - dropout_p), 0.0)
        acc = tl.dot(probs.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        row_max = new_max
    return acc, row_max, row_sum


@triton.jit
def _deberta_forward_kernel(
    Q, K, V, Out, LSE,  # Q, K, V, Out: (total_tokens, heads, HEAD_DIM); LSE: (heads, total_tokens) fp32
    C2P, P2C,  # (heads, total_tokens, n) tables: q_i . Pk[r] and k_j . Pq[r] for every relative row r
    C2P_ROWS, P2C_ROWS,  # (2 * max_seqlen - 1,) int32: distance i - j -> row r, at i - j + distance_offset
    cu_seqlens,
    tile_seq, seq_first_tile, num_seqs,  # the tile map (kernels/attention.py, _locate_tile)
    softmax_scale_log2,
    dropout_p, dropout_seed,  # attention dropout (used with DROPOUT only)
    stride_token, stride_head,  # of Q, K, V and Out (all contiguous)
    stride_table_head, stride_table,  # of the tables: per head, per token (rows are contiguous)
    distance_offset,  # max_seqlen - 1
    total_tokens,
    max_seqlen_bucket,  # unused by the kernel; only an autotuning key
    HEAD_DIM: tl.constexpr,
    HAS_C2P: tl.constexpr,
    HAS_P2C: tl.constexpr,
    DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    seq_start, seq_len, q_start = _locate_tile(tile_seq, seq_first_tile, cu_seqlens, num_seqs, BLOCK_M)
    if q_start >= seq_len:
        return
    offset = _head_offset(seq_start, stride_token, stride_head)
    Q += offset
    K += offset
    V += offset
    Out += offset
    LSE += tl.program_id(1) * total_tokens + seq_start
    table_offset = _table_offset(seq_start, stride_table_head, stride_table)
    C2P += table_offset
    P2C += table_offset

    offs_m = _row_offsets(q_start, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_rows(Q, offs_m, offs_d, stride_token, seq_len, True)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # bidirectional: every full key block is interior, only the partial one at the end is masked
    interior_end = seq_len // BLOCK_N * BLOCK_N
    acc, row_max, row_sum = _deberta_forward_key_blocks(
        acc, row_max, row_sum, q, K, V, C2P, P2C, C2P_ROWS, P2C_ROWS, offs_m, offs_d, stride_token, stride_table,
        distance_offset, seq_start, seq_len, softmax_scale_log2, dropout_p, dropout_seed, 0, interior_end,
        HAS_C2P, HAS_P2C, DROPOUT, False, DOT_PRECISION, BLOCK_N)
    acc, row_max, row_sum = _deberta_forward_key_blocks(
        acc, row_max, row_sum, q, K, V, C2P, P2C, C2P_ROWS, P2C_ROWS, offs_m, offs_d, stride_token, stride_table,
        distance_offset, seq_start, seq_len, softmax_scale_log2, dropout_p, dropout_seed, interior_end, seq_len,
        HAS_C2P, HAS_P2C, DROPOUT, True, DOT_PRECISION, BLOCK_N)

    _store_rows(Out, offs_m, offs_d, stride_token, seq_len, acc / row_sum[:, None])
    lse = (row_max + tl.log2(row_sum)) / _LOG2E  # natural-log units, as kernels/attention.py keeps it
    tl.store(LSE + offs_m, lse, mask=offs_m < seq_len)


# ----------------------------------------------------------------------------------------------
# Backward. With s = scale * (q.k + c2p + p2c), P = softmax(s) and dS = P * (dP - delta):
#   dQ = scale * dS K,   dK = scale * dS^T Q,   dV = P^T dO        (as in kernels/attention.py)
#   d c2p_table[i, c2p_row(i - j)] += scale * dS[i, j]            (in the dQ kernel: i is its own)
#   d p2c_table[j, p2c_row(i - j)] += scale * dS[i, j]            (in the dK/dV kernel: j is its own)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _deberta_dkdv_query_block(dk, dv, k, v, Q, dOut, LSE, Delta, C2P, P2C, dP2C, C2P_ROWS, P2C_ROWS, offs_key,
                              offs_d, stride_token, stride_table, distance_offset, seq_start, seq_len, softmax_scale,
                              dropout_p, dropout_seed, query_start,
                              HAS_C2P: tl.constexpr, HAS_P2C: tl.constexpr, DROPOUT: tl.constexpr,
                              MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """dK, dV (and dP2C) contributions of the query block at query_start to one key block,
    computed transposed, (keys x queries), as kernels/attention.py does."""
    offs_query = _row_offsets(query_start, BLOCK_M)
    q = _load_rows(Q, offs_query, offs_d, stride_token, seq_len, MASKED)
    d_out = _load_rows(dOut, offs_query, offs_d, stride_token, seq_len, MASKED)
    lse_log2 = _load_values(LSE, offs_query, seq_len, MASKED) * _LOG2E
    delta = _load_values(Delta, offs_query, seq_len, MASKED)

    scores_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
    scores_t = _relative_scores(scores_t, C2P, P2C, C2P_ROWS, P2C_ROWS, offs_query[None, :], offs_key[:, None],
                                seq_len, stride_table, distance_offset, HAS_C2P, HAS_P2C)
    probs_t = tl.exp2(scores_t * (softmax_scale * _LOG2E) - lse_log2[None, :])
    # key rows past the sequence end are never stored, but their dP2C would land on a real row
    # (the scatter masks them); query columns past it must not reach dK
    if MASKED:
        probs_t = tl.where((offs_query < seq_len)[None, :], probs_t, 0.0)

    d_probs_t = tl.dot(v, tl.trans(d_out), input_precision=DOT_PRECISION)
    if DROPOUT:  # dV sees the kept probabilities; dP reaches only them
        keep_t = _dropout_keep(dropout_seed, seq_start + offs_query[None, :], offs_key[:, None], distance_offset + 1,
                               dropout_p)
        dv = tl.dot(tl.where(keep_t, probs_t / (1.0 - dropout_p), 0.0).to(d_out.dtype), d_out, dv,
                    input_precision=DOT_PRECISION)
        d_probs_t = tl.where(keep_t, d_probs_t / (1.0 - dropout_p), 0.0)
    else:
        dv = tl.dot(probs_t.to(d_out.dtype), d_out, dv, input_precision=DOT_PRECISION)
    d_scores_t = probs_t * (d_probs_t - delta[None, :])  # dS^T, without the scale
    dk = tl.dot(d_scores_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    if HAS_P2C:
        _scatter_relative(d_scores_t * softmax_scale, dP2C, P2C_ROWS, offs_key[:, None], offs_query[None, :], False,
                          seq_len, stride_table, distance_offset)
    return dk, dv


@triton.jit
def _deberta_backward_dkdv_kernel(
    Q, K, V, dOut, LSE, Delta,
    C2P, P2C, C2P_ROWS, P2C_ROWS,
    dK, dV, dP2C,  # dP2C: fp32, (heads, total_tokens, n), zeroed by the host
    cu_seqlens,
    tile_seq, seq_first_tile, num_seqs,  # the tile map over key blocks
    softmax_scale,
    dropout_p, dropout_seed,
    stride_token, stride_head,
    stride_table_head, stride_table,  # shared by C2P, P2C and dP2C
    distance_offset,
    total_tokens,
    max_seqlen_bucket,
    HEAD_DIM: tl.constexpr,
    HAS_C2P: tl.constexpr,
    HAS_P2C: tl.constexpr,
    DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per inner-loop step
    BLOCK_N: tl.constexpr,  # keys per program
):
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    seq_start, seq_len, key_start = _locate_tile(tile_seq, seq_first_tile, cu_seqlens, num_seqs, BLOCK_N)
    if key_start >= seq_len:
        return
    offset = _head_offset(seq_start, stride_token, stride_head)
    Q += offset
    K += offset
    V += offset
    dOut += offset
    dK += offset
    dV += offset
    LSE += tl.program_id(1) * total_tokens + seq_start
    Delta += tl.program_id(1) * total_tokens + seq_start
    table_offset = _table_offset(seq_start, stride_table_head, stride_table)
    C2P += table_offset
    P2C += table_offset
    dP2C += table_offset

    offs_key = _row_offsets(key_start, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = _load_rows(K, offs_key, offs_d, stride_token, seq_len, True)
    v = _load_rows(V, offs_key, offs_d, stride_token, seq_len, True)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    interior_end = seq_len // BLOCK_M * BLOCK_M
    for query_start in range(0, interior_end, BLOCK_M):
        dk, dv = _deberta_dkdv_query_block(
            dk, dv, k, v, Q, dOut, LSE, Delta, C2P, P2C, dP2C, C2P_ROWS, P2C_ROWS, offs_key, offs_d, stride_token,
            stride_table, distance_offset, seq_start, seq_len, softmax_scale, dropout_p, dropout_seed,
            tl.multiple_of(query_start, BLOCK_M), HAS_C2P, HAS_P2C, DROPOUT, False, DOT_PRECISION, BLOCK_M)
    for query_start in tl.range(interior_end, seq_len, BLOCK_M, num_stages=1):
        dk, dv = _deberta_dkdv_query_block(
            dk, dv, k, v, Q, dOut, LSE, Delta, C2P, P2C, dP2C, C2P_ROWS, P2C_ROWS, offs_key, offs_d, stride_token,
            stride_table, distance_offset, seq_start, seq_len, softmax_scale, dropout_p, dropout_seed,
            tl.multiple_of(query_start, BLOCK_M), HAS_C2P, HAS_P2C, DROPOUT, True, DOT_PRECISION, BLOCK_M)

    _store_rows(dK, offs_key, offs_d, stride_token, seq_len, dk * softmax_scale)
    _store_rows(dV, offs_key, offs_d, stride_token, seq_len, dv)


@triton.jit
def _deberta_dq_key_blocks(dq, q, d_out, lse_log2, delta, K, V, C2P, P2C, dC2P, C2P_ROWS, P2C_ROWS, offs_m, offs_d,
                           stride_token, stride_table, distance_offset, seq_start, seq_len, softmax_scale, dropout_p,
                           dropout_seed, key_begin, key_end,
                           HAS_C2P: tl.constexpr, HAS_P2C: tl.constexpr, DROPOUT: tl.constexpr,
                           MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ (and dC2P) contributions of the key blocks [key_begin, key_end) to one query block."""
    for key_start in tl.range(key_begin, key_end, BLOCK_N, num_stages=1 if MASKED else None):
        offs_key = _row_offsets(tl.multiple_of(key_start, BLOCK_N), BLOCK_N)
        k = _load_rows(K, offs_key, offs_d, stride_token, seq_len, MASKED)
        v = _load_rows(V, offs_key, offs_d, stride_token, seq_len, MASKED)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        scores = _relative_scores(scores, C2P, P2C, C2P_ROWS, P2C_ROWS, offs_m[:, None], offs_key[None, :], seq_len,
                                  stride_table, distance_offset, HAS_C2P, HAS_P2C)
        probs = tl.exp2(scores * (softmax_scale * _LOG2E) - lse_log2[:, None])
        if MASKED:
            probs = tl.where((offs_key < seq_len)[None, :], probs, 0.0)

        d_probs = tl.dot(d_out, tl.trans(v), input_precision=DOT_PRECISION)
        if DROPOUT:
            keep = _dropout_keep(dropout_seed, seq_start + offs_m[:, None], offs_key[None, :], distance_offset + 1,
                                 dropout_p)
            d_probs = tl.where(keep, d_probs / (1.0 - dropout_p), 0.0)
        d_scores = probs * (d_probs - delta[:, None])
        dq = tl.dot(d_scores.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
        if HAS_C2P:
            _scatter_relative(d_scores * softmax_scale, dC2P, C2P_ROWS, offs_m[:, None], offs_key[None, :], True,
                              seq_len, stride_table, distance_offset)
    return dq


@triton.jit
def _deberta_backward_dq_kernel(
    Q, K, V, dOut, LSE, Delta,
    C2P, P2C, C2P_ROWS, P2C_ROWS,
    dQ, dC2P,  # dC2P: fp32, (heads, total_tokens, n), zeroed by the host
    cu_seqlens,
    tile_seq, seq_first_tile, num_seqs,  # the tile map over query blocks
    softmax_scale,
    dropout_p, dropout_seed,
    stride_token, stride_head,
    stride_table_head, stride_table,
    distance_offset,
    total_tokens,
    max_seqlen_bucket,
    HEAD_DIM: tl.constexpr,
    HAS_C2P: tl.constexpr,
    HAS_P2C: tl.constexpr,
    DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per inner-loop step
):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    seq_start, seq_len, q_start = _locate_tile(tile_seq, seq_first_tile, cu_seqlens, num_seqs, BLOCK_M)
    if q_start >= seq_len:
        return
    offset = _head_offset(seq_start, stride_token, stride_head)
    Q += offset
    K += offset
    V += offset
    dOut += offset
    dQ += offset
    LSE += tl.program_id(1) * total_tokens + seq_start
    Delta += tl.program_id(1) * total_tokens + seq_start
    table_offset = _table_offset(seq_start, stride_table_head, stride_table)
    C2P += table_offset
    P2C += table_offset
    dC2P += table_offset

    offs_m = _row_offsets(q_start, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_rows(Q, offs_m, offs_d, stride_token, seq_len, True)
    d_out = _load_rows(dOut, offs_m, offs_d, stride_token, seq_len, True)
    # query rows past the sequence end get lse = +inf: probability 0, so they add nothing anywhere
    query_valid = offs_m < seq_len
    lse_log2 = tl.where(query_valid, tl.load(LSE + offs_m, mask=query_valid, other=0.0) * _LOG2E, float("inf"))
    delta = tl.load(Delta + offs_m, mask=query_valid, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    interior_end = seq_len // BLOCK_N * BLOCK_N
    dq = _deberta_dq_key_blocks(dq, q, d_out, lse_log2, delta, K, V, C2P, P2C, dC2P, C2P_ROWS, P2C_ROWS, offs_m,
                                offs_d, stride_token, stride_table, distance_offset, seq_start, seq_len, softmax_scale,
                                dropout_p, dropout_seed, 0, interior_end, HAS_C2P, HAS_P2C, DROPOUT, False,
                                DOT_PRECISION, BLOCK_N)
    dq = _deberta_dq_key_blocks(dq, q, d_out, lse_log2, delta, K, V, C2P, P2C, dC2P, C2P_ROWS, P2C_ROWS, offs_m,
                                offs_d, stride_token, stride_table, distance_offset, seq_start, seq_len, softmax_scale,
                                dropout_p, dropout_seed, interior_end, seq_len, HAS_C2P, HAS_P2C, DROPOUT, True,
                                DOT_PRECISION, BLOCK_N)
    _store_rows(dQ, offs_m, offs_d, stride_token, seq_len, dq * softmax_scale)


# ----------------------------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------------------------
# (BLOCK_M, BLOCK_N, num_warps, num_stages): the shapes of kernels/attention.py, fewer and a
# stage lighter, since every score tile also holds two gathered index tiles and two table tiles.
# Pruned per architecture by the same compile table (python -m minirm.kernels.aot).
_DEBERTA_FORWARD_BLOCKS = [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 1), (32, 32, 8, 1),
                           (16, 16, 4, 1)]
_DEBERTA_DKDV_BLOCKS = [(32, 128, 8, 2), (32, 64, 4, 2), (16, 64, 4, 2), (16, 32, 4, 1), (16, 32, 8, 1),
                        (16, 16, 4, 1)]
_DEBERTA_DQ_BLOCKS = [(128, 32, 8, 2), (64, 32, 4, 2), (64, 64, 8, 2), (32, 32, 4, 1), (32, 32, 8, 1),
                      (16, 16, 4, 1)]
_DEBERTA_AUTOTUNE_KEY = ["HEAD_DIM", "HAS_C2P", "HAS_P2C", "DROPOUT", "max_seqlen_bucket"]

_DEBERTA_FORWARD_CONFIGS = _configs(_DEBERTA_FORWARD_BLOCKS, _fill_query_tiles)
_DEBERTA_DKDV_CONFIGS = _configs(_DEBERTA_DKDV_BLOCKS, _fill_key_tiles)
_DEBERTA_DQ_CONFIGS = _configs(_DEBERTA_DQ_BLOCKS, _fill_query_tiles)


def table_name(kernel, has_c2p, has_p2c, dropout):
    """A variant's kernel name in the compile table (python -m minirm.kernels.aot): deberta_<kernel> with
    both relative terms, then _c2p or _p2c with one, and _dropout with attention dropout."""
    one_term = {(True, False): "_c2p", (False, True): "_p2c"}.get((has_c2p, has_p2c), "")
    return f"deberta_{kernel}{one_term}{'_dropout' if dropout else ''}"


def _autotune(kernel, configs, name):
    """Autotuned over the configs that compile cleanly for the launch's variant (table_name)."""

    def launch_name(constexprs):
        return table_name(name, constexprs["HAS_C2P"], constexprs["HAS_P2C"], constexprs["DROPOUT"])

    return triton.autotune(configs=configs, key=_DEBERTA_AUTOTUNE_KEY,
                           prune_configs_by={"early_config_prune": _prune_configs(launch_name)})(kernel)


_forward_autotuned = _autotune(_deberta_forward_kernel, _DEBERTA_FORWARD_CONFIGS, "forward")
_dkdv_autotuned = _autotune(_deberta_backward_dkdv_kernel, _DEBERTA_DKDV_CONFIGS, "backward_dkdv")
_dq_autotuned = _autotune(_deberta_backward_dq_kernel, _DEBERTA_DQ_CONFIGS, "backward_dq")


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------
class _Launch:
    """What all three kernels of one call share: the relative tables and maps, the sizes, the
    scale and the dropout draw; built once per forward and kept for the backward."""

    def __init__(self, q, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens, max_seqlen, softmax_scale,
                 dropout_p, dropout_seed):
        present = c2p_table if c2p_table is not None else p2c_table
        self.has_c2p, self.has_p2c = c2p_table is not None, p2c_table is not None
        # an absent term passes the other table, which the kernel never reads; under the
        # interpreter bf16 goes in as fp32 (see minirm.kernels.attention._kernel_dtype)
        self.c2p, self.p2c = (self._readable(present if table is None else table) for table in (c2p_table, p2c_table))
        self.shape = present.shape
        self.cu_seqlens, self.max_seqlen, self.total_tokens = cu_seqlens, max_seqlen, q.shape[0]
        self.relative = (self.c2p, self.p2c, c2p_rows, p2c_rows)
        self.softmax_scale, self.dropout_p, self.dropout_seed = softmax_scale, dropout_p, dropout_seed

    @staticmethod
    def _readable(table):
        return table.float() if table.dtype == torch.bfloat16 and _kernels_interpreted() else table

    def args(self, q):
        """The runtime arguments after the tile map, in the kernels' order."""
        return (self.dropout_p, self.dropout_seed, q.stride(0), q.stride(1), self.c2p.stride(0), self.c2p.stride(1),
                self.max_seqlen - 1, self.total_tokens, _max_seqlen_bucket(self.max_seqlen))

    def constexprs(self, q):
        return dict(HEAD_DIM=q.shape[2], HAS_C2P=self.has_c2p, HAS_P2C=self.has_p2c, DROPOUT=self.dropout_p > 0,
                    DOT_PRECISION=_dot_precision(q.dtype))

    def tile_map(self, blocks):
        return _tile_map_buffers(self.cu_seqlens, self.total_tokens, self.max_seqlen, blocks)

    def grid(self, heads, block_name):
        num_seqs = self.cu_seqlens.numel() - 1
        return lambda meta: (_num_tiles(self.total_tokens, num_seqs, self.max_seqlen, meta[block_name]), heads)


def _deberta_forward(q, k, v, launch):
    (q, k, v), result_dtype = _kernel_dtype(q, k, v)
    heads = q.shape[1]
    out = torch.empty_like(q)
    lse = torch.empty((heads, launch.total_tokens), dtype=torch.float32, device=q.device)
    tiles = launch.tile_map([block_m for block_m, *_ in _DEBERTA_FORWARD_BLOCKS] + [_INTERPRETER_BLOCKS["BLOCK_M"]])
    _launch(_deberta_forward_kernel, _forward_autotuned, _INTERPRETER_BLOCKS, _fill_query_tiles,
            launch.grid(heads, "BLOCK_M"), q, k, v, out, lse, *launch.relative, launch.cu_seqlens, *tiles,
            launch.softmax_scale * math.log2(math.e), *launch.args(q), **launch.constexprs(q))
    return out.to(result_dtype), lse


def _deberta_backward(d_out, q, k, v, out, lse, launch):
    (d_out, q, k, v, out), result_dtype = _kernel_dtype(d_out.contiguous(), q, k, v, out)
    total_tokens, heads, head_dim = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty_like(lse)
    _attention_backward_preprocess_kernel[(triton.cdiv(total_tokens, _PREPROCESS_BLOCK_T), heads)](
        out, d_out, delta, q.stride(0), q.stride(1), total_tokens, HEAD_DIM=head_dim, BLOCK_T=_PREPROCESS_BLOCK_T,
    )
    # the tables' gradients, fp32 whatever the dtype, laid out as the tables are (an absent one: a
    # stand-in the kernel never writes)
    d_c2p = torch.zeros(launch.shape, dtype=torch.float32, device=q.device) if launch.has_c2p else None
    d_p2c = torch.zeros(launch.shape, dtype=torch.float32, device=q.device) if launch.has_p2c else None
    stand_in = d_c2p if d_c2p is not None else d_p2c
    key_tiles = launch.tile_map([block_n for _, block_n, *_ in _DEBERTA_DKDV_BLOCKS]
                                + [_INTERPRETER_DKDV_BLOCKS["BLOCK_N"]])
    query_tiles = launch.tile_map([block_m for block_m, *_ in _DEBERTA_DQ_BLOCKS] + [_INTERPRETER_BLOCKS["BLOCK_M"]])
    inputs = (q, k, v, d_out, lse, delta, *launch.relative)
    _launch(_deberta_backward_dkdv_kernel, _dkdv_autotuned, _INTERPRETER_DKDV_BLOCKS, _fill_key_tiles,
            launch.grid(heads, "BLOCK_N"), *inputs, dk, dv, stand_in if d_p2c is None else d_p2c,
            launch.cu_seqlens, *key_tiles, launch.softmax_scale, *launch.args(q), **launch.constexprs(q))
    _launch(_deberta_backward_dq_kernel, _dq_autotuned, _INTERPRETER_BLOCKS, _fill_query_tiles,
            launch.grid(heads, "BLOCK_M"), *inputs, dq, stand_in if d_c2p is None else d_c2p,
            launch.cu_seqlens, *query_tiles, launch.softmax_scale, *launch.args(q), **launch.constexprs(q))
    return dq.to(result_dtype), dk.to(result_dtype), dv.to(result_dtype), d_c2p, d_p2c


class _DisentangledAttentionFunction(torch.autograd.Function):
    """Autograd glue: q, k, v and the two tables in, their five gradients out of the kernels."""

    @staticmethod
    def forward(ctx, q, k, v, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens, max_seqlen, softmax_scale,
                dropout_p, dropout_seed):
        launch = _Launch(q, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens, max_seqlen, softmax_scale,
                         dropout_p, dropout_seed)
        out, lse = _deberta_forward(q, k, v, launch)
        ctx.save_for_backward(q, k, v, out, lse, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens)
        ctx.arguments = (max_seqlen, softmax_scale, dropout_p, dropout_seed)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens = ctx.saved_tensors
        launch = _Launch(q, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens, *ctx.arguments)
        dq, dk, dv, d_c2p, d_p2c = _deberta_backward(d_out, q, k, v, out, lse, launch)
        return (dq, dk, dv, None if d_c2p is None else d_c2p.to(c2p_table.dtype),
                None if d_p2c is None else d_p2c.to(p2c_table.dtype), *[None] * 7)


def relative_tables(q, k, pos_key, pos_query):
    """(heads, total_tokens, n) products of every query with every relative key (c2p) and of every
    key with every relative query (p2c): two batched GEMMs per head, outside the kernel. fp16
    inputs get fp32 tables (DeBERTa's products overflow fp16); other dtypes keep theirs."""
    table_dtype = torch.float32 if q.dtype == torch.float16 else q.dtype

    def products(x, relative):  # (N, nh, hs) x (nh, n, hs) -> (nh, N, n)
        if relative is None:
            return None
        return torch.bmm(x.transpose(0, 1).to(table_dtype), relative.transpose(1, 2).to(table_dtype))

    # fp16 training runs under autocast, which would multiply the fp32 copies in fp16 again
    with torch.autocast(q.device.type, enabled=False):
        return products(q, pos_key), products(k, pos_query)


def _validate_relative(q, pos_key, pos_query, c2p_rows, p2c_rows, max_seqlen, dropout_p):
    heads, head_dim = q.shape[1], q.shape[2]
    for name, relative, rows in (("pos_key", pos_key, c2p_rows), ("pos_query", pos_query, p2c_rows)):
        if relative is None:
            continue
        if relative.dim() != 3 or relative.shape[0] != heads or relative.shape[2] != head_dim:
            raise ValueError(f"{name} must have shape (heads={heads}, n, head_dim={head_dim}), "
                             f"got {tuple(relative.shape)}")
        if relative.device != q.device:
            raise ValueError(f"{name} must be on {q.device}, got {relative.device}")
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.int32 or rows.shape != (2 * max_seqlen - 1,):
            raise ValueError(f"the row map of {name} must be an int32 tensor of 2 * max_seqlen - 1 = "
                             f"{2 * max_seqlen - 1} entries, got "
                             f"{tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__}")
        if rows.device.type == "cpu" and not 0 <= int(rows.min()) <= int(rows.max()) < relative.shape[1]:
            raise ValueError(f"the row map of {name} reaches rows {int(rows.min())}..{int(rows.max())}, "
                             f"outside its {relative.shape[1]} rows")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p and q.shape[0] * max_seqlen >= 2**31:
        raise ValueError(f"with dropout, total_tokens x max_seqlen must stay below 2^31 (Philox's int32 counter), "
                         f"got {q.shape[0]} x {max_seqlen}; split the batch")


def disentangled_attention(q, k, v, cu_seqlens, max_seqlen, pos_key=None, pos_query=None, c2p_rows=None,
                           p2c_rows=None, softmax_scale=None, dropout_p=0.0, dropout_seed=None):
    """DeBERTa's disentangled attention over packed variable-length sequences (differentiable).

    Args:
        q, k, v: (total_tokens, heads, head_dim), fp16/bf16/fp32, head_dim in 16/32/64/128,
            packed as for kernels.varlen_attention.
        cu_seqlens, max_seqlen: as for kernels.varlen_attention (never causal).
        pos_key: (heads, n, head_dim), the relative keys Pk of the c2p term, or None for no c2p.
        pos_query: (heads, n, head_dim), the relative queries Pq of the p2c term, or None.
        c2p_rows, p2c_rows: int32 (2 * max_seqlen - 1,): the row of pos_key (pos_query) that query
            i and key j read, at index i - j + max_seqlen - 1. Bucketing, max_relative_positions
            and the clamp at the table's ends live here (minirm.models.deberta builds them).
        softmax_scale: multiplier of the summed score; default 1 / sqrt(head_dim * (1 + terms)).
        dropout_p: attention dropout (training): each probability is dropped with this chance
            and the rest scaled by 1 / (1 - dropout_p), as torch's dropout does.
        dropout_seed: int seeding the draw (dropout_keep_mask shows it); by default one is drawn
            from torch's CPU generator, so torch.manual_seed and activation checkpointing's RNG
            replay reproduce it.

    Returns:
        (total_tokens, heads, head_dim) in q's dtype. Gradients reach q, k, v, pos_key, pos_query.
    """
    _validate(q, k, v, cu_seqlens, max_seqlen)
    _validate_relative(q, pos_key, pos_query, c2p_rows, p2c_rows, max_seqlen, dropout_p)
    if q.device.type != "cuda" and not _kernels_interpreted():
        raise RuntimeError(
            f"disentangled_attention runs Triton kernels and got {q.device.type} tensors: move them to a CUDA "
            f"device, or set TRITON_INTERPRET=1 before triton is first imported. "
            f"disentangled_attention_reference is the plain PyTorch version.")
    terms = (pos_key is not None) + (pos_query is not None)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[2] * (1 + terms))
    if terms == 0:
        if dropout_p:
            raise ValueError("dropout needs a relative term: varlen_attention, which serves no-term calls, has none")
        from minirm.kernels.attention import varlen_attention

        return varlen_attention(q, k, v, cu_seqlens, max_seqlen, softmax_scale=softmax_scale)
    if dropout_p and dropout_seed is None:
        dropout_seed = int(torch.randint(2**30, ()))
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    c2p_table, p2c_table = relative_tables(q, k, pos_key, pos_query)
    return _DisentangledAttentionFunction.apply(q, k, v, c2p_table, p2c_table, c2p_rows, p2c_rows, cu_seqlens,
                                                max_seqlen, float(softmax_scale), float(dropout_p),
                                                int(dropout_seed or 0))


@triton.jit
def _dropout_mask_kernel(Mask, seq_start, length, max_seqlen, dropout_p, dropout_seed, BLOCK: tl.constexpr):
    """Mask[head, i, j] = what _dropout_keep draws for one sequence's (query i, key j): one block of
    queries per program, walking the keys block by block."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    Mask += tl.program_id(1) * length * length
    for key_start in range(0, length, BLOCK):
        keys = key_start + tl.arange(0, BLOCK)
        keep = _dropout_keep(dropout_seed, seq_start + rows[:, None], keys[None, :], max_seqlen, dropout_p)
        tl.store(Mask + rows[:, None] * length + keys[None, :], keep.to(tl.int8),
                 mask=(rows[:, None] < length) & (keys[None, :] < length))


def dropout_keep_mask(cu_seqlens, heads, max_seqlen, dropout_p, dropout_seed):
    """The dropout draws of the kernels, written out: one (heads, L, L) bool tensor per sequence,
    True where a probability is kept. For tests and for reading; it needs the kernels to run."""
    bounds = cu_seqlens.tolist()
    masks = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        mask = torch.zeros(heads, end - start, end - start, dtype=torch.int8, device=cu_seqlens.device)
        grid = (max(1, triton.cdiv(end - start, 32)), heads)
        _dropout_mask_kernel[grid](mask, start, end - start, max_seqlen, dropout_p, dropout_seed, BLOCK=32)
        masks.append(mask.bool())
    return masks


def disentangled_attention_reference(q, k, v, cu_seqlens, pos_key=None, pos_query=None, c2p_rows=None,
                                     p2c_rows=None, softmax_scale=None, dropout_p=0.0, dropout_masks=None):
    """The same attention the way minirm's sdpa path computes it: per sequence, the (L, L) c2p + p2c
    bias written out and handed to torch's scaled_dot_product_attention as a float mask, in fp32.

    c2p_rows / p2c_rows are indexed by i - j + (len(c2p_rows) - 1) // 2. With dropout_masks (one
    (heads, L, L) bool tensor per sequence, as dropout_keep_mask returns), the probabilities are
    written out and those masks applied, scaled by 1 / (1 - dropout_p). Differentiable by autograd.
    """
    terms = (pos_key is not None) + (pos_query is not None)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[2] * (1 + terms))
    rows_map = c2p_rows if c2p_rows is not None else p2c_rows
    center = 0 if rows_map is None else (rows_map.numel() - 1) // 2
    bounds = cu_seqlens.tolist()
    outputs = []
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        length = end - start
        wide = torch.promote_types(q.dtype, torch.float32)  # fp32, or fp64 for an fp64 reference
        q_seq, k_seq, v_seq = (x[start:end].to(wide).transpose(0, 1) for x in (q, k, v))  # (nh, L, hs)
        positions = torch.arange(length, device=q.device)
        distance = (positions[:, None] - positions[None, :] + center).long()  # (L, L): i - j, shifted
        bias = torch.zeros(q.shape[1], length, length, device=q.device, dtype=wide)
        if pos_key is not None:  # q_i . Pk[c2p_row(i - j)]
            by_row = q_seq @ pos_key.to(wide).transpose(1, 2)  # (nh, L, n)
            bias = bias + torch.gather(by_row, 2, c2p_rows.long()[distance].expand(q.shape[1], -1, -1))
        if pos_query is not None:  # k_j . Pq[p2c_row(i - j)]
            by_row = k_seq @ pos_query.to(wide).transpose(1, 2)  # (nh, L, n): key j against every row
            bias = bias + torch.gather(by_row, 2, p2c_rows.long()[distance].T.expand(q.shape[1], -1, -1)).transpose(1, 2)
        if dropout_masks is None:
            y = torch.nn.functional.scaled_dot_product_attention(q_seq, k_seq, v_seq, attn_mask=bias * softmax_scale,
                                                                 scale=softmax_scale)
        else:
            probs = ((q_seq @ k_seq.transpose(1, 2) + bias) * softmax_scale).softmax(dim=-1)
            y = (probs * dropout_masks[index] / (1.0 - dropout_p)) @ v_seq
        outputs.append(y.transpose(0, 1))
    return torch.cat(outputs).to(q.dtype)
