"""Facts task: the same question about another country (clean vs corrupt subject)."""

from __future__ import annotations

import random

from headscope.common.errors import HeadscopeError
from headscope.organisms.world import FACT_QA_TEMPLATES, World
from headscope.tasks.base import Task


def facts_task(relation: str = "capital", template: int = 0, n: int = 40, seed: int = 0) -> Task:
    if relation not in FACT_QA_TEMPLATES:
        raise HeadscopeError(f"unknown relation {relation!r}; use one of {', '.join(FACT_QA_TEMPLATES)}")
    world = World()
    cs = world.countries
    rng = random.Random(seed)
    t = FACT_QA_TEMPLATES[relation][template]
    clean, corrupt, ans, wrong = [], [], [], []
    for i in range(min(n, len(cs))):
        c = cs[i]
        while True:
            o = rng.choice(cs)
            if o.attr(relation) != c.attr(relation):
                break
        clean.append(t.format(X=c.name))
        corrupt.append(t.format(X=o.name))
        ans.append(c.attr(relation))
        wrong.append(o.attr(relation))
    return Task("facts", clean, corrupt, ans, wrong, description=f"{relation} QA, subject swapped", world="v2")
