"""Behaviour both backends share: dimensions, tokenisation, generation, active patches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from headscope.backends._hf import Dims, arch_paths, check_tokens, dims_of, get_path, greedy_generate, tokenize
from headscope.model import CACHE_SITES, HeadCache, Patch, check_patches


class BaseHeadModel:
    """Shared plumbing; subclasses implement the backend-specific runs."""

    backend = "base"
    #: Text prompts with words outside the vocabulary raise unless this is True
    #: (``load_model(..., allow_unk=True)``, CLI ``--allow-unk``).
    allow_unk: bool = False
    run_with_heads: Callable[..., tuple[Tensor, HeadCache]]  # each backend implements it (HeadModel.run_with_heads)

    def __init__(self, hf_model: nn.Module, tokenizer, name: str) -> None:
        """Read dimensions and module paths from ``hf_model``'s config."""
        self.hf_model: nn.Module | None = hf_model
        self.tokenizer = tokenizer
        self.name = name
        self.config = hf_model.config
        self.paths = arch_paths(self.config)
        d: Dims = dims_of(self.config)
        self.n_layers, self.n_heads, self.n_kv_heads = d.n_layers, d.n_heads, d.n_kv_heads
        self.d_head, self.d_model, self.d_vocab = d.d_head, d.d_model, d.d_vocab
        self.d_vocab_out = d.d_vocab
        self.n_ctx: int | None = getattr(self.config, "max_position_embeddings", None) or getattr(
            self.config, "n_positions", None
        )
        self.device = next(hf_model.parameters()).device
        self._active: list[Patch] = []

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, layers={self.n_layers}, heads={self.n_heads}, "
            f"kv_heads={self.n_kv_heads}, d_head={self.d_head}, d_model={self.d_model})"
        )

    # -- tokens ---------------------------------------------------------------------
    def to_tokens(self, prompts: str | Sequence[str]) -> Tensor:
        """Token ids ``[batch, pos]`` (with BOS). All prompts must tokenize to one length."""
        return tokenize(self.tokenizer, prompts, allow_unk=self.allow_unk, n_ctx=self.n_ctx).to(self.device)

    def to_str_tokens(self, tokens: Tensor | str) -> list[str]:
        """The tokens of one row (or of a string, tokenized first) as strings."""
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens)[0]
        if self.tokenizer is None:
            return [str(int(t)) for t in tokens.flatten()]
        return self.tokenizer.convert_ids_to_tokens([int(t) for t in tokens.flatten()])

    def token_id(self, word: str) -> int:
        """The id of a single-token word; raises if ``word`` is not exactly one token."""
        from headscope.common.errors import HeadscopeError

        if self.tokenizer is None:
            raise HeadscopeError("this model has no tokenizer; give answers as token ids")
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if len(ids) != 1 or (unk is not None and ids[0] == unk):
            raise HeadscopeError(
                f"answer {word!r} is not a single token of this model's vocabulary (it tokenizes to "
                f"{self.tokenizer.convert_ids_to_tokens(ids)}); pick a single-token answer"
            )
        return ids[0]

    def check_tokens(self, tokens: Tensor) -> Tensor:
        """Validate ``tokens`` (LongTensor ``[batch, pos]``, ids in range) and move them to the device."""
        return check_tokens(tokens, self.d_vocab, self.n_ctx).to(self.device)

    # -- patches that stay on for a block -----------------------------------------------
    @contextmanager
    def hooked(self, patches: Sequence[Patch]) -> Iterator[None]:
        """Keep ``patches`` active for every run inside the block (generation, training).

        They are removed on exit, also when the block raises.
        """
        patches = list(patches)
        check_patches(self, patches)
        n = len(self._active)
        self._active.extend(patches)
        try:
            with self._backend_hooked(patches):
                yield
        finally:
            del self._active[n:]

    @contextmanager
    def _backend_hooked(self, patches: Sequence[Patch]) -> Iterator[None]:
        """Backend hook for patches that must be attached for a block (none by default)."""
        yield

    def generate(
        self, tokens: Tensor, max_new_tokens: int = 8, patches: Sequence[Patch] = (), eos: bool = True
    ) -> Tensor:
        """Greedy continuation ``[batch, new]`` of ``tokens`` with ``patches`` applied at every step."""
        tokens = self.check_tokens(tokens)
        eos_id = getattr(self.tokenizer, "eos_token_id", None) if eos and self.tokenizer is not None else None
        if patches:
            # Installed once for the whole loop (not once per step): steering overhead
            # is then only the patches' own arithmetic (benchmarks/steering_overhead.py).
            with self.hooked(patches):
                return greedy_generate(self.logits, tokens, max_new_tokens, eos_id)
        return greedy_generate(self.logits, tokens, max_new_tokens, eos_id)

    def supports(self, feature: str) -> bool:
        """Whether this model offers ``feature`` (see :data:`headscope.model.FEATURES`)."""
        return {
            "fast_reentry": self.paths.fast_reentry,
            "generate": True,
            "qkv_sites": True,
            "head_grads": True,
            "hf_weights": True,
        }.get(feature, False)

    def final_norm(self) -> nn.Module | None:
        """The final norm module (unwrapped from a TransformerLens bridge component)."""
        mod = get_path(self.hf_model, self.paths.final_norm)
        return getattr(mod, "_original_component", mod)

    def unembed_bias(self) -> Tensor | None:
        """The bias of the unembedding, or None."""
        mod = get_path(self.hf_model, self.paths.unembed)
        with materialized(mod):
            b = getattr(_plain(mod), "bias", None)
            return None if b is None else b.detach().clone()

    def blocks(self) -> list[nn.Module]:
        """The torch modules of the decoder blocks (as the backend runs them)."""
        return list(get_path(self.hf_model, self.paths.layers))

    def unembed_matrix(self) -> Tensor:
        """``W_U`` as ``[d_model, d_vocab]``."""
        mod = get_path(self.hf_model, self.paths.unembed)
        with materialized(mod):
            return _weight_of(mod).T.clone()

    def o_proj_weight(self, layer: int) -> Tensor:
        """``W_O`` of a layer as ``[n_heads, d_head, d_model]``."""
        mod = get_path(get_path(self.hf_model, self.paths.layers)[layer], f"{self.paths.attn}.{self.paths.o_proj}")
        with materialized(mod):
            w = _weight_of(mod).clone()
        if self.paths.conv1d:  # GPT-2 Conv1D: [in, out]
            w = w.T
        return w.T.reshape(self.n_heads, self.d_head, self.d_model)

    @torch.no_grad()
    def logits(self, tokens: Tensor) -> Tensor:  # pragma: no cover - overridden
        """Logits of a plain run; implemented by each backend."""
        raise NotImplementedError

    def run_with_cache(
        self,
        tokens: Tensor,
        layers: Sequence[int] | None = None,
        sites: Sequence[str] = CACHE_SITES,
        pattern: bool = True,
    ) -> tuple[Tensor, HeadCache]:
        """TransformerLens-style ``(logits, cache)``: :meth:`run_with_heads` with attention
        patterns and ``z``, ``resid_pre``, ``attn_out``, ``mlp_out`` of every layer by default.

        Example::

            logits, cache = model.run_with_cache(model.to_tokens("a b c"))
            cache["pattern", 0]              # [batch, n_heads, query_pos, key_pos]
            cache["blocks.1.attn.hook_z"]    # [batch, pos, n_heads, d_head]
        """
        return self.run_with_heads(tokens, layers=layers, sites=sites, pattern=pattern)


def _plain(mod: nn.Module) -> nn.Module:
    return getattr(mod, "_original_component", mod)


def _weight_of(mod: nn.Module) -> Tensor:
    w = _plain(mod).weight
    assert isinstance(w, Tensor)
    return w.detach()


@contextmanager
def materialized(mod: nn.Module) -> Iterator[None]:
    """Inside the block, ``mod``'s weights are real tensors even when a device map offloads
    them (accelerate keeps offloaded weights on the meta device between forwards)."""
    mod = _plain(mod)
    if getattr(mod, "_hf_hook", None) is None and not any(p.is_meta for p in mod.parameters()):
        yield
        return
    from accelerate.utils import align_module_device

    with align_module_device(mod, torch.device("cpu")):
        yield
