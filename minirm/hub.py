"""Model names -> a local checkpoint directory.

`--model` may be a local directory, an alias (`aux-roberta`), or a Hub repo id
(`nicholasKluge/Aux-RewardModel`). Repo ids go through huggingface_hub: the local cache
first (so a cached model needs no network), then a download when the Hub is reachable.
With HF_HUB_OFFLINE=1, or with no network, a model that is not cached fails at once
with one line that says how to get it.
"""

from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from .errors import MinirmError, first_line
from .models import MODEL_ALIASES

# --model aliases, from the family entries (minirm/models): alias -> Hub repo, and how it scores
ALIASES = {a.name: a.repo for a in MODEL_ALIASES}
ALIAS_NOTES = {a.name: a.note for a in MODEL_ALIASES}

# the files a tokenizer is read from, and copied with a checkpoint; a folder holds a tokenizer
# when it has one of the first four (tokenizer.json or a vocabulary to rebuild it from)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spm.model",
                   "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")  # newer repositories keep the chat template apart
TOKENIZER_VOCABS = TOKENIZER_FILES[:4]
METADATA = ["config.json", *TOKENIZER_FILES]
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
BIN_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model(name: str, revision: str | None = None, files: str = "model") -> Path:
    """Local directory holding `name`'s files. files="model" fetches weights, "tokenizer" only metadata."""
    path = Path(name).expanduser()
    option, local = ("--tokenizer", "a local tokenizer directory") if files == "tokenizer" else (
        "--model", "a local checkpoint directory")
    if path.is_dir():
        if revision is not None:  # a folder has no revisions: ignoring the option would score the wrong weights
            raise MinirmError(f"--revision {revision} applies to Hub repos, but {option} {name!r} is a local "
                              "directory; drop --revision, or give the Hub repo id (org/name) to read that revision")
        return path
    if path.exists():
        raise MinirmError(f"{option} {name!r} is a file; give the directory that holds it")
    repo_id = ALIASES.get(name, name)
    if not REPO_ID.match(repo_id):
        raise MinirmError(
            f"{option} {name!r} is not a directory, an alias ({', '.join(ALIASES)}) or a Hub repo id (org/name)"
        )
    cached = _from_cache(repo_id, revision, files)
    if cached is not None:
        return cached
    hint = download_hint(repo_id, revision, "model", local)
    require_hub(repo_id, hint)
    return _download(repo_id, revision, files, hint)


def download_hint(repo_id: str, revision: str | None, repo_type: str, local: str) -> str:
    """What to do when `repo_id` is not cached: the command that fetches it, or a local stand-in."""
    flags = (" --repo-type dataset" if repo_type == "dataset" else "") + (f" --revision {revision}" if revision else "")
    return (f"download it where the Hub is reachable with `hf download {repo_id}{flags}` and copy the cache "
            f"({hub_cache_dir() or '~/.cache/huggingface/hub'}), or pass {local}")


def require_hub(label: str, hint: str) -> None:
    """Fail at once, before huggingface_hub's retries, when `label` must be downloaded and cannot be."""
    if offline():
        raise MinirmError(f"{label} is not in the Hugging Face cache and HF_HUB_OFFLINE=1; {hint}")
    reachable, reason = hub_reachable()
    if not reachable:
        raise MinirmError(f"{label} is not in the Hugging Face cache and the Hub is unreachable ({reason}); {hint}")


def hub_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """One TCP connect to the Hub endpoint, so that no network fails in seconds, not after retries."""
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return False, f"{url.hostname}: {e.strerror or type(e).__name__}"
    return True, ""


def hub_cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None  # None: huggingface_hub's default


def _complete(folder: Path, files: str) -> bool:
    if files == "tokenizer":
        return any((folder / f).is_file() for f in TOKENIZER_FILES)
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    return (folder / "config.json").is_file() and has_weights


def cached_snapshot(repo_id: str, revision: str | None, patterns: list[str], repo_type: str | None = None) -> Path | None:
    """The snapshot folder in the Hugging Face cache that holds the files `patterns` match, or None.

    huggingface_hub keeps the repo's whole file list (trees/<commit>.json) beside a snapshot and
    calls it incomplete when a listed file is missing, so a lookup must ask for the files minirm
    downloads, not for every file: else what minirm fetched could not be read again offline.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, cache_dir=hub_cache_dir(),
                                      local_files_only=True, allow_patterns=patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def _from_cache(repo_id: str, revision: str | None, files: str) -> Path | None:
    """The cached snapshot, if it holds what `files` needs: the files _download fetches, with
    one kind of weights, not all of them."""
    for weights in ([SAFETENSORS_FILES, BIN_FILES] if files == "model" else [[]]):
        folder = cached_snapshot(repo_id, revision, METADATA + weights)
        if folder is not None and _complete(folder, files):
            return folder
    return None


@contextmanager
def hub_errors(what: str, revision: str | None, *, revision_fix: str, unreachable: str, hint: str,
               name_other_errors: bool = False):
    """huggingface_hub's failures inside the block, as one-line MinirmErrors about `what`
    ("org/name", "dataset org/name"): no such revision (then `revision_fix`), gated, not found,
    and the network ones (offline, not cached, HTTP and connection errors) as
    "{unreachable} (first line of the error); {hint}". With `name_other_errors`, a connection
    error from outside huggingface_hub (httpx's) is shown by its class name. Anything else is a
    bug and propagates as it is."""
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        yield
    except RevisionNotFoundError:
        raise MinirmError(f"{what} has no revision {revision!r}; {revision_fix}") from None
    except GatedRepoError:  # before RepositoryNotFoundError, its parent class
        raise MinirmError(f"{what} is gated; accept its terms on the Hub and log in with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise MinirmError(f"{what} was not found on the Hub (or is private); check the name") from None
    except Exception as e:  # noqa: BLE001 - httpx and friends raise their own connection errors
        from_hub = isinstance(e, (LocalEntryNotFoundError, HfHubHTTPError, OSError))
        if not from_hub and not any(word in type(e).__name__.lower() for word in ("connect", "timeout")):
            raise
        detail = type(e).__name__ if name_other_errors and not from_hub else first_line(e, 160)
        raise MinirmError(f"{unreachable} ({detail}); {hint}") from None


def _download(repo_id: str, revision: str | None, files: str, hint: str) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    with hub_errors(repo_id, revision, revision_fix="check --revision", hint=hint, name_other_errors=True,
                    unreachable=f"cannot reach the Hugging Face Hub for {repo_id}"):
        patterns = list(METADATA)
        if files == "model":
            listing = HfApi().list_repo_files(repo_id, revision=revision)
            has_safetensors = any(f.endswith(".safetensors") for f in listing)
            patterns += SAFETENSORS_FILES if has_safetensors else BIN_FILES
        folder = snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), allow_patterns=patterns,
                                   etag_timeout=10)
    return Path(folder)
