"""A task: clean/corrupt prompt pairs, answer and wrong-answer tokens, and its metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.metrics import logit_diff


@dataclass
class Task:
    """Prompt pairs of one task, as text (model-independent).

    ``answers[i]`` is what the model should say after ``clean[i]``; ``wrong[i]`` is the
    contrasting answer (what the corruption points to). The default metric is the mean
    logit difference ``logit(answer) − logit(wrong)`` at the last position.
    """

    name: str
    clean: list[str]
    corrupt: list[str]
    answers: list[str]
    wrong: list[str]
    meta: list[dict] = field(default_factory=list)
    description: str = ""
    world: str | None = None
    """``"v2"`` / ``"v3"``: the organism world whose vocabulary the prompts are written in;
    :meth:`prepare` refuses a bundled organism of the other world (None: any model)."""

    def __post_init__(self) -> None:
        n = len(self.clean)
        if n == 0:
            raise HeadscopeError(f"task {self.name!r} has an empty prompt set; ask for at least one prompt")
        if not (len(self.corrupt) == len(self.answers) == len(self.wrong) == n):
            raise HeadscopeError(
                f"task {self.name!r}: clean ({n}), corrupt ({len(self.corrupt)}), answers ({len(self.answers)}) "
                f"and wrong answers ({len(self.wrong)}) must have the same length"
            )

    def __len__(self) -> int:
        return len(self.clean)

    def to_dataset(self):
        """The pairs as a ``datasets.Dataset`` (columns clean, corrupt, answer, wrong, + meta)."""
        from datasets import Dataset

        cols = {"clean": self.clean, "corrupt": self.corrupt, "answer": self.answers, "wrong": self.wrong}
        if self.meta:
            for k in self.meta[0]:
                cols[k] = [m.get(k) for m in self.meta]
        return Dataset.from_dict(cols)

    def prepare(self, model, answer_tokens: str = "single") -> TaskBatch:
        """Tokenize for ``model``; checks equal clean/corrupt lengths and the answers.

        ``answer_tokens``: ``"single"`` (default: every answer must be one token) or
        ``"first"`` (multi-token answers are scored by their first token — the logit
        difference of the first tokens of ``answer`` and ``wrong``, which must differ).
        Metrics that need every answer token (summed log-probs) are not available for
        patching sweeps: a patched run reads one next-token distribution.
        """
        if answer_tokens not in ("single", "first"):
            raise HeadscopeError(f"answer_tokens must be 'single' or 'first', got {answer_tokens!r}")
        check_world(self.name, self.world, model)
        clean = model.to_tokens(self.clean)
        corrupt = model.to_tokens(self.corrupt)
        if clean.shape != corrupt.shape:
            raise HeadscopeError(
                f"task {self.name!r}: clean prompts have {clean.shape[1]} tokens but corrupt prompts have "
                f"{corrupt.shape[1]}; a clean/corrupt pair must tokenize to the same length"
            )
        if answer_tokens == "first":
            ans = torch.tensor([_first_token(model, a) for a in self.answers])
            wrong = torch.tensor([_first_token(model, w) for w in self.wrong])
        else:
            ans = torch.tensor([_single_token(model, a) for a in self.answers])
            wrong = torch.tensor([_single_token(model, w) for w in self.wrong])
        if bool((ans == wrong).any()):
            i = int((ans == wrong).nonzero()[0])
            what = "first token" if answer_tokens == "first" else "answer"
            raise HeadscopeError(
                f"task {self.name!r}: prompt {i} has the same {what} for the answer {self.answers[i]!r} and the wrong "
                f"answer {self.wrong[i]!r}; the metric compares them, so they must differ"
            )
        return TaskBatch(self.name, clean, corrupt, ans, wrong, model.to_str_tokens(clean[0]))


#: v2 task name -> the task of the same kind on organism v3 (used by the CLI and in errors).
V3_TASK_NAMES = {"arithmetic": "arithmetic_v3"}


def check_world(task: str, world: str | None, model) -> None:
    """HeadscopeError when ``model`` is a bundled organism of another world than the task's.

    Organism v3's byte-level BPE tokenizes any text, so a v2 prompt set would run on it
    without an error and give a meaningless number; the other direction fails on unknown
    words. The organism is recognised by its tokenizer's folder (its ``organism.json``)."""
    if world is None:
        return
    from headscope.paths import organism_generation

    src = getattr(getattr(model, "tokenizer", None), "name_or_path", "") or ""
    gen = organism_generation(src) if src else None
    if gen is None or gen == world:
        return
    if world == "v2":
        alt = V3_TASK_NAMES.get(task)
        fix = f"use task {alt!r} for organism v3, or " if alt else ""
        raise HeadscopeError(
            f"task {task!r} is written in organism v2's vocabulary but the model is organism v3; {fix}load "
            "--model llama-v2 (`llama` is organism v3 since 2026-12-03)"
        )
    raise HeadscopeError(f"task {task!r} is written for organism v3 but the model is organism v2; load --model llama")


