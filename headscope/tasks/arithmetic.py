"""Arithmetic prompt sets: clean/null-operator pairs, the paper's prompt rows, unseen phrasings, tuning data.

Two kinds of objects, both plain data built from the organism world's templates (this
module is where the organism's arithmetic strings enter; ``headscope.papers.arithmetic``
never imports the world, so a researcher can build the same rows for their own model):

- :func:`arithmetic_task`: a :class:`~headscope.tasks.base.Task` of one template (every
  prompt one length) with a contrasting wrong answer, for the generic patching commands.
- :class:`ArithRow` rows (plain dicts, JSON Lines friendly) for the arithmetic-heads
  paper (ICML 2024, §3.1): :func:`arith_prompts` (every template of every operator in
  three styles, with the operator replaced by a null symbol or word),
  :func:`unseen_prompts` (phrasings the organism never saw), :func:`arith_dataset`,
  :func:`tune_examples`, and :func:`organism_tune_suite` (what precise SFT is trained
  and judged on, §5).

Clean ``3 + 5 =`` → ``8``; corrupt ``3 @ 5 =``. In :func:`arithmetic_task` the
contrasting answer is the result of the other operation (``3 - 5`` is negative, so for
``+`` it is ``|A − B|``; for ``-`` it is ``A + B``), so the metric asks "does the model
compute *this* operation?".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from headscope.common.errors import HeadscopeError
from headscope.organisms.world import (
    ARITH_TEMPLATES,
    NULL_SYMBOLS,
    NULL_WORDS,
    OP_NOUN,
    OP_SYMBOL,
    OP_WORD,
    OPERATORS,
    arith_is_heldout,
    arith_operands,
    render_arith,
)
from headscope.tasks.base import Task

if TYPE_CHECKING:
    from headscope.model import HeadModel

STYLES: tuple[str, ...] = tuple(ARITH_TEMPLATES)

__all__ = [
    "NULL_SYMBOLS",
    "NULL_WORDS",
    "OPERATORS",
    "STYLES",
    "UNSEEN_TEMPLATES",
    "CORRUPTIONS",
    "SPLIT_FRACTIONS",
    "ArithRow",
    "ArithSplits",
    "TuneSuite",
    "arith_dataset",
    "arith_prompts",
    "arith_splits",
    "arithmetic_task",
    "item_key",
    "organism_tune_suite",
    "split_items",
    "split_tune_suite",
    "tune_examples",
    "unseen_prompts",
    "with_operand_corruption",
]


class ArithRow(TypedDict):
    """One arithmetic prompt with its null-operator counterfactual (a plain dict).

    What the paper functions read: ``prompt``, ``corrupt`` and ``answer`` (every
    analysis); ``op`` and ``style`` (per-operator / per-style accuracy, transfer); ``a``,
    ``b``, ``c`` (the operands and the answer as numbers, whose words the inspection
    looks up) and ``op_text`` (the operator's text in ``prompt``, e.g. ``"divided by"``:
    the tokens the inspection marks as operator positions). The rest records where the
    row came from.
    """

    prompt: str
    corrupt: str
    answer: str
    op: str
    style: str
    template: int
    a: int
    b: int
    c: int
    op_text: str
    null: str
    split: str


def _check_choice(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise HeadscopeError(f"unknown {what} {bad or values}; use one or more of {', '.join(allowed)}")
    return values


def _op_text(template: str, op: str) -> str:
    """The operator's text as ``template`` renders it (symbol, word(s) or noun)."""
    if "{sym}" in template:
        return OP_SYMBOL[op]
    if "{word}" in template:
        return OP_WORD[op]
    return OP_NOUN[op]


def _null_text(template: str, op: str, null: str) -> str:
    """The null replacement with as many words as the operator text it replaces
    (``divided by`` → ``nothing nothing``), so clean and corrupt prompts keep one length."""
    if "{word}" in template:
        return " ".join([null] * len(OP_WORD[op].split()))
    return null


def _row(template: str, style: str, t_idx: int, op: str, a: int, b: int, c: int, null: str, split: str) -> ArithRow:
    return ArithRow(
        prompt=render_arith(template, op, a, b),
        corrupt=render_arith(template, op, a, b, null=_null_text(template, op, null)),
        answer=str(c),
        op=op,
        style=style,
        template=t_idx,
        a=a,
        b=b,
        c=c,
        op_text=_op_text(template, op),
        null=null,
        split=split,
    )


