"""Arithmetic heads: find the few heads that move operands and operators, knock them out, tune only them.

Implements, at organism scale, "Interpreting and Improving Large Language Models in
Arithmetic Calculation" (Zhang et al., ICML 2024):

- §3.1 prompts: every template of every operator (+ − × ÷) in three styles (equation
  ``3 + 5 =``, statement ``3 plus 5 equals``, QA ``Q : What is the sum of 3 and 5 ? A :``),
  operands 1–9, kept only where the model answers correctly; counterfactuals replace the
  operator by a null symbol (``<``, ``@``) or null word (``nothing``, ``none``).
  :func:`arith_prompts`, :func:`arith_dataset`, :func:`filter_correct`,
  :func:`length_groups`.
- §3.2 identification: path patching from each head to the logits (every other head
  frozen at its clean output; MLPs recompute), scored as the relative change of the
  answer logit ``(logit_patched − logit_orig) / logit_orig``; key heads are those below
  −5 %. :func:`identify` (heads and MLPs, averaged over equal-length prompt groups).
- §3.3 knockout: mean ablation of the top-k heads against k random heads.
  :func:`knockout`.
- §3.4 inspection: attention of key heads onto operands/operators; MLP logit lens and
  cosine with the unembedding rows of A, B and C. :func:`inspect`.
- §4 transfer across styles/operators (:func:`transfer`) and precise SFT of the key
  heads only (:func:`tune`, on :mod:`headscope.tuning`).

Everything talks to the :class:`~headscope.model.HeadModel` protocol, so it runs on both
backends and on grouped-query models.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.head_scores import attention_to_positions
from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.model import HeadModel, Patch
from headscope.organisms.world import (
    ARITH_TEMPLATES,
    NULL_SYMBOLS,
    NULL_WORDS,
    OP_NOUN,
    OP_SYMBOL,
    OP_WORD,
    OPERATORS,
    arith_is_heldout,
    arith_operands,
    render_arith,
)
from headscope.patching import path_patch_heads
from headscope.results import HeadResult

STYLES: tuple[str, ...] = tuple(ARITH_TEMPLATES)
Head = tuple[int, int]

# ---------------------------------------------------------------------------------------
# Prompts (paper §3.1)


def _check_choice(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise HeadscopeError(f"unknown {what} {bad or values}; use one or more of {', '.join(allowed)}")
    return values


def _null_text(template: str, op: str, null: str) -> str:
    """The null replacement with as many words as the operator text it replaces
    (``divided by`` → ``nothing nothing``), so clean and corrupt prompts keep one length."""
    if "{word}" in template:
        return " ".join([null] * len(OP_WORD[op].split()))
    return null


def arith_prompts(
    ops: Sequence[str] = OPERATORS,
    styles: Sequence[str] = STYLES,
    templates: Sequence[int] | None = None,
    split: str = "all",
    nulls: Sequence[str] | None = None,
    heldout_frac: float = 0.15,
) -> list[dict]:
    """Every (operator, style, template, A, B) prompt with its counterfactual.

    Args:
        ops: operators among add, sub, mul, div.
        styles: equation, statement, qa.
        templates: template indices within each style (None = all four).
        split: "all", "train" or "heldout" (the organism world's split of prompts).
        nulls: null replacements; default: ``<`` / ``@`` for the symbol templates and
            ``nothing`` / ``none`` for the word templates, cycling over operand pairs.

    Returns:
        dicts with keys prompt, corrupt, answer (string), op, style, template, a, b, c,
        null, split.
    """
    ops = _check_choice(ops, OPERATORS, "operator(s)")
    styles = _check_choice(styles, STYLES, "template style(s)")
    if split not in ("all", "train", "heldout"):
        raise HeadscopeError(f"unknown split {split!r}; use all, train or heldout")
    rows = []
    for op in ops:
        for style in styles:
            temps = ARITH_TEMPLATES[style]
            idxs = range(len(temps)) if templates is None else list(templates)
            for t_idx in idxs:
                if not 0 <= t_idx < len(temps):
                    raise HeadscopeError(f"style {style!r} has templates 0..{len(temps) - 1}, not {t_idx}")
                t = temps[t_idx]
                pool = nulls or (NULL_SYMBOLS if "{sym}" in t else NULL_WORDS)
                for i, (a, b, c) in enumerate(arith_operands(op)):
                    held = arith_is_heldout(op, style, t_idx, a, b, heldout_frac)
                    if split == "train" and held or split == "heldout" and not held:
                        continue
                    null = pool[i % len(pool)]
                    rows.append(
                        dict(
                            prompt=render_arith(t, op, a, b),
                            corrupt=render_arith(t, op, a, b, null=_null_text(t, op, null)),
                            answer=str(c),
                            op=op,
                            style=style,
                            template=t_idx,
                            a=a,
                            b=b,
                            c=c,
                            null=null,
                            split="heldout" if held else "train",
                        )
                    )
    return rows


def arith_dataset(rows: Sequence[dict] | None = None, **kwargs):
    """The prompts as a ``datasets.Dataset`` (one column per key of :func:`arith_prompts`)."""
    from datasets import Dataset

    rows = list(rows) if rows is not None else arith_prompts(**kwargs)
    if not rows:
        raise HeadscopeError("no arithmetic prompts selected; widen ops/styles/templates/split")
    return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})


def _n_tokens(model: HeadModel, text: str) -> int:
    return len(model.tokenizer(text)["input_ids"])


def length_groups(model: HeadModel, rows: Sequence[dict]) -> dict[int, list[dict]]:
    """Rows grouped by token length (clean and corrupt prompts of a row have one length).

    Batched methods need equal-length prompts; the paper's per-template averages become
    averages over these groups.
    """
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        n = _n_tokens(model, r["prompt"])
        if _n_tokens(model, r["corrupt"]) != n:
            raise HeadscopeError(f"counterfactual {r['corrupt']!r} and prompt {r['prompt']!r} differ in token length")
        groups[n].append(r)
    return dict(sorted(groups.items()))


def _answer_ids(model: HeadModel, rows: Sequence[dict]) -> Int[Tensor, " batch"]:
    try:
        return torch.tensor([model.token_id(r["answer"]) for r in rows])  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001
        raise HeadscopeError(
            f"an answer is not a single token of this model's vocabulary ({e}); "
            "use a model whose tokenizer has the numbers 0-81 as words"
        ) from e


@torch.no_grad()
def predictions(
    model: HeadModel,
    rows: Sequence[dict],
    patches_for: Callable[[int, Tensor], list[Patch]] | None = None,
    batch_size: int = 512,
) -> list[int]:
    """Greedy next-token id after each prompt (optionally with patches per length group:
    ``patches_for(n_tokens, tokens) -> patches``)."""
    out: dict[int, int] = {}
    index = {id(r): i for i, r in enumerate(rows)}
    for n, grp in length_groups(model, rows).items():
        for s in range(0, len(grp), batch_size):
            chunk = grp[s : s + batch_size]
            toks = model.to_tokens([r["prompt"] for r in chunk])
            patches = patches_for(n, toks) if patches_for else []
            logits = model.run_patched(toks, patches) if patches else model.logits(toks)
            for r, t in zip(chunk, logits[:, -1].argmax(-1).tolist()):
                out[index[id(r)]] = t
    return [out[i] for i in range(len(rows))]


def filter_correct(model: HeadModel, rows: Sequence[dict]) -> list[dict]:
    """Only the prompts the model answers correctly (greedy first token = C), as in §3.1."""
    rows = list(rows)
    if not rows:
        raise HeadscopeError("no prompts to filter")
    pred = predictions(model, rows)
    ans = _answer_ids(model, rows).tolist()
    return [r for r, p, a in zip(rows, pred, ans) if p == a]


def accuracy_table(
    model: HeadModel,
    rows: Sequence[dict],
    preds: Sequence[int] | None = None,
    patches_for: Callable[[int, Tensor], list[Patch]] | None = None,
) -> dict[str, float]:
    """Exact-match accuracy overall, per operator (``op:add``) and per style (``style:qa``)."""
    preds = predictions(model, rows, patches_for) if preds is None else preds
    ans = _answer_ids(model, rows).tolist()
    hits: dict[str, list[int]] = defaultdict(list)
    for r, p, a in zip(rows, preds, ans):
        ok = int(p == a)
        hits["all"].append(ok)
        hits[f"op:{r['op']}"].append(ok)
        hits[f"style:{r['style']}"].append(ok)
    return {k: sum(v) / len(v) for k, v in hits.items()}


# ---------------------------------------------------------------------------------------
# Identification (paper §3.2)


def answer_logit_metric(answer: Int[Tensor, " batch"]) -> Callable[[Tensor], Tensor]:
    """``logits [batch, pos, vocab] -> mean logit of the answer token at the last position``."""

    def fn(logits: Tensor) -> Tensor:
        a = answer.to(logits.device)
        return logits[torch.arange(logits.shape[0], device=logits.device), -1, a].mean()

    return fn


@torch.no_grad()
def path_patch_mlps(
    model: HeadModel,
    clean: Int[Tensor, " batch pos"],
    corrupt: Int[Tensor, " batch pos"],
    metric: Callable[[Tensor], Tensor],
) -> Float[Tensor, " layer"]:
    """Path patching from each MLP to the logits: the metric on the clean run with
    ``mlp_out[L]`` from the corrupt run and every head's ``z`` (all layers) frozen at its
    clean value, so the change reaches the logits only through later MLPs (§3.2 for MLPs).

    Returns the raw metric per layer ``[n_layers]``.
    """
    _, cl = model.run_with_heads(clean, sites=("z",))
    _, co = model.run_with_heads(corrupt, sites=("mlp_out",))
    out = torch.zeros(model.n_layers)
    frozen = [Patch(layer=L, site="z", value=cl.z[L]) for L in range(model.n_layers)]
    for L in range(model.n_layers):
        logits = model.run_patched(clean, frozen + [Patch(layer=L, site="mlp_out", value=co.mlp_out[L])])
        out[L] = float(metric(logits))
    return out


@dataclass
class Identification:
    """Relative path-patching scores of every head (and MLP) and the selected key heads.

    ``heads.scores``: ``[layer, head]`` mean of ``(logit_patched − logit_orig)/logit_orig``
    over equal-length groups (weighted by group size); ``mlps``: ``[layer]`` the same for
    MLPs; ``key_heads``: heads below ``threshold`` sorted most negative first.
    """

    heads: HeadResult
    mlps: Tensor
    threshold: float
    key_heads: list[Head]
    groups: list[dict] = field(default_factory=list)

    @property
    def share(self) -> float:
        """Share of all heads that pass the threshold rule."""
        return len(self.key_heads) / self.heads.scores.numel()

    def top(self, k: int) -> list[Head]:
        """The k heads with the most negative relative score (the paper's top-k)."""
        return [(L, h) for L, h, _ in self.heads.top(k, by="neg")]

    def to_dict(self) -> dict:
        return {
            "scores": self.heads.scores.tolist(),
            "mlps": self.mlps.tolist(),
            "threshold": self.threshold,
            "key_heads": [list(h) for h in self.key_heads],
            "share": self.share,
            "groups": self.groups,
            "info": self.heads.info,
        }

    def save(self, path: str | Path) -> list[Path]:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        js = path.with_suffix(".json")
        js.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        return [js] + self.heads.save_figure(path.with_name(path.stem + "_heatmap"))

    @classmethod
    def load(cls, path: str | Path) -> Identification:
        d = json.loads(Path(path).with_suffix(".json").read_text())
        res = HeadResult(torch.tensor(d["scores"]), ("layer", "head"), {}, d.get("info", {}))
        return cls(
            res, torch.tensor(d["mlps"]), d["threshold"], [tuple(h) for h in d["key_heads"]], d.get("groups", [])
        )


def identify(
    model: HeadModel,
    rows: Sequence[dict],
    threshold: float = -0.05,
    max_per_group: int | None = 64,
    min_group: int = 4,
    seed: int = 0,
    mlps: bool = True,
    show_progress: bool = True,
) -> Identification:
    """Path patching to the logits per head (and MLP) with the paper's relative score (§3.2).

    For each equal-length group of (correctly answered) prompts: run
    :func:`headscope.patching.path_patch_heads` with the answer-logit metric and
    ``normalize=False``, giving the patched answer logit ``m``; the relative score is
    ``(m − m_orig) / m_orig``. Group scores are averaged weighted by group size. Key
    heads: relative score < ``threshold`` (−5 %).

    Args:
        rows: prompts from :func:`arith_prompts` (usually after :func:`filter_correct`).
        max_per_group: prompts sampled per length group (None = all).
        min_group: smaller groups are skipped.
    """
    rows = list(rows)
    if not rows:
        raise HeadscopeError(
            "no prompts to identify heads on (did the model answer none correctly? try another split or operator)"
        )
    rng = random.Random(seed)
    num = torch.zeros(model.n_layers, model.n_heads)
    mlp_num = torch.zeros(model.n_layers)
    total = 0
    groups = []
    items = [(n, g) for n, g in length_groups(model, rows).items() if len(g) >= min_group]
    if not items:
        raise HeadscopeError(
            f"every equal-length group has fewer than min_group={min_group} prompts; lower min_group or add prompts"
        )
    for n, grp in progress(items, desc="identify (groups)") if show_progress else items:
        if max_per_group is not None and len(grp) > max_per_group:
            grp = rng.sample(grp, max_per_group)
        clean = model.to_tokens([r["prompt"] for r in grp])
        corrupt = model.to_tokens([r["corrupt"] for r in grp])
        metric = answer_logit_metric(_answer_ids(model, grp))
        res = path_patch_heads(model, clean, corrupt, metric, normalize=False, show_progress=False)
        m0 = res.info["metric_clean"]
        if abs(m0) < 1e-6:
            raise HeadscopeError(f"answer logit is ~0 on the {n}-token group; the relative score is undefined")
        num += (res.scores - m0) / abs(m0) * len(grp)
        if mlps:
            mlp_num += (path_patch_mlps(model, clean, corrupt, metric) - m0) / abs(m0) * len(grp)
        total += len(grp)
        groups.append(
            {
                "n_tokens": n,
                "n_prompts": len(grp),
                "answer_logit": m0,
                "corrupt_answer_logit": res.info["metric_corrupt"],
                "ops": sorted({r["op"] for r in grp}),
                "styles": sorted({r["style"] for r in grp}),
            }
        )
    rel = num / total
    info = {
        "method": "path_patching_relative",
        "model": getattr(model, "name", "model"),
        "metric_name": "relative answer-logit change",
        "title": "path patching to logits: (logit_patched − logit_orig)/logit_orig",
        "n_prompts": total,
        "threshold": threshold,
    }
    res = HeadResult(rel, ("layer", "head"), {}, info)
    key = [(L, h) for L, h, v in res.top(rel.numel(), by="neg") if v < threshold]
    return Identification(res, mlp_num / total, threshold, key, groups)


# ---------------------------------------------------------------------------------------
# Knockout (paper §3.3)


class _MeanRef:
    """Per-length-group mean of every head's z over the reference prompts (per position)."""

    def __init__(self, model: HeadModel, rows: Sequence[dict]) -> None:
        self.means: dict[int, dict[int, Tensor]] = {}
        for n, grp in length_groups(model, rows).items():
            _, cache = model.run_with_heads(model.to_tokens([r["prompt"] for r in grp]), sites=("z",))
            self.means[n] = {L: cache.z[L].mean(0) for L in cache.z}  # [pos, heads, d_head]

    def patches(self, heads: Sequence[Head]) -> Callable[[int, Tensor], list[Patch]]:
        def fn(n: int, toks: Tensor) -> list[Patch]:
            if n not in self.means:
                raise HeadscopeError(f"no mean-ablation reference for {n}-token prompts")
            return [Patch(layer=L, head=h, value=self.means[n][L][:, h]) for L, h in heads]

        return fn


def random_heads(model: HeadModel, k: int, seed: int, exclude: Sequence[Head] = ()) -> list[Head]:
    """k heads drawn uniformly without replacement (seeded), outside ``exclude``."""
    pool = [(L, h) for L in range(model.n_layers) for h in range(model.n_heads) if (L, h) not in set(exclude)]
    if k > len(pool):
        raise HeadscopeError(f"k={k} exceeds the {len(pool)} heads available")
    g = torch.Generator().manual_seed(seed)
    return [pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist()]


@torch.no_grad()
def knockout(
    model: HeadModel,
    rows: Sequence[dict],
    ranking: Sequence[Head],
    ks: Sequence[int] = (0, 1, 2, 4, 6, 8),
    seeds: Sequence[int] = (0, 1, 2),
    reference: Sequence[dict] | None = None,
    show_progress: bool = True,
) -> dict:
    """Accuracy after mean-ablating the top-k heads of ``ranking`` vs k random heads (§3.3).

    Mean ablation: a head's z is replaced by its mean over ``reference`` (default: ``rows``)
    prompts of the same token length, per position. Random heads are drawn from all heads
    (seeded, one draw per seed). Returns a dict compatible with
    :func:`headscope.viz.knockout_plot` (``k``, ``top``, ``random``, ``random_mean``,
    ``random_std``) plus ``top_by`` / ``random_by``: per-operator and per-style accuracy.
    """
    rows = list(rows)
    if not rows:
        raise HeadscopeError("no prompts for the knockout")
    if max(ks) > len(ranking):
        raise HeadscopeError(
            f"k={max(ks)} exceeds the {len(ranking)} ranked heads; pass a longer ranking or smaller ks"
        )
    if not seeds:
        raise HeadscopeError("knockout needs at least one random seed")
    ref = _MeanRef(model, reference if reference is not None else rows)
    top, top_by, rnd, rnd_by = [], [], [], []
    for k in progress(list(ks), desc="knockout") if show_progress else ks:
        t = accuracy_table(model, rows, patches_for=ref.patches(list(ranking[:k])))
        top.append(t["all"])
        top_by.append(t)
        row, row_by = [], []
        for s in seeds:
            r = accuracy_table(model, rows, patches_for=ref.patches(random_heads(model, k, s)))
            row.append(r["all"])
            row_by.append(r)
        rnd.append(row)
        rnd_by.append({key: sum(d[key] for d in row_by) / len(row_by) for key in row_by[0]})
    tt = torch.tensor(rnd)
    return {
        "k": list(ks),
        "top": top,
        "random": rnd,
        "random_mean": tt.mean(1).tolist(),
        "random_std": (tt.std(1) if tt.shape[1] > 1 else torch.zeros(len(ks))).tolist(),
        "top_by": top_by,
        "random_by": rnd_by,
        "heads": [list(h) for h in ranking[: max(ks)]],
        "seeds": list(seeds),
    }


# ---------------------------------------------------------------------------------------
# Inspection (paper §3.4)


def token_masks(model: HeadModel, rows: Sequence[dict]) -> tuple[Tensor, Tensor]:
    """Bool masks ``[batch, pos]`` of operand positions (A, B) and operator positions
    (symbol, word(s) or noun) for equal-length ``rows``."""
    toks = model.to_tokens([r["prompt"] for r in rows])
    B, T = toks.shape
    opnd = torch.zeros(B, T, dtype=torch.bool)
    oper = torch.zeros(B, T, dtype=torch.bool)
    for i, r in enumerate(rows):
        words = model.to_str_tokens(toks[i])
        op_words = {OP_SYMBOL[r["op"]], OP_NOUN[r["op"]], *OP_WORD[r["op"]].split()}
        for j, w in enumerate(words):
            w = str(w).strip()
            if w in (str(r["a"]), str(r["b"])):
                opnd[i, j] = True
            elif w in op_words:
                oper[i, j] = True
    return opnd, oper


@torch.no_grad()
def inspect(
    model: HeadModel, rows: Sequence[dict], heads: Sequence[Head], max_per_group: int = 64, seed: int = 0
) -> dict:
    """Attention of the key heads onto operands/operators, and what the MLPs write (§3.4).

    - ``attention``: per head ``[layer, head]`` share of attention from the last position
      onto operand tokens and onto operator tokens (mean over prompts, groups weighted by
      size); ``key`` vs ``average`` summarise the key heads against all heads.
    - ``mlp_logit_lens``: per layer, the mean rank of C (0 = top) and probability of C
      when the final norm and unembedding read ``mlp_out[L]`` at the last position.
    - ``mlp_cosine``: per layer, mean cosine of ``mlp_out[L]`` (last position) with the
      unembedding rows of A, B and C.
    """
    from headscope.attribution import _final_norm

    rows = list(rows)
    if not rows:
        raise HeadscopeError("no prompts to inspect")
    rng = random.Random(seed)
    nL, nH = model.n_layers, model.n_heads
    att_opnd = torch.zeros(nL, nH)
    att_oper = torch.zeros(nL, nH)
    rank = torch.zeros(nL)
    prob = torch.zeros(nL)
    cos = {k: torch.zeros(nL) for k in ("A", "B", "C")}
    W_U = model.unembed_matrix().detach().float().cpu()  # type: ignore[attr-defined]  # [d_model, vocab]
    norm = _final_norm(model)
    total = 0
    for _, grp in length_groups(model, rows).items():
        if len(grp) > max_per_group:
            grp = rng.sample(grp, max_per_group)
        toks = model.to_tokens([r["prompt"] for r in grp])
        opnd, oper = token_masks(model, grp)
        att_opnd += attention_to_positions(model, toks, opnd).scores * len(grp)
        att_oper += attention_to_positions(model, toks, oper).scores * len(grp)
        _, cache = model.run_with_heads(toks, sites=("mlp_out",))
        ids = {k: torch.tensor([model.token_id(str(r[k.lower()])) for r in grp]) for k in ("A", "B", "C")}  # type: ignore[attr-defined]
        for L in range(nL):
            m = cache.mlp_out[L][:, -1]  # [batch, d_model]
            lens = norm(m.to(next(norm.parameters()).device)).float().cpu() @ W_U  # [batch, vocab]
            c_logit = lens[torch.arange(len(grp)), ids["C"]]
            rank[L] += (lens > c_logit[:, None]).sum(-1).float().sum()
            prob[L] += lens.softmax(-1)[torch.arange(len(grp)), ids["C"]].sum()
            mc = m.float().cpu()
            for k in cos:
                cos[k][L] += torch.nn.functional.cosine_similarity(mc, W_U[:, ids[k]].T, dim=-1).sum()
        total += len(grp)
    att_opnd /= total
    att_oper /= total
    both = att_opnd + att_oper
    key = list(heads)
    key_mean = float(torch.stack([both[L, h] for L, h in key]).mean()) if key else float("nan")
    return {
        "attention_operands": att_opnd.tolist(),
        "attention_operators": att_oper.tolist(),
        "key_heads": [list(h) for h in key],
        "key": {f"L{L}H{h}": {"operands": float(att_opnd[L, h]), "operators": float(att_oper[L, h])} for L, h in key},
        "key_mean_attention": key_mean,
        "average_head_attention": float(both.mean()),
        "mlp_logit_lens": {"rank_of_C": (rank / total).tolist(), "prob_of_C": (prob / total).tolist()},
        "mlp_cosine": {k: (v / total).tolist() for k, v in cos.items()},
        "n_prompts": total,
    }


# ---------------------------------------------------------------------------------------
# Transfer (paper §3.5)


def transfer(
    model: HeadModel,
    rows: Sequence[dict],
    by: str = "style",
    k: int = 4,
    max_per_group: int | None = 32,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Heads identified on one style (or operator) knocked out on every style (operator).

    For each source subset: identify its top-k heads; for each target subset: accuracy
    with those heads mean-ablated. Returns ``{"sources": [...], "heads": {src: [...]},
    "accuracy": {src: {tgt: acc}}, "baseline": {tgt: acc}, "overlap": {src: {tgt: |∩|/k}}}``.
    """
    if by not in ("style", "op"):
        raise HeadscopeError(f"transfer by {by!r}? use style or op")
    rows = list(rows)
    subsets: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        subsets[r[by]].append(r)
    if len(subsets) < 2:
        raise HeadscopeError(f"transfer needs prompts of at least two {by}s, got {sorted(subsets)}")
    ref = _MeanRef(model, rows)
    heads = {}
    for s, sub in subsets.items():
        heads[s] = identify(
            model, sub, max_per_group=max_per_group, min_group=1, seed=seed, mlps=False, show_progress=show_progress
        ).top(k)
    base = {t: accuracy_table(model, sub)["all"] for t, sub in subsets.items()}
    acc = {
        s: {t: accuracy_table(model, sub, patches_for=ref.patches(heads[s]))["all"] for t, sub in subsets.items()}
        for s in subsets
    }
    overlap = {s: {t: len(set(heads[s]) & set(heads[t])) / max(1, k) for t in subsets} for s in subsets}
    return {
        "by": by,
        "k": k,
        "sources": list(subsets),
        "heads": {s: [list(h) for h in v] for s, v in heads.items()},
        "accuracy": acc,
        "baseline": base,
        "overlap": overlap,
    }


# ---------------------------------------------------------------------------------------
# Precise SFT against full SFT and LoRA (paper §5)

# Phrasings the organism never saw in training (only words of its vocabulary).
UNSEEN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "equation": ("Compute : {A} {sym} {B} =", "Math : Calculate {A} {sym} {B} ="),
    "statement": ("We know {A} {word} {B} is", "The answer of {A} {word} {B} is"),
    "qa": ("Q : Find {A} {word} {B} . A :", "Question : What is the {noun} of {A} and {B} ? A :"),
}


def unseen_prompts(ops: Sequence[str] = OPERATORS) -> list[dict]:
    """Prompts in :data:`UNSEEN_TEMPLATES` (never in the organism's corpus), same keys as
    :func:`arith_prompts` (``template`` is the index within the unseen style)."""
    ops = _check_choice(ops, OPERATORS, "operator(s)")
    rows = []
    for op in ops:
        for style, temps in UNSEEN_TEMPLATES.items():
            for t_idx, t in enumerate(temps):
                pool = NULL_SYMBOLS if "{sym}" in t else NULL_WORDS
                for i, (a, b, c) in enumerate(arith_operands(op)):
                    null = pool[i % len(pool)]
                    rows.append(
                        dict(
                            prompt=render_arith(t, op, a, b),
                            corrupt=render_arith(t, op, a, b, null=_null_text(t, op, null)),
                            answer=str(c),
                            op=op,
                            style=style,
                            template=t_idx,
                            a=a,
                            b=b,
                            c=c,
                            null=null,
                            split="unseen",
                        )
                    )
    return rows


def tune_examples(ops: Sequence[str] = ("div", "mul"), split: str = "train") -> list[tuple[str, str]]:
    """(prompt, answer) pairs for SFT: every template of ``ops`` in ``split`` of the world."""
    return [(r["prompt"], r["answer"]) for r in arith_prompts(ops=ops, split=split)]


@torch.no_grad()
def next_token_kl(base, tuned, tokenizer, texts: Sequence[str], batch_size: int = 64) -> float:
    """Mean KL(base ‖ tuned) of next-token distributions over every position of ``texts``
    (HF causal LMs; texts grouped by token length, no padding)."""
    from headscope.common.metrics import kl_div

    groups: dict[int, list[list[int]]] = defaultdict(list)
    for t in texts:
        ids = tokenizer(t)["input_ids"]
        groups[len(ids)].append(ids)
    tot, n = 0.0, 0
    dev = next(base.parameters()).device
    for _, ids in groups.items():
        for s in range(0, len(ids), batch_size):
            x = torch.tensor(ids[s : s + batch_size], device=dev)
            lb = base(input_ids=x).logits
            lt = tuned(input_ids=x.to(next(tuned.parameters()).device)).logits.to(dev)
            cnt = x.numel()
            tot += float(kl_div(lb, lt)) * cnt
            n += cnt
    return tot / max(1, n)


def evaluate_tuned(
    hf, tokenizer, base_hf=None, world=None, chat: bool = True, n_kl: int = 200, backend: str = "tl"
) -> dict[str, float]:
    """Arithmetic (held-out per operator, unseen templates per operator) and general ability
    (held-out facts QA, the chat rates, next-token KL vs ``base_hf`` on held-out organism text)."""
    from headscope.loading import wrap
    from headscope.organisms.evaluate import chat_rates, facts_accuracy
    from headscope.organisms.world import World

    world = world or World()
    hm = wrap(hf, tokenizer, backend, name="tuned", copy_model=True)
    out: dict[str, float] = {}
    held = arith_prompts(split="heldout")
    for k, v in accuracy_table(hm, held).items():
        if k.startswith("op:"):
            out[f"arith_{k[3:]}_heldout"] = v
    for k, v in accuracy_table(hm, unseen_prompts()).items():
        if k == "all" or k.startswith("op:"):
            out["unseen_" + ("all" if k == "all" else k[3:])] = v
    out["facts_qa_heldout"] = facts_accuracy(hm, world, "heldout")
    if chat:
        out.update({f"chat_{k}": v for k, v in chat_rates(hm, world, "heldout").items()})
    if base_hf is not None:
        out["kl_vs_base"] = next_token_kl(base_hf, hf, tokenizer, world.heldout_text(n_kl))
    return out


def tune_one(
    base_hf,
    tokenizer,
    method: str,
    examples: Sequence[tuple[str, str]],
    cfg=None,
    heads: Sequence[Head] = (),
    lora_r: int = 4,
    projections: str | Sequence[str] = "auto",
) -> tuple[object, dict]:
    """Fine-tune a copy of ``base_hf`` with one method (``heads`` = precise SFT, ``full``,
    ``lora``); returns (tuned HF model, log dict with trainable parameters, time per step and,
    for ``heads``, ``untouched_bit_identical``).

    Precise SFT (§5): only the q/k/v/o slices of ``heads`` train (q and o for grouped-query
    models), with the gradient rescaled by ``H / h`` (all heads over selected heads).
    """
    import copy

    from headscope import tuning

    cfg = cfg or tuning.TuneConfig()
    model = copy.deepcopy(base_hf)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    if method == "heads":
        if not heads:
            raise HeadscopeError("precise SFT needs the key heads; run identify first or pass heads")
        n_l, n_h = model.config.num_hidden_layers, model.config.num_attention_heads
        from dataclasses import replace

        cfg = replace(cfg, grad_scale=n_l * n_h / len(set(map(tuple, heads))))
    st = tuning.setup(model, method, cfg, heads=heads, projections=projections, lora_r=lora_r)
    log = tuning.train(st, tokenizer, examples, cfg, name=method)
    tuned = st.finish()
    d = log.to_dict()
    d.pop("losses")
    d["final_loss"] = sum(log.losses[-10:]) / len(log.losses[-10:])
    if method == "heads":
        masks = tuning.head_masks(tuned, heads, projections)
        d["untouched_bit_identical"] = tuning.untouched_identical(tuned, ref, masks)
        d["projections"] = list(tuning.resolve_projections(tuned, projections))
    return tuned, d


def tune(
    name: str = "llama",
    heads: Sequence[Head] | None = None,
    k: int = 4,
    methods: Sequence[str] = ("heads", "full", "lora"),
    ops: Sequence[str] = ("div", "mul"),
    cfg=None,
    lora_r: int = 4,
    chat: bool = True,
    n_kl: int = 200,
    out: str | Path | None = None,
    identify_kwargs: dict | None = None,
) -> dict:
    """Precise SFT vs full SFT vs LoRA on the same data and budget (paper §5), with a table.

    Trains on the training split of ``ops`` (default ÷ and ×, what the organism does
    badly), evaluates each tuned model and the base with :func:`evaluate_tuned`, and (when
    ``out`` is given) writes ``out.json`` and ``out.md``. ``heads`` default: the top-k of
    :func:`identify` on correctly answered prompts.
    """
    from headscope import tuning
    from headscope.loading import load_hf, load_model

    bad = [m for m in methods if m not in tuning.METHODS]
    if bad:
        raise HeadscopeError(f"unknown tuning method(s) {bad}; use {', '.join(tuning.METHODS)}")
    cfg = cfg or tuning.TuneConfig(steps=200, batch_size=32, lr=1e-3)
    if heads is None:
        hm = load_model(name, "tl")
        rows = filter_correct(hm, arith_prompts())
        heads = identify(hm, rows, **(identify_kwargs or {"max_per_group": 32})).top(k)
    base, tok, _ = load_hf(name, "cpu")
    examples = tune_examples(ops)
    res: dict = {
        "model": name,
        "heads": [list(h) for h in heads],
        "train_ops": list(ops),
        "n_examples": len(examples),
        "config": dict(cfg.__dict__),
        "lora_r": lora_r,
        "methods": {},
    }
    res["base"] = evaluate_tuned(base, tok, None, chat=chat)
    res["base"]["kl_vs_base"] = 0.0
    for m in methods:
        tuned, log = tune_one(base, tok, m, examples, cfg, heads=heads, lora_r=lora_r)
        res["methods"][m] = {"log": log, "eval": evaluate_tuned(tuned, tok, base, chat=chat, n_kl=n_kl)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(tune_table(res) + "\n")
    return res


_TABLE_NAMES = {"heads": "precise SFT (key heads)", "full": "full SFT", "lora": "LoRA"}


def tune_table(res: dict) -> str:
    """Markdown table of a :func:`tune` result: one row per metric, one column per model."""
    cols = [("base", res["base"], None)] + [
        (_TABLE_NAMES.get(m, m), d["eval"], d["log"]) for m, d in res["methods"].items()
    ]
    keys = list(res["base"])
    lines = ["| metric | " + " | ".join(c for c, _, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{e.get(key, float('nan')):.3f}" for _, e, _ in cols) + " |")
    lines.append(
        "| trainable params | – | "
        + " | ".join(f"{lg['n_trainable']:,} ({100 * lg['trainable_share']:.2f}%)" for _, _, lg in cols[1:])
        + " |"
    )
    lines.append(
        "| time per step (s) | – | " + " | ".join(f"{lg['time_per_step']:.4f}" for _, _, lg in cols[1:]) + " |"
    )
    lines.append("| final train loss | – | " + " | ".join(f"{lg['final_loss']:.4f}" for _, _, lg in cols[1:]) + " |")
    return "\n".join(lines)
