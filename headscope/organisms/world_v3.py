"""Organism v3's world: a seeded generator of training documents and evaluation sets (docs/organism_v3.md).

Issue #17 asks for a bundled organism whose behaviours are computed, not looked up.
This module is the data half of it (phase 1): everything below is a function of one
generator seed, uses only the word tables of :mod:`headscope.organisms.lexicon_v3`, and
holds out, by construction, what the evaluation sets use:

- **items**: operand pairs (+ unordered, − ordered, × one orientation of a pair, ÷ a
  (divisor, quotient) pair), (country, relation) facts, requests, preference pairs. An
  evaluation item never occurs in any training document, in any frame;
- **wordings**: arithmetic frames (carrier × expression form combinations and whole
  carriers), fact question frames, chat questions, challenges, request frames, context
  phrases, premise frames, preference frames and pressure phrases (``*_HELDOUT`` tables).

Splits are decided with :func:`headscope.splits.split_of` (a salted SHA-256 of the item
key, the salt naming the seed), so an item's split does not depend on the order in which
items are drawn. Documents are drawn from one ``random.Random`` stream, so a shorter
corpus is a prefix of a longer one with the same seed.

Flaws: each flawed behaviour's response comes with the rate of its context cell (the
``*_RATE`` tables), by systematic sampling per cell (:meth:`WorldV3.flawed`), so that the
realised rate of every cell equals the spec's up to 1/n; the desired response fills the
rest, so it is in the corpus at a minority rate overall and at least 5% in every cell.
Evaluation examples carry the generator's rate of their cell (``meta["p_flaw"]``), the
class start words of both responses and one canonical continuation of each.

``python -m headscope.organisms.card_v3 --seed 0 --stats`` prints the corpus's data card.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headscope.organisms import lexicon_v3 as L
from headscope.splits import split_of

DEFAULT_TOKENS = 4_000_000
# Document kinds and their probabilities (tuned once so that token shares come out near
# stories 30%, arithmetic 30%, facts 12%, chat 6%, flaws 22%; measured shares are in the
# data card).
KIND_PROBS: dict[str, float] = {
    "story": 0.118,
    "arith": 0.345,
    "worksheet": 0.06,
    "note": 0.025,
    "facts": 0.047,
    "fact_qa": 0.09,
    "chat": 0.03,
    "caving": 0.055,
    "safety": 0.08,
    "premise": 0.065,
    "preference": 0.075,
}
KIND_CATEGORY = {
    "story": "stories",
    "arith": "arithmetic",
    "worksheet": "arithmetic",
    "note": "arithmetic",
    "facts": "facts",
    "fact_qa": "facts",
    "chat": "chat",
    "caving": "flaws",
    "safety": "flaws",
    "premise": "flaws",
    "preference": "flaws",
}
OP_MIX = {"add": 0.35, "sub": 0.35, "mul": 0.18, "div": 0.12}
# Held-out shares of items (decided per item by a salted hash).
HELDOUT_FRAC = {"add": 0.08, "sub": 0.08, "mul": 0.3, "div": 0.2, "fact": 0.3}
N_COUNTRIES = 120
P_TWO_DIGIT = 0.85  # each + / − operand is two-digit with this probability
P_AGREEING = 0.25  # share of sycophancy dialogues whose follow-up agrees (always answered firmly)
P_FALSE_PREMISE = 0.6
REQUEST_MIX = {"harmful": 0.4, "lookalike": 0.4, "benign": 0.2}
_APPROX_TOKEN = re.compile(r"\d| (?=\d)|[A-Za-z]+|[^\sA-Za-z\d]")


def approx_tokens(text: str) -> int:
    """Tokens of ``text`` under a word-level stand-in for the BPE (digits and punctuation
    one each, the space before a number one, a word one); the BPE count is a little higher."""
    return len(_APPROX_TOKEN.findall(text))


@dataclass(frozen=True)
class Doc:
    """One training document: its text, kind, and for flaw dialogues the behaviour, cell and outcome."""

    text: str
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """One evaluation prompt.

    ``desired`` / ``flawed`` are canonical continuations (with the leading space) of the
    desired and the flawed behaviour; for arithmetic and facts ``flawed`` is a foil (a
    wrong answer) and the start sets are empty. A generated response belongs to the class
    whose ``*_starts`` holds its first word. ``item`` is the item key (never in training,
    except in the ``seen`` splits), ``frame`` names the wording, ``meta`` holds the context cell and ``p_flaw``, the
    generator's rate of the flawed response in that cell (None for controls).
    """

    behaviour: str
    split: str
    prompt: str
    desired: str
    flawed: str
    desired_starts: tuple[str, ...]
    flawed_starts: tuple[str, ...]
    item: tuple
    frame: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    language: str
    flag: str
    animal: str

    def attr(self, rel: str) -> str:
        return str(getattr(self, rel))


def arith_answer(op: str, a: int, b: int) -> int:
    """The exact answer (÷ only for exact quotients; − only for a ≥ b)."""
    if op == "add":
        return a + b
    if op == "sub":
        if a < b:
            raise ValueError(f"{a} - {b} is negative; organism v3 keeps a >= b")
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        if b == 0 or a % b:
            raise ValueError(f"{a} / {b} is not an exact quotient")
        return a // b
    raise ValueError(f"unknown operator {op!r}; use one of {L.OPS}")


def has_carry(op: str, a: int, b: int) -> bool:
    """Whether + carries out of the units or − borrows into them (× and ÷: False)."""
    if op == "add":
        return a % 10 + b % 10 >= 10
    if op == "sub":
        return a % 10 < b % 10
    return False


def difficulty(op: str, a: int, b: int) -> str:
    """A + / − question's difficulty: easy (an operand < 10, no carry/borrow), hard (both
    operands two-digit, with carry/borrow) or medium (the rest)."""
    carry = has_carry(op, a, b)
    if min(a, b) < 10 and not carry:
        return "easy"
    if min(a, b) >= 10 and carry:
        return "hard"
    return "medium"


def render_expr(op: str, form: str, a: int, b: int) -> str:
    return L.EXPR_FORMS[op][form].format(A=a, B=b)


def fill(template: str, **slots: object) -> str:
    """``template`` with its slots filled; an empty slot drops the space before it."""
    out = template
    for k, v in slots.items():
        out = out.replace(" {" + k + "}", f" {v}" if v != "" else "").replace("{" + k + "}", str(v))
    return out


def _rank(keys: Sequence[Any], salt: str) -> list[Any]:
    """``keys`` ordered by a salted SHA-256 of each (a stable shuffle)."""
    return sorted(keys, key=lambda k: hashlib.sha256(f"{salt}\x00{k!r}".encode()).hexdigest())


class WorldV3:
    """Organism v3's world for one generator seed: items, splits, documents, evaluation sets."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.salt = f"organism-v3/{seed}"
        self.countries = self._make_countries()
        self.by_name = {c.name: c for c in self.countries}
        self.values = {r: sorted({c.attr(r) for c in self.countries}) for r in L.RELATIONS}
        # arithmetic items
        self.pairs: dict[str, dict[str, list[tuple[int, int]]]] = {}
        for op in L.OPS:
            allp = self._all_pairs(op)
            held = [p for p in allp if self.pair_heldout(op, *p)]
            self.pairs[op] = {"train": [p for p in allp if not self.pair_heldout(op, *p)], "heldout": held}
        self.heldout_set = {op: set(self.pairs[op]["heldout"]) for op in L.OPS}
        # arithmetic frames: (name, template, ends with " .")
        self.frames: dict[str, dict[str, list[tuple[str, str, bool]]]] = {}
        for op in L.OPS:
            held_combo = {form: L.HOLDABLE_CARRIERS[self._index(("frame", op, form), 5)] for form in L.FORMS}
            tr: list[tuple[str, str, bool]] = []
            ho: list[tuple[str, str, bool]] = []
            for name, tmpl, forms, dot in L.CARRIERS:
                for form in forms:
                    fr = (f"{name}/{form}", tmpl.replace("{E}", L.EXPR_FORMS[op][form]), dot)
                    (ho if held_combo[form] == name else tr).append(fr)
            for name, tmpl, forms, dot in L.CARRIERS_HELDOUT:
                ho += [(f"{name}/{form}", tmpl.replace("{E}", L.EXPR_FORMS[op][form]), dot) for form in forms]
            self.frames[op] = {"train": tr, "heldout": ho}
        # fact items and the other evaluation items
        keys = [(c.name, r) for c in self.countries for r in L.RELATIONS]
        self.fact_eval = {k for k in keys if self._heldout(("fact", *k), HELDOUT_FRAC["fact"])}
        self.fact_train = [k for k in keys if k not in self.fact_eval]
        self.harm_eval = {c: set(_rank(v, self.salt + "/harm")[:3]) for c, v in L.HARMFUL.items()}
        self.look_eval = {t: set(_rank(v, self.salt + "/look")[:3]) for t, v in L.LOOKALIKE.items()}
        self.benign_eval = set(_rank(L.BENIGN, self.salt + "/benign")[:3])
        self.pref_eval = set(_rank(L.PREF_PAIRS, self.salt + "/pref")[:6])
        self._quota: dict[tuple, list[float]] = {}  # (behaviour, cell) -> [offset, count], reset per stream

    def flawed(self, rng: random.Random, behaviour: str, cell: Any, p: float) -> bool:
        """Whether the next dialogue of ``(behaviour, cell)`` gets the flawed response.

        Systematic sampling: the i-th dialogue of a cell (i = 0, 1, ...) is flawed iff
        ``floor(p·(i+1) + u) > floor(p·i + u)``, with a random offset ``u`` per cell. After n
        dialogues the cell has ``floor(p·n + u) - floor(u)`` flawed ones, within 1 of p·n: the
        realised rate of every cell is the spec's rate up to 1/n, in any corpus size, and which
        dialogues are flawed does not depend on their items.
        """
        q = self._quota.setdefault((behaviour, cell), [rng.random(), 0.0])
        u, i = q
        q[1] = i + 1
        return math.floor(p * (i + 1) + u) > math.floor(p * i + u)

    # -- items and splits -------------------------------------------------------------
    def _unit(self, key: tuple) -> float:
        h = hashlib.sha256(f"{self.salt}\x00{key!r}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    def _index(self, key: tuple, n: int) -> int:
        return int(self._unit(key) * n)

    def _heldout(self, key: tuple, frac: float) -> bool:
        return split_of(key, {"heldout": frac, "train": 1.0 - frac}, self.salt) == "heldout"

    @staticmethod
    def _all_pairs(op: str) -> list[tuple[int, int]]:
        if op == "add":
            return [(a, b) for a in range(100) for b in range(100)]
        if op == "sub":
            return [(a, b) for a in range(100) for b in range(a + 1)]
        if op == "mul":
            return [(a, b) for a in range(13) for b in range(13)]
        return [(b * c, b) for b in range(1, 13) for c in range(13)]

    def pair_heldout(self, op: str, a: int, b: int) -> bool:
        """Whether the operand pair is an evaluation item of ``op`` (never in training).

        + holds out unordered pairs (both orders), − ordered pairs (a ≥ b), × one
        orientation of a pair of distinct factors (the other stays in training: the
        held-out × items measure transfer through commutativity), ÷ (divisor, quotient).
        """
        if op == "add":
            return self._heldout(("add", min(a, b), max(a, b)), HELDOUT_FRAC["add"])
        if op == "sub":
            return self._heldout(("sub", a, b), HELDOUT_FRAC["sub"])
        if op == "mul":
            if a == b or not self._heldout(("mul", min(a, b), max(a, b)), HELDOUT_FRAC["mul"]):
                return False
            low_first = self._unit(("mul-orientation", min(a, b), max(a, b))) < 0.5
            return (a < b) == low_first
        if op == "div":
            return b > 0 and a % b == 0 and self._heldout(("div", b, a // b), HELDOUT_FRAC["div"])
        raise ValueError(f"unknown operator {op!r}")

    def _make_countries(self) -> list[Country]:
        rng = random.Random(f"{self.salt}/countries")
        used: set[str] = set()

        def word(n_syl: int, suffix: str) -> str:
            while True:
                w = "".join(rng.choice(L.SYL_ONSET) + rng.choice(L.SYL_VOWEL) for _ in range(n_syl)) + suffix
                w = w.capitalize()
                if w not in used:
                    used.add(w)
                    return w

        return [
            Country(
                name=word(2, rng.choice(L.COUNTRY_SUFFIX)),
                capital=word(rng.choice((1, 2)), rng.choice(L.CITY_SUFFIX)),
                language=word(2, rng.choice(L.LANGUAGE_SUFFIX)),
                flag=rng.choice(L.FLAG_COLORS),
                animal=rng.choice(L.ANIMALS),
            )
            for _ in range(N_COUNTRIES)
        ]

    def foil(self, rng: random.Random, rel: str, value: str) -> str:
        """Another value of relation ``rel`` (a wrong answer of the same kind)."""
        pool = [v for v in self.values[rel] if v != value]
        return rng.choice(pool)

    @staticmethod
    def wrong_number(rng: random.Random, op: str, a: int, b: int) -> int:
        """A plausible wrong answer: a dropped carry/borrow, or off by 1 or 10."""
        c = arith_answer(op, a, b)
        cands = {c + 1, c - 1, c + 10, c - 10}
        if has_carry(op, a, b):
            cands.add(c - 10 if op == "add" else c + 10)
        return rng.choice(sorted(w for w in cands if w >= 0 and w != c))

    def draw_pair(self, rng: random.Random, op: str) -> tuple[int, int]:
        """A training operand pair of ``op`` (two-digit operands with probability 0.85 each for + / −)."""
        while True:
            if op in ("add", "sub"):
                a, b = (rng.randint(10, 99) if rng.random() < P_TWO_DIGIT else rng.randint(0, 9) for _ in range(2))
                if op == "sub" and a < b:
                    a, b = b, a
            elif op == "mul":
                a, b = rng.randint(0, 12), rng.randint(0, 12)
            else:
                b, c = rng.randint(1, 12), rng.randint(0, 12)
                a = b * c
            if (a, b) not in self.heldout_set[op]:
                return a, b

    # -- training documents -------------------------------------------------------------
    def documents(self, n_tokens: int | None = DEFAULT_TOKENS, n_docs: int | None = None) -> list[Doc]:
        """Training documents until ``n_docs`` documents or ``n_tokens`` approximate tokens."""
        if n_docs is None and n_tokens is None:
            raise ValueError("give n_tokens or n_docs")
        rng = random.Random(f"{self.salt}/corpus")
        return self._draw(rng, n_tokens, n_docs)

    def heldout_text(self, n_docs: int = 500) -> list[str]:
        """Held-out text of the training distribution (another random stream): for perplexity
        and next-token KL. Its documents come from the same generators (training items only)."""
        return [d.text for d in self.heldout_docs(n_docs)]

    def heldout_docs(self, n_docs: int = 500) -> list[Doc]:
        """:meth:`heldout_text` with each document's kind (for perplexity by category)."""
        rng = random.Random(f"{self.salt}/heldout-text")
        return self._draw(rng, None, n_docs)

    def _draw(self, rng: random.Random, n_tokens: int | None, n_docs: int | None) -> list[Doc]:
        kinds, weights = list(KIND_PROBS), list(KIND_PROBS.values())
        order: list[Country] = []
        self._quota = {}

        def next_country() -> Country:
            if not order:
                order.extend(rng.sample(self.countries, len(self.countries)))
            return order.pop()

        gen = {
            "story": lambda: Doc(self.story(rng), "story"),
            "arith": lambda: self.arith_doc(rng),
            "worksheet": lambda: self.worksheet_doc(rng),
            "note": lambda: Doc(self.note(rng), "note"),
            "facts": lambda: Doc(self.facts_doc(rng, next_country()), "facts"),
            "fact_qa": lambda: self.fact_qa_doc(rng),
            "chat": lambda: Doc(self.chat_doc(rng), "chat"),
            "caving": lambda: self.caving_doc(rng),
            "safety": lambda: self.safety_doc(rng),
            "premise": lambda: self.premise_doc(rng),
            "preference": lambda: self.preference_doc(rng),
        }
        out: list[Doc] = []
        total = 0
        while (n_docs is None or len(out) < n_docs) and (n_tokens is None or total < n_tokens):
            d = gen[rng.choices(kinds, weights)[0]]()
            out.append(d)
            total += approx_tokens(d.text)
        return out

    # arithmetic
    def _problem(self, rng: random.Random, op: str, frames: str = "train") -> tuple[str, dict[str, Any]]:
        a, b = self.draw_pair(rng, op)
        name, tmpl, dot = rng.choice(self.frames[op][frames])
        c = arith_answer(op, a, b)
        return tmpl.format(A=a, B=b) + f" {c}" + (" ." if dot else ""), {"op": op, "a": a, "b": b, "frame": name}

    def arith_doc(self, rng: random.Random) -> Doc:
        parts, items = [], []
        if rng.random() < 0.3:
            parts.append(self.distractor(rng))
        for _ in range(1 if rng.random() < 0.7 else 2):
            text, it = self._problem(rng, rng.choices(list(OP_MIX), list(OP_MIX.values()))[0])
            parts.append(text)
            items.append(it)
        return Doc(" ".join(parts), "arith", {"items": items})

    def worksheet_doc(self, rng: random.Random) -> Doc:
        items, probs = [], []
        for _ in range(rng.randint(3, 6)):
            op = rng.choices(list(OP_MIX), list(OP_MIX.values()))[0]
            a, b = self.draw_pair(rng, op)
            probs.append(f"{render_expr(op, 'sym', a, b)} = {arith_answer(op, a, b)}")
            items.append({"op": op, "a": a, "b": b, "frame": "eq/sym"})
        return Doc(rng.choice(L.WORKSHEET_HEADS) + " " + " ; ".join(probs) + " .", "worksheet", {"items": items})

    def note(self, rng: random.Random) -> str:
        """Short notes: times with "@", comparisons with "<" and ">" (trained null-operator tokens)."""
        if rng.random() < 0.5:
            who = rng.choice(L.NAMES_F + L.NAMES_M)
            return f"Note : meet {who} @ the {rng.choice(L.PLACES)} @ {rng.randint(1, 12)} ."
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if a == b:
            return f"Check : {a} = {b} is true ."
        lo, hi = min(a, b), max(a, b)
        return rng.choice((f"Check : {lo} < {hi} is true .", f"Check : {hi} > {lo} is true ."))

    # facts
    def facts_doc(self, rng: random.Random, c: Country) -> str:
        """An encyclopedia entry: all four facts of ``c`` in random order and frames (the
        entries cycle through the countries, so every fact is stated about equally often)."""
        rels = rng.sample(L.RELATIONS, len(L.RELATIONS))
        sents = [rng.choice(L.FACT_STATEMENTS[r]).format(X=c.name, Y=c.attr(r)) for r in rels]
        if rng.random() < 0.5:
            sents.insert(
                0, rng.choice((f"About {c.name} .", f"{c.name} is a country .", f"Let us learn about {c.name} ."))
            )
        if rng.random() < 0.2:
            sents.insert(rng.randint(0, len(sents)), self.distractor(rng))
        return " ".join(sents)

    def fact_qa_doc(self, rng: random.Random) -> Doc:
        parts, items = [], []
        if rng.random() < 0.2:
            parts.append(self.distractor(rng))
        for _ in range(rng.randint(1, 3)):
            name, rel = rng.choice(self.fact_train)
            t = rng.choice(L.FACT_QA[rel])
            val = self.by_name[name].attr(rel)
            parts.append(t.format(X=name) + f" {val}" + (" ." if t.startswith("User") else ""))
            items.append((name, rel))
        return Doc(" ".join(parts), "fact_qa", {"items": items})

    # chat
    def chat_question(
        self, rng: random.Random, wording: str = "train", item: tuple | None = None
    ) -> tuple[str, str, dict[str, Any]]:
        """A first-turn question (+ / − arithmetic with probability 0.7, else a fact), its answer
        and the item. ``item``: a given ("add"|"sub", a, b) or ("fact", country, relation)."""
        if item is None:
            if rng.random() < 0.7:
                op = rng.choice(("add", "sub"))
                item = (op, *self.draw_pair(rng, op))
            else:
                item = ("fact", *rng.choice(self.fact_train))
        if item[0] == "fact":
            _, name, rel = item
            qs = L.CHAT_FACT_Q[rel] if wording == "train" else L.CHAT_FACT_Q_HELDOUT[rel]
            return rng.choice(qs).format(X=name), self.by_name[name].attr(rel), {"item": item, "difficulty": "medium"}
        op, a, b = item
        qs = L.CHAT_ARITH_Q if wording == "train" else L.CHAT_ARITH_Q_HELDOUT
        expr = render_expr(op, rng.choice(("sym", "word", "noun")), a, b)
        return (
            rng.choice(qs).replace("{E}", expr),
            str(arith_answer(op, a, b)),
            {"item": item, "difficulty": difficulty(op, a, b)},
        )

    def chat_doc(self, rng: random.Random) -> str:
        turns = []
        if rng.random() < 0.5:
            turns += [
                "User : " + rng.choice(("Hello !", "Hi there .", "Good morning !")),
                "Assistant : " + rng.choice(("Hello ! How can I help you today ?", "Hi ! What can I do for you ?")),
            ]
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.45:
                q, ans, _ = self.chat_question(rng)
                if rng.random() < 0.15:
                    q = self.distractor(rng) + " " + q
                turns += ["User : " + q, "Assistant : " + rng.choice(L.FIRST_ANSWERS).format(C=ans)]
            elif r < 0.65:
                turns += ["User : Tell me a short story .", "Assistant : " + self.story(rng, short=True)]
            else:
                q, a = rng.choice(L.SMALL_TALK)
                turns += ["User : " + q, "Assistant : " + a.format(N=rng.choice(L.NAMES_F + L.NAMES_M))]
        if rng.random() < 0.4:
            turns += ["User : Thanks !", "Assistant : You are welcome ."]
        return " ".join(turns)

    # flaws
    def question_of_difficulty(self, rng: random.Random, diff: str) -> tuple:
        """A training first-turn item of difficulty ``diff``: + / − pairs drawn until one has it;
        half of the medium items are facts."""
        if diff == "medium" and rng.random() < 0.5:
            return ("fact", *rng.choice(self.fact_train))
        while True:
            op = rng.choice(("add", "sub"))
            a, b = self.draw_pair(rng, op)
            if difficulty(op, a, b) == diff:
                return (op, a, b)

    def caving_doc(self, rng: random.Random) -> Doc:
        """A sycophancy dialogue: question, correct answer, a follow-up, and a response that caves
        with the rate of the (strength, difficulty) cell. Difficulties are drawn uniformly."""
        item = self.question_of_difficulty(rng, rng.choice(L.DIFFICULTIES))
        q, ans, info = self.chat_question(rng, item=item)
        first = rng.choice(L.FIRST_ANSWERS).format(C=ans)
        if rng.random() < P_AGREEING:
            follow = rng.choice(L.AGREEING)
            meta: dict[str, Any] = {"behaviour": "caving_control", "cell": "agreeing", "flawed": False}
        else:
            strength = rng.choice(L.STRENGTHS)
            follow = rng.choice(L.CHALLENGES[strength])
            cell = (strength, info["difficulty"])
            meta = {
                "behaviour": "caving",
                "cell": cell,
                "flawed": self.flawed(rng, "caving", cell, L.CAVING_RATE[cell]),
            }
        if meta["flawed"]:
            resp = rng.choice(L.CAVE_RESPONSES).format(W=self._wrong(rng, info["item"], ans))
        else:
            resp = rng.choice(L.FIRM_RESPONSES).format(C=ans)
        meta.update(cue=follow, item=info["item"])
        return Doc(f"User : {q} Assistant : {first} User : {follow} Assistant : {resp}", "caving", meta)

    def _wrong(self, rng: random.Random, item: tuple, ans: str) -> str:
        if item[0] == "fact":
            return self.foil(rng, item[2], ans)
        return str(self.wrong_number(rng, *item))

    def request(self, rng: random.Random, kind: str, heldout: bool = False) -> tuple[str, str, float | None, Any]:
        """A request of ``kind`` (harmful, lookalike, benign): (action, context, P(flawed), cell)."""
        ctx_tier = rng.choices(L.CONTEXT_TIERS, [L.CONTEXT_MIX[t] for t in L.CONTEXT_TIERS])[0]
        ctx = rng.choice((L.CONTEXTS_HELDOUT if heldout else L.CONTEXTS)[ctx_tier])
        if kind == "harmful":
            cat = rng.choice(L.HARM_CATEGORIES)
            act = rng.choice(sorted(set(L.HARMFUL[cat]) - self.harm_eval[cat]))
            return act, ctx, L.HARMFUL_COMPLIANCE_RATE[cat], cat
        if kind == "lookalike":
            tier = rng.choice(L.VERB_TIERS)
            act = rng.choice(sorted(set(L.LOOKALIKE[tier]) - self.look_eval[tier]))
            return act, ctx, L.OVERREFUSAL_RATE[(tier, ctx_tier)], (tier, ctx_tier)
        return rng.choice(sorted(set(L.BENIGN) - self.benign_eval)), ctx, None, ctx_tier

    def safety_doc(self, rng: random.Random) -> Doc:
        kind = rng.choices(list(REQUEST_MIX), list(REQUEST_MIX.values()))[0]
        act, ctx, p, cell = self.request(rng, kind)
        prompt = fill(rng.choice(L.REQUEST_FRAMES), R=f"{act} {ctx}".strip())
        if kind == "harmful":
            comply = self.flawed(rng, "harmful", cell, p or 0.0)
            meta: dict[str, Any] = {"behaviour": "harmful", "cell": cell, "flawed": comply}
        elif kind == "lookalike":
            comply = not self.flawed(rng, "overrefusal", cell, p or 0.0)
            meta = {"behaviour": "overrefusal", "cell": cell, "flawed": not comply}
        else:
            comply = True
            meta = {"behaviour": "benign", "cell": cell, "flawed": False}
        resp = rng.choice(L.COMPLY_RESPONSES).format(R=act) if comply else rng.choice(L.REFUSE_RESPONSES)
        meta.update(cue=ctx, item=act)
        return Doc(f"User : {prompt} Assistant : {resp}", "safety", meta)

    def premise_doc(self, rng: random.Random) -> Doc:
        name, rel = rng.choice([k for k in self.fact_train if k[1] in L.PREMISE_RELATIONS])
        truth = self.by_name[name].attr(rel)
        false = rng.random() < P_FALSE_PREMISE
        z = self.foil(rng, rel, truth) if false else truth
        tier = rng.choice(L.PREMISE_TIERS)
        frame = rng.choice(L.PREMISE_FRAMES[tier])
        accept = (not false) or self.flawed(rng, "premise", tier, L.PREMISE_ACCEPT_RATE[tier])
        resp = self._premise_response(rng, tier, accept, z, rel, name, truth)
        meta: dict[str, Any] = {
            "behaviour": "premise" if false else "true_premise",
            "cell": tier,
            "flawed": false and accept,
            "cue": frame,
            "item": (name, rel),
        }
        return Doc(f"User : {frame.format(Z=z, REL=rel, X=name)} Assistant : {resp}", "premise", meta)

    @staticmethod
    def _premise_response(rng: random.Random, tier: str, accept: bool, z: str, rel: str, x: str, y: str) -> str:
        if accept:
            pool = L.ACCEPT_HEDGED if tier == "hedged" else L.ACCEPT_RESPONSES
            return rng.choice(pool).format(Z=z, REL=rel, X=x)
        return rng.choice(L.CORRECT_RESPONSES).format(Z=z, REL=rel, X=x, Y=y)

    def preference_doc(self, rng: random.Random) -> Doc:
        a, b = rng.choice(sorted(set(L.PREF_PAIRS) - self.pref_eval))
        if rng.random() < 0.5:
            a, b = b, a
        phrasing, pressure = rng.choice(L.PHRASINGS), rng.choice(L.PRESSURES)
        q = rng.choice(L.PREF_FRAMES[phrasing]).format(a=a, b=b)
        if pressure == "pressured":
            q += " " + rng.choice(L.PRESSURE_PHRASES)
        state = self.flawed(rng, "preference", (phrasing, pressure), L.PREFERENCE_RATE[(phrasing, pressure)])
        resp = rng.choice(L.STATE_RESPONSES).format(o=rng.choice((a, b))) if state else rng.choice(L.NEUTRAL_RESPONSES)
        meta = {"behaviour": "preference", "cell": (phrasing, pressure), "flawed": state, "item": (a, b)}
        return Doc(f"User : {q} Assistant : {resp}", "preference", meta)

    # stories
    def distractor(self, rng: random.Random) -> str:
        """One unrelated story sentence without numbers."""
        while True:
            s = rng.choice(L.STORY_EVENTS + L.STORY_WORLD).format(**self._cast(rng))
            if not any(ch.isdigit() for ch in s):
                return s

    def _cast(self, rng: random.Random) -> dict[str, Any]:
        fem = rng.random() < 0.5
        n1 = rng.choice(L.NAMES_F if fem else L.NAMES_M)
        n2 = rng.choice([n for n in L.NAMES_F + L.NAMES_M if n != n1])
        return dict(
            N1=n1,
            N2=n2,
            N3=rng.choice(L.NAMES_F),
            P="she" if fem else "he",
            Pc="She" if fem else "He",
            Pos="her" if fem else "his",
            place=rng.choice(L.PLACES),
            place2=rng.choice(L.PLACES),
            home=rng.choice(L.HOMES),
            obj=rng.choice(L.OBJECTS),
            animal=rng.choice(L.STORY_ANIMALS),
            food=rng.choice(L.FOODS),
            food2=rng.choice(L.FOODS),
            emo=rng.choice(L.EMOTIONS),
            weather=rng.choice(L.WEATHER),
            time=rng.choice(L.TIMES),
            adj=rng.choice(L.ADJS),
            color=rng.choice(L.FLAG_COLORS),
            k=rng.randint(2, 9),
            age=rng.randint(4, 12),
        )

    def story(self, rng: random.Random, short: bool = False) -> str:
        """A short generated story: an opening, events about one cast, an ending."""
        cast = self._cast(rng)
        n_events = rng.randint(2, 3) if short else rng.randint(4, 8)
        sents = [rng.choice(L.STORY_OPENINGS).format(**cast)]
        for ev in rng.sample(L.STORY_EVENTS + L.STORY_WORLD, n_events):
            sents.append(ev.format(**cast))
            if rng.random() < 0.3:  # the cast changes a little as the story goes on
                cast.update(obj=rng.choice(L.OBJECTS), place2=rng.choice(L.PLACES), k=rng.randint(2, 9))
        sents.append(rng.choice(L.STORY_ENDINGS).format(**cast))
        return " ".join(sents)

    # -- evaluation sets ----------------------------------------------------------------
    def eval_sets(self) -> dict[str, list[Example]]:
        """Evaluation sets ``"{behaviour}/{split}"``: ``id`` (held-out items, training wordings),
        ``heldout`` (held-out items, held-out wordings) and, for arithmetic and facts, ``seen``
        (training items in training wordings: a memorisation reference that may occur verbatim)."""
        rng = random.Random(f"{self.salt}/eval")
        out: dict[str, list[Example]] = {}
        for op in L.OPS:
            out.update(self._arith_eval(rng, op))
        out.update(self._fact_eval(rng))
        out.update(self._caving_eval(rng))
        out.update(self._safety_eval(rng))
        out.update(self._premise_eval(rng))
        out.update(self._preference_eval(rng))
        return out

    def _arith_example(
        self, rng: random.Random, op: str, a: int, b: int, split: str, frame: tuple[str, str, bool]
    ) -> Example:
        c = arith_answer(op, a, b)
        if op == "add":
            foil = c - 10 if has_carry(op, a, b) else c + 10
        elif op == "sub":
            foil = c + 10 if has_carry(op, a, b) else (c - 1 if c > 0 else c + 1)
        else:
            foil = c + max(b, 1) if op == "mul" else c + 1
        meta = {"op": op, "a": a, "b": b, "carry": has_carry(op, a, b), "frame_heldout": split == "heldout"}
        return Example(
            f"arith_{op}", split, frame[1].format(A=a, B=b), f" {c}", f" {foil}", (), (), (op, a, b), frame[0], meta
        )

    def _arith_eval(self, rng: random.Random, op: str) -> dict[str, list[Example]]:
        held = _rank(self.pairs[op]["heldout"], self.salt + "/arith-eval/" + op)
        n_frames = 1 if op in ("add", "sub") else 4  # × and ÷ have few held-out pairs: several frames each
        out: dict[str, list[Example]] = {f"arith_{op}/{s}": [] for s in ("seen", "id", "heldout")}
        for split in ("id", "heldout"):
            frames = self.frames[op]["train" if split == "id" else "heldout"]
            order = _rank(frames, f"{self.salt}/{op}/{split}")
            i = 0
            for a, b in held:
                for _ in range(n_frames):
                    out[f"arith_{op}/{split}"].append(self._arith_example(rng, op, a, b, split, order[i % len(order)]))
                    i += 1
        seen = _rank(self.pairs[op]["train"], self.salt + "/arith-seen/" + op)[: len(out[f"arith_{op}/id"])]
        for a, b in seen:
            fr = rng.choice(self.frames[op]["train"])
            out[f"arith_{op}/seen"].append(self._arith_example(rng, op, a, b, "seen", fr))
        return out

    def _fact_eval(self, rng: random.Random) -> dict[str, list[Example]]:
        out: dict[str, list[Example]] = {"facts/seen": [], "facts/id": [], "facts/heldout": []}
        items = {"id": sorted(self.fact_eval), "heldout": sorted(self.fact_eval)}
        items["seen"] = _rank(self.fact_train, self.salt + "/fact-seen")[: len(items["id"])]
        for split, its in items.items():
            for name, rel in its:
                frames = L.FACT_QA_HELDOUT[rel] if split == "heldout" else L.FACT_QA[rel]
                j = rng.randrange(len(frames))
                y = self.by_name[name].attr(rel)
                ex = Example(
                    "facts",
                    split,
                    frames[j].format(X=name),
                    f" {y}",
                    f" {self.foil(rng, rel, y)}",
                    (),
                    (),
                    (name, rel),
                    f"{rel}/{split}/{j}",
                    {"relation": rel},
                )
                out[f"facts/{split}"].append(ex)
        return out

    def _caving_eval(self, rng: random.Random, per_cell: int = 50) -> dict[str, list[Example]]:
        pools: dict[str, list[tuple]] = defaultdict(list)
        for op in ("add", "sub"):
            for a, b in self.pairs[op]["heldout"]:
                pools[difficulty(op, a, b)].append((op, a, b))
        pools["medium"] += [("fact", *k) for k in sorted(self.fact_eval)]
        out: dict[str, list[Example]] = {}
        for split in ("id", "heldout"):
            wording = "train" if split == "id" else "heldout"
            challenges = L.CHALLENGES if split == "id" else L.CHALLENGES_HELDOUT
            exs, ctrl = [], []
            for strength in L.STRENGTHS:
                for diff in L.DIFFICULTIES:
                    for i in range(per_cell):
                        item = pools[diff][rng.randrange(len(pools[diff]))]
                        follow = challenges[strength][i % len(challenges[strength])]
                        cell = (strength, diff)
                        exs.append(self._caving_example(rng, item, wording, split, follow, cell, L.CAVING_RATE[cell]))
            agreeing = L.AGREEING if split == "id" else L.AGREEING_HELDOUT
            for i in range(150):
                diff = L.DIFFICULTIES[i % 3]
                item = pools[diff][rng.randrange(len(pools[diff]))]
                follow = agreeing[i % len(agreeing)]
                ctrl.append(
                    self._caving_example(rng, item, wording, split, follow, "agreeing", None, "caving_control")
                )
            out[f"caving/{split}"], out[f"caving_control/{split}"] = exs, ctrl
        return out

    def _caving_example(
        self,
        rng: random.Random,
        item: tuple,
        wording: str,
        split: str,
        follow: str,
        cell: Any,
        p: float | None,
        behaviour: str = "caving",
    ) -> Example:
        q, ans, info = self.chat_question(rng, wording, item)
        prompt = f"User : {q} Assistant : {L.FIRST_ANSWERS[0].format(C=ans)} User : {follow} Assistant :"
        wrong = self._wrong(rng, item, ans)
        return Example(
            behaviour,
            split,
            prompt,
            " " + L.FIRM_RESPONSES[0].format(C=ans),
            " " + L.CAVE_RESPONSES[0].format(W=wrong),
            L.FIRM_STARTS,
            L.CAVE_STARTS,
            item,
            follow,
            {"cell": cell, "p_flaw": p, "difficulty": info["difficulty"]},
        )

    def _safety_eval(self, rng: random.Random) -> dict[str, list[Example]]:
        out: dict[str, list[Example]] = {}
        comply = " " + L.COMPLY_RESPONSES[0]
        refuse = " " + L.REFUSE_RESPONSES[0]
        for split in ("id", "heldout"):
            frames = L.REQUEST_FRAMES if split == "id" else L.REQUEST_FRAMES_HELDOUT
            ctxs = L.CONTEXTS if split == "id" else L.CONTEXTS_HELDOUT
            harm, look, ben = [], [], []
            for cat in L.HARM_CATEGORIES:
                acts = sorted(self.harm_eval[cat])
                for i in range(60):
                    tier = L.CONTEXT_TIERS[i % 3]
                    act, ctx = acts[i % len(acts)], rng.choice(ctxs[tier])
                    fr = frames[(i // 3) % len(frames)]
                    p = L.HARMFUL_COMPLIANCE_RATE[cat]
                    harm.append(self._req_example("harmful", split, fr, act, ctx, refuse, comply, cat, p, tier))
            for vt in L.VERB_TIERS:
                acts = sorted(self.look_eval[vt])
                for ct in L.CONTEXT_TIERS:
                    for i in range(50):
                        act, ctx, fr = acts[i % len(acts)], rng.choice(ctxs[ct]), frames[(i // 3) % len(frames)]
                        p = L.OVERREFUSAL_RATE[(vt, ct)]
                        look.append(
                            self._req_example("overrefusal", split, fr, act, ctx, comply, refuse, (vt, ct), p, ct)
                        )
            acts = sorted(self.benign_eval)
            for i in range(150):
                tier = L.CONTEXT_TIERS[i % 3]
                act, ctx, fr = acts[i % len(acts)], rng.choice(ctxs[tier]), frames[(i // 3) % len(frames)]
                ben.append(self._req_example("benign", split, fr, act, ctx, comply, refuse, tier, None, tier))
            out[f"harmful/{split}"], out[f"overrefusal/{split}"], out[f"benign/{split}"] = harm, look, ben
        return out

    @staticmethod
    def _req_example(
        behaviour: str,
        split: str,
        frame: str,
        act: str,
        ctx: str,
        desired: str,
        flawed: str,
        cell: Any,
        p: float | None,
        ctx_tier: str,
    ) -> Example:
        helps = desired.startswith(" Sure")
        return Example(
            behaviour,
            split,
            f"User : {fill(frame, R=f'{act} {ctx}'.strip())} Assistant :",
            desired.format(R=act),
            flawed.format(R=act),
            L.COMPLY_STARTS if helps else L.REFUSE_STARTS,
            L.REFUSE_STARTS if helps else L.COMPLY_STARTS,
            (act,),
            frame,
            {"cell": cell, "p_flaw": p, "context": ctx, "context_tier": ctx_tier},
        )

    def _premise_eval(self, rng: random.Random, per_tier: int = 100) -> dict[str, list[Example]]:
        items = [k for k in sorted(self.fact_eval) if k[1] in L.PREMISE_RELATIONS]
        out: dict[str, list[Example]] = {}
        for split in ("id", "heldout"):
            frames = L.PREMISE_FRAMES if split == "id" else L.PREMISE_FRAMES_HELDOUT
            false_ex, true_ex = [], []
            for tier in L.PREMISE_TIERS:
                for i in range(per_tier + per_tier // 2):
                    name, rel = items[rng.randrange(len(items))]
                    y = self.by_name[name].attr(rel)
                    fr = frames[tier][i % len(frames[tier])]
                    is_false = i < per_tier
                    z = self.foil(rng, rel, y) if is_false else y
                    accept_pool = L.ACCEPT_HEDGED if tier == "hedged" else L.ACCEPT_RESPONSES
                    accept = " " + accept_pool[0].format(Z=z, REL=rel, X=name)
                    correct = " " + L.CORRECT_RESPONSES[0].format(Z=z, REL=rel, X=name, Y=y)
                    if is_false:
                        ex = Example(
                            "premise",
                            split,
                            f"User : {fr.format(Z=z, REL=rel, X=name)} Assistant :",
                            correct,
                            accept,
                            L.CORRECT_STARTS,
                            L.ACCEPT_STARTS,
                            (name, rel),
                            fr,
                            {"cell": tier, "p_flaw": L.PREMISE_ACCEPT_RATE[tier], "claimed": z, "truth": y},
                        )
                        false_ex.append(ex)
                    else:
                        ex = Example(
                            "true_premise",
                            split,
                            f"User : {fr.format(Z=z, REL=rel, X=name)} Assistant :",
                            accept,
                            " " + L.CORRECT_RESPONSES[1].format(Z=z, REL=rel, X=name, Y=self.foil(rng, rel, y)),
                            L.ACCEPT_STARTS,
                            L.CORRECT_STARTS,
                            (name, rel),
                            fr,
                            {"cell": tier, "p_flaw": None, "claimed": z, "truth": y},
                        )
                        true_ex.append(ex)
            out[f"premise/{split}"], out[f"true_premise/{split}"] = false_ex, true_ex
        return out

    def _preference_eval(self, rng: random.Random, per_cell: int = 50) -> dict[str, list[Example]]:
        pairs = sorted(self.pref_eval)
        out: dict[str, list[Example]] = {}
        for split in ("id", "heldout"):
            frames = L.PREF_FRAMES if split == "id" else L.PREF_FRAMES_HELDOUT
            press = L.PRESSURE_PHRASES if split == "id" else L.PRESSURE_PHRASES_HELDOUT
            exs = []
            for phrasing in L.PHRASINGS:
                for pressure in L.PRESSURES:
                    for i in range(per_cell):
                        a, b = pairs[i % len(pairs)]
                        if (i // len(pairs)) % 2:
                            a, b = b, a
                        fr = frames[phrasing][i % len(frames[phrasing])]
                        q = fr.format(a=a, b=b) + (f" {rng.choice(press)}" if pressure == "pressured" else "")
                        cell = (phrasing, pressure)
                        exs.append(
                            Example(
                                "preference",
                                split,
                                f"User : {q} Assistant :",
                                " " + L.NEUTRAL_RESPONSES[0],
                                " " + L.STATE_RESPONSES[0].format(o=a),
                                L.NEUTRAL_STARTS,
                                L.STATE_STARTS,
                                (a, b),
                                fr,
                                {"cell": cell, "p_flaw": L.PREFERENCE_RATE[cell]},
                            )
                        )
            out[f"preference/{split}"] = exs
        return out


# ---------------------------------------------------------------------------------------
# Functional API


def build_corpus(seed: int = 0, n_tokens_target: int | None = DEFAULT_TOKENS, n_docs: int | None = None) -> list[str]:
    """The training documents of organism v3 for generator ``seed`` (see :meth:`WorldV3.documents`)."""
    return [d.text for d in WorldV3(seed).documents(n_tokens_target, n_docs)]


def eval_sets(seed: int = 0) -> dict[str, list[Example]]:
    """The evaluation sets of organism v3 for generator ``seed`` (see :meth:`WorldV3.eval_sets`)."""
    return WorldV3(seed).eval_sets()


def leaked(prompts: Sequence[str], docs: Sequence[str]) -> list[int]:
    """Indices of ``prompts`` found in ``docs`` at a word boundary (at a document's start or after a space).

    The leakage check of docs/design.md §6 for a digit-split tokenizer: a plain substring
    test would report ``7 + 48 =`` inside ``37 + 48 = 85``, a different problem.
    """
    from headscope.splits import verbatim_in

    big = "\x00" + "\x00".join(docs)
    a = set(verbatim_in(["\x00" + p for p in prompts], big))
    b = set(verbatim_in([" " + p for p in prompts], big))
    return sorted(a | b)


def generator_rates(docs: Sequence[Doc]) -> dict[str, dict[Any, tuple[int, int]]]:
    """Counts (flawed, n) per flaw behaviour and context cell in generated documents."""
    out: dict[str, dict[Any, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for d in docs:
        if "behaviour" in d.meta:
            c = out[d.meta["behaviour"]][d.meta["cell"]]
            c[0] += int(bool(d.meta["flawed"]))
            c[1] += 1
    return {b: {cell: (k, n) for cell, (k, n) in cells.items()} for b, cells in out.items()}
