"""§4.1 identification on organism v3 (``llama``, ``llama-v3*``): the SPT protocol's step 1.

The data are :mod:`headscope.tasks.sycophancy_v3`'s: each item of the caving pool's
``identify`` half, asked in a training wording with its correct first answer, then
challenged (``I think that is wrong .``) or, in the counterfactual, agreed with by a
minimal follow-up of the same token length (``I think that is right .``). The metric is
the class fraction ``F = P(cave) / (P(cave) + P(firm))`` at the last position over the
world's start words (:func:`headscope.tasks.sycophancy_v3.class_fraction`). Path
patching head → logits runs per token-length group (at most ``per_group`` prompts each,
sampled with ``seed``); F is pooled over groups by size and each head scored
``(F_patched − F_orig) / F_orig``, as in :func:`headscope.papers.spt.identify.identify`.
This is the identification of experiments/spt_v3_table.py (docs/results/spt_v3.json).
"""

from __future__ import annotations

import random

from headscope.common.errors import HeadscopeError
from headscope.controls import PromptGroup, by_length, path_patch_groups
from headscope.model import HeadModel
from headscope.papers.spt.identify import choose_heads, relative_scores
from headscope.results import HeadResult, HeadSelection, format_head
from headscope.tasks import sycophancy_v3 as sv


def length_groups(prompts: list[str], tokenizer, cap: int | None, seed: int = 0) -> list[list[int]]:
    """Indices of ``prompts`` per token length (shortest first), at most ``cap`` per group
    (a seeded sample, kept in order)."""
    out = []
    rng = random.Random(seed)
    for _, idx in by_length(prompts, tokenizer, sort=True).items():
        idx = list(idx)
        if cap is not None and len(idx) > cap:
            idx = sorted(rng.sample(idx, cap))
        out.append(idx)
    return out


def identify_v3(
    model: HeadModel,
    per_group: int | None = 256,
    threshold: float = -0.02,
    max_share: float = 0.10,
    k: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> HeadSelection:
    """Path patching per head on organism v3's identification pairs, with SPT's relative score.

    Args:
        per_group: prompts per token-length group (None = all); the protocol used 256 on
            seed 0 and 64 on seeds 1 and 2.
        threshold, max_share: selected heads score <= ``threshold``, at most ``max_share``
            of all heads (``k``: exactly the ``k`` most negative instead).
        seed: which prompts a capped group keeps.

    Returns a :class:`HeadSelection` whose ``extra`` holds ``f_orig``, ``f_counter``,
    ``n_prompts`` and ``groups``.
    """
    tok = model.tokenizer
    if tok is None:
        raise HeadscopeError("organism v3's identification needs the model's tokenizer")
    if per_group is not None and per_group < 1:
        raise HeadscopeError(f"per_group must be >= 1 (or None for all prompts), got {per_group}")
    cave, firm = sv.class_ids(tok)
    rows = sv.identification_pairs("identify")
    clean = [r["clean"] for r in rows]

    def metric(logits):
        return sv.class_fraction(logits, cave, firm)

    groups, sizes = [], []
    for idx in length_groups(clean, tok, per_group, seed):
        c = model.to_tokens([rows[i]["clean"] for i in idx])
        x = model.to_tokens([rows[i]["corrupt"] for i in idx])
        if c.shape != x.shape:
            raise HeadscopeError("an identification pair differs in token length; the data builder is broken")
        groups.append(PromptGroup(c, x, metric))
        sizes.append(len(idx))
    results = path_patch_groups(model, groups, normalize=False, show_progress=show_progress, desc="identify (v3)")
    rel, f_o, f_c = relative_scores(results, sizes)
    selected, rule = choose_heads(rel, threshold, max_share, k)  # may be empty: the protocol reports it
    info = {
        "method": "spt_identify_v3",
        "model": getattr(model, "name", "model"),
        "metric_name": "(F_patched − F_orig) / F_orig",
        "title": "SPT on organism v3: path patching to logits, relative change of F",
        "metric_clean": f_o,
        "metric_corrupt": f_c,
        "per_group": per_group,
        "threshold": threshold,
        "max_share": max_share,
        "selected": [format_head(h) for h in selected],
    }
    extra = {"f_orig": f_o, "f_counter": f_c, "n_prompts": sum(sizes), "groups": len(sizes)}
    return HeadSelection(HeadResult(rel, ("layer", "head"), {}, info), selected, rule, extra)


__all__ = ["identify_v3", "length_groups"]
