"""The bundled ``llama`` organism's behaviour measures, as functions of a model.

What the papers use to ask "did the fix break anything else": arithmetic and fact
accuracy, the chat behaviours' rates, held-out text for KL. Each builds the organism's
world itself, so no world object reaches a paper package (docs/design.md §2); a user with
their own model passes their own measures where a paper function takes a ``suite``.
All scores are exact match of greedy outputs on held-out items.
"""

from __future__ import annotations

from collections.abc import Sequence

from headscope.model import HeadModel, Patch
from headscope.organisms import evaluate as _ev
from headscope.organisms.world import OPERATORS, World, WorldConfig


def world(cfg: WorldConfig | None = None) -> World:
    """The organism's world (its corpus generator); for task modules, not for papers."""
    return World(cfg)


def greedy(
    model: HeadModel, prompts: Sequence[str], max_new_tokens: int = 1, patches: Sequence[Patch] = ()
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, space-joined words), grouped by length."""
    return _ev.greedy(model, prompts, max_new_tokens, patches)


def arithmetic_accuracy(
    model: HeadModel, split: str = "heldout", ops: Sequence[str] = OPERATORS, patches: Sequence[Patch] = ()
) -> dict[str, float]:
    """Exact-match accuracy of the first generated token on the organism's arithmetic items, per operator."""
    return _ev.arithmetic_accuracy(model, World(), split, ops, patches)


def facts_accuracy(model: HeadModel, split: str = "heldout", patches: Sequence[Patch] = ()) -> float:
    """Exact-match accuracy on the organism's fact questions."""
    return _ev.facts_accuracy(model, World(), split, patches)


def chat_rates(model: HeadModel, split: str = "heldout", patches: Sequence[Patch] = ()) -> dict[str, float]:
    """Rates of the safety, false-premise and preference behaviours (keys as in ``organisms.evaluate``)."""
    return _ev.chat_rates(model, World(), split, patches)


def heldout_text(n: int = 400, seed: int = 12345) -> list[str]:
    """``n`` documents of the organism's held-out text (for next-token KL)."""
    return World().heldout_text(n, seed)
