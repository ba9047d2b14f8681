"""Where bundled data lives: ``data_dir``, ``organism_dir`` and the organism aliases.

A leaf module: it imports nothing from headscope, so that loaders, backends, the CLI
and the organism trainer can all use it without an import cycle (docs/design.md §1).
"""

from __future__ import annotations

import os
from pathlib import Path

ORGANISMS: dict[str, str] = {
    "llama": "Llama-architecture organism trained on the organism world (arithmetic, facts, flawed chat)",
    "llama-v3": "organism v3, training seed 0: 6-layer Llama on a computed-arithmetic, graded-flaw world "
    "(docs/organism_v3.md)",
    "llama-v3-s1": "organism v3, training seed 1 (same corpus as llama-v3)",
    "llama-v3-s2": "organism v3, training seed 2 (same corpus as llama-v3)",
    "induction": "2-layer Llama-architecture organism with a previous-token head (L0) and an induction head (L1)",
}


def data_dir() -> Path:
    """The repository's ``data/`` folder (override with the ``HEADSCOPE_DATA`` environment variable)."""
    env = os.environ.get("HEADSCOPE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def organism_dir(name: str) -> Path:
    """``data/models/NAME``: the folder of a bundled organism (weights, tokenizer, CARD.md)."""
    return data_dir() / "models" / name


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
