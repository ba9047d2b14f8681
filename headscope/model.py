"""The ``HeadModel`` protocol: the one interface every headscope analysis talks to.

Two backends implement it — :class:`headscope.backends.tl.TLModel` (TransformerLens 4.x
``TransformerBridge``) and :class:`headscope.backends.nnsight.NNsightModel` (nnsight 0.8
``TransformersModel``) — and :func:`load_model` builds either from a bundled organism
alias, a local Hugging Face directory, a hub id or an in-memory HF model.

Vocabulary (TransformerLens names):

- ``z``: a head's output before the output projection, the input of ``o_proj`` split
  into heads, shape ``[batch, pos, n_heads, d_head]``. A head's contribution to the
  residual stream ("result") is ``z_h @ W_O[h]``.
- ``resid_pre``: the residual stream entering a block, ``[batch, pos, d_model]``.
- ``attn_out`` / ``mlp_out``: a block's attention / MLP output, ``[batch, pos, d_model]``.

Interventions are :class:`Patch` objects. A patch computes its new activation with
:meth:`Patch.apply`, so both backends apply exactly the same arithmetic; they differ
only in how they intercept the activation. Every intervention is removed when its run
or ``with`` block ends, also when the body raises.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from headscope.common.errors import HeadscopeError

Site = Literal["z", "resid_pre", "attn_out", "mlp_out", "q", "k", "v"]
SITES: tuple[str, ...] = ("z", "resid_pre", "attn_out", "mlp_out", "q", "k", "v")
HEAD_SITES: tuple[str, ...] = ("z", "q", "k", "v")
Mode = Literal["replace", "add", "zero", "scale"]


def _as_index(sel, n: int, what: str) -> Tensor | None:
    """None (= all) or a LongTensor of indices in [0, n)."""
    if sel is None:
        return None
    if isinstance(sel, slice):
        return torch.arange(n)[sel]
    if isinstance(sel, int):
        sel = [sel]
    idx = torch.as_tensor(sel, dtype=torch.long).flatten()
    if idx.numel() and (idx.min() < -n or idx.max() >= n):
        raise HeadscopeError(f"{what} index out of range: {idx.tolist()} for size {n}")
    return idx % n


@dataclass
class Patch:
    """One intervention on one site of one layer.

    Args:
        layer: block index.
        site: ``"z"`` (per-head output), ``"resid_pre"``, ``"attn_out"`` or ``"mlp_out"``.
        head: head index (``site="z"`` only); None = every head.
        pos: position index / list / slice; None = every position.
        rows: batch rows the patch applies to; None = every row.
        mode: ``"replace"`` (with ``value``), ``"add"`` (``value``), ``"zero"``, ``"scale"``
            (multiply by ``value``).
        value: broadcastable to the selected block, i.e. to ``[rows, pos, d_head]`` for a
            single head, ``[rows, pos, heads, d_head]`` for all heads, ``[rows, pos, d_model]``
            for the layer sites.
        mask: alternative to head/pos/rows for batched sweeps: a bool tensor broadcastable
            to the site's full activation (``[batch, pos, n_heads, 1]`` for z); where it is
            True the activation becomes ``value`` (mode "replace" only; ``value`` then has
            the activation's full shape).
    """

    layer: int
    site: Site = "z"
    head: int | None = None
    pos: int | Sequence[int] | slice | Tensor | None = None
    rows: int | Sequence[int] | slice | Tensor | None = None
    mode: Mode = "replace"
    value: Tensor | float | None = None
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise HeadscopeError(f"unknown patch site {self.site!r}; use one of {SITES}")
        if self.mode not in ("replace", "add", "zero", "scale"):
            raise HeadscopeError(f"unknown patch mode {self.mode!r}; use replace, add, zero or scale")
        if self.mode in ("replace", "add", "scale") and self.value is None:
            raise HeadscopeError(f"patch mode {self.mode!r} needs a value")
        if self.head is not None and self.site not in HEAD_SITES:
            raise HeadscopeError(f"a head index only applies to the per-head sites {HEAD_SITES}, not {self.site!r}")
        if self.mask is not None and self.mode != "replace":
            raise HeadscopeError("a mask patch must use mode 'replace'")

    def apply(self, x: Tensor) -> Tensor:
        """Return the patched activation (``x`` itself is not modified).

        ``x`` is ``[batch, pos, n_heads, d_head]`` for z, ``[batch, pos, d_model]`` otherwise.
        """
        if self.mask is not None:
            v = torch.as_tensor(self.value, dtype=x.dtype, device=x.device)
            return torch.where(self.mask.to(x.device), v, x)
        rows = _as_index(self.rows, x.shape[0], "row")
        pos = _as_index(self.pos, x.shape[1], "position")
        if self.site in HEAD_SITES:
            if self.head is not None and not (-x.shape[2] <= self.head < x.shape[2]):
                raise HeadscopeError(f"head {self.head} out of range: this site has {x.shape[2]} heads per layer")
        out = x.clone()
        r = rows if rows is not None else torch.arange(x.shape[0], device=x.device)
        p = pos if pos is not None else torch.arange(x.shape[1], device=x.device)
        r, p = r.to(x.device), p.to(x.device)
        if self.site in HEAD_SITES and self.head is not None:
            cur = out[r[:, None], p[None, :], self.head]  # [rows, pos, d_head]
        else:
            cur = out[r[:, None], p[None, :]]  # [rows, pos, (heads,) d]
        if self.mode == "zero":
            new = torch.zeros_like(cur)
        else:
            raw = self.value
            val: Tensor = (
                raw.to(device=x.device, dtype=x.dtype)
                if isinstance(raw, Tensor)
                else torch.tensor(raw, dtype=x.dtype, device=x.device)
            )
            try:
                if self.mode == "replace":
                    new = val.expand_as(cur) if val.shape != cur.shape else val
                elif self.mode == "add":
                    new = cur + val
                else:
                    new = cur * val
            except RuntimeError as e:
                raise HeadscopeError(
                    f"patch value of shape {tuple(val.shape)} does not broadcast to the patched block "
                    f"{tuple(cur.shape)} (layer {self.layer}, site {self.site})"
                ) from e
        if self.site in HEAD_SITES and self.head is not None:
            out[r[:, None], p[None, :], self.head] = new
        else:
            out[r[:, None], p[None, :]] = new
        return out


def group_patches(patches: Sequence[Patch]) -> dict[tuple[str, int], list[Patch]]:
    """Group patches by (site, layer), preserving order."""
    out: dict[tuple[str, int], list[Patch]] = {}
    for p in patches:
        out.setdefault((p.site, p.layer), []).append(p)
    return out


TL_HOOKS: dict[str, str] = {
    "z": "blocks.{L}.attn.hook_z",
    "resid_pre": "blocks.{L}.hook_resid_pre",
    "attn_out": "blocks.{L}.hook_attn_out",
    "mlp_out": "blocks.{L}.hook_mlp_out",
    "pattern": "blocks.{L}.attn.hook_pattern",
    "q": "blocks.{L}.attn.hook_q",
    "k": "blocks.{L}.attn.hook_k",
    "v": "blocks.{L}.attn.hook_v",
}
"""TransformerLens hook name of each cached site (``{L}``: the layer)."""
_TL_NAME = {
    re.compile("^" + re.escape(name).replace(re.escape("{L}"), r"(\d+)") + "$"): site
    for site, name in TL_HOOKS.items()
}
CACHE_SITES: tuple[str, ...] = ("z", "resid_pre", "attn_out", "mlp_out")
"""The sites :meth:`HeadModel.run_with_cache` caches by default (plus attention patterns)."""


class CacheKeyError(HeadscopeError, KeyError):
    """A :class:`HeadCache` key that is not in the cache (a HeadscopeError and a KeyError)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class HeadCache:
    """Activations of one run, per layer.

    ``z[L]``, ``q[L]``: ``[batch, pos, n_heads, d_head]``; ``k[L]``, ``v[L]``: ``[batch, pos,
    n_kv_heads, d_head]`` (before rotary embeddings); ``resid_pre[L]``, ``attn_out[L]``,
    ``mlp_out[L]``: ``[batch, pos, d_model]``; ``pattern[L]`` (when requested):
    ``[batch, n_heads, query_pos, key_pos]``.

    Besides the attributes, the cache reads like a TransformerLens ``ActivationCache``:
    ``cache["pattern", 0]``, ``cache["z", 3]`` or ``cache["blocks.3.attn.hook_z"]`` (the
    hook names of :data:`TL_HOOKS`) are ``cache.pattern[0]`` and ``cache.z[3]``;
    ``cache["z"]`` is the whole ``{layer: tensor}`` dict. ``keys()`` lists the hook names
    present; a missing key raises a :class:`CacheKeyError` that lists them.
    """

    z: dict[int, Tensor] = field(default_factory=dict)
    resid_pre: dict[int, Tensor] = field(default_factory=dict)
    attn_out: dict[int, Tensor] = field(default_factory=dict)
    mlp_out: dict[int, Tensor] = field(default_factory=dict)
    pattern: dict[int, Tensor] = field(default_factory=dict)
    q: dict[int, Tensor] = field(default_factory=dict)
    k: dict[int, Tensor] = field(default_factory=dict)
    v: dict[int, Tensor] = field(default_factory=dict)

    def site(self, site: str) -> dict[int, Tensor]:
        """The ``{layer: activation}`` dict of ``site`` (``"z"``, ``"pattern"``, ...)."""
        if site not in TL_HOOKS:
            raise CacheKeyError(f"unknown cache site {site!r}; sites: {', '.join(TL_HOOKS)}")
        return getattr(self, site)

    def stack_z(self) -> Float[Tensor, " layer batch pos head d_head"]:
        """``z`` of every cached layer stacked in layer order."""
        return torch.stack([self.z[k] for k in sorted(self.z)])

    def __iter__(self) -> Iterator[int]:
        """The layers whose ``z`` is cached, in order."""
        return iter(sorted(self.z))

    # -- TransformerLens-style access --------------------------------------------------
    def keys(self) -> list[str]:
        """TransformerLens hook names of everything cached, e.g. ``blocks.0.attn.hook_z``."""
        return [TL_HOOKS[site].format(L=L) for site in TL_HOOKS for L in sorted(getattr(self, site))]

    def _resolve(self, key: Any) -> tuple[str, int | None]:
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
            site, layer = key
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise CacheKeyError(f"cache key {key!r}: the layer must be an int, e.g. cache[{site!r}, 0]")
            return site, layer
        if isinstance(key, str):
            if key in TL_HOOKS:
                return key, None
            for rx, site in _TL_NAME.items():
                m = rx.match(key)
                if m:
                    return site, int(m.group(1))
        raise CacheKeyError(
            f"cache key {key!r} not understood; use (site, layer) such as ('pattern', 0), a hook name such as "
            f"'blocks.0.attn.hook_z', or a site ({', '.join(TL_HOOKS)}); cached: {self._available()}"
        )

    def _available(self) -> str:
        keys = self.keys()
        return ", ".join(keys) if keys else "nothing (run with the sites you need, e.g. run_with_cache)"

    def __getitem__(self, key: Any) -> Any:
        """``cache["pattern", 0]``, ``cache["blocks.0.attn.hook_pattern"]`` → a tensor;
        ``cache["pattern"]`` → ``{layer: tensor}``."""
        site, layer = self._resolve(key)
        if site not in TL_HOOKS:
            raise CacheKeyError(f"unknown cache site {site!r}; sites: {', '.join(TL_HOOKS)}")
        acts = getattr(self, site)
        if layer is None:
            return acts
        if layer not in acts:
            raise CacheKeyError(f"{TL_HOOKS[site].format(L=layer)} is not in this cache; cached: {self._available()}")
        return acts[layer]

    def __contains__(self, key: Any) -> bool:
        """Whether ``cache[key]`` would return something."""
        try:
            self[key]
        except CacheKeyError:
            return False
        return True


FEATURES: dict[str, str] = {
    "fast_reentry": "run_from_layer skips the blocks below the re-entry layer (a Llama-family HF module tree)",
    "generate": "the model continues text (tracr programs map a sequence to a sequence and do not)",
    "qkv_sites": "patches and caches on the per-head q/k/v sites",
    "head_grads": "head_grads: gradients of a metric with respect to every head's z",
    "hf_weights": "hf_model is a Hugging Face causal LM (what tuning and peft need)",
}
Metric = Callable[[Tensor], Tensor]


@runtime_checkable
class HeadModel(Protocol):
    """What every analysis needs from a model (docs/design.md §2).

    The two backends (:class:`~headscope.backends.tl.TLModel`,
    :class:`~headscope.backends.nnsight.NNsightModel`) and the tracr native bridge
    (:class:`~headscope.backends.tl_native.TLNativeModel`) implement all of it; what only
    some of them can do is asked with :meth:`supports`, never by probing attributes.

    Dimensions: ``n_layers``, ``n_heads``, ``n_kv_heads`` (< ``n_heads`` for grouped-query
    attention), ``d_head``, ``d_model``, ``d_vocab`` (input token ids), ``d_vocab_out``
    (logit columns; equal to ``d_vocab`` except for tracr programs), ``n_ctx`` (longest
    input, None when the model does not say).
    """

    n_layers: int
    """Number of decoder blocks."""
    n_heads: int
    """Query heads per layer (the heads every analysis scores)."""
    n_kv_heads: int
    """Key/value heads per layer (fewer than ``n_heads`` under grouped-query attention)."""
    d_head: int
    """Width of one head's ``z``."""
    d_model: int
    """Width of the residual stream."""
    d_vocab: int
    """Number of input token ids."""
    d_vocab_out: int
    """Number of logit columns (``d_vocab`` except for tracr programs)."""
    n_ctx: int | None
    """Longest input in tokens, None when the model does not say."""
    tokenizer: Any
    """The Hugging Face (or tracr) tokenizer; None when tokens are given as ids only."""
    device: torch.device
    """Where the weights live; inputs are moved here by :meth:`check_tokens`."""
    backend: str
    """``"tl"`` (TransformerLens) or ``"nnsight"``."""
    name: str
    """Display name (the organism alias, a path or a hub id), used in titles and file names."""

    @property
    def hf_model(self) -> nn.Module | None:
        """The wrapped Hugging Face causal LM (None for tracr programs); see ``supports("hf_weights")``."""
        ...

    def supports(self, feature: str) -> bool:
        """Whether this model offers ``feature`` (a key of :data:`FEATURES`)."""
        ...

    # -- tokens -------------------------------------------------------------------------
    def to_tokens(self, prompts: str | Sequence[str]) -> Int[Tensor, " batch pos"]:
        """Token ids ``[batch, pos]`` with BOS; every prompt must tokenize to one length."""
        ...

    def to_str_tokens(self, tokens: Tensor | str) -> list[str]:
        """The tokens of one row (or of a string) as strings."""
        ...

    def token_id(self, word: str) -> int:
        """The logit column of a single-token answer; raises a HeadscopeError otherwise."""
        ...

    def check_tokens(self, tokens: Tensor) -> Int[Tensor, " batch pos"]:
        """Validate ``tokens`` (a LongTensor ``[batch, pos]`` of ids in range) and move them to the device."""
        ...

    # -- runs ---------------------------------------------------------------------------
    def logits(self, tokens: Int[Tensor, " batch pos"]) -> Float[Tensor, " batch pos vocab"]:
        """Logits ``[batch, pos, d_vocab_out]`` of a plain run, without gradients.

        Patches made active with :meth:`hooked` apply; nothing else is changed or cached.
        ``tokens`` are checked with :meth:`check_tokens` first.
        """
        ...

    def logits_with_grad(self, tokens: Int[Tensor, " batch pos"]) -> Float[Tensor, " batch pos vocab"]:
        """Logits of a run that keeps the autograd graph (for training through patches)."""
        ...

    def run_with_heads(
        self,
        tokens: Int[Tensor, " batch pos"],
        layers: Sequence[int] | None = None,
        sites: Sequence[str] = ("z", "resid_pre"),
        pattern: bool = False,
    ) -> tuple[Float[Tensor, " batch pos vocab"], HeadCache]:
        """Logits and a :class:`HeadCache` of ``sites`` (and attention patterns) for ``layers``.

        Args:
            tokens: ``[batch, pos]`` token ids (e.g. from :meth:`to_tokens`).
            layers: the layers to cache; None = every layer.
            sites: any of ``"z"``, ``"resid_pre"``, ``"attn_out"``, ``"mlp_out"`` and, where
                ``supports("qkv_sites")``, ``"q"``, ``"k"``, ``"v"``.
            pattern: also cache attention patterns ``[batch, n_heads, query_pos, key_pos]``.

        Returns:
            ``(logits, cache)``; active :meth:`hooked` patches apply, so the cache holds the
            patched activations. :meth:`run_with_cache` is the same with TransformerLens-like
            defaults.
        """
        ...

    def run_with_cache(
        self,
        tokens: Int[Tensor, " batch pos"],
        layers: Sequence[int] | None = None,
        sites: Sequence[str] = CACHE_SITES,
        pattern: bool = True,
    ) -> tuple[Float[Tensor, " batch pos vocab"], HeadCache]:
        """TransformerLens-style ``(logits, cache)``: :meth:`run_with_heads` with attention
        patterns and the sites of :data:`CACHE_SITES` by default.

        Read the cache as ``cache["pattern", 0]``, ``cache["z", 3]``,
        ``cache["blocks.3.attn.hook_z"]`` or ``cache.z[3]``.
        """
        ...

    def run_patched(
        self, tokens: Int[Tensor, " batch pos"], patches: Sequence[Patch]
    ) -> Float[Tensor, " batch pos vocab"]:
        """Logits ``[batch, pos, d_vocab_out]`` with ``patches`` applied for this run only.

        Each :class:`Patch` names a layer, a site, optionally a head, positions and batch
        rows, and how it changes the activation (replace, add, zero, scale). Layers and
        heads are checked before any hook is attached; the hooks are removed after the run,
        also when it raises. Example: ``model.run_patched(toks, [Patch(layer=1, head=3,
        mode="zero")])`` zero-ablates head L1H3.
        """
        ...

    def run_from_layer(
        self,
        tokens: Int[Tensor, " batch pos"],
        resid_pre: Float[Tensor, " batch pos d_model"],
        layer: int,
        patches: Sequence[Patch] = (),
    ) -> Float[Tensor, " batch pos vocab"]:
        """Logits of a run whose block ``layer`` receives ``resid_pre``; exact on every model,
        and faster (blocks below skipped) where ``supports("fast_reentry")``."""
        ...

    def head_grads(
        self, tokens: Int[Tensor, " batch pos"], metric: Metric, layers: Sequence[int] | None = None
    ) -> tuple[Tensor, HeadCache, HeadCache]:
        """One forward and one backward pass: ``(metric value, z, d metric / d z)`` per layer."""
        ...

    def hooked(self, patches: Sequence[Patch]) -> AbstractContextManager[None]:
        """Keep ``patches`` active for every run inside the block; removed on exit, also on error."""
        ...

    def generate(
        self, tokens: Int[Tensor, " batch pos"], max_new_tokens: int = 8, patches: Sequence[Patch] = ()
    ) -> Int[Tensor, " batch new"]:
        """Greedy continuation ``[batch, new]`` with ``patches`` applied at every step."""
        ...

    # -- weights ------------------------------------------------------------------------
    def unembed_matrix(self) -> Float[Tensor, " d_model d_vocab_out"]:
        """``W_U`` as ``[d_model, d_vocab_out]``."""
        ...

    def unembed_bias(self) -> Float[Tensor, " d_vocab_out"] | None:
        """The unembedding bias, or None when the model has none."""
        ...

    def o_proj_weight(self, layer: int) -> Float[Tensor, " head d_head d_model"]:
        """``W_O`` of ``layer`` as ``[n_heads, d_head, d_model]``."""
        ...

    def final_norm(self) -> nn.Module | None:
        """The final norm module applied before the unembedding (None when there is none)."""
        ...

    def blocks(self) -> list[nn.Module]:
        """The decoder blocks as torch modules, in order."""
        ...


def require(model: HeadModel, feature: str, what: str) -> None:
    """Raise a HeadscopeError naming ``what`` needs ``feature`` when the model lacks it."""
    if feature not in FEATURES:
        raise HeadscopeError(f"unknown model feature {feature!r}; known: {', '.join(FEATURES)}")
    if not model.supports(feature):
        raise HeadscopeError(f"{what} needs {FEATURES[feature]}; {model.name} ({model.backend}) does not offer it")


class _Shape(Protocol):
    n_layers: int
    n_heads: int
    n_kv_heads: int


def check_patches(model: _Shape, patches: Sequence[Patch]) -> None:
    """Validate layer indices before any hook is attached."""
    for p in patches:
        if not (0 <= p.layer < model.n_layers):
            raise HeadscopeError(
                f"patch layer {p.layer} out of range: the model has {model.n_layers} layers (0..{model.n_layers - 1})"
            )
        n = model.n_kv_heads if p.site in ("k", "v") else model.n_heads
        if p.head is not None and not (0 <= p.head < n):
            raise HeadscopeError(f"patch head {p.head} out of range: site {p.site!r} has {n} heads per layer")


def _check_reentry(patches: Sequence[Patch], layer: int) -> None:
    """A run re-entering at ``layer`` skips the blocks below it: no patch may sit there."""
    low = sorted({p.layer for p in patches if p.layer < layer})
    if low:
        raise HeadscopeError(f"patches on layers {low} lie below the re-entry layer {layer}; they would never run")


_F = TypeVar("_F", bound=Callable[..., Any])


def remote_sweep(fn: _F) -> _F:
    """Run an analysis ``fn(model, ...)`` as one remote session when ``model`` is a remote
    nnsight model (one job per sweep, not one per patch); otherwise call it as it is."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        if not getattr(model, "remote", False) or getattr(model, "_in_session", False):
            return fn(model, *args, **kwargs)
        box: dict[str, Any] = {}
        model._in_session = True
        try:
            # nnsight ships this block's code and the objects it names; the traces fn makes
            # run inside the session (``_trace`` sees ``_in_session``).
            with model.nn_model.session(remote=model.remote):
                box["out"] = fn(model, *args, **kwargs)
        finally:
            model._in_session = False
        return box["out"]

    return wrapper  # type: ignore[return-value]
