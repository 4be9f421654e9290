"""Hub ids made local: from the Hugging Face cache, else downloaded on first use through huggingface_hub.

Nothing here opens a connection when downloads are off (`--offline`, which sets HF_HUB_OFFLINE=1, or that variable
set by the user): then a model missing from the cache is one clear error naming the command that fetches it. A gated
repository (a licence to accept on the hub first) is one line saying where to accept it and to log in.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..utils.errors import ModelNotFoundError

# Weights come as safetensors; the 8B LLM's repo also carries the same weights as `original/*.pth` (16 GB more).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
SKIPPED_FILES = ["original/*"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
DEFAULT_ENDPOINT = "https://huggingface.co"


def offline() -> bool:
    """Downloads are off: HF_HUB_OFFLINE (or its older name TRANSFORMERS_OFFLINE) is set to a true value."""
    return any(
        os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def go_offline() -> None:
    """What `--offline` does: no library of this process may reach the network (transformers and the hub read this)."""
    os.environ["HF_HUB_OFFLINE"] = "1"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> str | None:
    """The HF cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def looks_like_hub_id(name: str) -> bool:
    """`owner/name`, as the hub spells repository ids (no leading `.`, `/` or `~`)."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and all(name.split("/"))


def cached(repo_id: str) -> Path | None:
    """The repo's snapshot in the local cache if it holds weights (a lone config.json fetched by some library does
    not count), else None. Never opens a connection."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(
                repo_id,
                local_files_only=True,
                cache_dir=hub_cache_dir(),
                allow_patterns=MODEL_FILES,
                ignore_patterns=SKIPPED_FILES,
            )
        )
    except (LocalEntryNotFoundError, OSError, ValueError):  # not cached, or partly (IncompleteSnapshotError)
        return None
    has_weights = any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.rglob("*"))
    return path if has_weights else None


@contextmanager
def progress_bars():
    """huggingface_hub's download bars on, for one download (the command line turns library bars off), unless the
    user set HF_HUB_DISABLE_PROGRESS_BARS."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if was_disabled and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() not in {"1", "ON", "YES", "TRUE"}:
        enable_progress_bars()
    try:
        yield
    finally:
        if was_disabled:
            disable_progress_bars()


def fetch(repo_id: str, what: str = "model") -> Path:
    """A local directory holding `repo_id`: the cached snapshot, else a download (with huggingface_hub's progress
    bars) unless downloads are off. Errors are ModelNotFoundError with one line saying what to do."""
    found = cached(repo_id)
    if found is not None:
        return found
    cache = hub_cache_dir() or "~/.cache/huggingface/hub"
    if offline():
        raise ModelNotFoundError(
            f"{what} {repo_id!r} is neither a local directory nor in the local Hugging Face cache ({cache}), and "
            f"downloads are off (--offline or HF_HUB_OFFLINE=1): run `videollm-online download {repo_id}` (or "
            f"`hf download {repo_id}`) where there is network, or drop --offline"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        with progress_bars():
            path = snapshot_download(
                repo_id,
                cache_dir=hub_cache_dir(),
                endpoint=endpoint(),
                allow_patterns=MODEL_FILES,
                ignore_patterns=SKIPPED_FILES,
            )
    except GatedRepoError as error:  # before RepositoryNotFoundError: it is a subclass
        raise ModelNotFoundError(
            f"{what} {repo_id!r} is gated: accept its licence at {endpoint()}/{repo_id} (signed in), then run "
            f"`hf auth login` here and try again"
        ) from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelNotFoundError(
            f"{what} {repo_id!r} is not a local directory and the hub has no such repository (or it is private: "
            f"`hf auth login`)"
        ) from error
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(
            f"{what} {repo_id!r} is not in the local Hugging Face cache ({cache}) and could not be downloaded "
            f"({reason}): check the network, or run `videollm-online download {repo_id}` where there is one"
        ) from error
    return Path(path)


def download_model(
    spec: str, *, preset: str | None = None, llm: str | None = None, vision: str | None = None
) -> list[tuple[str, str, Path]]:
    """Fetch a model and the base models it names (for a released adapter: its preset's LLM and vision encoder)
    into the cache ahead of time. Returns (what, name, local path) for each part fetched or found."""
    from .checkpoint import model_config, resolve_model_dir

    if offline() and looks_like_hub_id(spec) and not Path(spec).expanduser().exists() and cached(spec) is None:
        raise ModelNotFoundError(
            f"cannot download {spec!r}: downloads are off (HF_HUB_OFFLINE=1 or --offline); "
            "unset it, where there is network"
        )
    parts = [("model", spec, resolve_model_dir(spec))]
    config = model_config(spec, preset)
    for what, source in (("LLM", llm or config.llm), ("vision encoder", vision or config.vision)):
        if source and looks_like_hub_id(source) and not Path(source).expanduser().exists():
            parts.append((what, source, fetch(source, what)))
    return parts
