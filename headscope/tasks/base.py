"""A task: clean/corrupt prompt pairs, answer and wrong-answer tokens, and its metric."""

from __future__ import annotations

from collections.abc import Callable
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

    def prepare(self, model) -> TaskBatch:
        """Tokenize for ``model``; checks equal clean/corrupt lengths and single-token answers."""
        clean = model.to_tokens(self.clean)
        corrupt = model.to_tokens(self.corrupt)
        if clean.shape != corrupt.shape:
            raise HeadscopeError(
                f"task {self.name!r}: clean prompts have {clean.shape[1]} tokens but corrupt prompts have "
                f"{corrupt.shape[1]}; a clean/corrupt pair must tokenize to the same length"
            )
        ans = torch.tensor([model.token_id(a) for a in self.answers])
        wrong = torch.tensor([model.token_id(w) for w in self.wrong])
        if bool((ans == wrong).any()):
            i = int((ans == wrong).nonzero()[0])
            raise HeadscopeError(
                f"task {self.name!r}: prompt {i} has the same answer and wrong answer {self.answers[i]!r}"
            )
        return TaskBatch(self.name, clean, corrupt, ans, wrong, model.to_str_tokens(clean[0]))


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

        return fn


def load_pairs(path: str) -> Task:
    """A Task from a JSON Lines file with keys ``clean``, ``corrupt``, ``answer``, ``wrong``."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise HeadscopeError(f"prompt file {path} does not exist")
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise HeadscopeError(f"{path}:{i} is not valid JSON ({e.msg}); write one object per line") from e
        missing = [k for k in ("clean", "corrupt", "answer", "wrong") if k not in d]
        if missing:
            raise HeadscopeError(
                f"{path}:{i} lacks {', '.join(missing)}; each line needs clean, corrupt, answer and wrong"
            )
        rows.append(d)
    return Task(
        p.stem,
        [r["clean"] for r in rows],
        [r["corrupt"] for r in rows],
        [str(r["answer"]) for r in rows],
        [str(r["wrong"]) for r in rows],
        description=f"pairs from {p.name}",
    )
