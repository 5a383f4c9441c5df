"""The compile tables behind the autotuner's pruning: data written by `python -m minirm.kernels.aot`.

Each file kernels/compile_report/triton-<version>.json holds, for one Triton release, the
registers, spill and shared memory of every kernel variant (kernel, arch, head dim, dtype,
causal flag, autotune config) compiled for the architectures it lists. Registers and spills
depend on the compiler: a tile that fits in 128 registers with one release can spill 8 bytes with
another (the dK/dV 64 x 128 tile, 8 warps, head dim 16, fp16, causal, on sm_80: clean with triton
3.9, spilling with 3.6). So there is one table per release measured, and a launch prunes with:

* the table of the running Triton, where one was made for it and covers the GPU's architecture;
* otherwise the table of the nearest release that covers the architecture (by version number,
  the newer on a tie). Its figures are then a prediction: a config it calls clean may spill a
  little on the running compiler. That costs speed, never correctness, and the autotuner still
  times the configs it keeps against each other.

Each table is stamped, kernel by kernel, with the hash of the source each kernel's rows were
compiled from (`source_hashes`: report name -> `aot.kernel_source_hash(kernel)`), so that editing
one kernel makes only its rows stale (and `--write-table` recompiles only those);
tests/test_kernels_aot.py checks the stamps, the coverage and, for the running Triton, a freshly
compiled sample against its table.
"""

import json
import re
from pathlib import Path

TABLE_DIR = Path(__file__).resolve().parent / "compile_report"
# The measured fields of a row, in the files' column order.
FIELDS = ("kernel", "arch", "head_dim", "dtype", "causal", "BLOCK_M", "BLOCK_N", "num_warps", "num_stages",
          "compiled", "registers", "spill_bytes", "shared_bytes")


def version_tuple(version: str) -> tuple[int, ...]:
    """'3.6.0' -> (3, 6, 0); local or pre-release tails ('3.7.0+git1a2b', '3.8.0rc1') are ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def table_path(triton_version: str, directory: Path = TABLE_DIR) -> Path:
    return directory / f"triton-{triton_version}.json"


def read(path: Path) -> dict:
    """One table: {"triton_version", "source_hashes", "archs", "rows": [dict with FIELDS]}."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["rows"] = [dict(zip(data["fields"], row)) for row in data["rows"]]
    return data


def read_all(directory: Path = TABLE_DIR) -> dict[str, dict]:
    """Every committed table, by Triton version."""
    tables = {}
    for path in sorted(directory.glob("triton-*.json")):
        table = read(path)
        tables[table["triton_version"]] = table
    return tables


def choose(tables: dict[str, dict], triton_version: str, arch: str) -> str | None:
    """The version of the table to prune with on `arch` under `triton_version` (see the module doc)."""
    covering = [version for version, table in tables.items() if arch in table["archs"]]
    if not covering:
        return None
    running = version_tuple(triton_version)

    def distance(version):
        other = version_tuple(version)
        # compare (major, minor, patch) as one number; the newer release wins a tie
        as_number = lambda parts: sum(part * 1000 ** (2 - i) for i, part in enumerate((parts + (0, 0, 0))[:3]))
        return abs(as_number(other) - as_number(running)), -as_number(other)

    return min(covering, key=distance)


def by_variant(table: dict, arch: str) -> dict:
    """{(kernel, arch, head_dim, dtype, causal): {(BLOCK_M, BLOCK_N, warps, stages): (compiled, spill, shared)}}."""
    variants = {}
    for row in table["rows"]:
        if row["arch"] != arch:
            continue
        variant = (row["kernel"], row["arch"], row["head_dim"], row["dtype"], row["causal"])
        config = (row["BLOCK_M"], row["BLOCK_N"], row["num_warps"], row["num_stages"])
        variants.setdefault(variant, {})[config] = (row["compiled"], row["spill_bytes"], row["shared_bytes"])
    return variants


def write(rows: list[dict], source_hashes: dict[str, str], triton_version: str, archs: list[str],
          directory: Path | None = None) -> Path:
    """The table of one Triton release, one row per line so that a diff shows what changed.
    `source_hashes`: {kernel (report name): its source hash}; `directory`: TABLE_DIR by default."""
    directory = directory or TABLE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    header = {"generated_by": "python -m minirm.kernels.aot --write-table (do not edit by hand)",
              "triton_version": triton_version, "source_hashes": dict(sorted(source_hashes.items())),
              "archs": sorted(archs), "fields": list(FIELDS)}
    lines = ["{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in header.items()) + ","]
    lines.append('"rows": [')
    body = [json.dumps([row[field] for field in FIELDS]) for row in rows]
    lines.append(",\n".join(body))
    lines.append("]}")
    path = table_path(triton_version, directory)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path
