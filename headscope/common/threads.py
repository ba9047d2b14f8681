"""Scoped torch thread count: library code changes it for a block only, never for the process.

Imports nothing from the rest of the repository (only torch and the standard library), like
all of ``headscope.common``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``n``, then restore the previous count.

    The previous count is restored when the block ends, also when it raises. ``n=None``
    leaves the count unchanged (so callers can pass an optional setting straight through).
    Only the intra-op pool (``torch.set_num_threads``) is touched; torch allows the
    inter-op pool to be set only once per process, so it is left alone.

    >>> with num_threads(1):
    ...     train()  # one thread here; the caller's setting is back afterwards

    Raises ``ValueError`` for ``n < 1``.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
