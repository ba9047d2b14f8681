"""Identify / fit / evaluate splits that are disjoint by item, and leakage checks.

A paper's prompts come from *items* (an operand pair and operator, a (country, relation)
pair, a dialogue's question, a request's (verb, object)); several prompts can share one
item (other templates, other framings). Selecting heads or fitting a controller on one
prompt of an item and scoring on another prompt of the same item is selection on the
test set. The task data objects in ``headscope/tasks/`` therefore hand out splits made by
:func:`split_by_key` (disjoint by construction: an item's split is a function of the item
alone), and the tests check them with :func:`check_disjoint` and, for a bundled organism,
:func:`verbatim_in` against its training corpus (docs/design.md §6).

Written here: a salted SHA-256 of the item key decides the split, so the assignment does
not depend on the order or number of items and is the same in every process
(Python's ``hash`` is salted per process; ``random.shuffle`` depends on order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from headscope.common.errors import HeadscopeError

__all__ = ["SPLITS", "check_disjoint", "split_by_key", "split_of", "verbatim_in"]

T = TypeVar("T")

#: The split names the task objects use, in the order a paper consumes them.
SPLITS: tuple[str, ...] = ("identify", "fit", "evaluate")


def _unit(key: Hashable, salt: str) -> float:
    """A stable number in [0, 1) for ``key`` (SHA-256 of ``salt`` and ``repr(key)``)."""
    h = hashlib.sha256(f"{salt}\x00{key!r}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_of(key: Hashable, fractions: Mapping[str, float], salt: str = "") -> str:
    """The split of one item key under ``fractions`` (see :func:`split_by_key`)."""
    u = _unit(key, salt)
    acc = 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name]
        if u < acc:
            return name
    return names[-1]


def split_by_key(
    items: Iterable[T],
    key: Callable[[T], Hashable],
    fractions: Mapping[str, float],
    salt: str = "",
) -> dict[str, list[T]]:
    """Partition ``items`` by a stable hash of ``key(item)`` into the named ``fractions``.

    Every item with the same key lands in the same split, whatever the order or number of
    items, so prompts of one item (other templates) can never be split across identify and
    evaluate. ``fractions`` (e.g. ``{"identify": 0.4, "fit": 0.2, "evaluate": 0.4}``) must
    be positive and sum to 1; ``salt`` gives a different, equally stable partition (use
    one per task). Returns every named split (possibly empty), items in input order.
    """
    if not fractions:
        raise HeadscopeError("split_by_key needs at least one named split in fractions")
    bad = {k: v for k, v in fractions.items() if not v > 0}
    if bad:
        raise HeadscopeError(f"split fractions must be positive; got {bad}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-9:
        raise HeadscopeError(f"split fractions sum to {total}, not 1; rescale them")
    out: dict[str, list[T]] = {name: [] for name in fractions}
    for it in items:
        out[split_of(key(it), fractions, salt)].append(it)
    return out


def check_disjoint(splits: Mapping[str, Iterable[Hashable]], what: str = "items") -> None:
    """Raise a HeadscopeError naming the first overlapping items if any two splits share an item.

    ``splits`` maps a split name to the item keys (not prompts) it uses.
    """
    seen: dict[Hashable, str] = {}
    clashes: list[str] = []
    for name, keys in splits.items():
        for k in set(keys):
            if k in seen and seen[k] != name:
                clashes.append(f"{k!r} in {seen[k]} and {name}")
            else:
                seen[k] = name
    if clashes:
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise HeadscopeError(
            f"{len(clashes)} {what} occur in more than one split: {'; '.join(clashes[:3])}{more}; "
            "build the splits with headscope.splits.split_by_key on the item, not the prompt"
        )


def verbatim_in(texts: Sequence[str], corpus: Sequence[str] | str, min_chars: int = 1) -> list[int]:
    """Indices of ``texts`` that occur verbatim (as a substring) in ``corpus``.

    ``corpus`` is a list of training documents (joined with a separator no text contains)
    or one string. Texts shorter than ``min_chars`` are not checked (a lone token occurs
    everywhere). Uses Python's substring search; a few thousand prompts against a few MB
    of corpus take seconds.
    """
    big: Any = corpus if isinstance(corpus, str) else "\x00".join(corpus)
    return [i for i, t in enumerate(texts) if len(t) >= min_chars and t in big]
