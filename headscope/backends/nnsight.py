"""``NNsightModel``: the HeadModel protocol on nnsight 0.8 ``TransformersModel``.

A head is a slice of the input of the attention's output projection (``self_attn.o_proj``
in the Llama family, ``attn.c_proj`` in GPT-2, ``attention.dense`` in GPT-NeoX,
``out_proj`` in OPT and GPT-J; :data:`headscope.backends._hf.ARCHS`): its input is
``[batch, pos, n_heads·d_head]`` and is viewed as ``[batch, pos, n_heads, d_head]``. q/k/v
are the outputs of separate projections or slices of a fused one (GPT-2's ``c_attn``,
GPT-NeoX's ``query_key_value``, Phi-3's ``qkv_proj``), split per head the way the model
splits them. Every run is one ``model.trace``; activations are
read with ``.save()`` and patched by assigning ``.input`` / ``.output``, in the order the
forward pass reaches them (nnsight runs the intervention code interleaved with the model).

Remote execution (``remote=True``, a host URL, or ``"local"``; docs/scale.md): every trace
goes through nnsight's remote path (``model.trace(..., remote=...)``), and a sweep wrapped
by :func:`headscope.model.remote_sweep` runs as *one* ``model.session(remote=...)`` job whose traces stay
inside it. ``"local"`` is nnsight's serverless simulation: the request is serialised and
deserialised with local modules hidden, as a server would, then run here. A remote model
runs no fast path (re-entry, prefix reuse and edge attribution call the HF blocks directly,
which a server does not allow); ``run_from_layer`` becomes a patched full run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from headscope.backends._hf import get_path, merge_qkv, resid_reentry, split_qkv
from headscope.backends.base import BaseHeadModel
from headscope.model import HeadCache, Patch, _check_reentry, check_patches, group_patches

_ORDER = ("resid_pre", "q", "k", "v", "z", "attn_out", "pattern", "mlp_out")
# Where attention's residual contribution is a norm after the attention module (Gemma2),
# the module's output (pattern) passes before it.
_ORDER_POST_NORM = ("resid_pre", "q", "k", "v", "z", "pattern", "attn_out", "mlp_out")
_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}


class NNsightModel(BaseHeadModel):
    """A HeadModel backed by nnsight's ``TransformersModel``.

    ``nn_model`` is the nnsight object, for anything headscope does not wrap.
    """

    backend = "nnsight"

    def __init__(self, nn_model, hf_model: nn.Module, tokenizer, name: str, remote: bool | str = False) -> None:
        """Wrap an nnsight ``TransformersModel`` around ``hf_model`` (use :meth:`from_hf` to build one).

        ``remote``: ``False`` (run here), ``True`` (NDIF, key from ``NDIF_API_KEY``), a host
        URL, or ``"local"`` (nnsight's serialise-and-run-here simulation of a remote job).
        """
        super().__init__(hf_model, tokenizer, name)
        self.nn_model = nn_model
        self.remote = remote
        self._in_session = False
        self._tokens_shape: tuple[int, ...] = (0, 0)
        self._order = _ORDER_POST_NORM if self.paths.attn_out is not None else _ORDER

    @classmethod
    def from_hf(
        cls, hf_model: nn.Module, tokenizer=None, name: str = "model", path: str | None = None
    ) -> NNsightModel:
        """Wrap a loaded HF causal LM (``path`` is accepted for symmetry with TLModel and unused)."""
        from nnsight.modeling.transformers import TransformersModel

        from headscope.backends._hf import placeholder_tokenizer

        hf_model.eval()
        # nnsight wants a tokenizer even for token-id inputs; without one, it gets a
        # placeholder and headscope keeps ``tokenizer=None`` (text prompts then raise a
        # HeadscopeError asking for token ids).
        tok = tokenizer if tokenizer is not None else placeholder_tokenizer()
        nn_model = TransformersModel(hf_model, tokenizer=tok)
        return cls(nn_model, hf_model, tokenizer, name)

    def _trace(self, tokens: Tensor):
        """``nn_model.trace(tokens)``: remote where the model is, unless a remote session
        already carries this trace."""
        if self.remote and not self._in_session:
            return self.nn_model.trace(tokens, remote=self.remote)
        return self.nn_model.trace(tokens)

    def supports(self, feature: str) -> bool:
        """As :meth:`BaseHeadModel.supports`; a remote model has no fast re-entry."""
        if self.remote and feature == "fast_reentry":
            return False
        return super().supports(feature)

    def check_tokens(self, tokens: Tensor) -> Tensor:
        """Validate ``tokens`` and remember their shape (architectures that flatten
        ``[batch, pos]`` inside a block, like OPT's MLP, need it to restore the layout)."""
        tokens = super().check_tokens(tokens)
        self._tokens_shape = tuple(tokens.shape)
        return tokens

    # -- envoys --------------------------------------------------------------------
    def _layer(self, L: int):
        return get_path(self.nn_model, self.paths.layers)[L]

    def _o_proj(self, L: int):
        return get_path(self._layer(L), f"{self.paths.attn}.{self.paths.o_proj}")

    def _attn_out(self, L: int):
        """The module whose output is attention's contribution to the residual stream."""
        if self.paths.attn_out is not None:
            return get_path(self._layer(L), self.paths.attn_out)
        return self._o_proj(L)

    def _read(self, site: str, L: int):
        if site == "resid_pre":
            return self._layer(L).input
        if site == "z":
            return self._o_proj(L).input
        if site == "attn_out":
            return self._attn_out(L).output
        if site == "pattern":
            return get_path(self._layer(L), self.paths.attn).output[1]
        if site == "mlp_out":
            return get_path(self._layer(L), self.paths.mlp).output
        if site in _PROJ:
            return self._proj(L, site).output
        raise KeyError(site)

    def _proj(self, L: int, site: str):
        """The module whose output holds ``site`` (q/k/v): its own projection, or the fused one."""
        attn = get_path(self._layer(L), self.paths.attn)
        if self.paths.qkv_fused is not None:
            return get_path(attn, self.paths.qkv_fused)
        assert self.paths.qkv is not None
        return get_path(attn, self.paths.qkv[("q", "k", "v").index(site)])

    def _n(self, site: str) -> int:
        return self.n_kv_heads if site in ("k", "v") else self.n_heads

    def _heads(self, site: str, x: Tensor) -> Tensor:
        """``site``'s per-head view ``[batch, pos, heads, d_head]`` of its module's output ``x``."""
        if self.paths.qkv_fused is not None:
            q, k, v = split_qkv(x, self.paths, self.n_heads, self.n_kv_heads, self.d_head)
            return {"q": q, "k": k, "v": v}[site]
        b, p, _ = x.shape
        return x.reshape(b, p, self._n(site), self.d_head)

    def _apply_qkv(self, L: int, groups: Mapping[str, Sequence[Patch]]) -> None:
        """Inside a trace: patch q/k/v of layer ``L`` (``groups``: site -> patches). A fused
        projection is read once, split per head, patched and written back once."""
        if self.paths.qkv_fused is None:
            for site, ps in groups.items():
                env = self._proj(L, site)
                x = env.output
                b, p, _ = x.shape
                y = x.reshape(b, p, self._n(site), self.d_head)
                for pt in ps:
                    y = pt.apply(y)
                env.output = y.reshape(b, p, self._n(site) * self.d_head)
            return
        env = self._proj(L, "q")
        parts = dict(
            zip(("q", "k", "v"), split_qkv(env.output, self.paths, self.n_heads, self.n_kv_heads, self.d_head))
        )
        for site, ps in groups.items():
            for pt in ps:
                parts[site] = pt.apply(parts[site])
        env.output = merge_qkv(parts["q"], parts["k"], parts["v"], self.paths)

    def _apply(self, site: str, L: int, ps: Sequence[Patch]) -> None:
        """Inside a trace: patch one (site, layer) with every patch of ``ps`` (q/k/v: :meth:`_apply_qkv`)."""
        if site == "z":
            env = self._o_proj(L)
            x = env.input
            b, p, _ = x.shape
            z = x.reshape(b, p, self.n_heads, self.d_head)
            for pt in ps:
                z = pt.apply(z)
            env.input = z.reshape(b, p, self.n_heads * self.d_head)
        elif site == "resid_pre":
            env = self._layer(L)
            x = env.input
            for pt in ps:
                x = pt.apply(x)
            env.input = x
        elif site == "attn_out":
            env = self._attn_out(L)
            x = env.output
            for pt in ps:
                x = pt.apply(x)
            env.output = x
        elif site == "mlp_out":
            env = get_path(self._layer(L), self.paths.mlp)
            x = env.output
            if self.paths.mlp_flat:  # [batch·pos, d] -> [batch, pos, d] and back
                flat = x
                x = x.reshape(self._tokens_shape[0], self._tokens_shape[1], -1)
            for pt in ps:
                x = pt.apply(x)
            env.output = x.reshape(flat.shape) if self.paths.mlp_flat else x
        elif site in _PROJ:
            self._apply_qkv(L, {site: ps})

    def _apply_layer_sites(self, L: int, groups, sites: Sequence[str]) -> None:
        """Apply the patches of ``groups`` at layer ``L`` for ``sites`` in forward order; q/k/v together."""
        qkv = {s: groups[(s, L)] for s in ("q", "k", "v") if s in sites and (s, L) in groups}
        for site in self._order:
            if site in _PROJ:
                if site == "q" and qkv:
                    self._apply_qkv(L, qkv)
                continue
            if site in sites and (site, L) in groups:
                self._apply(site, L, groups[(site, L)])

    def _intervene(self, patches: Sequence[Patch]) -> None:
        """Inside a trace: apply the active and the given patches in forward order."""
        groups = group_patches(list(self._active) + list(patches))
        for L in sorted({L for _, L in groups}):
            self._apply_layer_sites(L, groups, self._order)

    # -- runs ----------------------------------------------------------------------
    def _logits_trace(self, tokens: Tensor, patches: Sequence[Patch]) -> Tensor:
        """Logits of one trace with the active and the given patches."""
        with self._trace(tokens):
            self._intervene(patches)
            out = get_path(self.nn_model, self.paths.unembed).output.save()
        return out

    @torch.no_grad()
    def logits(self, tokens: Tensor) -> Tensor:
        """Logits ``[batch, pos, d_vocab_out]`` of a plain run without gradients (active ``hooked`` patches apply)."""
        return self._logits_trace(self.check_tokens(tokens), ())

    def logits_with_grad(self, tokens: Tensor) -> Tensor:
        """Forward pass that keeps the autograd graph (active ``hooked`` patches apply)."""
        return self._logits_trace(self.check_tokens(tokens), ())

    @torch.no_grad()
    def run_with_heads(
        self,
        tokens: Tensor,
        layers: Sequence[int] | None = None,
        sites: Sequence[str] = ("z", "resid_pre"),
        pattern: bool = False,
    ) -> tuple[Tensor, HeadCache]:
        """Logits and a :class:`HeadCache` of ``sites`` (and attention patterns) for ``layers``.

        See :meth:`headscope.model.HeadModel.run_with_heads`. One nnsight trace: active
        ``hooked`` patches are applied in forward order and each wanted site is saved as it
        passes; ``z``/``q``/``k``/``v`` are split into heads ``[batch, pos, heads, d_head]``.
        """
        tokens = self.check_tokens(tokens)
        layers = sorted(range(self.n_layers) if layers is None else set(layers))
        want = list(sites) + (["pattern"] if pattern else [])
        saved: dict[tuple[str, int], Any] = {}
        active = group_patches(self._active)
        fused = self.paths.qkv_fused is not None
        with self._trace(tokens):
            for L in range(max(layers) + 1 if layers else 0):
                for site in self._order:
                    if site in _PROJ:
                        if site == "q":
                            qkv = {s: active[(s, L)] for s in ("q", "k", "v") if (s, L) in active}
                            if qkv:
                                self._apply_qkv(L, qkv)
                    elif (site, L) in active:
                        self._apply(site, L, active[(site, L)])
                    if L in layers and site in want:
                        if fused and site in _PROJ:  # one read of the fused output, split after the trace
                            if ("qkv", L) not in saved:
                                saved[("qkv", L)] = self._proj(L, "q").output.save()
                        else:
                            saved[(site, L)] = self._read(site, L).save()
            top = max(layers) if layers else -1
            for L in sorted({L for _, L in active if L > top}):
                self._apply_layer_sites(L, active, self._order)
            logits = get_path(self.nn_model, self.paths.unembed).output.save()
        cache = HeadCache()
        for (site, L), v in saved.items():
            t = v.detach().clone()
            if site == "qkv":
                for s in ("q", "k", "v"):
                    if s in want:
                        cache.site(s)[L] = self._heads(s, t).clone()
                continue
            if site == "z":
                t = t.reshape(t.shape[0], t.shape[1], self.n_heads, self.d_head)
            elif site == "mlp_out" and self.paths.mlp_flat:
                t = t.reshape(tokens.shape[0], tokens.shape[1], -1)
            elif site in _PROJ:
                t = self._heads(site, t)
            cache.site(site)[L] = t
        return logits, cache

    @torch.no_grad()
    def run_patched(self, tokens: Tensor, patches: Sequence[Patch]) -> Tensor:
        """Logits with ``patches`` applied for this run only (one nnsight trace); see
        :meth:`headscope.model.HeadModel.run_patched`."""
        tokens = self.check_tokens(tokens)
        patches = list(patches)
        check_patches(self, patches)
        return self._logits_trace(tokens, patches)

    @torch.no_grad()
    def run_from_layer(self, tokens: Tensor, resid_pre: Tensor, layer: int, patches: Sequence[Patch] = ()) -> Tensor:
        """Logits of a run that enters block ``layer`` with ``resid_pre`` (blocks below are skipped)."""
        tokens = self.check_tokens(tokens)
        patches = list(patches)
        check_patches(self, patches)
        _check_reentry(patches + list(self._active), layer)
        if self.remote:  # no local block swap on a server: replace the residual in a full run
            enter = Patch(layer=layer, site="resid_pre", mode="replace", value=resid_pre.to(self.device))
            return self._logits_trace(tokens, [enter, *patches])
        with resid_reentry(self.blocks(), layer, resid_pre.to(self.device)):
            return self._logits_trace(tokens, patches)

    def head_grads(
        self, tokens: Tensor, metric, layers: Sequence[int] | None = None
    ) -> tuple[Tensor, HeadCache, HeadCache]:
        """One forward and one backward pass: ``(metric value, z, d metric / d z)`` per layer.

        Uses nnsight's backward tracing (``with loss.backward(): t.grad``), reading the
        gradients in reverse forward order as nnsight requires.
        """
        tokens = self.check_tokens(tokens)
        layers = sorted(range(self.n_layers) if layers is None else set(layers))
        # Results go into dicts created outside the trace: nnsight runs the block's code
        # in its own frame and only mutations of outer objects survive it.
        zs: dict[int, Any] = {}
        gs: dict[int, Any] = {}
        zsaved: dict[int, Any] = {}
        out: dict[str, Any] = {}
        with torch.enable_grad():
            with self._trace(tokens):
                self._intervene(())
                for L in layers:
                    zs[L] = self._o_proj(L).input
                    zsaved[L] = zs[L].save()
                logits = get_path(self.nn_model, self.paths.unembed).output
                m = metric(logits)
                out["m"] = m.save()
                with m.backward():
                    for L in reversed(layers):
                        gs[L] = zs[L].grad.save()
        msaved = out["m"]
        z, g = HeadCache(), HeadCache()
        for L in layers:
            t = zsaved[L].detach()
            z.z[L] = t.reshape(t.shape[0], t.shape[1], self.n_heads, self.d_head).clone()
            gr = gs[L].detach()
            g.z[L] = gr.reshape(gr.shape[0], gr.shape[1], self.n_heads, self.d_head).clone()
        return msaved.detach(), z, g
