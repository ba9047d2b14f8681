"""§3.4 inspection: where the key heads attend (operands, operators) and what each MLP writes.

The operand and operator positions come from the rows themselves: ``a`` and ``b`` (the
operands) and ``op_text`` (the operator's words as they appear in the prompt), so the same
code reads a researcher's own prompt rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.head_scores import attention_to_positions
from headscope.model import HeadModel
from headscope.papers.arithmetic.prompts import Row, length_groups
from headscope.results import Head, format_head


def token_masks(
    model: HeadModel, rows: Sequence[Row]
) -> tuple[Bool[Tensor, " batch pos"], Bool[Tensor, " batch pos"]]:
    """Bool masks ``[batch, pos]`` of operand positions (the words of ``a`` and ``b``) and
    operator positions (the words of ``op_text``) for equal-length ``rows``."""
    toks = model.to_tokens([r["prompt"] for r in rows])
    B, T = toks.shape
    opnd = torch.zeros(B, T, dtype=torch.bool)
    oper = torch.zeros(B, T, dtype=torch.bool)
    for i, r in enumerate(rows):
        missing = [k for k in ("a", "b", "op_text") if k not in r]
        if missing:
            raise HeadscopeError(f"prompt row {r.get('prompt')!r} lacks {missing}; inspection needs a, b and op_text")
        words = model.to_str_tokens(toks[i])
        op_words = set(str(r["op_text"]).split())
        for j, w in enumerate(words):
            w = str(w).strip()
            if w in (str(r["a"]), str(r["b"])):
                opnd[i, j] = True
            elif w in op_words:
                oper[i, j] = True
    return opnd, oper


@torch.no_grad()
def inspect(
    model: HeadModel, rows: Sequence[Row], heads: Sequence[Head], max_per_group: int = 64, seed: int = 0
) -> dict:
    """Attention of the key heads onto operands/operators, and what the MLPs write (§3.4).

    - ``attention_operands`` / ``attention_operators``: per head ``[layer, head]`` share of
      attention from the last position onto operand / operator tokens (mean over prompts,
      groups weighted by size); ``key`` vs ``average`` summarise ``heads`` against all heads.
    - ``mlp_logit_lens``: per layer, the mean rank of C (0 = top) and probability of C
      when the final norm and unembedding read ``mlp_out[L]`` at the last position.
    - ``mlp_cosine``: per layer, mean cosine of ``mlp_out[L]`` (last position) with the
      unembedding rows of A, B and C.
    """
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
    W_U = model.unembed_matrix().detach().float().cpu()  # [d_model, vocab]
    norm = model.final_norm() or torch.nn.Identity()
    norm_dev = next((p.device for p in norm.parameters()), torch.device("cpu"))
    total = 0
    for _, grp in length_groups(model, rows).items():
        if len(grp) > max_per_group:
            grp = rng.sample(grp, max_per_group)
        toks = model.to_tokens([r["prompt"] for r in grp])
        opnd, oper = token_masks(model, grp)
        att_opnd += attention_to_positions(model, toks, opnd).scores * len(grp)
        att_oper += attention_to_positions(model, toks, oper).scores * len(grp)
        _, cache = model.run_with_heads(toks, sites=("mlp_out",))
        ids = {k: torch.tensor([model.token_id(str(r[k.lower()])) for r in grp]) for k in ("A", "B", "C")}
        for L in range(nL):
            m = cache.mlp_out[L][:, -1]  # [batch, d_model]
            lens = norm(m.to(norm_dev)).float().cpu() @ W_U  # [batch, vocab]
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
    key = [(int(L), int(h)) for L, h in heads]
    key_mean = float(torch.stack([both[L, h] for L, h in key]).mean()) if key else float("nan")
    return {
        "attention_operands": att_opnd.tolist(),
        "attention_operators": att_oper.tolist(),
        "key_heads": [list(h) for h in key],
        "key": {format_head(h): {"operands": float(att_opnd[h]), "operators": float(att_oper[h])} for h in key},
        "key_mean_attention": key_mean,
        "average_head_attention": float(both.mean()),
        "mlp_logit_lens": {"rank_of_C": (rank / total).tolist(), "prob_of_C": (prob / total).tolist()},
        "mlp_cosine": {k: (v / total).tolist() for k, v in cos.items()},
        "n_prompts": total,
    }


@torch.no_grad()
def attention_contrast(model: HeadModel, rows: Sequence[Row], heads: Sequence[Head]) -> dict:
    """Per prompt: the key heads' mean share of last-position attention on operand +
    operator tokens, minus the mean over all heads; with a bootstrap CI over prompts
    (:func:`headscope.stats.paired_diff`) and a paired permutation p-value (issue 16, item 3).
    """
    from headscope.stats import paired_diff, paired_permutation_p

    rows = list(rows)
    if not rows or not heads:
        raise HeadscopeError("attention_contrast needs prompts and at least one head")
    key = [(int(L), int(h)) for L, h in heads]
    key_v: list[float] = []
    avg_v: list[float] = []
    per_head = torch.zeros(model.n_layers, model.n_heads)
    for _, grp in length_groups(model, rows).items():
        toks = model.to_tokens([r["prompt"] for r in grp])
        opnd, oper = token_masks(model, grp)
        mask = (opnd | oper).float()
        _, cache = model.run_with_heads(toks, sites=(), pattern=True)
        share = torch.stack(
            [(cache.pattern[L][:, :, -1, :].float().cpu() * mask[:, None]).sum(-1) for L in range(model.n_layers)],
            1,
        )  # [batch, layer, head]
        per_head += share.sum(0)
        key_v += torch.stack([share[:, L, h] for L, h in key], -1).mean(-1).tolist()
        avg_v += share.flatten(1).mean(-1).tolist()
    diff = paired_diff(key_v, avg_v)
    return {
        "heads": [format_head(h) for h in key],
        "n": len(key_v),
        "key_mean": float(sum(key_v) / len(key_v)),
        "average_head_mean": float(sum(avg_v) / len(avg_v)),
        "difference": diff.to_dict(),
        "permutation_p": paired_permutation_p(key_v, avg_v, alternative="greater"),
        "per_head": (per_head / len(key_v)).tolist(),
        "per_prompt": {"key": key_v, "average": avg_v},
    }
