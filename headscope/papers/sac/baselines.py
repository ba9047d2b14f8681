"""SAC §4.1 baselines: ITI probe heads, RepE / RepE-Mean / RepE-Merge, random heads.

- ITI (Li et al. 2023, §3.1): a logistic probe per head on desired vs undesired
  last-token ``z``; the top-``k`` heads by held-out probe accuracy, steered by ITI's mean
  shift (``fit(..., kind="add")``).
- RepE (Zou et al. 2023): per layer, the first principal component of paired
  differences (desired − undesired) of last-token ``resid_pre``, shifted by
  ``α · mean projection``; RepE-Mean averages several tasks' shift vectors, RepE-Merge
  fits one PCA on every task's differences together.
- Random heads: :func:`headscope.controls.random_heads` (the one random-head control of
  every paper), never a head any task selected, with SAC's own gated Gaussian maps.

Every baseline can carry SAC's gate (:func:`headscope.papers.sac.fit.gate_controller`;
for RepE-Mean / RepE-Merge the per-task RepE gates OR-ed,
:func:`headscope.steering.union_gate`), so gated and ungated rows compare like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.controls import random_heads
from headscope.model import HeadModel
from headscope.papers.sac.fit import samples
from headscope.results import Head
from headscope.steering import Controller, repe_controller, repe_direction
from headscope.tasks.sac import SacTask


def iti_heads(model: HeadModel, task: SacTask, k: int = 4, seed: int = 0) -> list[Head]:
    """ITI head selection: top-``k`` heads by the held-out accuracy of a per-head logistic probe.

    The probe separates desired vs undesired last-token ``z`` (:func:`~headscope.papers.sac.fit.samples`) of
    the task's identification stimuli (``task.identify_stimuli``, else its fitting stimuli); it is trained on a
    random half of them (``seed``) and scored on the other half.
    """
    from sklearn.linear_model import LogisticRegression

    if task.identify_stimuli:
        task = replace(task, stimuli=task.identify_stimuli)
    acts, des, und = samples(model, task)
    keep = des | und
    x, y = acts[keep], des[keep].long()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[: len(y) // 2], perm[len(y) // 2 :]
    acc = torch.zeros(model.n_layers, model.n_heads)
    for L in range(model.n_layers):
        for h in range(model.n_heads):
            if len(set(y[tr].tolist())) < 2:
                continue
            clf = LogisticRegression(max_iter=200).fit(x[tr, L, h].numpy(), y[tr].numpy())
            acc[L, h] = float(clf.score(x[va, L, h].numpy(), y[va].numpy()))
    flat = acc.flatten().argsort(descending=True)[:k]  # ties (equal accuracies) in torch's argsort order
    return [(int(i) // model.n_heads, int(i) % model.n_heads) for i in flat]


def random_control_heads(model: HeadModel, k: int, seed: int, selected: Iterable[Head]) -> list[Head]:
    """``k`` heads for the random-head control: :func:`headscope.controls.random_heads`, never a ``selected`` head."""
    return random_heads(model.n_layers, model.n_heads, k, seed, exclude=selected)


def repe_data(
    model: HeadModel, task: SacTask, layers: Sequence[int], seed: int = 0
) -> dict[int, Float[Tensor, " n d_model"]]:
    """Paired differences (desired − undesired, random pairing) of last-token resid_pre, per layer ``[n, d_model]``."""
    acts, des, und = samples(model, task, site="resid_pre")
    d_i, u_i = des.nonzero().flatten(), und.nonzero().flatten()
    rng = torch.Generator().manual_seed(seed)
    n = max(len(d_i), len(u_i))
    a = d_i[torch.randint(len(d_i), (n,), generator=rng)]
    b = u_i[torch.randint(len(u_i), (n,), generator=rng)]
    return {L: acts[a, L] - acts[b, L] for L in layers}


def repe_fit(
    name: str, diffs: dict[int, Float[Tensor, " n d_model"]], alpha: float = 1.0, policy: str = "last"
) -> Controller:
    """RepE: per layer, PCA of the paired differences; shift ``α·s·u`` with ``s`` the mean projection on ``u``."""
    dirs, scales = {}, {}
    for L, d in diffs.items():
        u = repe_direction(d)
        dirs[L], scales[L] = u, float((d.double() @ u).mean())
    return repe_controller(name, dirs, scales, alpha, policy)


def repe_merge(
    name: str, diffs: Sequence[dict[int, Float[Tensor, " n d_model"]]], alpha: float = 1.0, policy: str = "last"
) -> Controller:
    """RepE-Merge: one RepE fit on every task's paired differences together (per layer)."""
    layers = list(diffs[0])
    return repe_fit(name, {L: torch.cat([d[L] for d in diffs]) for L in layers}, alpha, policy)


def repe_mean(name: str, controllers: Sequence[Controller], alpha: float = 1.0) -> Controller:
    """RepE-Mean: the per-layer average of several RepE controllers' shift vectors (SAC §4.1)."""
    layers = sorted(set.intersection(*(set(c.layers) for c in controllers)))
    dirs = {L: torch.stack([c.layers[L]["vec"][0].double() for c in controllers]).mean(0) for L in layers}
    return repe_controller(
        name,
        {L: v / v.norm() for L, v in dirs.items()},
        {L: float(v.norm()) for L, v in dirs.items()},
        alpha,
        controllers[0].policy,
    )


__all__ = ["iti_heads", "random_control_heads", "repe_data", "repe_fit", "repe_mean", "repe_merge"]
