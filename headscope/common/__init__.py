"""Tensor, seeding, metric, plotting and progress utilities shared by every package.

This package imports nothing from the rest of the repository (docs/design.md §1), so that
``vision``, ``federated`` and ``generative`` can use it without pulling in the LLM core.
"""

from .batching import chunk_ranges, chunks, map_chunked, rows_per_chunk
from .device import get_device
from .errors import HeadscopeError
from .metrics import accuracy, answer_logit, answer_logprob, kl_div, logit_diff, normalized_patching_metric
from .plotting import find_chromium, heatmap, line_plot, save_figure, save_png
from .progress import log, progress
from .seed import seed_everything

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
