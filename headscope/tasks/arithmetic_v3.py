"""Arithmetic tasks on organism v3's held-out items (docs/organism_v3.md §4, §8).

Items are organism v3's held-out operand pairs (``WorldV3.pair_heldout``, generator seed
0: never in training, in any frame), rendered in one frame (a training frame such as
``eq/sym`` or a held-out one such as ``question/sym``), so every prompt of a task has one
length. The pairs are partitioned by item (``(op, A, B)``, salted hash,
:func:`headscope.splits.split_of`) into ``identify`` and ``evaluate`` halves, so heads
found on one half are checked on items they never saw.

The answer's first token is its leading digit: the separator space belongs to the prompt
(``"37 + 48 = "`` ends with the token ``Ġ``), as in the spec's scoring. ``answers[i]`` /
``wrong[i]`` are leading digits (single tokens):

- ``corruption="A"`` or ``"B"``: that operand replaced by another number with as many
  digits (so clean and corrupt tokenize to the same length), drawn so that the new answer
  is valid (− stays ≥ 0) and has another leading digit; ``wrong`` is that digit.
- ``corruption="operator"``: the operator replaced by a trained null token (symbol forms
  → ``@``, word and noun forms → ``nothing``; the arithmetic paper's corruption); ``wrong``
  is the leading digit of the answer under the contrasting operator (+ ↔ −, × → +, ÷ → −),
  and items where it equals the answer's are dropped. Frames whose corrupt prompt does not
  tokenize to the clean prompt's length (``divided by`` → ``nothing``) are dropped too, by
  the organism's own tokenizer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from headscope.common.errors import HeadscopeError
from headscope.tasks.base import Task

PARTS = {"identify": 0.5, "evaluate": 0.5}
PART_SALT = "arith-v3-parts"
_OP_WORDS = {
    "add": ("+", "plus", "sum"),
    "sub": ("-", "minus", "difference"),
    "mul": ("*", "times", "product"),
    "div": ("/", "divided by", "quotient"),
}
_NULL = {"sym": "@", "word": "nothing", "noun": "nothing"}


@lru_cache(maxsize=2)
def _world(seed: int):
    from headscope.organisms.world_v3 import WorldV3

    w = WorldV3(seed)
    return w, None


@lru_cache(maxsize=2)
def _tokenizer(alias: str):
    from pathlib import Path

    from transformers import AutoTokenizer

    from headscope.paths import organism_dir

    path = Path(alias) if Path(alias).is_dir() else organism_dir(alias)
    if not (path / "tokenizer.json").is_file():
        raise HeadscopeError(f"no tokenizer at {path}; train the organism: headscope organism train llama-v3")
    return AutoTokenizer.from_pretrained(str(path))


def part_of(op: str, a: int, b: int) -> str:
    """``identify`` or ``evaluate``: the half of the held-out items that ``(op, a, b)`` belongs to."""
    from headscope.splits import split_of

    return split_of((op, a, b), PARTS, salt=PART_SALT)


def _answer(op: str, a: int, b: int) -> int:
    from headscope.organisms.world_v3 import arith_answer

    return arith_answer(op, a, b)


def _contrast(op: str, a: int, b: int) -> int:
    return {"add": abs(a - b), "sub": a + b, "mul": a + b, "div": abs(a - b)}[op]


def _null_template(template: str, op: str, form: str) -> str:
    sym, word, noun = _OP_WORDS[op]
    old = {"sym": f" {sym} ", "word": f" {word} ", "noun": f" {noun} "}[form]
    if old not in template:
        raise HeadscopeError(f"frame {template!r} has no {form} operator {old.strip()!r}")
    return template.replace(old, f" {_NULL[form]} ", 1)


def _operand_swap(rng: random.Random, op: str, a: int, b: int, which: str) -> tuple[int, int] | None:
    """Another (a', b') with the replaced operand as long as the original, a valid answer and another leading digit."""
    c = _answer(op, a, b)
    x = a if which == "A" else b
    lo, hi = (0, 9) if x < 10 else (10, 99)
    if op == "mul":
        lo, hi = (0, 9) if x < 10 else (10, 12)
    cands = list(range(lo, hi + 1))
    rng.shuffle(cands)
    for y in cands:
        a2, b2 = (y, b) if which == "A" else (a, y)
        if y == x or (op == "sub" and a2 < b2):
            continue
        c2 = _answer(op, a2, b2)
        if str(c2)[0] != str(c)[0]:
            return a2, b2
    return None


def arithmetic_v3_task(
    ops: Sequence[str] = ("add", "sub"),
    frame: str = "eq/sym",
    part: str | None = "identify",
    corruption: str = "A",
    digits: tuple[int, int] | None = (2, 2),
    answer_digits: int | None = None,
    n: int | None = 48,
    seed: int = 0,
    items: str = "heldout",
    organism: str = "llama-v3",
    world_seed: int = 0,
) -> Task:
    """Clean/corrupt pairs on organism v3's held-out arithmetic items, in one frame.

    Args:
        ops: operators among add, sub, mul, div (``div`` only with ``corruption="operator"``).
        frame: the frame's name (``carrier/form``, e.g. ``eq/sym``, ``question/sym``); training
            and held-out frames are both allowed and the task says which it is.
        part: ``identify`` / ``evaluate`` half of the held-out items, or None for both.
        corruption: ``A``, ``B`` or ``operator`` (see the module doc).
        digits: keep items whose operands have these digit counts (one prompt length per
            task, which patching needs); None keeps all.
        n: pairs sampled (None = all), after shuffling with ``seed``.
        items: ``heldout`` (never in training; default) or ``train`` (training pairs: a
            memorisation reference).
        organism: whose tokenizer checks the operator corruption's lengths.
    """
    if part not in (None, *PARTS):
        raise HeadscopeError(f"part must be identify, evaluate or None, got {part!r}")
    if corruption not in ("A", "B", "operator"):
        raise HeadscopeError(f"corruption must be A, B or operator, got {corruption!r}")
    if items not in ("heldout", "train"):
        raise HeadscopeError(f"items must be heldout or train, got {items!r}")
    bad = [o for o in ops if o not in _OP_WORDS]
    if bad:
        raise HeadscopeError(f"unknown operator(s) {bad}; use add, sub, mul, div")
    if corruption != "operator" and "div" in ops:
        raise HeadscopeError("operand corruption keeps ÷ exact only by luck; use corruption='operator' for div")
    w, _ = _world(world_seed)
    tok = _tokenizer(organism) if corruption == "operator" else None
    rng = random.Random(f"arith-v3/{seed}/{corruption}")
    rows: list[tuple[str, str, str, str, dict[str, Any]]] = []
    dropped = 0
    held_frame = None
    for op in ops:
        found = {name: (tmpl, kind) for kind in ("train", "heldout") for name, tmpl, _ in w.frames[op][kind]}
        if frame not in found:
            raise HeadscopeError(f"{op} has no frame {frame!r}; frames: {', '.join(sorted(found))}")
        tmpl, kind = found[frame]
        held_frame = kind == "heldout"
        for a, b in sorted(w.pairs[op][items]):
            if digits is not None and (len(str(a)), len(str(b))) != tuple(digits):
                continue
            if part is not None and part_of(op, a, b) != part:
                continue
            c = _answer(op, a, b)
            if answer_digits is not None and len(str(c)) != answer_digits:
                continue
            clean = tmpl.format(A=a, B=b)
            if corruption == "operator":
                corrupt = _null_template(tmpl, op, frame.split("/")[1]).format(A=a, B=b)
                wrong = _contrast(op, a, b)
                assert tok is not None
                same_len = len(tok(clean + " ")["input_ids"]) == len(tok(corrupt + " ")["input_ids"])
                if str(wrong)[0] == str(c)[0] or not same_len:
                    dropped += 1
                    continue
            else:
                swap = _operand_swap(rng, op, a, b, corruption)
                if swap is None:
                    dropped += 1
                    continue
                corrupt = tmpl.format(A=swap[0], B=swap[1])
                wrong = _answer(op, *swap)
            meta = {
                "op": op,
                "a": a,
                "b": b,
                "frame": frame,
                "frame_heldout": held_frame,
                "part": part,
                "answer_full": c,
            }
            rows.append((clean + " ", corrupt + " ", str(c)[0], str(wrong)[0], meta))
    if not rows:
        raise HeadscopeError(f"no arithmetic pairs for ops={list(ops)}, frame={frame}, part={part}, digits={digits}")
    random.Random(seed).shuffle(rows)
    if n is not None:
        rows = rows[:n]
    clean_l, corrupt_l, ans, wrong_l, meta_l = (list(x) for x in zip(*rows))
    return Task(
        "arithmetic_v3",
        clean_l,
        corrupt_l,
        ans,
        wrong_l,
        meta_l,
        description=f"organism v3 {'/'.join(ops)}, frame {frame} ({'held-out' if held_frame else 'training'}), "
        f"{items} items, {part or 'all'} half, corrupt {corruption} ({dropped} items dropped)",
        world="v3",
    )


#: The arithmetic paper's prompt sets on organism v3 (as in experiments/arith_v3_table.py):
#: ``split`` -> (frames, half of the held-out items). ``train``: the identify half in two
#: training frames; ``heldout``: the evaluate half in two held-out frames (other items,
#: carriers never in training).
V3_ARITH_SPLITS: dict[str, tuple[tuple[str, ...], str]] = {
    "train": (("eq/sym", "qa/sym"), "identify"),
    "heldout": (("question/sym", "find/sym"), "evaluate"),
}
V3_ARITH_OPS = ("add", "sub")


def arith_v3_rows(
    ops: Sequence[str] = V3_ARITH_OPS, split: str = "all", organism: str = "llama-v3"
) -> list[dict[str, Any]]:
    """The arithmetic paper's prompt rows on organism v3, shaped like
    :class:`headscope.tasks.arithmetic.ArithRow` (``prompt``, ``corrupt``, ``answer``, ``op``,
    ``style``, ``a``, ``b``, ``c``, ``op_text``, ``null``, ``split``) plus ``wrong`` and ``frame``.

    Items: held-out + / − pairs (never in training) with two-digit operands and answer;
    counterfactual: the operator replaced by the trained null ``@`` (the paper's), see
    :func:`arithmetic_v3_task`. ``style`` is the frame's name. ``answer`` is the leading
    digit (the first answer token); ``c`` the whole answer. × and ÷ are not offered: on v3
    they are a memorised 13 × 13 table, not computed (docs/organism_v3.md §12).

    Args:
        ops: ``add`` and/or ``sub``.
        split: ``train`` (identify half, training frames ``eq/sym``, ``qa/sym``), ``heldout``
            (evaluate half, held-out frames ``question/sym``, ``find/sym``) or ``all``.
        organism: whose tokenizer checks the corruption's length (an alias or folder).
    """
    bad = [o for o in ops if o not in V3_ARITH_OPS]
    if bad or not ops:
        raise HeadscopeError(
            f"organism v3's arithmetic prompt sets have the operators add and sub, not {bad or list(ops)}: "
            "its × and ÷ are a memorised table (docs/organism_v3.md §12); use --ops add,sub"
        )
    if split not in ("all", *V3_ARITH_SPLITS):
        raise HeadscopeError(f"unknown split {split!r}; use all, train or heldout")
    rows: list[dict[str, Any]] = []
    for sp in V3_ARITH_SPLITS if split == "all" else (split,):
        frames, part = V3_ARITH_SPLITS[sp]
        for frame in frames:
            for op in ops:
                t = arithmetic_v3_task(
                    ops=(op,),
                    frame=frame,
                    part=part,
                    corruption="operator",
                    answer_digits=2,
                    n=None,
                    organism=organism,
                )
                for clean, corrupt, ans, wrong, meta in zip(t.clean, t.corrupt, t.answers, t.wrong, t.meta):
                    rows.append(
                        {
                            "prompt": clean,
                            "corrupt": corrupt,
                            "answer": ans,
                            "wrong": wrong,
                            "op": op,
                            "style": frame,
                            "template": 0,
                            "a": meta["a"],
                            "b": meta["b"],
                            "c": meta["answer_full"],
                            "op_text": _OP_WORDS[op][0],
                            "null": _NULL["sym"],
                            "split": sp,
                            "frame": frame,
                            "part": part,
                        }
                    )
    return rows
