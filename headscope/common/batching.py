"""Chunked batching: bound memory by splitting a big batch into pieces."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Yield consecutive slices of ``seq`` of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def chunk_ranges(n: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` pairs covering ``range(n)`` in steps of ``size``."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield start, min(n, start + size)


def map_chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int, dim: int = 0) -> torch.Tensor:
    """Apply ``fn`` to slices of ``x`` along ``dim`` of at most ``size`` and concatenate the results."""
    if x.shape[dim] == 0:
        raise ValueError("map_chunked got an empty tensor")
    outs = [fn(piece) for piece in torch.split(x, size, dim=dim)]
    return torch.cat(outs, dim=dim)


def rows_per_chunk(bytes_per_row: int, budget_bytes: int = 2 * 1024**3, minimum: int = 1) -> int:
    """How many rows fit in ``budget_bytes`` if each row needs ``bytes_per_row``."""
    return max(minimum, int(budget_bytes // max(1, bytes_per_row)))
