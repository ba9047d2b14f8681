"""``NNsightModel``: the HeadModel protocol on nnsight 0.8 ``TransformersModel``.

A head is a slice of the input of ``self_attn.o_proj`` (Llama family) or ``attn.c_proj``
(GPT-2): ``o_proj.input`` is ``[batch, pos, n_heads·d_head]`` and is viewed as
``[batch, pos, n_heads, d_head]``. Every run is one ``model.trace``; activations are
read with ``.save()`` and patched by assigning ``.input`` / ``.output``, in the order the
forward pass reaches them (nnsight runs the intervention code interleaved with the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from headscope.backends._hf import get_path, resid_reentry
from headscope.backends.base import BaseHeadModel
from headscope.model import HeadCache, Patch, _check_reentry, check_patches, group_patches

_ORDER = ("resid_pre", "q", "k", "v", "z", "attn_out", "pattern", "mlp_out")
_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}


class NNsightModel(BaseHeadModel):
    """A HeadModel backed by nnsight's ``TransformersModel``.

    ``nn_model`` is the nnsight object, for anything headscope does not wrap.
    """

    backend = "nnsight"

    def __init__(self, nn_model, hf_model: nn.Module, tokenizer, name: str) -> None:
        """Wrap an nnsight ``TransformersModel`` around ``hf_model`` (use :meth:`from_hf` to build one)."""
        super().__init__(hf_model, tokenizer, name)
        self.nn_model = nn_model

    @classmethod
    def from_hf(
        cls, hf_model: nn.Module, tokenizer=None, name: str = "model", path: str | None = None
    ) -> NNsightModel:
        """Wrap a loaded HF causal LM (``path`` is accepted for symmetry with TLModel and unused)."""
        from nnsight.modeling.transformers import TransformersModel

        hf_model.eval()
        nn_model = TransformersModel(hf_model, tokenizer=tokenizer)
        return cls(nn_model, hf_model, tokenizer, name)

    # -- envoys --------------------------------------------------------------------
    def _layer(self, L: int):
        return get_path(self.nn_model, self.paths.layers)[L]

    def _o_proj(self, L: int):
        return get_path(self._layer(L), f"{self.paths.attn}.{self.paths.o_proj}")

    def _read(self, site: str, L: int):
        if site == "resid_pre":
            return self._layer(L).input
        if site == "z":
            return self._o_proj(L).input
        if site == "attn_out":
            return self._o_proj(L).output
        if site == "pattern":
            return get_path(self._layer(L), self.paths.attn).output[1]
        if site == "mlp_out":
            return get_path(self._layer(L), self.paths.mlp).output
        if site in _PROJ:
            return self._proj(L, site).output
        raise KeyError(site)

    def _proj(self, L: int, site: str):
        if self.paths.o_proj != "o_proj":
            from headscope.common.errors import HeadscopeError

            raise HeadscopeError("q/k/v sites are supported for Llama-family models only")
        return get_path(self._layer(L), f"{self.paths.attn}.{_PROJ[site]}")

    def _n(self, site: str) -> int:
        return self.n_kv_heads if site in ("k", "v") else self.n_heads

    def _apply(self, site: str, L: int, ps: Sequence[Patch]) -> None:
        """Inside a trace: patch one (site, layer) with every patch of ``ps``."""
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
            env = self._o_proj(L)
            x = env.output
            for pt in ps:
                x = pt.apply(x)
            env.output = x
        elif site == "mlp_out":
            env = get_path(self._layer(L), self.paths.mlp)
            x = env.output
            for pt in ps:
                x = pt.apply(x)
            env.output = x
        elif site in _PROJ:
            env = self._proj(L, site)
            x = env.output
            b, p, _ = x.shape
            y = x.reshape(b, p, self._n(site), self.d_head)
            for pt in ps:
                y = pt.apply(y)
            env.output = y.reshape(b, p, self._n(site) * self.d_head)

    def _intervene(self, patches: Sequence[Patch]) -> None:
        """Inside a trace: apply the active and the given patches in forward order."""
        groups = group_patches(list(self._active) + list(patches))
        for site, L in sorted(groups, key=lambda k: (k[1], _ORDER.index(k[0]))):
            self._apply(site, L, groups[(site, L)])

    # -- runs ----------------------------------------------------------------------
    def _logits_trace(self, tokens: Tensor, patches: Sequence[Patch]) -> Tensor:
        """Logits of one trace with the active and the given patches."""
        with self.nn_model.trace(tokens):
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
        with self.nn_model.trace(tokens):
            for L in range(max(layers) + 1 if layers else 0):
                for site in _ORDER:
                    if (site, L) in active:
                        self._apply(site, L, active[(site, L)])
                    if L in layers and site in want:
                        saved[(site, L)] = self._read(site, L).save()
            for (site, L), ps in active.items():
                if L > (max(layers) if layers else -1):
                    self._apply(site, L, ps)
            logits = get_path(self.nn_model, self.paths.unembed).output.save()
        cache = HeadCache()
        for (site, L), v in saved.items():
            t = v.detach().clone()
            if site in ("z", "q", "k", "v"):
                t = t.reshape(t.shape[0], t.shape[1], self._n(site), self.d_head)
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
            with self.nn_model.trace(tokens):
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
