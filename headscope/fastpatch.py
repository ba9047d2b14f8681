"""The exact fast path of head-patching sweeps: compute only what a patch can change.

Written by hand: neither TransformerLens nor nnsight has it (TransformerLens's
``patching.py`` runs one full forward pass per patched component; nnsight runs what the
user's trace says). Every shortcut below is exact for a causal decoder, and the sweep's
scores equal TransformerLens's ``get_act_patch_attn_head_out_by_pos`` / ``_all_pos``
(tests/headscope/test_fastpatch.py, on every architecture of docs/models.md):

1. **Start after the patched head's attention.** A patch of head ``h``'s ``z`` at layer
   ``L`` leaves layer ``L``'s attention pattern and every other head's ``z`` as in the
   cached base run, so the patched copy re-enters at ``z``: ``o_proj`` of the patched
   ``z``, then the rest of block ``L`` (residual, norms, MLP), run by the architecture's
   own module with its attention replaced by that output.
2. **Reuse the unpatched prefix.** In a causal model a patch at position ``p`` changes
   nothing before ``p``: patched copies compute positions ``p..T-1`` only, and the
   blocks above ``L`` attend to the base run's cached keys and values for positions
   ``< p`` (handed to the HF attention modules as a key/value cache). At block ``L``
   itself only position ``p`` changes, so only that position is computed there.
3. **Skip patches that change nothing.** Where the clean and corrupt prompts share
   their first ``f`` tokens, every activation at positions ``< f`` is the same in both
   runs, so patching it is the identity: those rows keep the base run's logits and no
   forward pass is spent on them (TransformerLens computes them anyway).
4. **Compute only what the metric reads.** The metric's positions are declared
   (``positions=`` or a ``positions`` attribute on the metric) or found by a probe: the
   metric is evaluated once on the base logits with every position but the last set to
   NaN, and if the value is unchanged only the last position is unembedded. The last
   block's MLP, too, runs on those positions only. The metric still receives
   ``[batch, pos, vocab]`` logits; positions it does not read hold NaN.

Rows of one forward pass are bounded by ``max_memory`` (bytes of activations per
forward, estimated from the model's widths; ``DEFAULT_MAX_MEMORY``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headscope.backends._hf import get_path
from headscope.common.errors import HeadscopeError

#: Activation bytes one forward pass of a sweep may hold (``patch_heads(max_memory=...)``).
DEFAULT_MAX_MEMORY = 256 * 2**20

_CACHE_ARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


def parse_memory(value: int | str | None) -> int:
    """``"512MB"``, ``"2GB"``, ``"300M"`` or a byte count → bytes (None → the default)."""
    if value is None:
        return DEFAULT_MAX_MEMORY
    if isinstance(value, int):
        if value <= 0:
            raise HeadscopeError(f"max_memory must be positive; got {value}")
        return value
    s = str(value).strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    try:
        if s and s[-1] in units:
            n = int(float(s[:-1]) * units[s[-1]])
        else:
            n = int(float(s))
    except ValueError:
        raise HeadscopeError(f"max_memory {value!r} is not a size; write e.g. 512MB or 2GB") from None
    if n <= 0:
        raise HeadscopeError(f"max_memory must be positive; got {value!r}")
    return n


class _KV:
    """A key/value cache in the shape HF attention modules call (``update(k, v, layer_idx)``).

    ``record=True``: store each layer's keys/values (the base run). Otherwise prepend the
    ``prefix`` keys/values of positions ``< start`` to the new ones (patched copies).
    """

    def __init__(self, prefix: dict[int, tuple[Tensor, Tensor]] | None = None, record: bool = False) -> None:
        self.prefix = prefix or {}
        self.record = record
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.record:
            self.kv[layer_idx] = (key, value)
            return key, value
        pre = self.prefix.get(layer_idx)
        if pre is None or pre[0].shape[-2] == 0:
            return key, value
        return torch.cat([pre[0], key], dim=-2), torch.cat([pre[1], value], dim=-2)


@contextmanager
def _swap_forward(mod: nn.Module, fn: Callable) -> Iterator[None]:
    """``mod``'s forward is ``fn`` inside the block. An instance attribute, restored
    exactly on exit (nnsight keeps its own wrapper in that slot)."""
    had, prev = "forward" in mod.__dict__, mod.__dict__.get("forward")
    mod.__dict__["forward"] = fn
    try:
        yield
    finally:
        if had:
            mod.__dict__["forward"] = prev
        else:
            mod.__dict__.pop("forward", None)


def _original(mod: nn.Module) -> nn.Module:
    return getattr(mod, "_original_component", mod)


def _cast_copies(mods: Sequence[nn.Module], dtype: torch.dtype) -> list[nn.Module]:
    """Deep copies of plain HF modules in ``dtype``, without the instance-level ``forward``
    wrappers or hooks a backend may have attached to the originals."""
    import copy

    out = []
    for m in mods:
        c = copy.deepcopy(m).to(dtype)
        for sub in c.modules():
            sub.__dict__.pop("forward", None)
            sub._forward_hooks.clear()
            sub._forward_pre_hooks.clear()
        out.append(c)
    return out


@contextmanager
def _unbridged(blocks: Sequence[nn.Module]) -> Iterator[None]:
    """Inside the block, TransformerLens bridge components under ``blocks`` are swapped back
    for the HF modules they wrap (restored on exit, also on error); the sweep then calls
    plain HF modules without hook points. A no-op for nnsight, whose modules are plain."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []

    def walk(mod: nn.Module) -> None:
        for name, child in list(mod._modules.items()):
            if child is None:
                continue
            orig = getattr(child, "_original_component", None)
            if isinstance(orig, nn.Module):
                swapped.append((mod, name, child))
                mod._modules[name] = orig
                walk(orig)
            else:
                walk(child)

    try:
        for blk in blocks:
            walk(blk)
        yield
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


