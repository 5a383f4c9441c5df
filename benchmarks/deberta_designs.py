"""Two ways to fuse DeBERTa's relative terms into the attention tile, compiled side by side.

    python benchmarks/deberta_designs.py [--arch sm_90] [--head-dim 64] [--dtype bf16]

kernels/deberta.py chose "tables": before the kernel, two GEMMs give every token's products with
every relative row (c2p_table = Q Pk^T, p2c_table = K Pq^T), and the tile gathers one value of
each per score. The other design, "rows per tile", is written out here as a forward kernel of
its own: each tile loads the BLOCK_M + BLOCK_N - 1 relative rows its distances reach, multiplies
them with tl.dot (q against Pk rows, Pq rows against k), and skews the products into place with
tl.gather. No GPU is needed to compare what each costs inside the kernel: both are compiled for a
GPU target with Triton's ptxas, and cuobjdump reads registers, spills and the SASS, where the
tensor-core instructions (HMMA / HGMMA) count the matrix work. Speed itself needs a GPU
(python -m minirm.kernels.bench --deberta).

The per-tile kernel is checked against the reference in Triton's interpreter first (--check),
so the comparison is between two kernels that compute the same thing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from benchmarks.sass_loops import sass_lines  # noqa: E402
from minirm.kernels.attention import _LOG2E, _head_offset, _load_rows, _locate_tile, _row_offsets, _store_rows  # noqa: E402


@triton.jit
def _rows_per_tile_forward_kernel(  # the per-tile design's forward (both terms, no dropout)
    Q, K, V, Out, LSE, PK, PQ,  # PK, PQ: (heads, n, HEAD_DIM) relative keys / queries
    C2P_ROWS, P2C_ROWS, cu_seqlens, tile_seq, seq_first_tile, num_seqs, softmax_scale_log2,
    stride_token, stride_head, stride_rel_head, distance_offset, total_tokens,
    HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WINDOW: tl.constexpr,  # power of two >= BLOCK_M + BLOCK_N - 1: the distances one tile spans
):
    seq_start, seq_len, q_start = _locate_tile(tile_seq, seq_first_tile, cu_seqlens, num_seqs, BLOCK_M)
    if q_start >= seq_len:
        return
    offset = _head_offset(seq_start, stride_token, stride_head)
    Q += offset
    K += offset
    V += offset
    Out += offset
    LSE += tl.program_id(1) * total_tokens + seq_start
    PK += tl.program_id(1) * stride_rel_head
    PQ += tl.program_id(1) * stride_rel_head
    offs_m = _row_offsets(q_start, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_rows(Q, offs_m, offs_d, stride_token, seq_len, True)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    window = tl.arange(0, WINDOW)
    for key_start in range(0, seq_len, BLOCK_N):
        offs_key = _row_offsets(key_start, BLOCK_N)
        k = _load_rows(K, offs_key, offs_d, stride_token, seq_len, True)
        v = _load_rows(V, offs_key, offs_d, stride_token, seq_len, True)
        # the tile's distances i - j run from d_min = q_start - key_start - BLOCK_N + 1 upwards;
        # distance d_min + t sits at column (row) t of the products below
        distance = tl.minimum(tl.maximum(q_start - key_start - BLOCK_N + 1 + window, 1 - seq_len), seq_len - 1)
        pk = tl.load(PK + tl.load(C2P_ROWS + distance + distance_offset)[:, None] * HEAD_DIM + offs_d[None, :])
        pq = tl.load(PQ + tl.load(P2C_ROWS + distance + distance_offset)[:, None] * HEAD_DIM + offs_d[None, :])
        c2p_by_distance = tl.dot(q, tl.trans(pk), input_precision=DOT_PRECISION)  # (BLOCK_M, WINDOW)
        p2c_by_distance = tl.dot(pq, tl.trans(k), input_precision=DOT_PRECISION)  # (WINDOW, BLOCK_N)
        column = (offs_m - q_start)[:, None] - (offs_key - key_start)[None, :] + BLOCK_N - 1  # (BLOCK_M, BLOCK_N)
        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        scores += tl.gather(c2p_by_distance, column, 1)
        scores += tl.gather(p2c_by_distance, column, 0)
        scores = tl.where((offs_key < seq_len)[None, :], scores * softmax_scale_log2, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        probs = tl.exp2(scores - new_max[:, None])
        rescale = tl.exp2(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(probs, 1)
        acc = tl.dot(probs.to(v.dtype), v, acc * rescale[:, None], input_precision=DOT_PRECISION)
        row_max = new_max
    _store_rows(Out, offs_m, offs_d, stride_token, seq_len, acc / row_sum[:, None])
    tl.store(LSE + offs_m, (row_max + tl.log2(row_sum)) / _LOG2E, mask=offs_m < seq_len)



def check_in_interpreter():
    """The per-tile kernel's output against minirm.kernels.deberta's reference (fp32, ragged lengths)."""
    import math

    import torch

    from minirm.kernels.attention import _fill_tile_map, _num_tiles
    from minirm.kernels.deberta import disentangled_attention_reference
    from minirm.kernels.deberta_reference import relative_rows

    kernel = _rows_per_tile_forward_kernel
    torch.manual_seed(0)
    lengths, heads, head_dim, block_m, block_n = [17, 1, 70, 2], 2, 16, 32, 16
    T = max(lengths)
    c2p_rows, p2c_rows = (rows.int() for rows in relative_rows(T, 8, 16, 8, "cpu"))
    q, k, v = (torch.randn(sum(lengths), heads, head_dim) for _ in range(3))
    pos_key, pos_query = (torch.randn(heads, 16, head_dim) for _ in range(2))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    out, lse = torch.empty_like(q), torch.empty(heads, q.shape[0])
    tiles = _num_tiles(q.shape[0], len(lengths), T, block_m)
    tile_seq, seq_first_tile = torch.empty(tiles, dtype=torch.int32), torch.empty(len(lengths), dtype=torch.int32)
    _fill_tile_map(dict(cu_seqlens=cu_seqlens, tile_seq=tile_seq, seq_first_tile=seq_first_tile), block_m)
    scale = 1 / math.sqrt(3 * head_dim)
    kernel[(tiles, heads)](q, k, v, out, lse, pos_key, pos_query, c2p_rows, p2c_rows, cu_seqlens, tile_seq,
                           seq_first_tile, len(lengths), scale * math.log2(math.e), q.stride(0), q.stride(1),
                           pos_key.stride(0), T - 1, q.shape[0], HEAD_DIM=head_dim, DOT_PRECISION="ieee",
                           BLOCK_M=block_m, BLOCK_N=block_n, WINDOW=triton.next_power_of_2(block_m + block_n - 1))
    expected = disentangled_attention_reference(q, k, v, cu_seqlens, pos_key, pos_query, c2p_rows, p2c_rows)
    error = (out - expected).abs().max().item()
    print(f"interpreter check: rows-per-tile forward vs the reference, max error {error:.1e}")
    return error < 1e-5


def compile_both(arch, head_dim, dtype, block_m, block_n, num_warps, num_stages):
    """{design: (registers, spill bytes, shared bytes, SASS instructions, tensor-core instructions)}."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from minirm.kernels import aot, deberta

    target = GPUTarget("cuda", aot.ARCHS[arch], 32)
    table = "fp32" if dtype == "fp16" else dtype
    common = {"Q": f"*{dtype}", "K": f"*{dtype}", "V": f"*{dtype}", "Out": f"*{dtype}", "LSE": "*fp32",
              "C2P_ROWS": "*i32", "P2C_ROWS": "*i32", "cu_seqlens": "*i32", "tile_seq": "*i32",
              "seq_first_tile": "*i32", "num_seqs": "i32", "softmax_scale_log2": "fp32", "stride_token": "i32",
              "stride_head": "i32", "distance_offset": "i32", "total_tokens": "i32"}
    constexprs = dict(HEAD_DIM=head_dim, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32", BLOCK_M=block_m,
                      BLOCK_N=block_n)
    designs = {
        "tables (kernels/deberta.py)": (
            deberta._deberta_forward_kernel,
            dict(common, C2P=f"*{table}", P2C=f"*{table}", dropout_p="fp32", dropout_seed="i32",
                 stride_table_head="i32", stride_table="i32", max_seqlen_bucket="i32"),
            dict(constexprs, HAS_C2P=True, HAS_P2C=True, DROPOUT=False)),
        "rows per tile": (
            _rows_per_tile_forward_kernel,
            dict(common, PK=f"*{dtype}", PQ=f"*{dtype}", stride_rel_head="i32"),
            dict(constexprs, WINDOW=triton.next_power_of_2(block_m + block_n - 1))),
    }
    results = {}
    for name, (function, types, values) in designs.items():
        signature = {arg: "constexpr" if arg in values else types[arg] for arg in function.arg_names}
        attrs = {(index,): [["tt.divisibility", 16]] for index, arg in enumerate(function.arg_names)
                 if signature[arg].startswith("*") or arg in ("stride_token", "stride_head")}
        compiled = triton.compile(ASTSource(fn=function, signature=signature, constexprs=values, attrs=attrs),
                                  target=target, options=dict(num_warps=num_warps, num_stages=num_stages))
        registers, spill = aot._resource_usage(compiled.asm["cubin"])
        sass = sass_lines(compiled.asm["cubin"])
        mma = sum(1 for line in sass if re.search(r"\b(HMMA|HGMMA|IMMA|DMMA)\b", line))
        results[name] = (registers, spill, int(compiled.metadata.shared), len(sass), mma)
    return results