def arith_prompts(
    ops: Sequence[str] = OPERATORS,
    styles: Sequence[str] = STYLES,
    templates: Sequence[int] | None = None,
    split: str = "all",
    nulls: Sequence[str] | None = None,
    heldout_frac: float = 0.15,
) -> list[ArithRow]:
    """Every (operator, style, template, A, B) prompt with its counterfactual (paper §3.1).

    Args:
        ops: operators among add, sub, mul, div.
        styles: equation, statement, qa.
        templates: template indices within each style (None = all four).
        split: "all", "train" or "heldout" (the organism world's split of prompts).
        nulls: null replacements; default: ``<`` / ``@`` for the symbol templates and
            ``nothing`` / ``none`` for the word templates, cycling over operand pairs.
        heldout_frac: the world's held-out share (keep the organism's 0.15).

    Returns:
        :class:`ArithRow` dicts, operator-major, then style, template and operands.
    """
    ops = _check_choice(ops, OPERATORS, "operator(s)")
    styles = _check_choice(styles, STYLES, "template style(s)")
    if split not in ("all", "train", "heldout"):
        raise HeadscopeError(f"unknown split {split!r}; use all, train or heldout")
    rows = []
    for op in ops:
        for style in styles:
            temps = ARITH_TEMPLATES[style]
            idxs = range(len(temps)) if templates is None else list(templates)
            for t_idx in idxs:
                if not 0 <= t_idx < len(temps):
                    raise HeadscopeError(f"style {style!r} has templates 0..{len(temps) - 1}, not {t_idx}")
                t = temps[t_idx]
                pool = nulls or (NULL_SYMBOLS if "{sym}" in t else NULL_WORDS)
                for i, (a, b, c) in enumerate(arith_operands(op)):
                    held = arith_is_heldout(op, style, t_idx, a, b, heldout_frac)
                    if split == "train" and held or split == "heldout" and not held:
                        continue
                    rows.append(
                        _row(t, style, t_idx, op, a, b, c, pool[i % len(pool)], "heldout" if held else "train")
                    )
    return rows


def arith_dataset(rows: Sequence[ArithRow] | None = None, **kwargs):
    """The prompts as a ``datasets.Dataset`` (one column per key of :class:`ArithRow`;
    ``kwargs`` go to :func:`arith_prompts` when ``rows`` is None)."""
    from datasets import Dataset

    dicts = [dict(r) for r in (rows if rows is not None else arith_prompts(**kwargs))]
    if not dicts:
        raise HeadscopeError("no arithmetic prompts selected; widen ops/styles/templates/split")
    return Dataset.from_dict({k: [d[k] for d in dicts] for k in dicts[0]})


# Phrasings the organism never saw in training (only words of its vocabulary).
UNSEEN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "equation": ("Compute : {A} {sym} {B} =", "Math : Calculate {A} {sym} {B} ="),
    "statement": ("We know {A} {word} {B} is", "The answer of {A} {word} {B} is"),
    "qa": ("Q : Find {A} {word} {B} . A :", "Question : What is the {noun} of {A} and {B} ? A :"),
}


def unseen_prompts(ops: Sequence[str] = OPERATORS) -> list[ArithRow]:
    """Prompts in :data:`UNSEEN_TEMPLATES` (never in the organism's corpus), as
    :func:`arith_prompts` rows (``template`` is the index within the unseen style, ``split`` is "unseen")."""
    ops = _check_choice(ops, OPERATORS, "operator(s)")
    rows = []
    for op in ops:
        for style, temps in UNSEEN_TEMPLATES.items():
            for t_idx, t in enumerate(temps):
                pool = NULL_SYMBOLS if "{sym}" in t else NULL_WORDS
                for i, (a, b, c) in enumerate(arith_operands(op)):
                    rows.append(_row(t, style, t_idx, op, a, b, c, pool[i % len(pool)], "unseen"))
    return rows


def tune_examples(ops: Sequence[str] = ("div", "mul"), split: str = "train") -> list[tuple[str, str]]:
    """(prompt, answer) pairs for SFT: every template of ``ops`` in ``split`` of the world."""
    return [(r["prompt"], r["answer"]) for r in arith_prompts(ops=ops, split=split)]


@dataclass
class TuneSuite:
    """What precise SFT is trained on and judged by (paper §5), as data.

    ``examples``: (prompt, answer) training pairs; ``heldout``: targeted arithmetic rows
    the training never saw (accuracy per operator); ``unseen``: rows in phrasings the
    model never saw (overall and per operator); ``kl_texts``: text on which the tuned
    model's next-token distributions are compared with the base model's; ``general``:
    other measures of general ability as a function of a model (name → score), or None.
    """

    examples: list[tuple[str, str]]
    heldout: list[ArithRow]
    unseen: list[ArithRow]
    kl_texts: list[str]
    general: Callable[[HeadModel], dict[str, float]] | None = None
    train_ops: tuple[str, ...] = ()


