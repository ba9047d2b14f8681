"""Resolving a model name without importing torch: a bundled organism, a folder, or a hub id.

Light on purpose (``headscope.paths``, ``huggingface_hub`` on demand): the CLI calls
:func:`resolve_model_name` right after parsing, so a typo such as ``--model llamaa`` or an
uncached hub id fails in about a second, before torch and transformers load.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from headscope.common.errors import HeadscopeError
from headscope.paths import ORGANISMS, organism_dir

__all__ = ["resolve_model_name"]


def resolve_model_name(name: str) -> tuple[Path | str, bool]:
    """``(source, local)``: the folder (bundled organism, local folder, or a cached hub id's
    name with ``local=True``: load from the cache only) or a hub id to download.

    Raises a HeadscopeError within about a second for a name that is none of these while
    the hub is unreachable (or ``HF_HUB_OFFLINE`` is set), suggesting the nearest organism.
    Compiled tracr programs (``tracr-NAME``) are resolved by :func:`headscope.loading.load_tracr`.
    """
    if name.startswith(("tracr-", "tracr:")):
        return name, True
    if name in ORGANISMS:
        d = organism_dir(name)
        if not (d / "model.safetensors").exists():
            raise HeadscopeError(
                f"organism {name!r} has no weights in {d}; create them with `headscope organism train {name}`"
            )
        return d, True
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise HeadscopeError(f"{p} is a directory but holds no config.json; point at a Hugging Face model folder")
        return p, True
    if p.suffix or name.startswith((".", "/", "~")):
        raise HeadscopeError(
            f"model path {name!r} does not exist; use a bundled organism ({', '.join(ORGANISMS)}) or a Hugging Face "
            "model folder"
        )
    if _hub_cached(name):
        return name, True  # load from the local cache only: no network round trips
    if not _hub_reachable():
        close = difflib.get_close_matches(name, list(ORGANISMS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise HeadscopeError(
            f"unknown model {name!r}: not a bundled organism ({', '.join(ORGANISMS)}), not a local folder, not in the "
            f"Hugging Face cache, and the hub is not reachable from here; {hint}point --model at a local folder "
            "holding config.json and the weights"
        )
    return name, False


def _hub_cached(name: str) -> bool:
    """Whether a hub id's config and weights are in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    try:
        cfg = try_to_load_from_cache(name, "config.json")
        weights = [
            try_to_load_from_cache(name, f)
            for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
        ]
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False
    return isinstance(cfg, str) and any(isinstance(w, str) for w in weights)


def _hub_reachable(timeout: float = 1.0) -> bool:
    """False when offline (``HF_HUB_OFFLINE``) or the hub's host does not answer within ``timeout`` s.

    Written here so that a typo or an uncached hub id fails in about a second instead of
    waiting through the hub client's retries (about 60 s offline)."""
    import os
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except Exception:  # noqa: BLE001
        host = "huggingface.co"

    def probe() -> bool:
        with socket.create_connection((host, 443), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return bool(pool.submit(probe).result(timeout=timeout))
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)  # a DNS lookup that hangs is left to finish in the background
