"""What both backends share about the underlying Hugging Face model.

Architecture paths (where the blocks, ``o_proj`` and the MLP live), the model's
dimensions, tokenisation, greedy generation, and the residual re-entry used by fast
patching sweeps. Written by hand: neither TransformerLens's ``start_at_layer`` nor
nnsight skips the blocks below the re-entry layer (TransformerLens still computes them
and discards the result), and a sweep that patches every head of layer L only needs
blocks L..N-1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headscope.common.errors import HeadscopeError


@dataclass(frozen=True)
class ArchPaths:
    layers: str
    attn: str
    o_proj: str
    mlp: str
    final_norm: str
    unembed: str
    embed: str


LLAMA_PATHS = ArchPaths("model.layers", "self_attn", "o_proj", "mlp", "model.norm", "lm_head", "model.embed_tokens")
GPT2_PATHS = ArchPaths("transformer.h", "attn", "c_proj", "mlp", "transformer.ln_f", "lm_head", "transformer.wte")
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3", "granite"}


def arch_paths(config) -> ArchPaths:
    mt = getattr(config, "model_type", "")
    if mt in _LLAMA_LIKE:
        return LLAMA_PATHS
    if mt == "gpt2":
        return GPT2_PATHS
    raise HeadscopeError(f"model type {mt!r} is not supported yet; headscope supports Llama-family and GPT-2 models")


def get_path(root, path: str):
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Dims:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int


def dims_of(config) -> Dims:
    n_heads = getattr(config, "num_attention_heads", None) or config.n_head
    d_model = getattr(config, "hidden_size", None) or config.n_embd
    n_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    return Dims(n_layers, n_heads, n_kv, d_head, d_model, config.vocab_size)


def tokenize(tokenizer, prompts: str | Sequence[str]) -> Tensor:
    """Token ids ``[batch, pos]`` with the tokenizer's BOS; every prompt must have the same length."""
    if tokenizer is None:
        raise HeadscopeError("this model has no tokenizer; pass token ids (a LongTensor [batch, pos]) instead of text")
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise HeadscopeError("the prompt set is empty; give at least one prompt")
    if any(not p.strip() for p in prompts):
        raise HeadscopeError("a prompt is empty; every prompt needs at least one word")
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    lens = {len(i) for i in ids}
    if len(lens) > 1:
        raise HeadscopeError(
            f"prompts tokenize to different lengths {sorted(lens)}; patching compares positions, so group "
            "prompts by template (same token length) or pad them yourself"
        )
    return torch.tensor(ids, dtype=torch.long)


def check_tokens(tokens: Tensor, d_vocab: int) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.long, torch.int32, torch.int64):
        raise HeadscopeError("tokens must be a LongTensor [batch, pos]; use model.to_tokens(prompts)")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] == 0 or tokens.shape[0] == 0:
        raise HeadscopeError(f"tokens must be [batch, pos] with batch, pos >= 1; got shape {tuple(tokens.shape)}")
    if tokens.min() < 0 or tokens.max() >= d_vocab:
        raise HeadscopeError(
            f"token ids must lie in [0, {d_vocab}); got min {int(tokens.min())}, max {int(tokens.max())}"
        )
    return tokens.long()


def _identity_forward(*args, **kwargs):
    if args:
        return args[0]
    return kwargs["hidden_states"]


@contextmanager
def resid_reentry(layers: Sequence[nn.Module], layer: int, resid: Tensor) -> Iterator[None]:
    """Blocks below ``layer`` become the identity and block ``layer`` receives ``resid``.

    Used by fast sweeps: a patched run that only differs from a cached run from block
    ``layer`` on restarts there from the cached residual. Restored on exit, also on error.
    Llama-family blocks return a plain tensor, so the identity is exact for them.
    """
    if not 0 <= layer < len(layers):
        raise HeadscopeError(f"layer {layer} out of range 0..{len(layers) - 1}")
    saved: list[tuple[nn.Module, object]] = []
    handle = None
    try:
        for blk in layers[:layer]:
            # Write the instance __dict__ directly: TransformerLens bridge components
            # forward attribute writes to the wrapped module, which would leak.
            saved.append((blk, blk.__dict__.get("forward", None)))
            blk.__dict__["forward"] = _identity_forward

        def pre(mod, args, kwargs):
            if args:
                return (resid.to(args[0].dtype),) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = resid.to(kwargs["hidden_states"].dtype)
            return args, kwargs

        handle = layers[layer].register_forward_pre_hook(pre, with_kwargs=True)
        yield
    finally:
        if handle is not None:
            handle.remove()
        for blk, prev in saved:
            if prev is None:
                blk.__dict__.pop("forward", None)
            else:
                blk.__dict__["forward"] = prev


def greedy_generate(logits_fn, tokens: Tensor, max_new_tokens: int, eos_id: int | None = None) -> Tensor:
    """Greedy decoding without a KV cache (exact under any intervention; fine for small models).

    ``logits_fn(tokens) -> [batch, pos, vocab]``. Returns the new tokens ``[batch, new]``;
    rows that produced ``eos_id`` keep emitting it.
    """
    cur = tokens
    new = []
    done = torch.zeros(tokens.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        nxt = logits_fn(cur)[:, -1].argmax(-1).cpu()
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        new.append(nxt)
        cur = torch.cat([cur, nxt[:, None].to(cur.device)], dim=1)
        if eos_id is not None and bool(done.all()):
            break
    return torch.stack(new, dim=1)
