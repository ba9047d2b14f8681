"""SAC §3.3: model each selected head's activations as Gaussians and transport them.

On a task's fitting stimuli, each selected head's last-token ``z`` is split into a
*desired* and an *undesired* sample by the model's own choice (:func:`split_desired`):
the prompts whose desired first token wins (metric > 0), or — where fewer than
``min_desired`` prompts do so (the organism rarely corrects a false premise) — the top
third of prompts by the metric vs the bottom third. A Gaussian (Ledoit–Wolf covariance)
is fitted to each, and the closed-form OT map between them
(:func:`headscope.steering.gaussian_ot`; our closed form — the paper's formula is not
public) becomes the head's controller. The map is gated
(:func:`headscope.steering.fit_gate`): it acts only on inputs within the source's
leave-one-out Mahalanobis radius that are more likely under the source Gaussian than
under each off-target prompt group (:func:`background_groups`: the other tasks'
stimuli and :attr:`SacData.background <headscope.tasks.sac.SacData>`).

Where a task names :attr:`~headscope.tasks.sac.SacTask.source_groups`, the source is
only the undesired stimuli of those groups (safety: the harmful requests the model
answers; the target is every prompt it refuses). The same gate is available to every
method (issue #16): :func:`gate_controller` fits it on the activations an ITI or RepE
controller steers (:func:`headscope.steering.with_gate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.controls import by_length
from headscope.model import HeadModel
from headscope.results import Head
from headscope.steering import Controller, gaussian_controller, mean_shift_controller, with_gate
from headscope.tasks.sac import SacData, SacTask, Stimulus


@torch.no_grad()
def activations(model: HeadModel, prompts: Sequence[str], site: str = "z") -> Tensor:
    """Last-token activations of all layers: ``[n, layer, head, d_head]`` (z), ``[n, layer, d_model]`` (resid_pre)."""
    return _last_token(model, prompts, site)[0]


@torch.no_grad()
def collect(model: HeadModel, stimuli: Sequence[Stimulus], site: str = "z") -> tuple[Tensor, Float[Tensor, " n"]]:
    """Last-token activations (as :func:`activations`) and the metric per stimulus.

    The metric is ``logit(desired) − logit(undesired)`` at the last token.
    """
    return _last_token(model, [s.prompt for s in stimuli], site, stimuli)


def _last_token(
    model: HeadModel, prompts: Sequence[str], site: str, stimuli: Sequence[Stimulus] | None = None
) -> tuple[Tensor, Tensor]:
    if not prompts:
        raise HeadscopeError("no stimuli to fit on; check the task and split")
    acts: list[Tensor] = []
    rows: list[int] = []
    met = torch.zeros(len(prompts))
    for _, idx in by_length(prompts, model.tokenizer).items():
        logits, cache = model.run_with_heads(model.to_tokens([prompts[i] for i in idx]), sites=(site,))
        stack = torch.stack([cache.site(site)[L][:, -1] for L in range(model.n_layers)], 1).cpu()
        last = logits[:, -1].cpu()
        for j, i in enumerate(idx):
            acts.append(stack[j])
            rows.append(i)
            if stimuli is not None:
                s = stimuli[i]
                met[i] = last[j, model.token_id(s.desired)] - last[j, model.token_id(s.undesired)]
    order = torch.tensor(rows).argsort()
    return torch.stack(acts)[order], met


def split_desired(metric: Float[Tensor, " n"], min_desired: int = 8) -> tuple[Bool[Tensor, " n"], Bool[Tensor, " n"]]:
    """Boolean masks (desired, undesired): metric > 0 vs ≤ 0, or top vs bottom third when too few are > 0."""
    pos = metric > 0
    if int(pos.sum()) >= min_desired and int((~pos).sum()) >= 2:
        return pos, ~pos
    order = metric.argsort()
    n3 = max(2, len(metric) // 3)
    des = torch.zeros_like(pos)
    und = torch.zeros_like(pos)
    des[order[-n3:]] = True
    und[order[:n3]] = True
    return des, und


def samples(model: HeadModel, task: SacTask, site: str = "z") -> tuple[Tensor, Tensor, Tensor]:
    """Last-token activations of ``task``'s stimuli and the (desired, undesired) masks the controller uses.

    The split is :func:`split_desired` on the model's own metric; with
    :attr:`SacTask.source_groups <headscope.tasks.sac.SacTask>` the undesired (source)
    sample keeps only stimuli of those groups.
    """
    acts, met = collect(model, task.stimuli, site)
    des, und = split_desired(met)
    if task.source_groups:
        grp = torch.tensor([s.group in task.source_groups for s in task.stimuli])
        und = und & grp
    if int(und.sum()) < 3 or int(des.sum()) < 3:
        raise HeadscopeError(
            f"task {task.name!r}: {int(des.sum())} desired and {int(und.sum())} source stimuli; need at least 3 "
            "of each to fit Gaussians and a gate (give more fitting stimuli)"
        )
    return acts, des, und


def background_groups(data: SacData, task: str) -> dict[str, list[str]]:
    """Off-target prompt groups for ``task``'s gate: every other task's stimuli, then ``data.background``."""
    data.task(task)
    others = {t: [s.prompt for s in st.stimuli] for t, st in data.tasks.items() if t != task}
    return others | {k: list(v) for k, v in data.background.items()}


def gate_controller(
    model: HeadModel,
    task: SacTask,
    controller: Controller,
    slack: float = 1.0,
    background: dict[str, list[str]] | None = None,
) -> Controller:
    """``controller`` (any kind: ITI mean shifts on heads, RepE shifts on ``resid_pre``) with SAC's gate.

    The gate is fitted exactly as SAC's own (:func:`headscope.steering.layer_gate`): on
    the activations the controller steers (its heads' ``z``, or the layer's residual),
    the source sample of ``task`` (:func:`samples`), and ``background``'s prompt groups.
    """
    site = controller.site
    acts, _, und = samples(model, task, site)
    groups = [activations(model, ps, site) for ps in background.values()] if background else None

    def vecs(x: Tensor, L: int, e: dict) -> list[Tensor]:
        return [x[:, L, h] for h in e["heads"]] if site == "z" else [x[:, L]]

    src = {L: vecs(acts[und], L, e) for L, e in controller.layers.items()}
    bg = None
    if groups is not None:
        bg = {L: [list(v) for v in zip(*(vecs(g, L, e) for g in groups))] for L, e in controller.layers.items()}
    c = with_gate(controller, src, slack, bg)
    c.meta.update({"gate": slack, "gate_background": list(background or {})})
    return c


def fit(
    model: HeadModel,
    task: SacTask,
    heads: Sequence[Head],
    kind: str = "gaussian",
    alpha: float = 1.0,
    policy: str = "last",
    gate: float | None = 1.0,
    background: dict[str, list[str]] | None = None,
) -> Controller:
    """A controller for ``task`` on ``heads``: SAC's Gaussian OT map (``"gaussian"``) or ITI's mean shift (``"add"``).

    ``gate``: the in-distribution gate's slack (None = no gate); the same gate for both
    kinds. ``background``: the off-target prompt groups the gate also tests against
    (:func:`background_groups`); None = the radius test only.
    """
    if not heads:
        raise HeadscopeError(
            f"no heads given for task {task.name!r}; run `headscope sac identify` first or pass --heads"
        )
    if kind not in ("gaussian", "add"):
        raise HeadscopeError(f"unknown controller kind {kind!r}; use gaussian (SAC) or add (ITI mean shift)")
    acts, des, und = samples(model, task)
    src = {(L, h): acts[und, L, h] for L, h in heads}
    tgt = {(L, h): acts[des, L, h] for L, h in heads}
    if kind == "gaussian":
        bg: dict[Head, Sequence[Tensor]] | None = None
        if gate is not None and background:
            groups = [activations(model, ps) for ps in background.values()]
            bg = {(L, h): [g[:, L, h] for g in groups] for L, h in heads}
        c = gaussian_controller(task.name, src, tgt, alpha, policy, gate=gate, background=bg)
    else:
        c = mean_shift_controller(task.name, src, tgt, alpha, policy)
        if gate is not None:
            c = gate_controller(model, task, c, gate, background)
    c.meta.update(
        {
            "task": task.name,
            "n_desired": int(des.sum()),
            "n_undesired": int(und.sum()),
            "gate": gate,
            "model": getattr(model, "name", ""),
        }
    )
    return c


def fit_all(
    model: HeadModel,
    data: SacData,
    heads: dict[str, list[Head]],
    kind: str = "gaussian",
    alpha: float = 1.0,
    policy: str = "last",
    gate: float | None = 1.0,
    background: bool = True,
) -> dict[str, Controller]:
    """One controller per task of ``data`` on ``heads[task]``; ``background=False`` gates on the radius only."""
    return {
        t: fit(
            model,
            task,
            heads[t],
            kind,
            alpha,
            policy,
            gate,
            background_groups(data, t) if background and gate is not None else None,
        )
        for t, task in data.tasks.items()
    }
