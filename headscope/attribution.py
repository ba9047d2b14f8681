"""Head attribution: attribution patching, direct logit attribution, ablations, head scores.

Every function takes a :class:`~headscope.model.HeadModel` (either backend) and returns a
:class:`~headscope.results.HeadResult` (or plain tensors for the curve data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.controls import random_heads
from headscope.model import HeadCache, HeadModel, Patch, remote_sweep
from headscope.results import HeadResult

Metric = Callable[[Float[Tensor, " batch pos vocab"]], Tensor]


# ---------------------------------------------------------------------------------------
# Attribution patching


@remote_sweep
def attribution_patching(
    model: HeadModel,
    clean: Int[Tensor, " batch pos"],
    corrupt: Int[Tensor, " batch pos"],
    metric: Metric,
    *,
    per_position: bool = True,
    normalize: bool = True,
) -> HeadResult:
    """Linear approximation of denoising head patching (Nanda 2023, "Attribution patching").

    ``effect(L, h, p) ≈ Σ_d ∂m/∂z[L, p, h, d] |_corrupt · (z_clean − z_corrupt)[L, p, h, d]``,
    from two forward passes (clean with cache, corrupt with gradients) and one backward
    pass; normalised by ``m_clean − m_corrupt`` like exact patching, so the two are on
    one scale. Exact when the metric is linear in the patched activation.
    """
    clean, corrupt = model.check_tokens(clean), model.check_tokens(corrupt)
    if clean.shape != corrupt.shape:
        raise HeadscopeError(f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} tokens differ in shape")
    cl_logits, cl_cache = model.run_with_heads(clean, sites=("z",))
    m_clean = metric(cl_logits).detach()
    m_corrupt, z_cor, g_cor = model.head_grads(corrupt, metric)
    effects = torch.stack(
        [((cl_cache.z[L] - z_cor.z[L]) * g_cor.z[L]).sum(dim=(0, -1)) for L in range(model.n_layers)]
    )
    # effects: [layer, pos, head] summed over the batch; the metric is a batch mean,
    # whose gradient already carries the 1/batch factor.
    denom = (m_clean - m_corrupt).item() if normalize else 1.0
    if normalize and abs(denom) < 1e-9:
        raise HeadscopeError("clean and corrupt metrics are equal; attribution cannot be normalised")
    scores = effects / denom
    if not per_position:
        scores = scores.sum(1)
    info = {
        "method": "attribution_patching",
        "model": getattr(model, "name", "model"),
        "backend": getattr(model, "backend", "?"),
        "metric_clean": float(m_clean),
        "metric_corrupt": float(m_corrupt),
        "metric_name": "approx. normalised logit diff",
        "title": "attribution patching (gradient approximation)",
    }
    axes = ("layer", "pos", "head") if per_position else ("layer", "head")
    return HeadResult(scores.detach().cpu(), axes, {}, info)


# ---------------------------------------------------------------------------------------
# Direct logit attribution


@torch.no_grad()
def direct_logit_attribution(
    model: HeadModel,
    tokens: Int[Tensor, " batch pos"],
    answer: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"] | None = None,
    pos: int = -1,
) -> HeadResult:
    """Each head's direct contribution to ``logit(answer) − logit(wrong)`` at ``pos``.

    The final norm is linearised at the run's own scale (TransformerLens's
    ``apply_ln_to_stack`` convention): with ``x`` the final residual and ``s`` its
    RMS (or standard deviation for LayerNorm, after centring), a component ``c`` of the
    residual contributes ``(g ⊙ c̃ / s) · (W_U[:, answer] − W_U[:, wrong])`` where ``c̃`` is
    ``c`` (RMSNorm) or ``c`` centred (LayerNorm). Head ``h`` of layer ``L`` writes
    ``z[L, :, h] @ W_O[L, h]``. ``info["components"]`` holds the embedding and per-layer
    MLP (and attention-bias) terms, so that heads + components sum to the logit difference
    (up to the norm's bias term, reported as ``info["bias_term"]``). RMS norms' gains are
    read from the module (Gemma scales by ``1 + w``); a norm after attention (Gemma2) is
    linearised at its own scale too; with final logit soft-capping (Gemma2) the raw,
    pre-cap logit difference is attributed (``info["softcap"]``).
    """
    tokens = model.check_tokens(tokens)
    logits, cache = model.run_with_heads(tokens, sites=("z", "resid_pre", "attn_out", "mlp_out"))
    B = tokens.shape[0]
    W_U = model.unembed_matrix()  # [d_model, vocab]
    direction = W_U[:, answer.to(W_U.device)].T  # [batch, d_model]
    if wrong is not None:
        direction = direction - W_U[:, wrong.to(W_U.device)].T
    norm = model.final_norm()
    if norm is None:
        raise HeadscopeError(f"direct logit attribution needs the final norm; {model.name} has none")
    from headscope.backends.base import materialized

    with materialized(norm):  # a device map may keep it on disk between forwards
        weight = norm.weight.detach().clone() if isinstance(norm.weight, Tensor) else norm.weight
    if not isinstance(weight, Tensor):
        raise HeadscopeError(
            f"the final norm of {model.name} has no weight tensor; direct logit attribution needs one"
        )
    eps = _norm_eps(norm)
    is_layernorm = isinstance(norm, torch.nn.LayerNorm)
    g = weight.detach() if is_layernorm else _rms_gain(norm, model.d_model, eps)
    L_last = model.n_layers - 1
    x = cache.resid_pre[L_last] + cache.attn_out[L_last] + cache.mlp_out[L_last]
    x = x[:, pos]  # [batch, d_model]

    def center(t: Tensor) -> Tensor:
        return t - t.mean(-1, keepdim=True) if is_layernorm else t

    xc = center(x)
    scale = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # [batch, 1]

    def contrib(c: Tensor) -> Tensor:  # c: [batch, d_model] → [batch]
        return ((center(c) * g / scale) * direction).sum(-1)

    heads = torch.zeros(model.n_layers, model.n_heads)
    components: dict[str, float] = {"embed": contrib(cache.resid_pre[0][:, pos]).mean().item()}
    post_norms = _post_attention_norms(model)
    for L in range(model.n_layers):
        W_O = model.o_proj_weight(L)  # [heads, d_head, d_model]
        z = cache.z[L][:, pos]  # [batch, heads, d_head]
        result = torch.einsum("bhd,hdm->bhm", z, W_O)
        if post_norms is not None:
            # A norm after attention (Gemma2) is linearised at its own scale, like the final norm:
            # head h adds g2 ⊙ result_h / rms(Σ_h result_h) to the residual stream.
            pn = post_norms[L]
            pn_eps = _norm_eps(pn)
            raw = result.sum(1)
            scale2 = (raw.pow(2).mean(-1) + pn_eps).sqrt()[:, None, None]
            result = result * _rms_gain(pn, model.d_model, pn_eps) / scale2
        for h in range(model.n_heads):
            heads[L, h] = contrib(result[:, h]).mean()
        attn_bias = cache.attn_out[L][:, pos] - result.sum(1)  # o_proj bias, zero for Llama
        components[f"attn_bias_{L}"] = contrib(attn_bias).mean().item()
        components[f"mlp_{L}"] = contrib(cache.mlp_out[L][:, pos]).mean().item()
    bias_term = 0.0
    norm_bias = getattr(norm, "bias", None)
    if isinstance(norm_bias, Tensor):
        bias_term = (norm_bias.detach() * direction).sum(-1).mean().item()
    bvec = model.unembed_bias()
    if bvec is not None:
        bias_term += (bvec[answer] - (bvec[wrong] if wrong is not None else 0)).mean().item()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:  # Gemma2: logits = cap·tanh(raw / cap); attribute the raw (pre-cap) logits
        logits = cap * torch.atanh((logits / cap).clamp(-1 + 1e-7, 1 - 1e-7))
    target = logits[torch.arange(B), pos, answer] - (logits[torch.arange(B), pos, wrong] if wrong is not None else 0)
    info = {
        "method": "direct_logit_attribution",
        "model": getattr(model, "name", "model"),
        "components": components,
        "bias_term": bias_term,
        "logit_diff": target.mean().item(),
        "softcap": float(cap) if cap else None,
        "metric_name": "direct logit attribution",
        "title": "direct logit attribution per head",
    }
    return HeadResult(heads, ("layer", "head"), {}, info)


def _norm_eps(norm) -> float:
    eps: Any = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-5)
    return float(eps)


@torch.no_grad()
def _rms_gain(norm, d_model: int, eps: float) -> Tensor:
    """The effective per-dimension gain of an RMS norm, read from the module itself:
    ``norm(1) · sqrt(1 + eps)`` (Llama's ``w``, Gemma's ``1 + w``: no per-family rule)."""
    from headscope.backends.base import materialized

    with materialized(norm):  # a device map may keep it on disk (meta) between forwards
        p = next(norm.parameters())
        ones = torch.ones(1, d_model, dtype=p.dtype, device=p.device)
        return (norm.forward(ones)[0] * (1.0 + eps) ** 0.5).detach().clone()


def _post_attention_norms(model) -> list | None:
    """Per layer, the norm applied to attention's output before the residual add, or None."""
    paths = getattr(model, "paths", None)
    if paths is None or getattr(paths, "attn_out", None) is None or model.hf_model is None:
        return None
    from headscope.backends._hf import get_path

    layers = get_path(model.hf_model, paths.layers)
    mods = [get_path(layers[L], paths.attn_out) for L in range(model.n_layers)]
    return [getattr(m, "_original_component", m) for m in mods]


# ---------------------------------------------------------------------------------------
# Ablations and knockout curves


def ablation_patches(
    model: HeadModel,
    heads: Sequence[tuple[int, int]],
    how: str = "mean",
    reference: Int[Tensor, " batch pos"] | HeadCache | None = None,
    batch: int | None = None,
    seed: int = 0,
) -> list[Patch]:
    """Patches that ablate ``heads``.

    ``how``: ``"zero"`` (z = 0); ``"mean"`` (z = its mean over the reference set's
    prompts, per position when lengths match, else over positions too); ``"resample"``
    (z from a randomly drawn reference prompt, per row; needs ``batch``).
    """
    if how == "zero":
        return [Patch(layer=L, head=h, mode="zero") for L, h in heads]
    if reference is None:
        raise HeadscopeError(f"{how} ablation needs a reference set (prompts or a HeadCache)")
    if not isinstance(reference, HeadCache):
        _, reference = model.run_with_heads(reference, layers=sorted({L for L, _ in heads}), sites=("z",))
    out = []
    gen = torch.Generator().manual_seed(seed)
    for L, h in heads:
        if L not in reference.z:
            raise HeadscopeError(f"the reference cache lacks layer {L}")
        ref = reference.z[L][:, :, h]  # [n_ref, pos, d_head]
        if how == "mean":
            out.append(Patch(layer=L, head=h, value=ref.mean(0)))
        elif how == "resample":
            if batch is None:
                raise HeadscopeError("resample ablation needs the batch size of the ablated run")
            idx = torch.randint(0, ref.shape[0], (batch,), generator=gen)
            out.append(Patch(layer=L, head=h, value=ref[idx]))
        else:
            raise HeadscopeError(f"unknown ablation {how!r}; use zero, mean or resample")
    return out


@torch.no_grad()
def ablate(
    model: HeadModel,
    tokens: Int[Tensor, " batch pos"],
    heads: Sequence[tuple[int, int]],
    how: str = "mean",
    reference=None,
    seed: int = 0,
) -> Tensor:
    """Logits of ``tokens`` with ``heads`` ablated (see :func:`ablation_patches`)."""
    return model.run_patched(tokens, ablation_patches(model, heads, how, reference, batch=tokens.shape[0], seed=seed))


def knockout_curve(
    model: HeadModel,
    tokens: Int[Tensor, " batch pos"],
    score: Callable[[Tensor], float],
    ranking: Sequence[tuple[int, int]],
    ks: Sequence[int] = (0, 1, 2, 4, 8),
    how: str = "mean",
    reference=None,
    n_random: int = 3,
    seed: int = 0,
) -> dict:
    """``score`` (e.g. accuracy) after ablating the top-k heads of ``ranking`` vs k random heads.

    Random heads come from :func:`headscope.controls.random_heads` (uniformly, without
    replacement, never one of the top-k heads), ``n_random`` draws per k with seeds
    ``seed..seed+n_random−1``. Returns
    ``{"k": [...], "top": [...], "random_mean": [...], "random_std": [...], "random": [[...]]}``.
    """
    n_all = model.n_layers * model.n_heads
    if reference is None and how != "zero":
        reference = tokens
    top_vals, rnd_vals = [], []
    for k in progress(list(ks), desc="knockout"):
        if k > n_all:
            raise HeadscopeError(f"k={k} exceeds the model's {n_all} heads")
        top_vals.append(float(score(ablate(model, tokens, list(ranking[:k]), how, reference))))
        row = []
        for s in range(n_random):
            pick = random_heads(model.n_layers, model.n_heads, k, seed + s, exclude=ranking[:k])
            row.append(float(score(ablate(model, tokens, pick, how, reference, seed=seed + s))))
        rnd_vals.append(row)
    t = torch.tensor(rnd_vals)
    return {
        "k": list(ks),
        "top": top_vals,
        "random": rnd_vals,
        "random_mean": t.mean(1).tolist(),
        "random_std": (t.std(1) if t.shape[1] > 1 else torch.zeros(len(ks))).tolist(),
    }
