"""Tensor, seeding, metric, plotting and progress utilities shared by every package.

This package imports nothing from the rest of the repository (docs/design.md §1), so that
``vision``, ``federated`` and ``generative`` can use it without pulling in the LLM core.
The names below are imported on first use (PEP 562), so that ``headscope.common.errors``
(which every command-line parser imports) does not load torch or plotly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batching import chunk_ranges, chunks, map_chunked, rows_per_chunk
    from .device import get_device
    from .metrics import accuracy, answer_logit, answer_logprob, kl_div, logit_diff, normalized_patching_metric
    from .plotting import find_chromium, heatmap, line_plot, save_figure, save_png
    from .seed import seed_everything

# Eager, because the function ``progress`` shares its name with the submodule
# ``headscope.common.progress``: importing the submodule would otherwise shadow it.
from .errors import HeadscopeError
from .progress import log, progress

_EXPORTS = {
    "accuracy": "metrics",
    "answer_logit": "metrics",
    "answer_logprob": "metrics",
    "chunk_ranges": "batching",
    "chunks": "batching",
    "find_chromium": "plotting",
    "get_device": "device",
    "heatmap": "plotting",
    "kl_div": "metrics",
    "line_plot": "plotting",
    "logit_diff": "metrics",
    "map_chunked": "batching",
    "normalized_patching_metric": "metrics",
    "rows_per_chunk": "batching",
    "save_figure": "plotting",
    "save_png": "plotting",
    "seed_everything": "seed",
}

__all__ = [
    "HeadscopeError",
    "accuracy",
    "answer_logit",
    "answer_logprob",
    "chunk_ranges",
    "chunks",
    "find_chromium",
    "get_device",
    "heatmap",
    "kl_div",
    "line_plot",
    "log",
    "logit_diff",
    "map_chunked",
    "normalized_patching_metric",
    "progress",
    "rows_per_chunk",
    "save_figure",
    "save_png",
    "seed_everything",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headscope.common' has no attribute {name!r}")