# Loop bodies holding the key-block dots: the shipped kernel runs its interior blocks and its
# masked edge block in two copies of the loop, the per-tile prototype in one masked loop.
LOOP_COPIES = {"tables (kernels/deberta.py)": 2, "rows per tile": 1}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-dim", type=int, default=64, choices=[16, 32, 64, 128])
    parser.add_argument("--dtype", default="bf16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--configs", default="128x64x8x2,64x32x4x2,32x32x4x1",
                        help="BLOCK_MxBLOCK_Nxwarpsxstages, comma-separated (default: %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="skip the interpreter check of the per-tile kernel")
    args = parser.parse_args(argv)
    if not args.no_check:  # in a subprocess: the interpreter must be on before triton is imported
        check = subprocess.run([sys.executable, __file__, "--check-only"], env=dict(os.environ, TRITON_INTERPRET="1"),
                               capture_output=True, text=True)
        print(check.stdout.strip() or check.stderr.strip().splitlines()[-1])
        if check.returncode != 0:
            return 1
    print(f"\ncommand: python benchmarks/deberta_designs.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"forward kernel, both relative terms, head dim {args.head_dim}, {args.dtype}, triton {triton.__version__}. "
          "Registers and spill per thread, shared memory per block (sm_90), and the tensor-core instructions "
          "one warp runs per key block on sm_80 (HMMA: one fixed-size MMA each, so they count the matrix "
          "work; sm_90's warpgroup MMAs do not)")
    print("\n| config | design | sm_80 registers / spill | sm_90 registers / spill | sm_90 shared bytes | "
          "HMMA per key block (sm_80) |")
    print("|---|---|---:|---:|---:|---:|")
    for config in args.configs.split(","):
        block_m, block_n, warps, stages = map(int, config.split("x"))
        by_arch = {arch: compile_both(arch, args.head_dim, args.dtype, block_m, block_n, warps, stages)
                   for arch in ("sm_80", "sm_90")}
        for name in LOOP_COPIES:
            (regs_80, spill_80, _, _, mma_80), (regs_90, spill_90, shared_90, _, _) = (by_arch[arch][name]
                                                                                     for arch in ("sm_80", "sm_90"))
            print(f"| {config} | {name} | {regs_80} / {spill_80} | {regs_90} / {spill_90} | {shared_90} | "
                  f"{mma_80 // LOOP_COPIES[name]} |")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--check-only"]:
        sys.exit(0 if check_in_interpreter() else 1)
    sys.exit(main())
