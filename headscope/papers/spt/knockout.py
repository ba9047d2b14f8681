"""§4.1 knockout and attention: do the selected heads carry the caving, and what do they read?

:func:`knockout` mean-ablates the selected heads vs as many random heads
(:func:`headscope.controls.random_heads`, never a selected head) and measures how often
the model still starts an apology; :func:`challenge_attention` measures every head's
attention from the final position onto the challenge sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from headscope.attribution import ablation_patches
from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.controls import by_length, random_heads
from headscope.head_scores import attention_to_positions
from headscope.model import HeadCache, HeadModel, Patch
from headscope.results import Head, HeadResult, format_head
from headscope.tasks.sycophancy import SycophancyData

from .identify import family_pairs


def challenge_dialogues(
    data: SycophancyData,
    families: Sequence[str] | None = None,
    n: int = 32,
    split: str = "all",
    seed: int = 0,
    challenge: str | None = None,
) -> list[list[str]]:
    """Challenge dialogues grouped by family (each group one token length)."""
    return [t.clean for _, t in family_pairs(data, families, n, split, seed, challenge)]


def counter_dialogues(
    data: SycophancyData, families: Sequence[str] | None = None, n: int = 32, split: str = "all", seed: int = 0
) -> list[list[str]]:
    """Counterfactual dialogues (the model affirms after them) grouped by family."""
    return [t.corrupt for _, t in family_pairs(data, families, n, split, seed)]


@torch.no_grad()
def position_mean_cache(model: HeadModel, groups: Sequence[Sequence[str]], layers: Sequence[int]) -> HeadCache:
    """Every head's ``z`` averaged over the prompts and their positions (BOS excluded).

    Stored as ``z[L]: [1, 1, heads, d_head]`` so that :func:`ablation_patches` (mean over
    its first axis) yields one vector per head that fits any prompt length — what mean
    ablation needs during generation.
    """
    layers = sorted(set(layers))
    acc = {L: torch.zeros(model.n_heads, model.d_head, dtype=torch.float64) for L in layers}
    cnt = 0
    for prompts in groups:
        _, cache = model.run_with_heads(model.to_tokens(list(prompts)), layers=layers, sites=("z",))
        for L in layers:
            z = cache.z[L][:, 1:]  # [batch, pos-1, heads, d_head]
            acc[L] += z.double().sum(dim=(0, 1)).cpu()
        cnt += cache.z[layers[0]][:, 1:].shape[0] * cache.z[layers[0]][:, 1:].shape[1]
    return HeadCache(z={L: (acc[L] / cnt).float()[None, None].to(model.device) for L in layers})


def knockout_patches(
    model: HeadModel,
    heads: Sequence[Head],
    reference: HeadCache | None = None,
    data: SycophancyData | None = None,
    n: int = 32,
    seed: int = 0,
) -> list[Patch]:
    """Mean-ablation patches for ``heads`` (position-independent means over challenge dialogues).

    ``reference``: a :func:`position_mean_cache`; without one it is computed on ``data``'s
    challenge dialogues (``n`` per family).
    """
    if not heads:
        return []
    if reference is None:
        if data is None:
            raise HeadscopeError("knockout_patches needs a reference cache or the sycophancy data to compute one")
        reference = position_mean_cache(model, challenge_dialogues(data, None, n, "all", seed), [L for L, _ in heads])
    return ablation_patches(model, list(heads), "mean", reference)


@torch.no_grad()
def caving_rate(
    model: HeadModel, groups: Sequence[Sequence[str]], apology: str, patches: Sequence[Patch] = ()
) -> float:
    """Share of dialogues whose greedy next token is the apology start ``apology``."""
    i = model.token_id(apology)
    hit = tot = 0
    for prompts in groups:
        toks = model.to_tokens(list(prompts))
        logits = model.run_patched(toks, list(patches)) if patches else model.logits(toks)
        hit += int((logits[:, -1].argmax(-1) == i).sum())
        tot += toks.shape[0]
    return hit / tot


def knockout(
    model: HeadModel,
    heads: Sequence[Head],
    data: SycophancyData,
    seeds: Sequence[int] = (0, 1, 2),
    families: Sequence[str] | None = None,
    n: int = 32,
    split: str = "heldout",
    protocol: bool = False,
) -> dict:
    """Mean-ablate ``heads`` vs as many random heads (one draw per seed, never a selected head).

    The random heads are :func:`headscope.controls.random_heads` with ``exclude=heads``.
    Means are position-independent, over challenge dialogues (:func:`position_mean_cache`).
    Two measures, each the share of dialogues whose greedy next token is the apology start:

    - ``caving``: on challenge dialogues of ``split`` (teacher-forced correct first answer)
      — the paper's knockout (§4.1: 100% → 18% on Llama-2);
    - ``counter_caving``: on the counterfactual dialogues — whether the heads are needed
      for the affirmation the counterfactual elicits.

    With ``protocol=True`` also the caving of the full greedy protocol (``data.rates``).
    """
    if protocol and data.rates is None:
        raise HeadscopeError("protocol=True needs data.rates (the generate-and-challenge protocol)")
    groups = challenge_dialogues(data, families, n, split, 1)
    counter = counter_dialogues(data, families, n, split, 1)
    ref = position_mean_cache(model, challenge_dialogues(data, families, n, "all", 0), list(range(model.n_layers)))

    def measure(hs: Sequence[Head]) -> dict:
        p = knockout_patches(model, hs, ref)
        r = {
            "caving": caving_rate(model, groups, data.apology, p),
            "counter_caving": caving_rate(model, counter, data.apology, p),
        }
        if protocol:
            assert data.rates is not None
            r["protocol_caving"] = data.rates(model, patches=p)["caving"]
        return r

    out: dict = {
        "heads": [list(h) for h in heads],
        "seeds": list(seeds),
        "base": measure([]),
        "selected": measure(heads),
    }
    rnd = []
    for s in progress(list(seeds), desc="knockout (random heads)"):
        pick = random_heads(model.n_layers, model.n_heads, len(heads), s, exclude=heads)
        rnd.append({"seed": s, "heads": [list(h) for h in pick], **measure(pick)})
    out["random"] = rnd
    out["random_mean"] = {k: sum(r[k] for r in rnd) / len(rnd) for k in out["base"]}
    return out


@torch.no_grad()
def caving_flags(model: HeadModel, prompts: Sequence[str], apology: str, patches: Sequence[Patch] = ()) -> list[bool]:
    """Per prompt (any lengths; grouped by token length internally): is the greedy next token ``apology``?"""
    i = model.token_id(apology)
    out = [False] * len(prompts)
    for _, idx in by_length(prompts, model.tokenizer).items():
        toks = model.to_tokens([prompts[j] for j in idx])
        logits = model.run_patched(toks, list(patches)) if patches else model.logits(toks)
        for j, v in zip(idx, (logits[:, -1].argmax(-1) == i).tolist()):
            out[j] = bool(v)
    return out


def heldout_challenges(data: SycophancyData, split: str = "evaluate") -> dict[str, list[str]]:
    """Challenge dialogues (correct first answer teacher-forced) on every question of ``split``,
    without those that occur verbatim in the training corpus: ``{"id": [...], "ood": [...]}``
    for the tuning challenges and the paraphrases. Needs ``data.split_questions``."""
    if data.split_questions is None:
        raise HeadscopeError("held-out knockout needs data.split_questions (item splits)")
    out = {}
    for tag, chs in (("id", data.challenges_train), ("ood", data.challenges_ood)):
        ps = [data.dialogue(q, a, ch) for q, a in data.split_questions(split) for ch in chs]
        drop = set(data.verbatim(ps)) if data.verbatim is not None else set()
        out[tag] = [p for i, p in enumerate(ps) if i not in drop]
    return out


def heldout_knockout(
    model: HeadModel,
    heads: Sequence[Head],
    data: SycophancyData,
    draws: int = 20,
    mean_split: str = "identify",
    split: str = "evaluate",
) -> dict:
    """Mean-ablation knockout on held-out items, with a placebo distribution of ``draws`` random-head sets.

    Means (position-independent, :func:`position_mean_cache`) come from every challenge
    dialogue of ``mean_split``; caving (greedy first token ``data.apology``) is measured on
    :func:`heldout_challenges` of ``split``: ``id`` (the tuning challenges; verbatim dialogues
    dropped) and ``ood`` (the paraphrases). Random heads: :func:`headscope.controls.random_heads`
    with seeds ``0..draws-1``, excluding ``heads``. Returns per-prompt flags for none /
    selected and the caving count of every draw.
    """
    if draws < 1:
        raise HeadscopeError(f"draws must be >= 1, got {draws}")
    sets = heldout_challenges(data, split)
    ref = position_mean_cache(
        model, challenge_dialogues(data, None, 10**6, mean_split, 0), list(range(model.n_layers))
    )

    def measure(hs: Sequence[Head]) -> dict[str, list[bool]]:
        p = knockout_patches(model, hs, ref)
        return {tag: caving_flags(model, ps, data.apology, p) for tag, ps in sets.items()}

    out: dict = {
        "heads": [list(h) for h in heads],
        "n": {tag: len(ps) for tag, ps in sets.items()},
        "prompts": sets,
        "base": measure([]),
        "selected": measure(heads),
        "random": [],
    }
    for s in progress(list(range(draws)), desc="knockout (random heads)"):
        pick = random_heads(model.n_layers, model.n_heads, len(heads), s, exclude=heads)
        flags = measure(pick)
        out["random"].append({"seed": s, "heads": [list(h) for h in pick], "k": {t: sum(f) for t, f in flags.items()}})
    return out


@torch.no_grad()
def challenge_attention(
    model: HeadModel,
    heads: Sequence[Head],
    data: SycophancyData,
    families: Sequence[str] | None = None,
    n: int = 32,
    split: str = "all",
    challenge: str | None = None,
) -> dict:
    """Attention from the final position onto the challenge sentence, per head (pooled over families).

    Returns ``{"scores": HeadResult [layer, head], "selected_mean", "average_head", "other_mean", "per_head"}``.
    """
    challenge = challenge or data.challenge
    total = torch.zeros(model.n_layers, model.n_heads)
    cnt = 0
    for prompts in challenge_dialogues(data, families, n, split, 0, challenge):
        toks = model.to_tokens(prompts)
        mask = torch.zeros(toks.shape, dtype=torch.bool)
        for r, p in enumerate(prompts):
            mask[r, 1:] = torch.tensor(data.challenge_mask(p, challenge))  # position 0 is BOS
        res = attention_to_positions(model, toks, mask)
        total += res.scores * len(prompts)
        cnt += len(prompts)
    s = total / cnt
    sel = torch.tensor([s[L, h].item() for L, h in heads])
    others = torch.ones_like(s, dtype=torch.bool)
    for L, h in heads:
        others[L, h] = False
    info = {
        "method": "challenge_attention",
        "metric_name": "attention share on the challenge",
        "title": "attention from the final position onto the challenge",
    }
    return {
        "scores": HeadResult(s, ("layer", "head"), {}, info),
        "selected_mean": float(sel.mean()),
        "average_head": float(s.mean()),
        "other_mean": float(s[others].mean()),
        "per_head": {format_head(h): float(s[h[0], h[1]]) for h in heads},
    }


__all__ = [
    "caving_flags",
    "heldout_challenges",
    "heldout_knockout",
    "caving_rate",
    "challenge_attention",
    "challenge_dialogues",
    "counter_dialogues",
    "knockout",
    "knockout_patches",
    "position_mean_cache",
]
