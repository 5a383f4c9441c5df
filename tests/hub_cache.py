"""A Hugging Face cache laid out as huggingface_hub lays out what it downloads (file_download.py,
_snapshot_download.py, _tree_cache.py), for tests that must run offline on published layouts:

    {models,datasets}--org--name/
        blobs/<etag>                      sha256 for git-LFS files, the git blob sha1 otherwise
        snapshots/<commit>/<path>         relative symlinks into blobs
        refs/<revision>                   the commit; revision "refs/convert/parquet" is the file
                                          refs/refs/convert/parquet, "refs/pr/1" refs/refs/pr/1
        trees/<commit>.json               the repo's whole file list, which snapshot_download records
                                          and checks a cached snapshot against
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

LFS_SUFFIXES = (".parquet", ".gz", ".safetensors", ".bin", ".model")  # stored with git LFS on the Hub


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def put_snapshot(cache: Path, kind: str, repo_id: str, files: dict[str, bytes], revision: str = "main",
                 fetched: set[str] | None = None, commit: str | None = None) -> Path:
    """Lay out one revision of a repo as huggingface_hub caches it; `fetched` (default: every
    file) are the files present in the snapshot, while trees/<commit>.json lists them all."""
    repo = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    tree = {}
    for path, data in files.items():
        entry = {"size": len(data), "blob_id": _git_blob_sha(data)}
        if path.endswith(LFS_SUFFIXES):
            etag = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{etag}\nsize {len(data)}\n"
            entry.update(blob_id=_git_blob_sha(pointer.encode()), lfs_sha256=etag, lfs_size=len(data))
        else:
            etag = entry["blob_id"]
        tree[path] = entry
        if fetched is not None and path not in fetched:
            continue
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo / "refs" / revision  # "refs/convert/parquet" -> refs/refs/convert/parquet
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)  # no newline: huggingface_hub reads the commit verbatim
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))
    return snapshot


def dir_files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


def parquet_bytes(rows: list[dict], schema=None) -> bytes:
    """`rows` as one Parquet file, as `datasets` pushes a split to the Hub (pyarrow; `schema` pins the
    column types the published dataset has)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()