def organism_tune_suite(ops: Sequence[str] = ("div", "mul"), chat: bool = True, n_kl: int = 200) -> TuneSuite:
    """The bundled ``llama`` organism's tuning suite: training prompts of ``ops``, held-out
    prompts of every operator, :func:`unseen_prompts`, held-out facts QA and (with
    ``chat``) the chat rates as general ability, and ``n_kl`` held-out documents for KL."""
    from headscope.tasks import suite

    ops = _check_choice(ops, OPERATORS, "operator(s)")

    def general(model: HeadModel) -> dict[str, float]:
        out = {"facts_qa_heldout": suite.facts_accuracy(model, "heldout")}
        if chat:
            out.update({f"chat_{k}": v for k, v in suite.chat_rates(model, "heldout").items()})
        return out

    return TuneSuite(
        examples=tune_examples(ops),
        heldout=arith_prompts(split="heldout"),
        unseen=unseen_prompts(),
        kl_texts=suite.heldout_text(n_kl),
        general=general,
        train_ops=tuple(ops),
    )


# ---------------------------------------------------------------------------------------
# One-template clean/corrupt task for the generic patching commands


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
        world="v2",
    )


# ---------------------------------------------------------------------------------------
# Splits disjoint by item (issue 16): identify / fit / evaluate, operand counterfactuals

#: The split fractions of the arithmetic items (op, A, B) and the salt of their hash.
SPLIT_FRACTIONS: dict[str, float] = {"identify": 0.4, "fit": 0.2, "evaluate": 0.4}
SPLIT_SALT = "arith"
#: Which part of a prompt a counterfactual replaces: the operator (the paper's null word or
#: symbol) or one operand (another number, see :func:`with_operand_corruption`).
CORRUPTIONS: tuple[str, ...] = ("operator", "A", "B")


def item_key(row: ArithRow | dict) -> tuple[str, int, int]:
    """The underlying item of a prompt row: ``(op, a, b)`` (every template of it is the same item)."""
    return (str(row["op"]), int(row["a"]), int(row["b"]))


def _number_positions(prompt: str) -> list[int]:
    return [i for i, w in enumerate(prompt.split(" ")) if w.isdigit()]


def _replacement(op: str, a: int, b: int, which: str) -> int:
    """Another valid operand: the next value (cyclically) among the items of ``op`` that keep
    the other operand; when there is none (− with B = 9, ÷ of 1), the neighbour A ± 1 / B ± 1."""
    items = arith_operands(op)
    if which == "A":
        cands = sorted({x for x, y, _ in items if y == b and x != a})
        own = a
    else:
        cands = sorted({y for x, y, _ in items if x == a and y != b})
        own = b
    if not cands:
        return own - 1 if own > 1 else own + 1
    later = [c for c in cands if c > own]
    return later[0] if later else cands[0]


def with_operand_corruption(rows: Sequence[ArithRow], which: str) -> list[ArithRow]:
    """Copies of ``rows`` whose ``corrupt`` is the clean prompt with operand ``which``
    ("A" or "B") replaced by another number (:func:`_replacement`; one token, so the
    length is kept), ``null`` the replacement. ``which="operator"`` returns the rows as
    they are (the paper's null-operator counterfactual).

    Identification with these counterfactuals sees the heads that move the operands,
    which the operator counterfactual cannot (issue 16, item 4).
    """
    if which == "operator":
        return [ArithRow(**r) for r in rows]
    if which not in ("A", "B"):
        raise HeadscopeError(f"unknown corruption {which!r}; use one of {', '.join(CORRUPTIONS)}")
    out = []
    for r in rows:
        words = r["prompt"].split(" ")
        pos = _number_positions(r["prompt"])
        if len(pos) != 2 or words[pos[0]] != str(r["a"]) or words[pos[1]] != str(r["b"]):
            raise HeadscopeError(
                f"prompt {r['prompt']!r} does not show its operands {r['a']} and {r['b']} as the two numbers "
                "in order; operand counterfactuals need templates with A before B"
            )
        new = _replacement(r["op"], int(r["a"]), int(r["b"]), which)
        words[pos[0] if which == "A" else pos[1]] = str(new)
        out.append(ArithRow(**{**r, "corrupt": " ".join(words), "null": str(new)}))
    return out


