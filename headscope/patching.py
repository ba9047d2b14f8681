"""Activation patching of heads and layers, batched and restarted from cached residuals.

Method (Meng et al. 2022; Heimersheim & Nanda, "How to use and interpret activation
patching", 2024): run the clean and the corrupt prompts once, caching activations; then,
for each component, run the *base* prompts (corrupt when denoising, clean when noising)
with that component's activation replaced by its value from the other run, and score the
metric normalised as ``(m − m_corrupt) / (m_clean − m_corrupt)`` (1 = clean behaviour,
0 = corrupt behaviour). Noising results are reported relative to the clean run,
``(m − m_clean) / (m_clean − m_corrupt)``, so that in both modes 0 means "no effect" and
a heatmap centred on 0 reads the same way (−1: noising this component alone destroys
the behaviour; +1: denoising it alone restores it).

Speed: a sweep over the heads of layer L stacks one copy of the batch per patched
component along the batch axis (chunked to ``max_rows`` rows), and every patched run
re-enters the model at block L from the cached residual, so blocks 0..L−1 are never
recomputed. TransformerLens's ``patching.get_act_patch_attn_head_out_by_pos`` runs one
full forward pass per (layer, position, head) instead; the results are identical
(tests/headscope/test_patching.py) and ``benchmarks/patching_speed.py`` compares times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.common.batching import chunks
from headscope.common.errors import HeadscopeError
from headscope.common.metrics import normalized_patching_metric
from headscope.common.progress import progress
from headscope.fastpatch import PrefixSweep, first_difference, metric_columns, metric_positions, parse_memory
from headscope.model import HeadCache, HeadModel, Patch, Site, remote_sweep
from headscope.results import HeadResult

Metric = Callable[[Float[Tensor, " batch pos vocab"]], Tensor]
PatchMode = Literal["denoise", "noise"]


def _validate(model: HeadModel, clean: Tensor, corrupt: Tensor, mode: str) -> None:
    if mode not in ("denoise", "noise"):
        raise HeadscopeError(
            f"unknown patching mode {mode!r}; use denoise (clean into corrupt) or noise (corrupt into clean)"
        )
    if clean.shape != corrupt.shape:
        raise HeadscopeError(
            f"clean tokens {tuple(clean.shape)} and corrupt tokens {tuple(corrupt.shape)} differ in shape; "
            "each clean prompt needs a corrupt partner of the same token length"
        )


#: Smallest clean-vs-corrupt metric gap (relative to the metric's scale, at least 1) that
#: patching normalises by; below it the scores are noise divided by noise.
MIN_GAP = 1e-3


def _runs(
    model: HeadModel,
    clean: Tensor,
    corrupt: Tensor,
    metric: Metric,
    sites: Sequence[str],
    normalize: bool = True,
    return_logits: bool = False,
    layers: Sequence[int] | None = None,
):
    # Caches only for the layers a sweep patches (all, by default).
    cl_logits, cl_cache = model.run_with_heads(clean, layers=layers, sites=tuple(sites))
    co_logits, co_cache = model.run_with_heads(corrupt, layers=layers, sites=tuple(sites))
    m_clean, m_corrupt = metric(cl_logits).detach(), metric(co_logits).detach()
    _check_gap(m_clean, m_corrupt, normalize)
    if return_logits:
        return m_clean, m_corrupt, cl_cache, co_cache, cl_logits, co_logits
    return m_clean, m_corrupt, cl_cache, co_cache


def _check_gap(m_clean: Tensor, m_corrupt: Tensor, normalize: bool) -> None:
    gap = float((m_clean - m_corrupt).abs())
    if normalize and gap < MIN_GAP * max(1.0, abs(float(m_clean)), abs(float(m_corrupt))):
        raise HeadscopeError(
            f"the metric barely differs between clean ({float(m_clean):.4g}) and corrupt ({float(m_corrupt):.4g}) "
            f"prompts (gap {gap:.2g}): the corruption does not change the answer, and normalised scores would divide "
            "by that gap; use a corruption that changes the model's answer"
        )


def _fast_ok(model: HeadModel) -> bool:
    return model.supports("fast_reentry")


def _prefix_ok(model: HeadModel) -> bool:
    """The exact prefix-reuse sweep (:mod:`headscope.fastpatch`) applies: an HF module tree
    with a fast re-entry path and no ``hooked`` patches active."""
    return (
        _fast_ok(model)
        and getattr(model, "hf_model", None) is not None
        and not getattr(model, "_active", None)
        and not model.hf_model.training  # type: ignore[union-attr]
    )


@remote_sweep
def patch_heads(
    model: HeadModel,
    clean: Int[Tensor, " batch pos"],
    corrupt: Int[Tensor, " batch pos"],
    metric: Metric,
    *,
    mode: PatchMode = "denoise",
    per_position: bool = False,
    layers: Sequence[int] | None = None,
    max_rows: int = 512,
    max_memory: int | str | None = None,
    positions: Sequence[int] | None = None,
    fast: bool = True,
    dtype: torch.dtype | str | None = None,
    normalize: bool = True,
    show_progress: bool = True,
) -> HeadResult:
    """Patch every head's output ``z`` (all positions, or one position at a time).

    Args:
        metric: logits ``[batch, pos, vocab]`` → scalar (mean over the batch).
        mode: ``"denoise"``: clean activation into the corrupt run; ``"noise"``: corrupt
            activation into the clean run.
        per_position: one patch per (head, position) instead of per head.
        max_rows: most patched rows (copies × batch) per forward pass.
        max_memory: activation bytes one forward pass may hold (``"256MB"``, ``"1GB"`` or
            an int; default :data:`headscope.fastpatch.DEFAULT_MAX_MEMORY`, 256 MB).
        positions: the sequence positions ``metric`` reads (negative counts from the
            end); only those are unembedded. Default: the metric's ``positions``
            attribute, else the last position if a probe shows the metric reads only it
            (see :func:`headscope.fastpatch.metric_positions`), else all.
        fast: the exact fast path of :mod:`headscope.fastpatch` (re-entry at ``z``,
            prefix reuse, unchanged rows skipped, metric positions only); ``False`` runs
            every patched copy through the whole model.
        dtype: ``"bfloat16"`` (or ``torch.bfloat16``) runs the patched copies of the fast
            path in that precision, on low-precision copies of the blocks (the model is
            untouched); the sweep is then repeated in float32 on its first, middle and
            last layer and the largest difference is reported in
            ``info["dtype_error"]``. Default: the model's own dtype.
        normalize: report ``(m − m_corrupt)/(m_clean − m_corrupt)``; else the raw metric.

    Returns:
        HeadResult with axes ``("layer", "head")`` or ``("layer", "pos", "head")``;
        ``info["engine"]`` says which path ran and ``info["metric_positions"]`` which
        positions were unembedded.
    """
    clean, corrupt = model.check_tokens(clean), model.check_tokens(corrupt)
    _validate(model, clean, corrupt, mode)
    low = _low_precision(dtype)
    if fast and low is None and _prefix_ok(model):
        return _prefix_patch_heads(
            model, clean, corrupt, metric, mode, per_position, layers, max_rows, max_memory, positions, normalize,
            show_progress,
        )  # fmt: skip
    m_clean, m_corrupt, cl_cache, co_cache, cl_logits, co_logits = _runs(
        model, clean, corrupt, metric, ("z", "resid_pre"), normalize, return_logits=True, layers=layers
    )
    base_tokens, base, src = (corrupt, co_cache, cl_cache) if mode == "denoise" else (clean, cl_cache, co_cache)
    B, P = clean.shape
    H = model.n_heads
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    out = torch.full((model.n_layers, P, H) if per_position else (model.n_layers, H), float("nan"))
    budget = parse_memory(max_memory)
    if low is not None and not (fast and _prefix_ok(model)):
        raise HeadscopeError(
            "dtype= applies to the fast path only, which this model cannot take (no HF module tree, hooked "
            "patches active, or fast=False); leave dtype unset"
        )
    if fast and _prefix_ok(model):
        base_logits = co_logits if mode == "denoise" else cl_logits
        pos, how = metric_positions(metric, base_logits, positions)
        run = (clean, corrupt, base_tokens, base_logits, src, metric)
        opts = (per_position, pos, budget, max_rows, (m_clean, m_corrupt, mode, normalize))
        _prefix_sweep(model, *run, out, layers, *opts, show_progress, dtype=low)
        axes = ("layer", "pos", "head") if per_position else ("layer", "head")
        info = _info(model, mode, m_clean, m_corrupt, normalize, site="z", per_position=per_position)
        info.update({"engine": "prefix", "metric_positions": pos, "metric_positions_from": how})
        if low is not None:
            check = sorted({layers[0], layers[len(layers) // 2], layers[-1]})
            ref = torch.full_like(out, float("nan"))
            _prefix_sweep(model, *run, ref, check, *opts, False)
            err = float((out[check] - ref[check]).abs().max())
            info["dtype"] = str(low).removeprefix("torch.")
            info["dtype_error"] = {"max_abs_vs_float32": err, "layers_checked": check, "n_scores": ref[check].numel()}
        return HeadResult(out, axes, {"pos": _pos_labels(model, clean)}, info)
    # Under model.hooked(...) patches the cached residuals already carry them; a re-entry
    # would skip those below the patched layer, so every copy runs the whole model.
    use_fast = fast and _fast_ok(model) and not getattr(model, "_active", None)
    per_chunk = max(1, max_rows // B)
    for L in progress(layers, desc="patching heads") if show_progress else layers:
        jobs = [(h, p) for h in range(H) for p in (range(P) if per_position else [None])]
        for chunk in chunks(jobs, per_chunk):
            n = len(chunk)
            mask = torch.zeros(n * B, P, H, 1, dtype=torch.bool, device=clean.device)
            for j, (h, p) in enumerate(chunk):
                mask[j * B : (j + 1) * B, slice(None) if p is None else p, h] = True
            value = src.z[L].repeat(n, 1, 1, 1)
            patch = Patch(layer=L, site="z", mode="replace", value=value, mask=mask)
            toks = base_tokens.repeat(n, 1)
            if use_fast:
                logits = model.run_from_layer(toks, base.resid_pre[L].repeat(n, 1, 1), L, [patch])
            else:
                logits = model.run_patched(toks, [patch])
            for j, (h, p) in enumerate(chunk):
                m = metric(logits[j * B : (j + 1) * B]).detach()
                v = _score(m, m_clean, m_corrupt, mode, normalize)
                if per_position:
                    out[L, p, h] = v
                else:
                    out[L, h] = v
    axes = ("layer", "pos", "head") if per_position else ("layer", "head")
    info = _info(model, mode, m_clean, m_corrupt, normalize, site="z", per_position=per_position)
    info["engine"] = "reentry" if use_fast else "full"
    return HeadResult(out, axes, {"pos": _pos_labels(model, clean)}, info)


def _prefix_patch_heads(
    model: HeadModel,
    clean: Tensor,
    corrupt: Tensor,
    metric: Metric,
    mode: str,
    per_position: bool,
    layers: Sequence[int] | None,
    max_rows: int,
    max_memory: int | str | None,
    positions: Sequence[int] | None,
    normalize: bool,
    show_progress: bool,
) -> HeadResult:
    """:func:`patch_heads` on the fast path, with three runs before the sweep instead of four.

    The capture run of :class:`~headscope.fastpatch.PrefixSweep` (a backend run of the
    base prompts) gives the base logits, its plain-block run the base ``z`` and keys and
    values, and :meth:`~headscope.fastpatch.PrefixSweep.source_run` the source prompts'
    ``z`` and their logits at the metric positions (the metric is checked to read only
    those). Where the source run does not apply (GPT-2 and OPT add position embeddings in
    the model's forward), the backend runs both prompt sets with ``z`` caches instead;
    ``info["source_run"]`` says which ran. Float32 sweeps only: a ``dtype`` sweep keeps the
    backend's cached runs, which its float32 re-check reuses."""
    base_tokens, src_tokens = (corrupt, clean) if mode == "denoise" else (clean, corrupt)
    sweep = PrefixSweep(model, base_tokens, None, keep_logits=True)
    base_full = sweep.captured_logits
    assert base_full is not None
    pos, how = metric_positions(metric, base_full, positions)
    sweep.set_positions(pos)
    _check_sweep_base(sweep, base_full[:, pos])
    got = sweep.source_run(src_tokens)  # before set_columns: the source's metric needs full rows
    if got is None:  # the backend's run with caches gives the source's z and logits
        m_clean, m_corrupt, cl_cache, co_cache = _runs(model, clean, corrupt, metric, ("z",), normalize, layers=layers)
        src = cl_cache if mode == "denoise" else co_cache
        source = "backend"
    else:
        z_src, src_at_pos = got
        src_full = torch.full_like(base_full, float("nan"))
        src_full[:, pos] = src_at_pos.to(src_full.dtype)
        m_base, m_src = metric(base_full).detach(), metric(src_full).detach()
        m_clean, m_corrupt = (m_src, m_base) if mode == "denoise" else (m_base, m_src)
        _check_gap(m_clean, m_corrupt, normalize)
        src = HeadCache(z=dict(enumerate(z_src)))
        source = "blocks"
        del src_full
    cols = metric_columns(metric, base_full, pos)
    columns: int | str = "all"
    if cols is not None and sweep.set_columns(cols):
        columns = int(cols.numel())
    del base_full
    B, P = clean.shape
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    out = torch.full(
        (model.n_layers, P, model.n_heads) if per_position else (model.n_layers, model.n_heads), float("nan")
    )
    opts = (per_position, pos, parse_memory(max_memory), max_rows, (m_clean, m_corrupt, mode, normalize))
    _prefix_sweep(model, clean, corrupt, base_tokens, sweep.base_logits, src, metric, out, layers, *opts,
                  show_progress, sweep=sweep)  # fmt: skip
    axes = ("layer", "pos", "head") if per_position else ("layer", "head")
    info = _info(model, mode, m_clean, m_corrupt, normalize, site="z", per_position=per_position)
    info.update({"engine": "prefix", "metric_positions": pos, "metric_positions_from": how, "source_run": source,
                 "metric_columns": columns})  # fmt: skip
    return HeadResult(out, axes, {"pos": _pos_labels(model, clean)}, info)


def _prefix_sweep(
    model: HeadModel,
    clean: Tensor,
    corrupt: Tensor,
    base_tokens: Tensor,
    base_logits: Tensor,
    src: HeadCache,
    metric: Metric,
    out: Tensor,
    layers: Sequence[int],
    per_position: bool,
    pos: list[int],
    budget: int,
    max_rows: int,
    norm: tuple,
    show_progress: bool,
    dtype: torch.dtype | None = None,
    sweep: PrefixSweep | None = None,
) -> None:
    """Fill ``out`` by the exact fast path of :mod:`headscope.fastpatch` (on ``sweep`` when
    given: a base run already made and checked).

    Per-position: one group per (layer, position ``p``); the copies of a group patch one
    head each at ``p``, for the base rows whose clean and corrupt prompts already differ
    at or before ``p`` (for the others the patch is the identity). All positions: one
    group per layer, starting at the first position where any row differs.
    """
    m_clean, m_corrupt, mode, normalize = norm
    B, T = base_tokens.shape
    H = model.n_heads
    if sweep is None:
        sweep = PrefixSweep(model, base_tokens, pos, dtype=dtype)
        if dtype is None:
            _check_sweep_base(sweep, base_logits[:, pos])
    first = first_difference(clean, corrupt)  # [B]
    m_base = m_corrupt if mode == "denoise" else m_clean
    s_base = _score(m_base, m_clean, m_corrupt, mode, normalize)
    # The metric gets [B, T, vocab] logits; positions (and, with sweep.columns, vocabulary
    # columns) it does not read hold NaN.
    cols = sweep.columns
    buf = torch.full((B, T, model.d_vocab_out), float("nan"), dtype=sweep.base_logits.dtype)
    pos_t = torch.tensor(pos)

    def put(which: Tensor | slice, vals: Tensor) -> None:
        """``buf``'s read entries of the rows ``which`` := ``vals`` ``[rows, k, read columns]``."""
        r = torch.arange(B)[which] if isinstance(which, slice) else which
        if cols is None:
            buf[r[:, None], pos_t[None, :]] = vals
        else:
            buf[r[:, None, None], pos_t[None, :, None], cols[None, None, :]] = vals

    per_token = sweep.bytes_per_token()
    logit_bytes = 8 * len(pos) * sweep.base_logits.shape[-1]
    starts = list(range(T)) if per_position else [int(first.min())]
    # Patched groups' final residuals wait here and are unembedded together: the
    # unembedding streams all of W_U once per call, so one call for many groups is cheaper.
    pending: list[tuple] = []
    n_pending = 0
    unembed_rows = _unembed_rows(sweep, len(pos), budget)

    def flush() -> None:
        nonlocal n_pending
        if not pending:
            return
        groups: dict[tuple[int, ...], list[int]] = {}
        for key, (L, p, hs, active, rows, hp, idx) in enumerate(pending):
            groups.setdefault(tuple(idx), []).append(key)
        for idx_key, keys in groups.items():
            idx = list(idx_key)
            hps = [pending[k][5] for k in keys]
            lg_all = sweep.unembed_at(torch.cat(hps)).float() if idx else None
            at = 0
            for k in keys:
                L, p, hs, active, rows, hp, _ = pending[k]
                R = rows.shape[0]
                lg = sweep.base_logits.index_select(0, rows)
                if lg_all is not None:
                    lg[:, idx] = lg_all[at : at + R]
                at += R
                nA = active.numel()
                for j, h in enumerate(hs):
                    put(slice(None), sweep.base_logits)
                    put(active, lg[j * nA : (j + 1) * nA])
                    v = _score(metric(buf).detach(), m_clean, m_corrupt, mode, normalize)
                    if per_position:
                        out[L, p, h] = v
                    else:
                        out[L, h] = v
        pending.clear()
        n_pending = 0

    with sweep.session():
        for L in progress(layers, desc="patching heads") if show_progress else layers:
            zb, zs = sweep.z[L], src.z[L].to(sweep.z[L].dtype)
            for p in starts:
                active = torch.nonzero(first <= p).flatten() if per_position else torch.nonzero(first < T).flatten()
                if p >= T or active.numel() == 0:
                    if per_position:
                        out[L, p] = s_base
                    else:
                        out[L] = s_base
                    continue
                nA = active.numel()
                q = 1 if per_position else T - p
                per_copy = per_token * (T - p) + logit_bytes
                n_heads = max(1, min(H, budget // (per_copy * nA), max_rows // nA))
                for hs in chunks(list(range(H)), n_heads):
                    rows = active.repeat(len(hs))
                    z_new = zb[rows, p : p + q].clone()
                    for j, h in enumerate(hs):
                        z_new[j * nA : (j + 1) * nA, :, h] = zs[active, p : p + q, h]
                    hp, idx = sweep.run_hidden(L, p, rows, z_new)
                    pending.append((L, p, hs, active, rows, hp, idx))
                    n_pending += rows.shape[0]
                    if n_pending >= unembed_rows:
                        flush()
        flush()


def _unembed_rows(sweep: PrefixSweep, n_pos: int, budget: int) -> int:
    """Copies whose metric-position logits one batched unembedding may hold within ``budget``."""
    return max(1, budget // max(1, 4 * n_pos * sweep.base_logits.shape[-1]))


def _low_precision(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or dtype in ("float32", torch.float32):
        return None
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if isinstance(dtype, str) and dtype in table:
        return table[dtype]
    if dtype in (torch.bfloat16, torch.float16):
        return dtype
    raise HeadscopeError(f"unknown sweep dtype {dtype!r}; use bfloat16, float16 or leave it unset (float32)")


def _check_sweep_base(sweep: PrefixSweep, ref: Tensor) -> None:
    """The fast path's own base run must reproduce the backend's logits ``ref`` (a cheap
    guard against an architecture whose blocks it calls differently)."""
    ref = ref.to(sweep.base_logits.dtype)
    err = float((sweep.base_logits - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not err <= 1e-4 * scale:
        raise HeadscopeError(
            f"the fast patching path does not reproduce this model's logits (max difference {err:.3g}); "
            "run with fast=False (CLI --no-fast) and report the architecture"
        )


@remote_sweep
def patch_layers(
    model: HeadModel,
    clean: Int[Tensor, " batch pos"],
    corrupt: Int[Tensor, " batch pos"],
    metric: Metric,
    *,
    site: Site = "resid_pre",
    mode: PatchMode = "denoise",
    per_position: bool = True,
    layers: Sequence[int] | None = None,
    max_rows: int = 512,
    fast: bool = True,
    normalize: bool = True,
    show_progress: bool = True,
) -> HeadResult:
    """Patch a layer-level site (``resid_pre``, ``attn_out`` or ``mlp_out``) per layer (and position).

    Returns a HeadResult with axes ``("layer", "pos")`` or ``("layer",)``.
    """
    if site not in ("resid_pre", "attn_out", "mlp_out"):
        raise HeadscopeError(f"unknown layer site {site!r}; use resid_pre, attn_out or mlp_out")
    clean, corrupt = model.check_tokens(clean), model.check_tokens(corrupt)
    _validate(model, clean, corrupt, mode)
    sites = ("resid_pre",) if site == "resid_pre" else ("resid_pre", site)
    m_clean, m_corrupt, cl_cache, co_cache = _runs(model, clean, corrupt, metric, sites, normalize)
    base_tokens, base, src = (corrupt, co_cache, cl_cache) if mode == "denoise" else (clean, cl_cache, co_cache)
    B, P = clean.shape
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    out = torch.full((model.n_layers, P) if per_position else (model.n_layers,), float("nan"))
    use_fast = fast and _fast_ok(model)
    per_chunk = max(1, max_rows // B)
    it = progress(layers, desc=f"patching {site}") if show_progress else layers
    for L in it:
        jobs = list(range(P)) if per_position else [None]
        for chunk in chunks(jobs, per_chunk):
            n = len(chunk)
            mask = torch.zeros(n * B, P, 1, dtype=torch.bool, device=clean.device)
            for j, p in enumerate(chunk):
                mask[j * B : (j + 1) * B, slice(None) if p is None else p] = True
            toks = base_tokens.repeat(n, 1)
            resid = base.resid_pre[L].repeat(n, 1, 1)
            value = src.site(site)[L].repeat(n, 1, 1)
            if site == "resid_pre":
                patched = torch.where(mask, value, resid)
                logits = (
                    model.run_from_layer(toks, patched, L, [])
                    if use_fast
                    else model.run_patched(toks, [Patch(layer=L, site=site, value=value, mask=mask)])
                )
            else:
                patch = Patch(layer=L, site=site, value=value, mask=mask)
                logits = (
                    model.run_from_layer(toks, resid, L, [patch]) if use_fast else model.run_patched(toks, [patch])
                )
            for j, p in enumerate(chunk):
                m = metric(logits[j * B : (j + 1) * B]).detach()
                v = _score(m, m_clean, m_corrupt, mode, normalize)
                if per_position:
                    out[L, p] = v
                else:
                    out[L] = v
    axes = ("layer", "pos") if per_position else ("layer",)
    info = _info(model, mode, m_clean, m_corrupt, normalize, site=site, per_position=per_position)
    return HeadResult(out, axes, {"pos": _pos_labels(model, clean)}, info)


#: Prompt pairs per chunk of a task sweep (:func:`patch_task`); larger tasks run in chunks.
DEFAULT_MAX_PAIRS = 1024


def patch_task(
    model: HeadModel, task, *, sites: str = "heads", max_pairs: int | None = DEFAULT_MAX_PAIRS, **kwargs
) -> HeadResult:
    """Run :func:`patch_heads` (``sites="heads"``) or :func:`patch_layers` on a Task / TaskBatch.

    A task of more than ``max_pairs`` prompt pairs runs in chunks of at most that many, so
    memory stays bounded however many pairs there are (caches, logits and the fast path's
    base run are per chunk). The task's metric is a mean over pairs, so the chunks' raw
    metrics, weighted by their sizes, give the whole task's; the normalisation is applied
    once, to those totals. ``max_pairs=None`` runs the task as one batch.
    """
    batch = task.prepare(model) if hasattr(task, "prepare") else task
    fn = patch_heads if sites == "heads" else patch_layers
    if sites not in ("heads",):
        kwargs.setdefault("site", sites)
    N = int(batch.clean.shape[0])
    if max_pairs is not None and max_pairs < 1:
        raise HeadscopeError(f"max_pairs must be >= 1 (or None for one batch); got {max_pairs}")
    if max_pairs is None or N <= max_pairs:
        res = fn(model, batch.clean, batch.corrupt, batch.metric_fn(), **kwargs)
    else:
        res = _chunked(model, fn, batch, max_pairs, kwargs)
    res.info["task"] = batch.name
    return res


def _chunked(model: HeadModel, fn, batch, max_pairs: int, kwargs: dict) -> HeadResult:
    """:func:`patch_task` in chunks of ``max_pairs`` pairs (raw metrics, then one normalisation)."""
    import dataclasses

    normalize = kwargs.pop("normalize", True)
    mode = kwargs.get("mode", "denoise")
    N = int(batch.clean.shape[0])
    total = None
    m_clean = m_corrupt = 0.0
    res = None
    starts = list(range(0, N, max_pairs))
    show = kwargs.get("show_progress", True)
    for i in progress(starts, desc="prompt chunks") if show else starts:
        part = dataclasses.replace(
            batch,
            clean=batch.clean[i : i + max_pairs],
            corrupt=batch.corrupt[i : i + max_pairs],
            answer=batch.answer[i : i + max_pairs],
            wrong=batch.wrong[i : i + max_pairs],
        )
        n = int(part.clean.shape[0])
        res = fn(
            model, part.clean, part.corrupt, part.metric_fn(), normalize=False, **{**kwargs, "show_progress": False}
        )
        raw = res.scores.double() * n
        total = raw if total is None else total + raw
        m_clean += res.info["metric_clean"] * n
        m_corrupt += res.info["metric_corrupt"] * n
    assert res is not None and total is not None
    mean, mc, mk = total / N, torch.tensor(m_clean / N), torch.tensor(m_corrupt / N)
    gap = float((mc - mk).abs())
    if normalize and gap < MIN_GAP * max(1.0, abs(float(mc)), abs(float(mk))):
        raise HeadscopeError(
            f"the metric barely differs between clean ({float(mc):.4g}) and corrupt ({float(mk):.4g}) prompts (gap "
            f"{gap:.2g}): the corruption does not change the answer; use a corruption that changes the model's answer"
        )
    scores = _score(mean, mc, mk, mode, normalize).float()
    info = {**res.info, **_info(model, mode, mc, mk, normalize, site=res.info.get("site", "z"))}
    info.update({"n_pairs": N, "max_pairs": max_pairs, "n_chunks": len(starts)})
    info["per_position"] = res.info.get("per_position")
    return HeadResult(scores, res.axes, res.labels, info)


def _score(m: Tensor, m_clean: Tensor, m_corrupt: Tensor, mode: str, normalize: bool) -> Tensor:
    if not normalize:
        return m.float()
    v = normalized_patching_metric(m, m_clean, m_corrupt)
    return v - 1.0 if mode == "noise" else v


def _pos_labels(model: HeadModel, tokens: Tensor) -> list[str]:
    try:
        return [str(t) for t in model.to_str_tokens(tokens[0])]
    except Exception:  # noqa: BLE001 - labels are cosmetic
        return [str(i) for i in range(tokens.shape[1])]


def _info(model: HeadModel, mode: str, m_clean: Tensor, m_corrupt: Tensor, normalize: bool, **kw) -> dict:
    return {
        "method": "activation_patching",
        "model": getattr(model, "name", "model"),
        "backend": getattr(model, "backend", "?"),
        "mode": mode,
        "metric_clean": float(m_clean),
        "metric_corrupt": float(m_corrupt),
        "metric_name": ("normalised logit diff" if mode == "denoise" else "normalised change from clean")
        if normalize
        else "logit diff",
        "title": f"{'denoising' if mode == 'denoise' else 'noising'} patching of {kw.get('site', 'z')}",
        **kw,
    }


def ablate_heads(
    model: HeadModel,
    tokens: Int[Tensor, " batch pos"],
    heads: Sequence[tuple[int, int]],
    how: str = "zero",
    reference: HeadCache | None = None,
) -> Float[Tensor, " batch pos vocab"]:
    """Logits with ``heads`` ablated: ``"zero"`` (z = 0) or ``"mean"`` (z = its mean over
    ``reference``'s batch and positions)."""
    patches = []
    for L, h in heads:
        if how == "zero":
            patches.append(Patch(layer=L, head=h, mode="zero"))
        elif how == "mean":
            if reference is None or L not in reference.z:
                raise HeadscopeError("mean ablation needs a reference cache with z for the ablated layers")
            patches.append(Patch(layer=L, head=h, mode="replace", value=reference.z[L][:, :, h].mean(dim=(0, 1))))
        else:
            raise HeadscopeError(f"unknown ablation {how!r}; use zero or mean")
    return model.run_patched(tokens, patches)


# ---------------------------------------------------------------------------------------
# Path patching


@remote_sweep
def path_patch_heads(
    model: HeadModel,
    clean: Int[Tensor, " batch pos"],
    corrupt: Int[Tensor, " batch pos"],
    metric: Metric,
    *,
    receiver: tuple[int, int] | None = None,
    via: Site = "q",
    max_rows: int = 512,
    normalize: bool = True,
    show_progress: bool = True,
) -> HeadResult:
    """Path patching from every sender head (Wang et al. 2022; Goldowsky-Dill et al. 2023).

    Sender → logits (``receiver=None``): run the clean prompts with the sender head's
    ``z`` taken from the corrupt run while every other head's ``z`` (in the sender's
    layer and all later layers) is frozen at its clean value; MLPs and norms recompute.
    The effect therefore reaches the logits only through paths sender → MLPs → logits.

    Sender → receiver head (``receiver=(L, h)``, ``via`` ∈ q, k, v): as above but only up
    to the receiver's layer, recording the receiver's ``via`` input (its query, or its
    key/value group for grouped-query models); then a second clean run where only the
    receiver's ``via`` is replaced by the recorded value. Senders lie in layers below
    the receiver's.

    Score: ``(m − m_clean) / (m_clean − m_corrupt)`` (0 = no effect, −1 = the sender's
    path alone carries the whole clean-vs-corrupt difference). Batched: all senders of
    one layer run as stacked copies of the batch, re-entering at that layer.

    Returns a HeadResult with axes ``("layer", "head")`` (NaN for layers that cannot send
    to the receiver).
    """
    clean, corrupt = model.check_tokens(clean), model.check_tokens(corrupt)
    _validate(model, clean, corrupt, "noise")
    if via not in ("q", "k", "v"):
        raise HeadscopeError(f"unknown receiver input {via!r}; use q, k or v")
    if receiver is not None:
        R, hr = receiver
        if not (0 < R < model.n_layers and 0 <= hr < model.n_heads):
            raise HeadscopeError(
                f"receiver L{R}H{hr} is not a head of this model with earlier layers (layers "
                f"1..{model.n_layers - 1}, heads 0..{model.n_heads - 1})"
            )
    sites = ("z", "resid_pre") + ((via,) if receiver is not None else ())
    m_clean, m_corrupt, cl_cache, co_cache = _runs(model, clean, corrupt, metric, sites, normalize)
    B, P = clean.shape
    H = model.n_heads
    top = model.n_layers if receiver is None else receiver[0]
    out = torch.full((model.n_layers, H), float("nan"))
    per_chunk = max(1, max_rows // B)
    use_fast = _fast_ok(model)
    group = model.n_heads // model.n_kv_heads
    it = progress(range(top), desc="path patching") if show_progress else range(top)
    for L in it:
        for chunk in chunks(list(range(H)), per_chunk):
            n = len(chunk)
            toks = clean.repeat(n, 1)
            mask = torch.zeros(n * B, P, H, 1, dtype=torch.bool, device=clean.device)
            for j, h in enumerate(chunk):
                mask[j * B : (j + 1) * B, :, h] = True
            src = torch.where(mask, co_cache.z[L].repeat(n, 1, 1, 1), cl_cache.z[L].repeat(n, 1, 1, 1))
            patches = [Patch(layer=L, site="z", value=src, mask=torch.ones_like(mask))]
            for ell in range(L + 1, top):
                patches.append(
                    Patch(
                        layer=ell,
                        site="z",
                        value=cl_cache.z[ell].repeat(n, 1, 1, 1),
                        mask=torch.ones(1, 1, 1, 1, dtype=torch.bool),
                    )
                )
            resid = cl_cache.resid_pre[L].repeat(n, 1, 1)
            if receiver is None:
                logits = (
                    model.run_from_layer(toks, resid, L, patches) if use_fast else model.run_patched(toks, patches)
                )
            else:
                R, hr = receiver
                rh = hr // group if via in ("k", "v") else hr
                with _record(model, via, R) as rec:
                    if use_fast:
                        model.run_from_layer(toks, resid, L, patches)
                    else:
                        model.run_patched(toks, patches)
                recorded = rec["value"]  # [n*B, P, heads_or_kv, d_head]
                new = cl_cache.site(via)[R].repeat(n, 1, 1, 1).clone()
                new[:, :, rh] = recorded[:, :, rh]
                p2 = [Patch(layer=R, site=via, value=new, mask=torch.ones(1, 1, 1, 1, dtype=torch.bool))]
                logits = (
                    model.run_from_layer(toks, cl_cache.resid_pre[R].repeat(n, 1, 1), R, p2)
                    if use_fast
                    else model.run_patched(toks, p2)
                )
            for j, h in enumerate(chunk):
                m = metric(logits[j * B : (j + 1) * B]).detach()
                out[L, h] = _score(m, m_clean, m_corrupt, "noise", normalize)
    info = _info(model, "path", m_clean, m_corrupt, normalize, site="z")
    info.update(
        {
            "method": "path_patching",
            "receiver": None if receiver is None else f"L{receiver[0]}H{receiver[1]}",
            "via": via if receiver else None,
            "metric_name": "normalised change from clean",
            "title": "path patching "
            + ("to logits" if receiver is None else f"to L{receiver[0]}H{receiver[1]} via {via}"),
        }
    )
    return HeadResult(out, ("layer", "head"), {}, info)


class _record:
    """Context manager that records one site's activation through a pass-through patch."""

    def __init__(self, model: HeadModel, site: Site, layer: int) -> None:
        self.model, self.site, self.layer = model, site, layer
        self.store: dict[str, Tensor] = {}

    def __enter__(self) -> dict[str, Tensor]:
        store = self.store

        class _Tap(Patch):
            def apply(self, x: Tensor) -> Tensor:  # records, changes nothing
                store["value"] = x.detach().clone()
                return x

        self._cm = self.model.hooked([_Tap(layer=self.layer, site=self.site, mode="add", value=0.0)])
        self._cm.__enter__()
        return store

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)


def path_patch_task(model: HeadModel, task, **kwargs) -> HeadResult:
    """:func:`path_patch_heads` on a Task / TaskBatch."""
    batch = task.prepare(model) if hasattr(task, "prepare") else task
    res = path_patch_heads(model, batch.clean, batch.corrupt, batch.metric_fn(), **kwargs)
    res.info["task"] = batch.name
    return res
