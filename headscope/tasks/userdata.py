"""Your own data for the paper pipelines, in documented file formats (docs/userdata.md).

The papers (``headscope.papers.*``) read plain task objects; this module builds them from
files a researcher writes for their own model, and writes the bundled organism's data
in exactly the same formats (so the organism is one user of the same path):

- **arithmetic rows** (the arithmetic-heads paper): a table (JSON Lines, CSV or a
  ``datasets`` folder) with ``prompt``, ``answer``, ``counterfactual`` per row, plus
  optional ``counterfactual_<name>`` columns (e.g. ``counterfactual_A``: operand A
  replaced) that give one identification map each, and optional ``op``/``style``
  labels. :func:`load_arith_rows` → ``{map name: rows}`` for
  :func:`headscope.papers.arithmetic.identify.identify_maps` (the ``counterfactual``
  column is the ``operator`` map).
- **sycophancy dialogues** (Supervised Pinpoint Tuning, identification): one JSON file
  (:func:`load_sycophancy_data`) with the challenge and its counterfactual, the
  apology/affirmation tokens, a dialogue template and the questions with their correct
  answers (optional ``family``: questions of one family must give dialogues of one token
  length; optional ``split``).

Wherever a JSON file holds a list of rows (SAC ``pairs``/``stimuli``/``evaluate``, the
sycophancy ``questions``), it may instead name a table file (JSON Lines, CSV or a
``datasets`` folder) by a path relative to the JSON file.
- **SAC behaviour sets** (Sparse Activation Control): one JSON file
  (:func:`load_sac_data` / :func:`save_sac_data`) with, per behaviour, identification
  ``pairs`` (clean/corrupt/answer/wrong), fitting ``stimuli`` (prompt, desired and
  undesired first token, optional group), and ``evaluate`` stimuli; plus ``background``
  prompt groups for the gate and ``kl_texts``. The evaluation measure of a behaviour is
  the share of its ``evaluate`` prompts whose greedy first token is the desired one.

Tables are read by :func:`headscope.tasks.base.read_table`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from headscope.common.errors import HeadscopeError
from headscope.common.io import atomic_write_text
from headscope.model import HeadModel, Patch
from headscope.tasks.base import Task, read_table
from headscope.tasks.sac import SacData, SacTask, Stimulus

SAC_FORMAT = "headscope-sac/1"
SYCOPHANCY_FORMAT = "headscope-sycophancy/1"
ARITH_COLUMNS = ("prompt", "answer", "counterfactual")

__all__ = [
    "ARITH_COLUMNS",
    "SAC_FORMAT",
    "export_arith_rows",
    "first_token_outcomes",
    "load_arith_rows",
    "load_sac_data",
    "load_sycophancy_data",
    "save_sac_data",
]


# ---------------------------------------------------------------------------------------
# Arithmetic rows


def load_arith_rows(path: str | Path) -> dict[str, list[dict]]:
    """``{map name: rows}`` from an arithmetic table (module docstring).

    Each row is a dict with ``prompt``, ``corrupt`` (that map's counterfactual) and
    ``answer``, plus every other column (``op``, ``style``, …). ``counterfactual`` gives
    the ``operator`` map; each ``counterfactual_<name>`` column gives map ``<name>``
    (rows where it is empty are left out of that map).
    """
    rows = read_table(path, ARITH_COLUMNS)
    names = ["operator"] + [c[len("counterfactual_") :] for c in rows[0] if c.startswith("counterfactual_")]
    out: dict[str, list[dict]] = {}
    for name in names:
        col = "counterfactual" if name == "operator" else f"counterfactual_{name}"
        keep = []
        for r in rows:
            cf = r.get(col)
            if cf is None or str(cf).strip() == "":
                continue
            base = {k: v for k, v in r.items() if not k.startswith("counterfactual")}
            keep.append({**base, "prompt": str(r["prompt"]), "corrupt": str(cf), "answer": str(r["answer"])})
        if keep:
            out[name] = keep
    return out


def export_arith_rows(rows_by: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Write ``{map name: rows}`` (rows with ``prompt``, ``corrupt``, ``answer``) as one
    JSON Lines arithmetic table: rows of the maps are matched by their prompt."""
    if "operator" not in rows_by:
        raise HeadscopeError("an arithmetic table needs the 'operator' map (its counterfactual column)")
    merged: dict[str, dict] = {}
    for name, rows in rows_by.items():
        col = "counterfactual" if name == "operator" else f"counterfactual_{name}"
        for r in rows:
            row = merged.setdefault(
                r["prompt"],
                {k: v for k, v in r.items() if k not in ("corrupt",) and not str(k).startswith("counterfactual")},
            )
            row[col] = r["corrupt"]
    lines = [json.dumps(r, ensure_ascii=False) for r in merged.values() if "counterfactual" in r]
    return atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------
# SAC behaviour sets


def _read_json(p: Path, what: str) -> Any:
    """The parsed JSON of ``p``; a missing file or invalid JSON is a HeadscopeError naming the format page."""
    if not p.exists():
        raise HeadscopeError(f"{what} file {p} does not exist")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise HeadscopeError(f"{p} is not valid JSON ({e.msg}); see docs/userdata.md for the format") from e


def _rows_or_table(value: Any, base: Path, required: Sequence[str]) -> Sequence[Mapping[str, Any]]:
    """A list of objects given inline, or the rows of a table file (JSON Lines, CSV or a
    ``datasets`` folder) named by a path relative to the JSON file."""
    if isinstance(value, str):
        return read_table(base / value, required)
    return list(value)


def _stimuli(raw: Sequence[Mapping[str, Any]], where: str) -> list[Stimulus]:
    out = []
    for i, s in enumerate(raw):
        missing = [k for k in ("prompt", "desired", "undesired") if k not in s]
        if missing:
            raise HeadscopeError(
                f"{where}[{i}] lacks {', '.join(missing)}; a stimulus needs prompt, desired, undesired"
            )
        out.append(Stimulus(str(s["prompt"]), str(s["desired"]), str(s["undesired"]), str(s.get("group", ""))))
    return out


def _pairs(raw: Sequence[Mapping[str, Any]], name: str, where: str) -> Task:
    for i, p in enumerate(raw):
        missing = [k for k in ("clean", "corrupt", "answer", "wrong") if k not in p]
        if missing:
            raise HeadscopeError(
                f"{where}[{i}] lacks {', '.join(missing)}; a pair needs clean, corrupt, answer, wrong"
            )
    return Task(
        name,
        [str(p["clean"]) for p in raw],
        [str(p["corrupt"]) for p in raw],
        [str(p["answer"]) for p in raw],
        [str(p["wrong"]) for p in raw],
        description=f"SAC identification pairs of {name}",
    )


@torch.no_grad()
def first_token_outcomes(model: HeadModel, stimuli: Sequence[Stimulus], patches: Sequence[Patch]) -> list[bool]:
    """Per stimulus: is the greedy next token after its prompt the desired one (under ``patches``)?"""
    from headscope.controls import by_length

    if not stimuli:
        return []
    prompts = [s.prompt for s in stimuli]
    out = [False] * len(stimuli)
    for _, idx in by_length(prompts, model.tokenizer).items():
        toks = model.to_tokens([prompts[i] for i in idx])
        logits = model.run_patched(toks, list(patches)) if patches else model.logits(toks)
        pred = logits[:, -1].argmax(-1).cpu()
        for j, i in enumerate(idx):
            out[i] = int(pred[j]) == model.token_id(stimuli[i].desired)
    return out


def load_sac_data(path: str | Path) -> SacData:
    """A :class:`~headscope.tasks.sac.SacData` from a SAC JSON file (module docstring).

    Each behaviour's measure (``measure``, default ``<name>_desired``) is the share of its
    ``evaluate`` stimuli answered with the desired first token; per-prompt outcomes are
    kept for paired confidence intervals.
    """
    p = Path(path)
    raw = _read_json(p, "SAC data")
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
        raise HeadscopeError(f"{path} needs a 'tasks' object with at least one behaviour (docs/userdata.md)")
    tasks: dict[str, SacTask] = {}
    evals: dict[str, list[Stimulus]] = {}
    for name, t in raw["tasks"].items():
        where = f"{p.name}: tasks.{name}"
        if "pairs" not in t or "stimuli" not in t:
            raise HeadscopeError(f"{where} needs 'pairs' (identification) and 'stimuli' (fitting)")
        measure = str(t.get("measure", f"{name}_desired"))
        stim_cols = ("prompt", "desired", "undesired")
        tasks[name] = SacTask(
            name,
            _pairs(
                _rows_or_table(t["pairs"], p.parent, ("clean", "corrupt", "answer", "wrong")), name, f"{where}.pairs"
            ),
            _stimuli(_rows_or_table(t["stimuli"], p.parent, stim_cols), f"{where}.stimuli"),
            measure,
            tuple(t.get("source_groups", ())),
        )
        evals[measure] = _stimuli(_rows_or_table(t.get("evaluate", []), p.parent, stim_cols), f"{where}.evaluate")
    background = {str(k): [str(x) for x in v] for k, v in raw.get("background", {}).items()}
    kl_texts = [str(x) for x in raw.get("kl_texts", [])]

    def outcomes(model: HeadModel, patches: Sequence[Patch]) -> dict[str, list[bool]]:
        return {m: first_token_outcomes(model, st, patches) for m, st in evals.items() if st}

    def measures(model: HeadModel, patches: Sequence[Patch]) -> dict[str, float]:
        return {m: sum(v) / len(v) for m, v in outcomes(model, patches).items()}

    return SacData(
        tasks,
        background=background,
        kl_texts=kl_texts,
        measures=measures,
        columns=tuple(m for m, st in evals.items() if st),
        outcomes=outcomes,
    )


def save_sac_data(data: SacData, path: str | Path, evaluate: Mapping[str, Sequence[Stimulus]] | None = None) -> Path:
    """Write ``data``'s behaviours, backgrounds and KL texts as a SAC JSON file.

    Measures are code, not data: pass ``evaluate`` (behaviour name → evaluation stimuli)
    to store them as each behaviour's ``evaluate`` list.
    """
    tasks: dict[str, Any] = {}
    for name, t in data.tasks.items():
        pr = t.pairs
        tasks[name] = {
            "measure": t.measure,
            "pairs": [
                {"clean": c, "corrupt": k, "answer": a, "wrong": w}
                for c, k, a, w in zip(pr.clean, pr.corrupt, pr.answers, pr.wrong)
            ],
            "stimuli": [vars(s) for s in t.stimuli],
            "evaluate": [vars(s) for s in (evaluate or {}).get(name, [])],
        }
        if t.source_groups:
            tasks[name]["source_groups"] = list(t.source_groups)
    doc = {"format": SAC_FORMAT, "tasks": tasks, "background": data.background, "kl_texts": list(data.kl_texts)}
    return atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")


# ---------------------------------------------------------------------------------------
# Sycophancy dialogues (SPT identification)

_SYC_KEYS = ("challenge", "counter", "apology", "affirm", "dialogue", "questions")


def load_sycophancy_data(path: str | Path):
    """A :class:`~headscope.tasks.sycophancy.SycophancyData` for SPT identification from a JSON file.

    Keys: ``challenge`` (the user's pushback, e.g. "I don't think that's right. Are you
    sure?"), ``counter`` (the same length, affirming: the counterfactual), ``apology`` and
    ``affirm`` (the single tokens starting an apology / an affirmation: the paper's
    ``F = p(apology) / (p(apology) + p(affirm))``), ``dialogue`` (a template with
    ``{question}``, ``{answer}`` and ``{challenge}`` ending where the model answers the
    challenge), ``questions`` (objects with ``question``, ``answer`` and optional
    ``family`` and ``split``). Optional ``defend`` / ``retract`` (tuning targets with
    ``{a}``). Measures (the generate-and-challenge protocol) are organism code and are
    not read from a file.
    """
    import random as _random

    from headscope.tasks.sycophancy import SycophancyData

    p = Path(path)
    raw = _read_json(p, "sycophancy data")
    missing = [k for k in _SYC_KEYS if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise HeadscopeError(f"{p.name} lacks {', '.join(missing)} (docs/userdata.md, sycophancy dialogues)")
    template = str(raw["dialogue"])
    for field_ in ("{question}", "{answer}", "{challenge}"):
        if field_ not in template:
            raise HeadscopeError(f"{p.name}: the dialogue template needs {field_}")
    qs = []
    for i, q in enumerate(_rows_or_table(raw["questions"], p.parent, ("question", "answer"))):
        if "question" not in q or "answer" not in q:
            raise HeadscopeError(f"{p.name}: questions[{i}] needs question and answer")
        qs.append((str(q["question"]), str(q["answer"]), str(q.get("family", "all")), str(q.get("split", "all"))))
    if not qs:
        raise HeadscopeError(f"{p.name} has no questions")
    families = tuple(dict.fromkeys(q[2] for q in qs))
    challenge, counter = str(raw["challenge"]), str(raw["counter"])
    apology, affirm = str(raw["apology"]), str(raw["affirm"])

    def dialogue(question: str, first_answer: str, ch: str = challenge) -> str:
        return template.format(question=question, answer=first_answer, challenge=ch)

    def pairs(family: str, n: int | None, split: str, seed: int, ch: str) -> Task:
        if family not in families:
            raise HeadscopeError(f"unknown question family {family!r}; the file has {', '.join(families)}")
        rows = [q for q in qs if q[2] == family and (split == "all" or q[3] in (split, "all"))]
        if not rows:
            raise HeadscopeError(f"no questions of family {family!r} in split {split!r}")
        rng = _random.Random(seed)
        if n is not None and n < len(rows):
            rows = rng.sample(rows, n)
        return Task(
            f"sycophancy:{family}",
            [dialogue(q, a, ch) for q, a, _, _ in rows],
            [dialogue(q, a, counter) for q, a, _, _ in rows],
            [apology] * len(rows),
            [affirm] * len(rows),
            description=f"{family} questions from {p.name}, challenge vs counterfactual",
        )

    def question(rng) -> tuple[str, str]:
        q = rng.choice(qs)
        return q[0], q[1]

    def heldout_question(rng) -> tuple[str, str]:
        held = [q for q in qs if q[3] == "evaluate"] or qs
        q = rng.choice(held)
        return q[0], q[1]

    def wrong_for(rng, answer: str) -> str:
        others = sorted({q[1] for q in qs if q[1] != answer})
        if not others:
            raise HeadscopeError(f"{p.name}: every question has the answer {answer!r}; no wrong answer to draw")
        return rng.choice(others)

    def challenge_mask(prompt: str, ch: str) -> list[bool]:
        raise HeadscopeError(
            "the challenge-attention analysis needs token positions of the challenge, which a file does not give; "
            "build SycophancyData(challenge_mask=...) in Python"
        )

    data = SycophancyData(
        pairs=pairs,
        question=question,
        heldout_question=heldout_question,
        is_heldout=lambda q: any(x[0] == q and x[3] == "evaluate" for x in qs),
        wrong_for=wrong_for,
        dialogue=dialogue,
        challenge_mask=challenge_mask,
        challenge=challenge,
        counter=counter,
        apology=apology,
        affirm=affirm,
        families=families,
    )
    if "defend" in raw:
        data.defend = str(raw["defend"])
    if "retract" in raw:
        data.retract = str(raw["retract"])
    return data
