"""headscope: attention-head interpretability on TransformerLens and nnsight.

The public names are imported lazily, so that ``import headscope.common`` (used by the
companion packages) does not pull in TransformerLens, nnsight or transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "headscope.loading",
    "wrap": "headscope.loading",
    "HeadModel": "headscope.model",
    "HeadCache": "headscope.model",
    "Patch": "headscope.model",
    "HeadResult": "headscope.results",
    "HeadSelection": "headscope.results",
    "parse_head": "headscope.results",
    "random_heads": "headscope.controls",
    "patch_heads": "headscope.patching",
    "patch_layers": "headscope.patching",
    "patch_task": "headscope.patching",
    "ablate_heads": "headscope.patching",
    "get_task": "headscope.tasks",
    "Task": "headscope.tasks",
    "HeadscopeError": "headscope.common.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'headscope' has no attribute {name!r}")
