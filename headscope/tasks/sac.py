"""The data Sparse Activation Control (:mod:`headscope.papers.sac`) runs on, as plain objects.

SAC needs, per controlled behaviour, stimulus *pairs* for identification (experimental
vs reference prompt of equal token length, with the desired and undesired first
response token) and *stimuli* for fitting (prompts with their desired/undesired token);
and, for the whole run, the off-target prompt groups its gate tests against, held-out
texts for the next-token KL, and the measures that score a steered model. All of that is
a :class:`SacData`; the paper package only reads its fields, so the same pipeline runs
on a user's own model and data (build the objects from your own prompts and pass a
``measures`` function of your own).

:func:`organism_sac` builds them for the bundled ``llama`` organism: the safety,
advfact and preference tasks (:mod:`headscope.tasks.safety`, ``advfact``,
``preference``), arithmetic and fact prompts as gate backgrounds, the organism's
held-out text and its exact-match chat rates (:mod:`headscope.tasks.suite`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from headscope.common.errors import HeadscopeError
from headscope.model import HeadModel, Patch
from headscope.organisms.world import OPERATORS
from headscope.tasks import suite
from headscope.tasks.advfact import advfact_stimuli, advfact_task
from headscope.tasks.base import Task
from headscope.tasks.preference import preference_stimuli, preference_task
from headscope.tasks.safety import safety_stimuli, safety_task

Measures = Callable[[HeadModel, Sequence[Patch]], dict[str, float]]


@dataclass(frozen=True)
class Stimulus:
    """One fitting prompt: the model's first response token should be ``desired``, not ``undesired``.

    Both are single tokens of the model; ``group`` is a free label (e.g. look-alike vs
    harmful request).
    """

    prompt: str
    desired: str
    undesired: str
    group: str = ""


@dataclass
class SacTask:
    """One behaviour SAC controls.

    ``pairs``: identification pairs (``clean`` = experimental prompt, ``corrupt`` =
    reference prompt of equal token length, ``answers`` = desired and ``wrong`` =
    undesired first token). ``stimuli``: the fitting prompts, split by the model's own
    choice into desired/undesired samples. ``measure``: the key of the evaluation row
    (from :attr:`SacData.measures`) that scores this behaviour.
    """

    name: str
    pairs: Task
    stimuli: list[Stimulus]
    measure: str

    def __post_init__(self) -> None:
        if not self.stimuli:
            raise HeadscopeError(f"SAC task {self.name!r} has no fitting stimuli; give at least one")


def _no_measures(model: HeadModel, patches: Sequence[Patch]) -> dict[str, float]:
    raise HeadscopeError("this SAC data has no measures; give SacData(measures=...) to evaluate")


@dataclass
class SacData:
    """Everything one SAC run reads.

    ``tasks``: the controlled behaviours by name. ``background``: off-target prompt
    groups for the gate, besides the other tasks' stimuli (e.g. general-ability
    prompts; never the held-out items the evaluation scores). ``kl_texts``: held-out
    texts for the next-token KL to the unsteered model. ``measures(model, patches)``:
    the evaluation row of one condition (every task's :attr:`SacTask.measure` and any
    general-ability scores). ``columns``: the measures a results table shows.
    """

    tasks: dict[str, SacTask]
    background: dict[str, list[str]] = field(default_factory=dict)
    kl_texts: list[str] = field(default_factory=list)
    measures: Measures = _no_measures
    columns: tuple[str, ...] = ()

    def select(self, names: Sequence[str]) -> SacData:
        """The same data restricted to the tasks ``names`` (in that order); unknown names are an error."""
        bad = [t for t in names if t not in self.tasks]
        if bad:
            raise HeadscopeError(f"unknown SAC task(s) {bad}; use any of {', '.join(self.tasks)}")
        return replace(self, tasks={t: self.tasks[t] for t in names})

    def task(self, name: str) -> SacTask:
        return self.select([name]).tasks[name]


# ---------------------------------------------------------------------------------------
# The bundled organism

SAC_TASK_NAMES = ("safety", "advfact", "preference")
TABLE_COLUMNS = (
    "lookalike_not_refusal",
    "premise_correction",
    "preference_refusal",
    "harmful_refusal",
    "arithmetic",
    "facts",
)
_BUILD = {
    "safety": (safety_task, safety_stimuli, "lookalike_not_refusal"),
    "advfact": (advfact_task, advfact_stimuli, "premise_correction"),
    "preference": (preference_task, preference_stimuli, "preference_refusal"),
}


def organism_task(name: str, split: str = "train") -> SacTask:
    """One of the organism's SAC tasks (``safety``, ``advfact``, ``preference``) on ``split``."""
    if name not in _BUILD:
        raise HeadscopeError(f"unknown SAC task(s) {[name]}; use any of {', '.join(SAC_TASK_NAMES)}")
    pairs, stimuli, measure = _BUILD[name]
    return SacTask(name, pairs(split=split), [Stimulus(**d) for d in stimuli(split)], measure)


def organism_background(split: str = "train", every: int = 8) -> dict[str, list[str]]:
    """Every ``every``-th arithmetic (all operators) and fact-QA prompt of ``split``."""
    w = suite.world()
    return {
        "arithmetic": [it["prompt"] for op in OPERATORS for it in w.arith_items(op, split)[::every]],
        "facts": [it["prompt"] for it in w.fact_items(split)[::every]],
    }


def organism_measures(model: HeadModel, patches: Sequence[Patch]) -> dict[str, float]:
    """The organism's held-out exact-match rates under ``patches``.

    Look-alike not-refusal, false-premise correction, preference refusal, harmful
    refusal, true-premise acceptance, arithmetic (mean over operators) and facts accuracy.
    """
    patches = list(patches)
    r = suite.chat_rates(model, "heldout", patches)
    ar = suite.arithmetic_accuracy(model, "heldout", patches=patches)
    return {
        "lookalike_not_refusal": 1 - r["lookalike_refusal"],
        "premise_correction": r["premise_correction"],
        "preference_refusal": r["preference_refusal"],
        "harmful_refusal": r["harmful_refusal"],
        "true_premise_acceptance": r["true_premise_acceptance"],
        "arithmetic": sum(ar.values()) / len(ar),
        "facts": suite.facts_accuracy(model, "heldout", patches),
    }


def organism_sac(
    tasks: Sequence[str] = SAC_TASK_NAMES, split: str = "train", every: int = 8, kl_texts: int = 120
) -> SacData:
    """The bundled ``llama`` organism's SAC data: ``tasks`` fitted on ``split``, scored on held-out items.

    Gate backgrounds: :func:`organism_background` (``split``, every ``every``-th
    prompt); KL texts: ``kl_texts`` documents of held-out organism text.
    """
    bad = [t for t in tasks if t not in _BUILD]
    if bad:
        raise HeadscopeError(f"unknown SAC task(s) {bad}; use any of {', '.join(SAC_TASK_NAMES)}")
    return SacData(
        {t: organism_task(t, split) for t in tasks},
        organism_background(split, every),
        suite.heldout_text(kl_texts),
        organism_measures,
        TABLE_COLUMNS,
    )


__all__ = [
    "SAC_TASK_NAMES",
    "TABLE_COLUMNS",
    "Measures",
    "SacData",
    "SacTask",
    "Stimulus",
    "organism_background",
    "organism_measures",
    "organism_sac",
    "organism_task",
]
