"""Sparse Activation Control (SAC; Xiao et al., "Enhancing Multiple Dimensions of
Trustworthiness in LLMs via Sparse Activation Control", NeurIPS 2024).

Pipeline (paper §3):

1. **Identify** (§3.2): per task, path patching (:func:`headscope.patching.path_patch_heads`,
   sender → logits) on the task's stimulus pairs (experimental = clean, reference =
   corrupt) with the task metric ``logit(desired) − logit(undesired)`` at the last token;
   the top-k heads by |score| are the task's head set. Overlap between tasks: Jaccard.
2. **Fit** (§3.3): on training stimuli, each selected head's last-token ``z`` is split into
   a *desired* and an *undesired* sample by the model's own choice: the prompts whose
   greedy first token is the desired one (metric > 0), or — where fewer than
   ``min_desired`` prompts do so (the organism rarely corrects a false premise) —
   the top third of prompts by the metric vs the bottom third. A Gaussian (Ledoit–Wolf
   covariance) is fitted to each, and the closed-form OT map between them
   (:func:`headscope.steering.gaussian_ot`; our closed form — the paper's formula is not
   public) becomes the head's controller. The map is gated
   (:func:`headscope.steering.fit_gate`): it acts only on inputs within the source's
   leave-one-out Mahalanobis radius that are more likely under the source Gaussian than
   under each off-target prompt group (:func:`background_prompts`).
3. **Apply**: controllers of several tasks compose (each acts on its own heads) and run
   during generation on either backend.
4. **Evaluate** (§4): TrustLLM-style exact-match rates (look-alike not-refusal,
   false-premise correction, preference refusal), general ability (held-out arithmetic and
   facts accuracy, next-token KL to the unsteered model), for SAC and the baselines
   RepE / RepE-Mean / RepE-Merge (layer-level, §4.1), ITI top-K probe heads and random
   heads.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.model import Patch
from headscope.results import HeadResult
from headscope.steering import (
    Controller,
    compose,
    gaussian_controller,
    mean_shift_controller,
    repe_controller,
    repe_direction,
)
from headscope.tasks.advfact import advfact_stimuli, advfact_task
from headscope.tasks.preference import preference_stimuli, preference_task
from headscope.tasks.safety import safety_stimuli, safety_task

SAC_TASKS = {
    "safety": (safety_task, safety_stimuli),
    "advfact": (advfact_task, advfact_stimuli),
    "preference": (preference_task, preference_stimuli),
}


def _task_names(tasks: Sequence[str]) -> list[str]:
    bad = [t for t in tasks if t not in SAC_TASKS]
    if bad:
        raise HeadscopeError(f"unknown SAC task(s) {bad}; use any of {', '.join(SAC_TASKS)}")
    return list(tasks)


# ---------------------------------------------------------------------------------------
# 1. Identify


def jaccard(a: Sequence, b: Sequence) -> float:
    """|A ∩ B| / |A ∪ B| (1 for two empty sets)."""
    sa, sb = set(map(tuple, a)), set(map(tuple, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@dataclass
class Identification:
    """Per-task path-patching maps, top heads and the pairwise Jaccard overlap."""

    results: dict[str, HeadResult]
    heads: dict[str, list[tuple[int, int]]]
    jaccard: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "heads": {t: [list(h) for h in hs] for t, hs in self.heads.items()},
            "jaccard": self.jaccard,
            "metrics": {
                t: {k: r.info.get(k) for k in ("metric_clean", "metric_corrupt")} for t, r in self.results.items()
            },
        }

    def save(self, out: str | Path) -> Path:
        from headscope.common.plotting import save_figure
        from headscope.viz import side_by_side

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "identify.json").write_text(json.dumps(self.to_dict(), indent=1))
        for t, r in self.results.items():
            r.save(d / f"path_{t}.json")
        save_figure(side_by_side(self.results, title="SAC path patching per task"), d / "identify_heads.html")
        return d


def identify(
    model,
    tasks: Sequence[str] = tuple(SAC_TASKS),
    k: int = 4,
    split: str = "train",
    n: int | None = 24,
    show_progress: bool = True,
) -> Identification:
    """Path patching per task on its stimulus pairs; top-``k`` heads by |score|; Jaccard between tasks."""
    if k < 1:
        raise HeadscopeError(f"k must be >= 1 heads per task; got {k}")
    results, heads = {}, {}
    for t in _task_names(tasks):
        task = SAC_TASKS[t][0](split=split, n=n)
        r = _path_by_length(model, task, show_progress)
        r.info.update({"task": t, "title": f"{t}: path patching to logits"})
        results[t] = r
        heads[t] = [(L, h) for L, h, _ in r.top(k, by="abs")]
    names = list(heads)
    jac = {f"{a}|{b}": jaccard(heads[a], heads[b]) for i, a in enumerate(names) for b in names[i + 1 :]}
    return Identification(results, heads, jac)


def _path_by_length(model, task, show_progress: bool) -> HeadResult:
    """Path patching on one task (its pairs share one token length per group; groups are averaged by size)."""
    from headscope.patching import path_patch_heads

    lens = [len(model.tokenizer(c)["input_ids"]) for c in task.clean]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lens):
        groups[n].append(i)
    answer = torch.tensor([model.token_id(a) for a in task.answers])
    wrong_all = torch.tensor([model.token_id(w) for w in task.wrong])
    total, weight, info = None, 0, {}
    for _, idx in groups.items():
        clean = model.to_tokens([task.clean[i] for i in idx])
        corrupt = model.to_tokens([task.corrupt[i] for i in idx])
        ans, wrong = answer[idx], wrong_all[idx]

        def metric(lg: Tensor, ans=ans, wrong=wrong) -> Tensor:
            last = lg[:, -1]
            a, w = ans.to(lg.device), wrong.to(lg.device)
            return (last.gather(-1, a[:, None]) - last.gather(-1, w[:, None])).mean()

        r = path_patch_heads(model, clean, corrupt, metric, show_progress=show_progress)
        total = r.scores * len(idx) if total is None else total + r.scores * len(idx)
        for key in ("metric_clean", "metric_corrupt"):
            info[key] = info.get(key, 0.0) + float(r.info.get(key, 0.0)) * len(idx)
        weight += len(idx)
        info.update({k: v for k, v in r.info.items() if k not in ("metric_clean", "metric_corrupt")})
    info = {k: (v / weight if k in ("metric_clean", "metric_corrupt") else v) for k, v in info.items()}
    return HeadResult(total / weight, ("layer", "head"), {}, info)


# ---------------------------------------------------------------------------------------
# 2. Activations and fitting


@torch.no_grad()
def collect(model, stimuli: Sequence[dict], site: str = "z") -> tuple[Tensor, Tensor]:
    """Last-token activations of every layer and the task metric per stimulus.

    Returns ``acts`` (``[n, layer, head, d_head]`` for z, ``[n, layer, d_model]`` for
    resid_pre) and ``metric [n]`` = logit(desired) − logit(undesired) at the last token.
    """
    if not stimuli:
        raise HeadscopeError("no stimuli to fit on; check the task and split")
    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(stimuli):
        groups[len(model.tokenizer(s["prompt"])["input_ids"])].append(i)
    acts: list[Tensor | None] = [None] * len(stimuli)
    met = torch.zeros(len(stimuli))
    for _, idx in groups.items():
        logits, cache = model.run_with_heads(model.to_tokens([stimuli[i]["prompt"] for i in idx]), sites=(site,))
        stack = torch.stack([cache.site(site)[L][:, -1] for L in range(model.n_layers)], 1).cpu()
        last = logits[:, -1].cpu()
        for j, i in enumerate(idx):
            acts[i] = stack[j]
            met[i] = last[j, model.token_id(stimuli[i]["desired"])] - last[j, model.token_id(stimuli[i]["undesired"])]
    return torch.stack(acts), met  # type: ignore[arg-type]


def split_desired(metric: Tensor, min_desired: int = 8) -> tuple[Tensor, Tensor]:
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


def background_prompts(task: str, split: str = "train", every: int = 8) -> dict[str, list[dict]]:
    """Off-target prompt groups for ``task``'s gate: each other SAC task's stimuli, and
    every ``every``-th arithmetic and fact-QA prompt of ``split`` (never the held-out
    items the evaluation scores, when ``split="train"``)."""
    from headscope.organisms.world import OPERATORS, World

    w = World()
    out = {t: [dict(s) for s in stim(split)] for t, (_, stim) in SAC_TASKS.items() if t != task}
    gen = {
        "arithmetic": [it["prompt"] for op in OPERATORS for it in w.arith_items(op, split)[::every]],
        "facts": [it["prompt"] for it in w.fact_items(split)[::every]],
    }
    return out | {k: [dict(prompt=p, desired="I", undesired="I") for p in ps] for k, ps in gen.items()}


def fit(
    model,
    task: str,
    heads: Sequence[tuple[int, int]],
    kind: str = "gaussian",
    alpha: float = 1.0,
    policy: str = "last",
    split: str = "train",
    gate: float | None = 1.0,
    background: bool = True,
) -> Controller:
    """A SAC controller for ``task`` on ``heads``: Gaussian OT map (``kind="gaussian"``) or ITI mean shift (``"add"``).

    ``gate`` / ``background``: the in-distribution gate of the Gaussian map (slack; None =
    none) and whether it also tests source vs off-target prompts (:func:`background_prompts`).
    """
    (t,) = _task_names([task])
    if not heads:
        raise HeadscopeError(f"no heads given for task {task!r}; run `headscope sac identify` first or pass --heads")
    stim = SAC_TASKS[t][1](split)
    acts, met = collect(model, stim)
    des, und = split_desired(met)
    src = {(L, h): acts[und, L, h] for L, h in heads}
    tgt = {(L, h): acts[des, L, h] for L, h in heads}
    build = {"gaussian": gaussian_controller, "add": mean_shift_controller}
    if kind not in build:
        raise HeadscopeError(f"unknown controller kind {kind!r}; use gaussian (SAC) or add (ITI mean shift)")
    if kind == "gaussian":
        bg = None
        if gate is not None and background:
            groups = [collect(model, ps)[0] for ps in background_prompts(t, split).values()]
            bg = {(L, h): [g[:, L, h] for g in groups] for L, h in heads}
        c = gaussian_controller(t, src, tgt, alpha, policy, gate=gate, background=bg)
    else:
        c = mean_shift_controller(t, src, tgt, alpha, policy)
    c.meta.update(
        {
            "task": t,
            "n_desired": int(des.sum()),
            "n_undesired": int(und.sum()),
            "split": split,
            "model": getattr(model, "name", ""),
        }
    )
    return c


def iti_heads(model, task: str, k: int = 4, split: str = "train", seed: int = 0) -> list[tuple[int, int]]:
    """ITI head selection (Li et al. 2023, §3.1): a logistic probe per head (desired vs undesired
    last-token z), top-``k`` by accuracy on a held-out half of the training stimuli."""
    from sklearn.linear_model import LogisticRegression

    acts, met = collect(model, SAC_TASKS[task][1](split))
    des, und = split_desired(met)
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
    flat = acc.flatten().argsort(descending=True)[:k]
    return [(int(i) // model.n_heads, int(i) % model.n_heads) for i in flat]


def random_heads(model, k: int, seed: int = 0, exclude: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pool = [(L, h) for L in range(model.n_layers) for h in range(model.n_heads) if (L, h) not in set(exclude)]
    return rng.sample(pool, k)


# -- RepE baselines (layer-level, resid_pre) -------------------------------------------


def repe_data(model, task: str, layers: Sequence[int], split: str = "train", seed: int = 0) -> dict[int, Tensor]:
    """Paired differences (desired − undesired, random pairing) of last-token resid_pre, per layer ``[n, d_model]``."""
    acts, met = collect(model, SAC_TASKS[task][1](split), site="resid_pre")
    des, und = split_desired(met)
    d_i, u_i = des.nonzero().flatten(), und.nonzero().flatten()
    rng = torch.Generator().manual_seed(seed)
    n = max(len(d_i), len(u_i))
    a = d_i[torch.randint(len(d_i), (n,), generator=rng)]
    b = u_i[torch.randint(len(u_i), (n,), generator=rng)]
    return {L: acts[a, L] - acts[b, L] for L in layers}


def repe_fit(name: str, diffs: dict[int, Tensor], alpha: float = 1.0, policy: str = "last") -> Controller:
    """RepE (Zou et al. 2023): per layer, PCA of the paired differences; shift ``α·s·u`` with
    ``s`` = the mean projection of the differences on ``u`` (the desired − undesired gap)."""
    dirs, scales = {}, {}
    for L, d in diffs.items():
        u = repe_direction(d)
        dirs[L], scales[L] = u, float((d.double() @ u).mean())
    return repe_controller(name, dirs, scales, alpha, policy)


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


# ---------------------------------------------------------------------------------------
# 3/4. Apply and evaluate


@torch.no_grad()
def next_token_kl(model, texts: Sequence[str], patches: Sequence[Patch]) -> float:
    """Mean KL(unsteered ‖ steered) of the next-token distribution after each text."""
    groups: dict[int, list[str]] = defaultdict(list)
    for t in texts:
        groups[len(model.tokenizer(t)["input_ids"])].append(t)
    tot, n = 0.0, 0
    for _, ts in groups.items():
        toks = model.to_tokens(ts)
        p = torch.log_softmax(model.logits(toks)[:, -1].float(), -1)
        q = torch.log_softmax(model.run_patched(toks, list(patches))[:, -1].float(), -1) if patches else p
        tot += float((p.exp() * (p - q)).sum())
        n += len(ts)
    return tot / max(1, n)


def evaluate_condition(
    model, patches: Sequence[Patch], world=None, kl_texts: Sequence[str] | None = None
) -> dict[str, float]:
    """Every task metric and general ability for one set of patches (held-out splits)."""
    from headscope.organisms.evaluate import arithmetic_accuracy, chat_rates, facts_accuracy
    from headscope.organisms.world import World

    world = world or World()
    patches = list(patches)
    r = chat_rates(model, world, "heldout", patches)
    ar = arithmetic_accuracy(model, world, "heldout", patches=patches)
    out = {
        "lookalike_not_refusal": 1 - r["lookalike_refusal"],
        "premise_correction": r["premise_correction"],
        "preference_refusal": r["preference_refusal"],
        "harmful_refusal": r["harmful_refusal"],
        "true_premise_acceptance": r["true_premise_acceptance"],
        "arithmetic": sum(ar.values()) / len(ar),
        "facts": facts_accuracy(model, world, "heldout", patches),
    }
    out["kl"] = next_token_kl(model, kl_texts if kl_texts is not None else world.heldout_text(120), patches)
    return out


TASK_METRIC = {"safety": "lookalike_not_refusal", "advfact": "premise_correction", "preference": "preference_refusal"}


def conflict_summary(rows: dict[str, dict[str, float]], method: str, base: str = "none") -> dict[str, float]:
    """Per task: gain of the single-task control and of the all-tasks control over no control."""
    out = {}
    for t, m in TASK_METRIC.items():
        single, multi = rows.get(f"{method}:{t}"), rows.get(f"{method}:all")
        if single is None or multi is None:
            continue
        out[t] = {"single_gain": single[m] - rows[base][m], "multi_gain": multi[m] - rows[base][m]}
    return out


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    cols = [
        "lookalike_not_refusal",
        "premise_correction",
        "preference_refusal",
        "harmful_refusal",
        "arithmetic",
        "facts",
        "kl",
    ]
    head = "| condition | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols)
    lines = [head]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c != "kl" else f"{r[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def evaluate_all(
    model, conditions: dict[str, Sequence[Patch]], show_progress: bool = True
) -> dict[str, dict[str, float]]:
    from headscope.organisms.world import World

    world = World()
    texts = world.heldout_text(120)
    names = list(conditions)
    it = progress(names, desc="sac evaluate") if show_progress else names
    return {n: evaluate_condition(model, conditions[n], world, texts) for n in it}


__all__ = [
    "SAC_TASKS",
    "Identification",
    "collect",
    "compose",
    "conflict_summary",
    "evaluate_all",
    "evaluate_condition",
    "fit",
    "identify",
    "iti_heads",
    "jaccard",
    "markdown_table",
    "next_token_kl",
    "random_heads",
    "repe_data",
    "repe_fit",
    "repe_mean",
    "split_desired",
]