def split_items(ops: Sequence[str] = OPERATORS, salt: str = SPLIT_SALT) -> dict[str, list[tuple[str, int, int]]]:
    """Every item ``(op, a, b)`` of ``ops`` by split (:func:`headscope.splits.split_by_key`
    on the item with :data:`SPLIT_FRACTIONS`): identify, fit, evaluate."""
    from headscope.splits import split_by_key

    ops = _check_choice(ops, OPERATORS, "operator(s)")
    items = [(op, a, b) for op in ops for a, b, _ in arith_operands(op)]
    return split_by_key(items, key=lambda it: it, fractions=SPLIT_FRACTIONS, salt=salt)


@dataclass
class ArithSplits:
    """The arithmetic prompt sets of the paper, disjoint by item (issue 16).

    - ``identify``: every template of the organism world (all 12, train and held-out
      combinations) on the identify items — where heads are selected;
    - ``fit``: :data:`UNSEEN_TEMPLATES` on the fit items — the mean-ablation reference
      (the same templates, hence token lengths, as ``evaluate``, other items);
    - ``evaluate``: :data:`UNSEEN_TEMPLATES` on the evaluate items — where knockout and
      tuning are scored; no prompt occurs verbatim in the training corpus;
    - ``tune_examples``: (prompt, answer) SFT pairs: the world's training combinations of
      ``train_ops`` on identify + fit items (never an evaluate item);
    - ``tune_heldout``: the world's held-out (template, item) combinations of the
      evaluate items that do not occur verbatim in the corpus (an equation prompt like
      ``3 + 5 =`` is a substring of ``Compute 3 + 5 = 8``, so most of those drop out).

    Known limit (organism v2, issue 17): every evaluate item occurs in pretraining under
    the world's templates; only the prompts, not the items, are unseen by the organism.
    """

    identify: list[ArithRow]
    fit: list[ArithRow]
    evaluate: list[ArithRow]
    tune_examples: list[tuple[str, str]]
    tune_heldout: list[ArithRow]
    items: dict[str, list[tuple[str, int, int]]]
    train_ops: tuple[str, ...] = ("div", "mul")


def arith_splits(
    train_ops: Sequence[str] = ("div", "mul"), corpus: Sequence[str] | None = None, salt: str = SPLIT_SALT
) -> ArithSplits:
    """The organism's :class:`ArithSplits` (``corpus``: its training documents, default
    ``World().documents()``, used to drop held-out prompts that occur verbatim)."""
    from headscope.organisms.world import World
    from headscope.splits import verbatim_in

    train_ops = tuple(_check_choice(train_ops, OPERATORS, "operator(s)"))
    items = split_items(salt=salt)
    where = {it: name for name, its in items.items() for it in its}
    allrows = arith_prompts()
    unseen = unseen_prompts()
    docs = World().documents() if corpus is None else corpus
    held = [r for r in allrows if r["split"] == "heldout" and where[item_key(r)] == "evaluate"]
    hits = set(verbatim_in([r["prompt"] for r in held], docs))
    evaluate = [r for r in unseen if where[item_key(r)] == "evaluate"]
    leaked = verbatim_in([r["prompt"] for r in evaluate], docs)
    if leaked:
        raise HeadscopeError(
            f"{len(leaked)} evaluation prompts occur verbatim in the training corpus "
            f"(e.g. {evaluate[leaked[0]]['prompt']!r}); change UNSEEN_TEMPLATES"
        )
    return ArithSplits(
        identify=[r for r in allrows if where[item_key(r)] == "identify"],
        fit=[r for r in unseen if where[item_key(r)] == "fit"],
        evaluate=evaluate,
        tune_examples=[
            (r["prompt"], r["answer"])
            for r in allrows
            if r["op"] in train_ops and r["split"] == "train" and where[item_key(r)] != "evaluate"
        ],
        tune_heldout=[r for i, r in enumerate(held) if i not in hits],
        items=items,
        train_ops=train_ops,
    )


def split_tune_suite(splits: ArithSplits, chat: bool = False, n_kl: int = 200) -> TuneSuite:
    """The tuning suite on the item splits: train on ``splits.tune_examples``, score
    ``splits.tune_heldout`` (world templates) and ``splits.evaluate`` (unseen templates),
    held-out facts QA (and chat rates with ``chat``) and KL on ``n_kl`` held-out documents."""
    suite = organism_tune_suite(splits.train_ops, chat=chat, n_kl=n_kl)
    suite.examples = list(splits.tune_examples)
    suite.heldout = list(splits.tune_heldout)
    suite.unseen = list(splits.evaluate)
    return suite