def _single_token(model, word: str) -> int:
    try:
        return model.token_id(word)
    except HeadscopeError as e:
        raise HeadscopeError(f"{e}; or score multi-token answers by their first token (--answer-tokens first)") from e


def _first_token(model, word: str) -> int:
    """The first token of ``word`` as the model would continue with it (no special tokens)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise HeadscopeError("this model has no tokenizer; give answers as token ids")
    ids = tok(word, add_special_tokens=False)["input_ids"]
    unk = getattr(tok, "unk_token_id", None)
    if not ids or (unk is not None and ids[0] == unk and not getattr(model, "allow_unk", False)):
        raise HeadscopeError(f"answer {word!r} does not start with a token of this model's vocabulary")
    return int(ids[0])


@dataclass
class TaskBatch:
    """A task tokenized for one model."""

    name: str
    clean: Tensor
    corrupt: Tensor
    answer: Tensor
    wrong: Tensor
    str_tokens: list[str]

    def metric(self, logits: Tensor) -> Tensor:
        """Mean logit difference (answer − wrong) at the last position; ``logits`` rows may be
        a whole multiple of the batch (stacked patched runs), each block scored separately."""
        return self.metric_fn()(logits)

    def metric_fn(self) -> Callable[[Tensor], Tensor]:
        ans, wrong = self.answer, self.wrong

        def fn(logits: Tensor) -> Tensor:
            return logit_diff(logits, ans.to(logits.device), wrong.to(logits.device))

        fn.positions = (-1,)  # type: ignore[attr-defined]  # read by patching: only the last position is unembedded
        return fn


PAIR_COLUMNS = ("clean", "corrupt", "answer", "wrong")


def load_pairs(path: str) -> Task:
    """A Task from a file of clean/corrupt pairs with columns ``clean``, ``corrupt``, ``answer``, ``wrong``.

    Formats (docs/headscope.md, "Your own prompts"): JSON Lines (``.jsonl``, one object per
    line), CSV (``.csv``, a header row naming the columns), or a ``datasets`` dataset saved
    with ``save_to_disk`` (a folder). Extra columns are kept as the task's ``meta``.
    """
    from pathlib import Path

    p = Path(path)
    rows = read_table(path, PAIR_COLUMNS)
    return Task(
        p.stem,
        [str(r["clean"]) for r in rows],
        [str(r["corrupt"]) for r in rows],
        [str(r["answer"]) for r in rows],
        [str(r["wrong"]) for r in rows],
        meta=[{k: v for k, v in r.items() if k not in PAIR_COLUMNS} for r in rows],
        description=f"pairs from {p.name}",
    )


def read_table(path, required: Sequence[str]) -> list[dict]:
    """Rows (dicts) of a JSON Lines file, a CSV file (header row) or a ``datasets`` folder
    (``save_to_disk``), each holding every column of ``required``; at least one row."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise HeadscopeError(f"prompt file {path} does not exist")
    if p.is_dir():
        rows = _rows_from_dataset(p, required)
    elif p.suffix.lower() == ".csv":
        rows = _rows_from_csv(p, required)
    else:
        rows = _rows_from_jsonl(p, required)
    if not rows:
        raise HeadscopeError(f"{path} holds no rows; write one per line (JSON Lines) or row (CSV)")
    return rows


def _check_columns(where: str, keys, required: Sequence[str]) -> None:
    missing = [k for k in required if k not in keys]
    if missing:
        raise HeadscopeError(f"{where} lacks {', '.join(missing)}; each row needs {', '.join(required)}")


def _rows_from_jsonl(p, required: Sequence[str]) -> list[dict]:
    import json

    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise HeadscopeError(f"{p}:{i} is not valid JSON ({e.msg}); write one object per line") from e
        if not isinstance(d, dict):
            raise HeadscopeError(f"{p}:{i} is not a JSON object; write one object per line")
        _check_columns(f"{p}:{i}", d, required)
        rows.append(d)
    return rows


def _rows_from_csv(p, required: Sequence[str]) -> list[dict]:
    import csv

    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        _check_columns(f"{p} (header row)", reader.fieldnames or [], required)
        return [dict(r) for r in reader]


def _rows_from_dataset(p, required: Sequence[str]) -> list[dict]:
    try:
        from datasets import load_from_disk
    except ImportError as e:  # pragma: no cover - a core dependency
        raise HeadscopeError("reading a dataset folder needs the `datasets` package") from e
    try:
        ds = load_from_disk(str(p))
    except (FileNotFoundError, ValueError) as e:
        raise HeadscopeError(
            f"{p} is a folder but not a dataset saved with datasets' save_to_disk; give a .jsonl/.csv file or such a "
            "folder"
        ) from e
    if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # a DatasetDict: take its only split
        splits = list(ds.keys())
        if len(splits) != 1:
            raise HeadscopeError(f"{p} holds the splits {splits}; save the one to analyse on its own")
        ds = ds[splits[0]]
    _check_columns(str(p), ds.column_names, required)
    return [dict(r) for r in ds]
