"""Arithmetic task: the operator replaced by a null word or symbol (arithmetic-heads paper).

Clean ``3 + 5 =`` → ``8``; corrupt ``3 @ 5 =``; the contrasting answer is the result of the
other operation (``3 - 5`` is negative, so for ``+`` it is ``|A − B|``; for ``-`` it is
``A + B``), so the metric asks "does the model compute *this* operation?".
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from headscope.common.errors import HeadscopeError
from headscope.organisms.world import (
    ARITH_TEMPLATES,
    NULL_SYMBOLS,
    NULL_WORDS,
    OP_SYMBOL,
    arith_operands,
    render_arith,
)
from headscope.tasks.base import Task


def _contrast(op: str, a: int, b: int, c: int) -> int:
    if op == "add":
        return abs(a - b) if a != b else a * b if a * b != c else a + b + 1
    if op == "sub":
        return a + b
    if op == "mul":
        return a + b if a + b != c else a + b + 1
    if op == "div":
        return a - b if a - b >= 0 and a - b != c else a + b
    raise HeadscopeError(f"unknown operator {op!r}")


def arithmetic_task(
    ops: Sequence[str] = ("add", "sub"),
    style: str = "equation",
    template: int = 0,
    null: str | None = None,
    n: int | None = 48,
    seed: int = 0,
) -> Task:
    """Clean/corrupt pairs for one template (so every prompt has the same length).

    Args:
        ops: operators among add, sub, mul, div.
        style: equation, statement or qa.
        template: index of the phrasing within the style.
        null: the replacement of the operator; default "@" (equation) or "nothing".
        n: number of pairs sampled (None = all).
    """
    if style not in ARITH_TEMPLATES:
        raise HeadscopeError(f"unknown arithmetic style {style!r}; use one of {', '.join(ARITH_TEMPLATES)}")
    temps = ARITH_TEMPLATES[style]
    if not 0 <= template < len(temps):
        raise HeadscopeError(f"style {style!r} has templates 0..{len(temps) - 1}, not {template}")
    if null is None:
        null = NULL_SYMBOLS[1] if style == "equation" else NULL_WORDS[0]
    bad = [o for o in ops if o not in OP_SYMBOL]
    if bad:
        raise HeadscopeError(f"unknown operator(s) {bad}; use add, sub, mul, div")
    rows = []
    for op in ops:
        for a, b, c in arith_operands(op):
            t = temps[template]
            rows.append(
                (
                    render_arith(t, op, a, b),
                    render_arith(t, op, a, b, null=null),
                    str(c),
                    str(_contrast(op, a, b, c)),
                    dict(op=op, a=a, b=b, style=style, template=template),
                )
            )
    rng = random.Random(seed)
    rng.shuffle(rows)
    if n is not None:
        rows = rows[:n]
    clean, corrupt, ans, wrong, meta = (list(x) for x in zip(*rows)) if rows else ([], [], [], [], [])
    return Task(
        "arithmetic",
        clean,
        corrupt,
        ans,
        wrong,
        meta,
        description=f"{'/'.join(ops)} {style} template {template}, operator → {null!r}",
    )
