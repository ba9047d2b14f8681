"""``TLModel``: the HeadModel protocol on TransformerLens 4.x ``TransformerBridge``.

Activations are read and patched through the bridge's hook points
(``blocks.{L}.attn.hook_z``, ``blocks.{L}.hook_resid_pre``, ``blocks.{L}.hook_attn_out``,
``blocks.{L}.hook_mlp_out``, ``blocks.{L}.attn.hook_pattern``). Hooks are attached for
one run (``run_with_hooks``) or one block (``bridge.hooks``) and always removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from headscope.backends._hf import resid_reentry
from headscope.backends.base import BaseHeadModel
from headscope.model import TL_HOOKS, HeadCache, Patch, _check_reentry, check_patches, group_patches

HOOK = TL_HOOKS  # site -> TransformerLens hook name; the HeadCache reads the same names


def _architecture(hf_model: nn.Module) -> str:
    archs = getattr(hf_model.config, "architectures", None)
    return archs[0] if archs else type(hf_model).__name__


class TLModel(BaseHeadModel):
    """A HeadModel backed by a TransformerLens ``TransformerBridge``.

    Build it with :func:`headscope.load_model` (``backend="tl"``) or
    :meth:`from_hf`. ``bridge`` is the TransformerLens object, for anything headscope
    does not wrap (``bridge.run_with_cache``, ``transformer_lens.patching``...).
    """

    backend = "tl"

    def __init__(self, bridge, hf_model: nn.Module, tokenizer, name: str) -> None:
        """Wrap an already built ``bridge`` around ``hf_model`` (use :meth:`from_hf` to build one)."""
        super().__init__(hf_model, tokenizer, name)
        self.bridge = bridge

    @classmethod
    def from_hf(cls, hf_model: nn.Module, tokenizer=None, name: str = "model", path: str | None = None) -> TLModel:
        """Wrap a loaded HF causal LM. The bridge replaces its submodules in place, so do
        not share ``hf_model`` with another backend."""
        from transformer_lens.model_bridge import TransformerBridge

        hf_model.eval()
        if path is not None and tokenizer is not None:
            bridge = TransformerBridge.boot_transformers(
                path, hf_model=hf_model, tokenizer=tokenizer, device=str(next(hf_model.parameters()).device)
            )
        else:
            from transformer_lens.model_bridge.sources import build_bridge_from_module

            if tokenizer is not None and "name_or_path" not in tokenizer.init_kwargs:
                # An in-memory tokenizer: TransformerLens would reload it from its path to
                # turn on add_bos_token. Ours already prepend BOS in their post-processor.
                tokenizer.init_kwargs["name_or_path"] = getattr(tokenizer, "name_or_path", "") or name
                tokenizer.init_kwargs["add_bos_token"] = True

            bridge = build_bridge_from_module(
                hf_model, _architecture(hf_model), hf_config=hf_model.config, tokenizer=tokenizer, model_name=name
            )
        bridge.eval()
        return cls(bridge, hf_model, tokenizer, name)

    # -- hooks ---------------------------------------------------------------------
    def _fwd_hooks(self, patches: Sequence[Patch]) -> list[tuple[str, Callable[..., Tensor]]]:
        """One forward hook per (site, layer) that applies that group's patches in order."""
        hooks: list[tuple[str, Callable[..., Tensor]]] = []
        for (site, layer), ps in group_patches(patches).items():

            def fn(x: Tensor, hook=None, ps=ps) -> Tensor:
                for p in ps:
                    x = p.apply(x)
                return x

            hooks.append((HOOK[site].format(L=layer), fn))
        return hooks

    @contextmanager
    def _backend_hooked(self, patches: Sequence[Patch]) -> Iterator[None]:
        """Attach the patches' hooks with ``bridge.hooks`` for the block (removed on exit)."""
        with self.bridge.hooks(fwd_hooks=self._fwd_hooks(patches)):
            yield

    # -- runs ----------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, tokens: Tensor) -> Tensor:
        """Logits ``[batch, pos, d_vocab_out]`` of a plain run without gradients (active ``hooked`` patches apply)."""
        return self.bridge(self.check_tokens(tokens), return_type="logits")

    def logits_with_grad(self, tokens: Tensor) -> Tensor:
        """Forward pass that keeps the autograd graph (active ``hooked`` patches apply)."""
        return self.bridge(self.check_tokens(tokens), return_type="logits")

    @torch.no_grad()
    def run_with_heads(
        self,
        tokens: Tensor,
        layers: Sequence[int] | None = None,
        sites: Sequence[str] = ("z", "resid_pre"),
        pattern: bool = False,
    ) -> tuple[Tensor, HeadCache]:
        """Logits and a :class:`HeadCache` of ``sites`` (and attention patterns) for ``layers``.

        See :meth:`headscope.model.HeadModel.run_with_heads`. Reads the bridge's hook points
        (``blocks.{L}.attn.hook_z``...) with saving hooks attached for this run only.
        """
        tokens = self.check_tokens(tokens)
        layers = list(range(self.n_layers)) if layers is None else list(layers)
        names: dict[str, tuple[str, int]] = {}
        for L in layers:
            for s in sites:
                names[HOOK[s].format(L=L)] = (s, L)
            if pattern:
                names[HOOK["pattern"].format(L=L)] = ("pattern", L)
        cache = HeadCache()
        store: dict[str, Tensor] = {}

        def saver(name: str):
            def save(x: Tensor, hook=None) -> None:
                store[name] = x.detach().clone()

            return save

        logits = self.bridge.run_with_hooks(tokens, fwd_hooks=[(n, saver(n)) for n in names], return_type="logits")
        for n, (s, L) in names.items():
            cache.site(s)[L] = store[n]
        return logits, cache

    @torch.no_grad()
    def run_patched(self, tokens: Tensor, patches: Sequence[Patch]) -> Tensor:
        """Logits with ``patches`` applied for this run only (``bridge.run_with_hooks``); see
        :meth:`headscope.model.HeadModel.run_patched`."""
        tokens = self.check_tokens(tokens)
        patches = list(patches)
        check_patches(self, patches)
        return self.bridge.run_with_hooks(tokens, fwd_hooks=self._fwd_hooks(patches), return_type="logits")

    @torch.no_grad()
    def run_from_layer(self, tokens: Tensor, resid_pre: Tensor, layer: int, patches: Sequence[Patch] = ()) -> Tensor:
        """Logits of a run that enters block ``layer`` with ``resid_pre`` (blocks below are skipped)."""
        tokens = self.check_tokens(tokens)
        patches = list(patches)
        check_patches(self, patches)
        _check_reentry(patches + list(self._active), layer)
        with resid_reentry(self.blocks(), layer, resid_pre.to(self.device)):
            return self.bridge.run_with_hooks(tokens, fwd_hooks=self._fwd_hooks(patches), return_type="logits")

    def blocks(self) -> list[nn.Module]:
        """The bridge's blocks (wrapping the HF decoder layers), in order."""
        return list(self.bridge.blocks)

    def head_grads(
        self, tokens: Tensor, metric, layers: Sequence[int] | None = None
    ) -> tuple[Tensor, HeadCache, HeadCache]:
        """One forward and one backward pass: ``(metric value, z, d metric / d z)`` per layer."""
        tokens = self.check_tokens(tokens)
        layers = list(range(self.n_layers)) if layers is None else list(layers)
        store: dict[int, Tensor] = {}

        def saver(L: int):
            def fn(x: Tensor, hook=None) -> Tensor:
                store[L] = x
                return x

            return fn

        with torch.enable_grad():
            logits = self.bridge.run_with_hooks(
                tokens, fwd_hooks=[(HOOK["z"].format(L=L), saver(L)) for L in layers], return_type="logits"
            )
            m = metric(logits)
            grads = torch.autograd.grad(m, [store[L] for L in layers])
        z, g = HeadCache(), HeadCache()
        for L, gr in zip(layers, grads):
            z.z[L] = store[L].detach().clone()
            g.z[L] = gr.detach().clone()
        return m.detach(), z, g


