"""Where bundled data lives: ``data_dir``, ``organism_dir`` and the organism aliases.

A leaf module: it imports nothing from headscope, so that loaders, backends, the CLI
and the organism trainer can all use it without an import cycle (docs/design.md §1).
"""

from __future__ import annotations

import os
from pathlib import Path

ORGANISMS: dict[str, str] = {
    "llama": "the default organism: organism v3, training seed 0 (the llama-v3 folder; docs/organism_v3.md)",
    "llama-v3": "organism v3, training seed 0: 6-layer Llama on a computed-arithmetic, graded-flaw world "
    "(docs/organism_v3.md)",
    "llama-v3-s1": "organism v3, training seed 1 (same corpus as llama-v3)",
    "llama-v3-s2": "organism v3, training seed 2 (same corpus as llama-v3)",
    "llama-v2": "organism v2: 6-layer Llama on a keyword world (one-digit arithmetic lookup, trigger-word flaws); "
    "the v2 paper tables and the fast unit tests run on it (its CARD.md)",
    "induction": "2-layer Llama-architecture organism with a previous-token head (L0) and an induction head (L1)",
}


# Aliases that name another organism's folder: ``llama`` is organism v3, training seed 0
# (docs/design.md §1; before 2026-12-03 ``llama`` named the organism now called ``llama-v2``).
ALIASES: dict[str, str] = {"llama": "llama-v3"}


def data_dir() -> Path:
    """The repository's ``data/`` folder (override with the ``HEADSCOPE_DATA`` environment variable)."""
    env = os.environ.get("HEADSCOPE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def organism_dir(name: str) -> Path:
    """``data/models/NAME``: the folder of a bundled organism (weights, tokenizer, CARD.md);
    an alias of :data:`ALIASES` gives the folder it names (``llama`` -> ``data/models/llama-v3``)."""
    return data_dir() / "models" / ALIASES.get(name, name)


def organism_generation(name: str | os.PathLike) -> str | None:
    """``"v2"`` or ``"v3"`` for a bundled organism alias or a folder holding one (its
    ``organism.json``), else None (a Hugging Face model, ``induction``, tracr).

    Tasks written in one organism world's vocabulary check it, so that a v2 prompt set is
    not silently run on a v3 model (docs/organism_v3.md §1)."""
    import json

    s = str(name)
    folder = organism_dir(s) if s in ORGANISMS else Path(s)
    meta = folder / "organism.json"
    if not meta.is_file():
        return None
    try:
        kind = str(json.loads(meta.read_text()).get("organism", ""))
    except (OSError, ValueError):
        return None
    if kind.startswith("llama-v3"):
        return "v3"
    if kind in ("llama", "llama-v2"):
        return "v2"
    return None


def bundled_models() -> dict[str, str]:
    """Alias -> description of every bundled organism whose weights are present."""
    return {k: v for k, v in ORGANISMS.items() if (organism_dir(k) / "model.safetensors").exists()}


def tracr_dir(name: str) -> Path:
    """``data/models/tracr-NAME`` for ``tracr-NAME`` or ``tracr:NAME``."""
    prog = name.split(":", 1)[1] if name.startswith("tracr:") else name[len("tracr-") :]
    return organism_dir(f"tracr-{prog}")


def bundled_tracr() -> list[str]:
    """Names (``tracr-NAME``) of the tracr organisms present in ``data/models``."""
    return sorted(p.name for p in (data_dir() / "models").glob("tracr-*") if (p / "model.safetensors").exists())
