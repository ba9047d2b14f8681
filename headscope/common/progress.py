"""Progress bars (tqdm) that respect HEADSCOPE_PROGRESS=0 and non-interactive runs.

tqdm is imported by the first bar, not by this module, so that ``headscope --help`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    return os.environ.get("HEADSCOPE_PROGRESS", "1") not in ("0", "false", "no")


def progress(it: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False, **kw) -> Iterable[T]:
    """Wrap ``it`` in a tqdm bar (disabled by ``HEADSCOPE_PROGRESS=0``)."""
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=leave, disable=not progress_enabled(), dynamic_ncols=True, **kw)


def log(msg: str) -> None:
    """A per-step log line on stderr (kept when progress bars are off)."""
    import sys

    print(msg, file=sys.stderr, flush=True)