def tl_edge_attribution(
    model: TLModel, clean: Tensor, corrupt: Tensor, answer: Tensor, wrong: Tensor
) -> dict[str, float]:
    """TransformerLens 4.3's own edge attribution (``attribution_patch``, edge granularity,
    its denoising convention), named in headscope's graph (``a0.h1->a1.h2<k>``): the
    last-position logit difference ``answer − wrong``, one prompt pair at a time, summed
    over positions and averaged over pairs. The peer of :mod:`headscope.eap` in tests and
    benchmarks/circuit_discovery.py; it refuses grouped-query and parallel-block models.
    """
    from collections import defaultdict

    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    def writer(n) -> str:
        return {"embed": "input", "mlp_out": f"m{n.layer}"}.get(n.kind, f"a{n.layer}.h{n.head}")

    def reader(n) -> str:
        if n.kind in ("q_input", "k_input", "v_input"):
            return f"a{n.layer}.h{n.head}<{n.kind[0]}>"
        return f"m{n.layer}" if n.kind == "mlp_in" else "logits"

    out: dict[str, float] = defaultdict(float)
    B = clean.shape[0]
    for b in range(B):

        def one(lg: Tensor, b: int = b) -> Tensor:
            return lg[0, -1, answer[b]] - lg[0, -1, wrong[b]]

        res = attribution_patch(model.bridge, clean[b : b + 1], corrupt[b : b + 1], one, EdgeAttributionConfig("edge"))
        for (w, r), v in res.edge_scores.items():
            out[f"{writer(w)}->{reader(r)}"] += v / B
    return dict(out)