@dataclass
class _Call:
    """How the model calls one decoder block: its bound arguments from a captured run."""

    sig: inspect.Signature
    args: dict
    hidden_name: str
    n_attn_out: int  # length of the attention module's output tuple


def _bind(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[inspect.Signature, dict]:
    sig = inspect.signature(type(mod).forward)
    bound = sig.bind(mod, *args, **kwargs)
    d = dict(bound.arguments)
    d.pop("self", None)
    for name, p in sig.parameters.items():  # flatten **kwargs into the dict
        if p.kind is inspect.Parameter.VAR_KEYWORD and name in d:
            d.update(d.pop(name))
    return sig, d


def _rows(x: Tensor, rows: Tensor, B: int) -> Tensor:
    return x.index_select(0, rows) if x.shape[0] == B and B > 1 else x


def _causal_mask(q_start: int, q_len: int, k_len: int, dtype: torch.dtype, device) -> Tensor:
    i = torch.arange(q_start, q_start + q_len, device=device)[:, None]
    j = torch.arange(k_len, device=device)[None, :]
    m = torch.zeros(q_len, k_len, dtype=dtype, device=device)
    return m.masked_fill(j > i, torch.finfo(dtype).min)[None, None]


class BlockRunner:
    """Runs a model's own HF decoder blocks one by one, called exactly as the model calls
    them (arguments captured from one backend run on ``tokens``): the plumbing of
    :class:`PrefixSweep` and of edge attribution (:mod:`headscope.eap`).

    Usable on any HeadModel with an HF module tree (``model.supports("fast_reentry")``),
    in eval mode, with no active ``hooked`` patches. Inside :meth:`session` any
    TransformerLens bridge components are swapped for the HF modules they wrap.
    """

    def __init__(self, model, tokens: Tensor, keep_logits: bool = False) -> None:
        if getattr(model, "_active", None):
            raise HeadscopeError("the fast sweep cannot run under model.hooked(...) patches; use fast=False")
        self.model = model
        hf = model.hf_model
        if hf is None or hf.training:
            raise HeadscopeError("the fast sweep needs an HF model in eval mode (model.hf_model.eval())")
        self.paths = model.paths
        self.B, self.T = tokens.shape
        self.layers_raw = list(get_path(hf, self.paths.layers))
        self.blocks = [_original(b) for b in self.layers_raw]
        self.norm = _original(get_path(hf, self.paths.final_norm))
        self.lm_head = _original(get_path(hf, self.paths.unembed))
        self.cap = getattr(model.config, "final_logit_softcapping", None)
        self.dtype = next(hf.parameters()).dtype
        self.captured_logits: Tensor | None = None
        """With ``keep_logits``: the backend's logits ``[B, T, vocab]`` of the capture run."""
        self.calls = self._capture(tokens, keep_logits)

    def _capture(self, tokens: Tensor, keep_logits: bool = False) -> list[_Call]:
        """One backend run with pre-hooks on the HF blocks: how each block is called."""
        got: dict[int, tuple] = {}
        attn_len: dict[int, int] = {}
        handles = []
        for i, blk in enumerate(self.blocks):

            def pre(mod, args, kwargs, i=i):
                got[i] = (args, kwargs)

            def post(mod, args, out, i=i):
                attn_len[i] = len(out) if isinstance(out, tuple) else 0

            handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
            attn = _original(get_path(blk, self.paths.attn))
            handles.append(attn.register_forward_hook(post))
        try:
            lg = self.model.logits(tokens)
        finally:
            for h in handles:
                h.remove()
        if keep_logits:
            self.captured_logits = lg
        calls = []
        for i, blk in enumerate(self.blocks):
            sig, d = _bind(blk, *got[i])
            hidden_name = next(n for n in sig.parameters if n != "self")
            if i == 0:
                self.resid0: Tensor = d[hidden_name]
            calls.append(_Call(sig, d, hidden_name, attn_len.get(i, 2)))
        return calls

    def _kwargs(self, i: int, hidden: Tensor, rows: Tensor, start: int, cache: _KV | None) -> dict:
        """Block ``i``'s arguments for ``hidden`` = positions ``start..`` of the base rows ``rows``."""
        c = self.calls[i]
        out = {}
        q = hidden.shape[1]
        for name, v in c.args.items():
            if name == c.hidden_name:
                v = hidden
            elif name in _CACHE_ARGS:
                v = cache
            elif name == "attention_mask":
                if isinstance(v, Tensor) and v.ndim == 4:
                    v = _rows(v[:, :, start : start + q, : start + q], rows, self.B)
                elif v is None:
                    v = _causal_mask(start, q, start + q, hidden.dtype, hidden.device)
                else:
                    raise HeadscopeError(f"unexpected attention mask of shape {tuple(v.shape)} in the fast sweep")
            elif name == "position_ids" and isinstance(v, Tensor):
                v = _rows(v[..., start : start + q], rows, self.B)
            elif name == "cache_position" and isinstance(v, Tensor):
                v = v[start : start + q]
            elif name == "position_embeddings" and isinstance(v, tuple):
                v = tuple(_rows(t[:, start : start + q], rows, self.B) for t in v)
            if isinstance(v, Tensor) and v.is_floating_point() and v.dtype != self.dtype:
                v = v.to(self.dtype)
            elif isinstance(v, tuple) and all(isinstance(t, Tensor) and t.is_floating_point() for t in v):
                v = tuple(t.to(self.dtype) for t in v)
            out[name] = v
        return out

    def _block(self, i: int, hidden: Tensor, rows: Tensor, start: int, cache: _KV | None) -> Tensor:
        out = self.blocks[i](**self._kwargs(i, hidden, rows, start, cache))
        return out[0] if isinstance(out, tuple) else out

    def unembed(self, h: Tensor) -> Tensor:
        """Logits of final residuals ``[..., d_model]`` (final norm, unembedding, soft-cap)."""
        lg = self.lm_head(self.norm(h))
        if self.cap:
            lg = torch.tanh(lg / self.cap) * self.cap
        return lg

    @contextmanager
    def session(self) -> Iterator[None]:
        """Plain HF modules for the duration of a sweep (bridges restored on exit)."""
        with _unbridged(self.layers_raw):
            yield

    def forward(self, hidden: Tensor, start_layer: int = 0, rows: Tensor | None = None) -> Tensor:
        """The final residual of a run entering block ``start_layer`` with ``hidden``
        (``[R, T, d_model]``; ``rows`` = the captured batch row each input row copies)."""
        rows = torch.arange(hidden.shape[0]) if rows is None else rows
        for i in range(start_layer, len(self.blocks)):
            hidden = self._block(i, hidden, rows, 0, None)
        return hidden


class PrefixSweep(BlockRunner):
    """Cached base run of one model on one batch, and patched re-runs that start at ``z``.

    Built by :func:`headscope.patching.patch_heads` on its fast path.
    """

    def __init__(
        self,
        model,
        base_tokens: Tensor,
        positions: Sequence[int] | None,
        dtype: torch.dtype | None = None,
        keep_logits: bool = False,
    ) -> None:
        super().__init__(model, base_tokens, keep_logits=keep_logits)
        self.base_tokens = base_tokens
        self.positions: list[int] = []
        self.columns: Tensor | None = None
        own = self.dtype
        self.dtype = dtype or own
        with _unbridged(self.layers_raw):
            if self.dtype != own:
                # Low-precision copies of the plain HF modules; the user's model is untouched.
                *blocks, self.norm, self.lm_head = _cast_copies([*self.blocks, self.norm, self.lm_head], self.dtype)
                self.blocks = blocks
                self.layers_raw = self.blocks
            self._base_run()
        if positions is not None:
            self.set_positions(positions)

    def set_positions(self, positions: Sequence[int]) -> None:
        """The metric's positions: ``base_logits`` becomes the base run's logits there."""
        self.positions = sorted({int(p) for p in positions})
        self.columns = None
        with torch.no_grad():
            self.base_logits = self.unembed(self.final[:, self.positions]).float()  # [B, k, vocab]

    def set_columns(self, columns: Tensor) -> bool:
        """Unembed only these vocabulary columns from now on (the metric reads no other):
        ``base_logits`` becomes ``[B, k, len(columns)]`` and :meth:`unembed_at` returns
        those columns. False (nothing changes) when the unembedding is not a plain
        ``nn.Linear`` whose rows can be selected."""
        head = self.lm_head
        # accelerate-offloaded weights (meta until its hook loads them) need the module's own call
        if not isinstance(head, nn.Linear) or head.weight.is_meta or hasattr(head, "_hf_hook"):
            return False
        self.columns = columns.to(head.weight.device)
        with torch.no_grad():
            self._w_cols = head.weight.index_select(0, self.columns)
            self._b_cols = None if head.bias is None else head.bias.index_select(0, self.columns)
            self.base_logits = self.unembed_at(self.final[:, self.positions]).float()
        return True

    def unembed_at(self, h: Tensor) -> Tensor:
        """:meth:`unembed`, restricted to :attr:`columns` when they are set: the rows of
        ``W_U`` the metric reads, so patched copies skip the rest of the vocabulary.
        (Written here: an HF ``lm_head`` computes every column.)"""
        if self.columns is None:
            return self.unembed(h)
        lg = torch.nn.functional.linear(self.norm(h), self._w_cols, self._b_cols)
        if self.cap:
            lg = torch.tanh(lg / self.cap) * self.cap
        return lg

    @torch.no_grad()
    def _base_run(self) -> None:
        """Run the base prompts through the plain HF blocks, recording every block's input
        residual, every layer's ``z`` (the input of ``o_proj``) and keys/values."""
        B, T = self.B, self.T
        rows = torch.arange(B)
        kv = _KV(record=True)
        self.resid: list[Tensor] = []
        self.z: list[Tensor] = []
        z_store: dict[int, Tensor] = {}
        handles = []
        for i, blk in enumerate(self.blocks):
            o = _original(get_path(blk, f"{self.paths.attn}.{self.paths.o_proj}"))

            def save(mod, args, i=i):
                z_store[i] = args[0]

            handles.append(o.register_forward_pre_hook(save))
        h = self.resid0.to(self.dtype)
        try:
            self.o_projs = [_original(get_path(b, f"{self.paths.attn}.{self.paths.o_proj}")) for b in self.blocks]
            for i in range(len(self.blocks)):
                self.resid.append(h)
                h = self._block(i, h, rows, 0, kv)
        finally:
            for hd in handles:
                hd.remove()
        self.resid.append(h)
        self.final = h
        self.kv = kv.kv
        self.z = [z_store[i].reshape(B, T, self.model.n_heads, self.model.d_head) for i in range(len(self.blocks))]

    @torch.no_grad()
    def source_run(self, tokens: Tensor) -> tuple[list[Tensor], Tensor] | None:
        """The source prompts' ``z`` of every layer and their logits at the metric
        positions, from the plain blocks, without another backend run; None when this
        model's first block does not read the bare token embeddings (GPT-2 adds position
        embeddings, Gemma scales them: the caller then runs the backend).

        Written here because no library runs HF blocks with captured arguments: the
        source's block-0 input is the input embedding of ``tokens``, checked against the
        captured block-0 input of the base prompts (equal ids must give equal rows)."""
        if tokens.shape != self.base_tokens.shape or self.dtype != self.resid0.dtype:
            return None
        emb = self.model.hf_model.get_input_embeddings()
        if emb is None:
            return None
        emb = _original(emb)
        if any(p.is_meta for p in emb.parameters()) and not hasattr(emb, "_hf_hook"):
            return None
        if not torch.equal(emb(self.base_tokens.to(self.resid0.device)), self.resid0):
            return None
        B, T = self.B, self.T
        rows = torch.arange(B)
        z_store: dict[int, Tensor] = {}
        handles = []
        for i, o in enumerate(self.o_projs):

            def save(mod, args, i=i):
                z_store[i] = args[0]

            handles.append(o.register_forward_pre_hook(save))
        h = emb(tokens.to(self.resid0.device))
        try:
            with _unbridged(self.layers_raw):
                for i in range(len(self.blocks)):
                    h = self._block(i, h, rows, 0, None)
        finally:
            for hd in handles:
                hd.remove()
        z = [z_store[i].reshape(B, T, self.model.n_heads, self.model.d_head) for i in range(len(self.blocks))]
        return z, self.unembed(h[:, self.positions]).float()

    # -- patched runs -----------------------------------------------------------------
    @torch.no_grad()
    def run_hidden(self, layer: int, start: int, rows: Tensor, z_new: Tensor) -> tuple[Tensor, list[int]]:
        """:meth:`run` without the unembedding: the final residuals ``[R, len(idx), d]`` at
        the metric positions ``idx`` (indices into ``positions``) that lie at or after
        ``start``. Sweeps collect these over several groups and unembed them in one call
        (the unembedding is memory-bound: one pass over ``W_U`` serves many rows)."""
        R = rows.shape[0]
        T = self.T
        attn_out = self.o_projs[layer](z_new.to(self.dtype).reshape(R, z_new.shape[1], -1))
        q = z_new.shape[1]
        attn = get_path(self.blocks[layer], self.paths.attn)
        n_out = self.calls[layer].n_attn_out

        def replaced(*args, **kwargs):
            return (attn_out,) + (None,) * (n_out - 1) if n_out else attn_out

        with _swap_forward(attn, replaced):
            h_in = self.resid[layer][:, start : start + q].index_select(0, rows)
            h_new = self._block(layer, h_in, rows, start, None)
        if q < T - start:  # per-position: positions after `start` are unchanged at this layer
            h = torch.cat([h_new, self.resid[layer + 1][:, start + q :].index_select(0, rows)], dim=1)
        else:
            h = h_new
        prefix = {
            i: (k[:, :, :start].index_select(0, rows), v[:, :, :start].index_select(0, rows))
            for i, (k, v) in self.kv.items()
            if i > layer
        }
        cache = _KV(prefix)
        last = len(self.blocks) - 1
        for i in range(layer + 1, last):
            h = self._block(i, h, rows, start, cache)
        idx = [j for j, p in enumerate(self.positions) if p >= start]
        if layer < last:
            # The last block's MLP runs on the metric's positions only: nothing reads the
            # others (their outputs stay zero there), and the MLP is most of a block.
            keep = [self.positions[j] - start for j in idx]
            mlp = get_path(self.blocks[last], self.paths.mlp_in)
            if self.paths.mlp_flat or len(keep) == h.shape[1]:
                h = self._block(last, h, rows, start, cache)
            else:
                orig = mlp.forward

                def only_read(x: Tensor, *args, **kwargs) -> Tensor:
                    y = orig(x[:, keep], *args, **kwargs)
                    out = y.new_zeros(x.shape[:2] + y.shape[2:])
                    out[:, keep] = y
                    return out

                with _swap_forward(mlp, only_read):
                    h = self._block(last, h, rows, start, cache)
        return h[:, [self.positions[j] - start for j in idx]], idx

    def run(self, layer: int, start: int, rows: Tensor, z_new: Tensor) -> Tensor:
        """Logits at the metric positions of patched copies.

        Args:
            layer: the patched layer ``L``.
            start: first position whose ``z`` is patched in any copy (positions before it
                are unchanged in every copy).
            rows: ``[R]`` the base row each copy copies.
            z_new: ``[R, q, n_heads, d_head]`` layer ``L``'s patched ``z`` at positions
                ``start..start+q-1``: ``q = 1`` when only position ``start`` is patched
                (per-position sweeps; block ``L`` then computes that position alone),
                else ``q = T - start``.

        Returns: ``[R, k, vocab]`` logits at the metric positions (base logits where a
        metric position lies before ``start``).
        """
        hp, idx = self.run_hidden(layer, start, rows, z_new)
        return self.logits_of(rows, hp, idx)

    def logits_of(self, rows: Tensor, hp: Tensor, idx: list[int]) -> Tensor:
        """``[R, k, vocab]``: base logits of ``rows`` at the metric positions, with those at
        ``idx`` replaced by the unembedding of the final residuals ``hp`` ``[R, len(idx), d]``."""
        out = self.base_logits.index_select(0, rows)
        if idx:
            out[:, idx] = self.unembed_at(hp).float()
        return out

    def bytes_per_token(self) -> int:
        """Rough activation bytes per token-row of one patched forward (float32)."""
        cfg = self.model.config
        d = self.model.d_model
        d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
        d_mlp = d_mlp or 4 * d
        return 4 * (6 * d + 3 * d_mlp + 2 * self.model.n_heads * self.T)


def metric_positions(
    metric: Callable[[Tensor], Tensor], logits: Tensor, declared: Sequence[int] | None = None
) -> tuple[list[int], str]:
    """The sequence positions ``metric`` reads, and how that was decided.

    ``declared`` (or ``metric.positions``) is checked: the metric on logits with every
    other position set to NaN must equal the metric on the full logits. Without a
    declaration the last position alone is tried the same way; otherwise all positions.
    """
    T = logits.shape[1]
    declared = declared if declared is not None else getattr(metric, "positions", None)
    full = metric(logits).detach()

    def reads_only(pos: list[int]) -> bool:
        probe = torch.full_like(logits, float("nan"))
        probe[:, pos] = logits[:, pos]
        try:
            v = metric(probe).detach()
        except Exception:  # noqa: BLE001 - a metric that cannot handle NaN reads the NaN positions
            return False
        return bool(torch.isfinite(v).all()) and torch.equal(v, full)

    if declared is not None:
        pos = sorted({int(p) % T for p in ([declared] if isinstance(declared, int) else declared)})
        if not reads_only(pos):
            raise HeadscopeError(
                f"the metric reads logits outside its declared positions {pos}; declare every position it reads "
                "(positions=[...]) or leave positions unset"
            )
        return pos, "declared"
    if reads_only([T - 1]):
        return [T - 1], "probed: last position"
    return list(range(T)), "all positions"


def metric_columns(metric: Callable[[Tensor], Tensor], logits: Tensor, positions: Sequence[int]) -> Tensor | None:
    """The vocabulary columns ``metric`` reads at ``positions``, or None (all of them).

    A logit-difference metric reads two columns per row; unembedding only those spares
    the patched copies almost all of ``W_U`` (a 50,257-token unembedding is most of the
    work after the blocks). Candidates are the columns where the metric's gradient at
    ``logits`` is nonzero; they are accepted only if the metric on logits whose every
    other entry is NaN equals the metric on the full logits (the test of
    :func:`metric_positions`). A metric that is not differentiable, reads more than a
    quarter of the vocabulary or fails the test reads all columns. Written here: no
    library finds the logits a black-box metric reads."""
    pos = list(positions)
    x = logits.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            m = metric(x)
            if not (isinstance(m, Tensor) and m.requires_grad and m.numel() == 1):
                return None
            (g,) = torch.autograd.grad(m, x)
    except Exception:  # noqa: BLE001 - a metric without a gradient reads every column as far as we know
        return None
    cols = torch.nonzero(g[:, pos].abs().sum((0, 1))).flatten()
    V = logits.shape[-1]
    if cols.numel() == 0 or cols.numel() > V // 4:
        return None
    full = metric(logits).detach()
    probe = torch.full_like(logits, float("nan"))
    pt = torch.tensor(pos)
    probe[:, pt[:, None], cols] = logits[:, pt[:, None], cols]
    try:
        v = metric(probe).detach()
    except Exception:  # noqa: BLE001 - a metric that cannot handle NaN reads the NaN entries
        return None
    if bool(torch.isfinite(v).all()) and torch.equal(v, full):
        return cols.cpu()
    return None


def first_difference(a: Tensor, b: Tensor) -> Tensor:
    """Per row, the first position where ``a`` and ``b`` differ (``T`` if they are equal)."""
    diff = a != b
    T = a.shape[1]
    idx = torch.where(diff.any(1), diff.float().argmax(1), torch.full((a.shape[0],), T, device=a.device))
    return idx.long().cpu()


def copies_per_chunk(max_memory: int, bytes_per_token: int, tokens_per_copy: int) -> int:
    return max(1, math.floor(max_memory / max(1, bytes_per_token * tokens_per_copy)))
