"""Prompt sets with clean/corrupt pairs, answers and metrics.

``get_task(name, **kwargs)`` returns a :class:`Task` (text pairs, model-independent);
``task.prepare(model)`` tokenizes it into a :class:`TaskBatch` with the metric.
"""

from __future__ import annotations

from collections.abc import Callable

from headscope.common.errors import HeadscopeError
from headscope.tasks.advfact import advfact_task
from headscope.tasks.arithmetic import arithmetic_task
from headscope.tasks.arithmetic_v3 import arithmetic_v3_task
from headscope.tasks.base import Task, TaskBatch
from headscope.tasks.facts import facts_task
from headscope.tasks.induction import induction_task
from headscope.tasks.preference import preference_task
from headscope.tasks.safety import safety_task
from headscope.tasks.sycophancy import sycophancy_task

TASKS: dict[str, Callable[..., Task]] = {
    "arithmetic": arithmetic_task,
    "arithmetic_v3": arithmetic_v3_task,
    "induction": induction_task,
    "facts": facts_task,
    "safety": safety_task,
    "advfact": advfact_task,
    "preference": preference_task,
}
TASKS["sycophancy"] = sycophancy_task


def get_task(name: str, **kwargs) -> Task:
    """The task ``name`` (a key of :data:`TASKS`) built with ``kwargs`` (e.g. ``n``, ``seed``, ``split``).

    A :class:`Task` holds text only (clean/corrupt prompts, answers, contrasts);
    ``task.prepare(model)`` tokenizes it for one model into a :class:`TaskBatch` with the
    metric. Unknown names raise a HeadscopeError listing the known ones. Example::

        batch = get_task("induction", n=8).prepare(model)
        result = patch_task(model, batch)
    """
    if name not in TASKS:
        raise HeadscopeError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "TASKS",
    "Task",
    "TaskBatch",
    "arithmetic_task",
    "arithmetic_v3_task",
    "facts_task",
    "get_task",
    "induction_task",
]
