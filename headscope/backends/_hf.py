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
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from headscope.common.errors import HeadscopeError


@dataclass(frozen=True)
class ArchPaths:
    """Where one architecture keeps what headscope reads and patches (module paths).

    ``layers``: the decoder blocks; under each block ``attn`` (the attention module, whose
    eager output is ``(out, weights)``), ``attn.o_proj`` (its input is every head's ``z``),
    ``mlp`` (its output is the block's MLP contribution); ``final_norm``, ``unembed`` and
    ``embed`` from the model root. q/k/v come from separate projections ``qkv`` under
    ``attn`` or from one fused projection ``qkv_fused`` laid out as ``qkv_layout``:
    ``"blocks"`` = ``[q | k | v]`` (GPT-2, Phi-3) or ``"heads"`` = per head
    ``[q_h | k_h | v_h]`` (GPT-NeoX). ``conv1d``: weights stored ``[in, out]`` (GPT-2).
    ``fast_reentry``: blocks return a plain tensor, so a run can start at block L from a
    cached residual (:func:`resid_reentry`; a test checks it equals the full run).
    ``attn_out``: the block submodule whose output is what attention adds to the residual
    stream, where that is not ``o_proj``'s output (Gemma2's post-attention norm; ``mlp``
    is then the post-feed-forward norm), as TransformerLens's ``hook_attn_out`` /
    ``hook_mlp_out`` define them. ``mlp_flat``: the MLP runs on ``[batch·pos, d_model]``
    (OPT flattens the tokens before ``fc1``/``fc2``).
    """

    layers: str
    attn: str
    o_proj: str
    mlp: str
    final_norm: str
    unembed: str
    embed: str
    qkv: tuple[str, str, str] | None = ("q_proj", "k_proj", "v_proj")
    qkv_fused: str | None = None
    qkv_layout: str = "blocks"
    conv1d: bool = False
    fast_reentry: bool = False
    attn_out: str | None = None
    mlp_flat: bool = False
    #: Edge-level analyses (headscope/eap.py): the norm in front of attention and the one
    #: in front of the MLP (block submodules), the module whose input is the MLP's input,
    #: and whether attention and MLP read the same residual (GPT-J; GPT-NeoX per config).
    attn_norm: str = "input_layernorm"
    mlp_norm: str = "post_attention_layernorm"
    mlp_in: str = "mlp"
    parallel: bool | str = False


LLAMA_PATHS = ArchPaths(
    "model.layers", "self_attn", "o_proj", "mlp", "model.norm", "lm_head", "model.embed_tokens", fast_reentry=True
)
PHI3_PATHS = replace(LLAMA_PATHS, qkv=None, qkv_fused="qkv_proj")
GEMMA2_PATHS = replace(LLAMA_PATHS, attn_out="post_attention_layernorm", mlp="post_feedforward_layernorm")
GPT2_PATHS = ArchPaths(
    "transformer.h", "attn", "c_proj", "mlp", "transformer.ln_f", "lm_head", "transformer.wte",
    qkv=None, qkv_fused="c_attn", conv1d=True, fast_reentry=True, attn_norm="ln_1", mlp_norm="ln_2",
)  # fmt: skip
NEOX_PATHS = ArchPaths(
    "gpt_neox.layers", "attention", "dense", "mlp", "gpt_neox.final_layer_norm", "lm_head", "gpt_neox.embed_in",
    qkv=None, qkv_fused="query_key_value", qkv_layout="heads", fast_reentry=True,
    parallel="use_parallel_residual",
)  # fmt: skip
OPT_PATHS = ArchPaths(
    "model.decoder.layers", "self_attn", "out_proj", "fc2", "model.decoder.final_layer_norm", "lm_head",
    "model.decoder.embed_tokens", mlp_flat=True, fast_reentry=True,
    attn_norm="self_attn_layer_norm", mlp_norm="final_layer_norm", mlp_in="fc1",
)  # fmt: skip
GPTJ_PATHS = ArchPaths(
    "transformer.h", "attn", "out_proj", "mlp", "transformer.ln_f", "lm_head", "transformer.wte", fast_reentry=True,
    attn_norm="ln_1", mlp_norm="ln_1", parallel=True,
)  # fmt: skip
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "olmo2", "granite"}

#: model_type (the HF config's) -> its paths. docs/models.md lists what each supports.
ARCHS: dict[str, ArchPaths] = {
    **{mt: LLAMA_PATHS for mt in sorted(_LLAMA_LIKE)},
    "gemma2": GEMMA2_PATHS,
    "phi3": PHI3_PATHS,
    "gpt2": GPT2_PATHS,
    "gpt_neox": NEOX_PATHS,
    "opt": OPT_PATHS,
    "gptj": GPTJ_PATHS,
}


def arch_paths(config) -> ArchPaths:
    mt = getattr(config, "model_type", "")
    if mt in ARCHS:
        if mt == "opt" and getattr(config, "word_embed_proj_dim", None) not in (None, config.hidden_size):
            raise HeadscopeError(
                "OPT models whose word_embed_proj_dim differs from hidden_size (project_in/out layers, e.g. "
                "opt-350m) are not supported yet; the other OPT sizes are"
            )
        return ARCHS[mt]
    raise HeadscopeError(
        f"model type {mt!r} is not supported yet; supported: {', '.join(sorted(ARCHS))} (see docs/models.md)"
    )


def split_qkv(x: Tensor, paths: ArchPaths, n_heads: int, n_kv: int, d_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """A fused projection's output ``[batch, pos, ·]`` as per-head ``q, k, v``
    (``[batch, pos, n_heads | n_kv, d_head]``), following ``paths.qkv_layout``."""
    b, p, _ = x.shape
    if paths.qkv_layout == "heads":
        y = x.reshape(b, p, n_heads, 3, d_head)
        return y[:, :, :, 0], y[:, :, :, 1], y[:, :, :, 2]
    nq, nk = n_heads * d_head, n_kv * d_head
    q, k, v = x[..., :nq], x[..., nq : nq + nk], x[..., nq + nk :]
    return q.reshape(b, p, n_heads, d_head), k.reshape(b, p, n_kv, d_head), v.reshape(b, p, n_kv, d_head)


def merge_qkv(q: Tensor, k: Tensor, v: Tensor, paths: ArchPaths) -> Tensor:
    """The inverse of :func:`split_qkv`: per-head ``q, k, v`` back into the fused layout."""
    b, p = q.shape[:2]
    if paths.qkv_layout == "heads":
        return torch.stack([q, k, v], dim=3).reshape(b, p, -1)
    return torch.cat([q.reshape(b, p, -1), k.reshape(b, p, -1), v.reshape(b, p, -1)], dim=-1)


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


def placeholder_tokenizer():
    """A two-token tokenizer for libraries that insist on one (nnsight) when the model has none."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def tokenize(tokenizer, prompts: str | Sequence[str], allow_unk: bool = False, n_ctx: int | None = None) -> Tensor:
    """Token ids ``[batch, pos]`` with the tokenizer's BOS; every prompt must have the same length.

    Words the vocabulary lacks would silently become the unknown token, so they raise a
    HeadscopeError naming them unless ``allow_unk``; prompts longer than the model's
    context ``n_ctx`` raise too.
    """
    if tokenizer is None:
        raise HeadscopeError(
            "this model has no tokenizer; pass token ids (a LongTensor [batch, pos]) instead of text, or save a "
            "tokenizer into the model folder (tokenizer.save_pretrained(folder))"
        )
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise HeadscopeError("the prompt set is empty; give at least one prompt")
    if any(not p.strip() for p in prompts):
        raise HeadscopeError("a prompt is empty; every prompt needs at least one word")
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and not allow_unk:
        bad = [i for i, row in enumerate(ids) if unk in row]
        if bad:
            words = _unknown_words(tokenizer, prompts[bad[0]], unk)
            raise HeadscopeError(
                f"{len(bad)} prompt(s) contain words outside the model's vocabulary (prompt {bad[0]}: "
                f"{', '.join(repr(w) for w in words) or 'unknown'}), which would become {tokenizer.unk_token!r}; "
                "rephrase them, or pass --allow-unk (allow_unk=True) to analyse them anyway"
            )
    if n_ctx is not None:
        long = max(len(i) for i in ids)
        if long > n_ctx:
            raise HeadscopeError(
                f"a prompt is {long} tokens long but the model has {n_ctx} positions; shorten the prompts"
            )
    lens = {len(i) for i in ids}
    if len(lens) > 1:
        raise HeadscopeError(
            f"prompts tokenize to different lengths {sorted(lens)}; patching compares positions, so group "
            "prompts by template (same token length) or pad them yourself"
        )
    return torch.tensor(ids, dtype=torch.long)


def _unknown_words(tokenizer, prompt: str, unk: int) -> list[str]:
    """The whitespace-separated words of ``prompt`` that contain the unknown token."""
    out = []
    for w in prompt.split():
        if unk in tokenizer(w, add_special_tokens=False)["input_ids"]:
            out.append(w)
    return out[:5]


def check_tokens(tokens: Tensor, d_vocab: int, n_ctx: int | None = None) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.long, torch.int32, torch.int64):
        raise HeadscopeError("tokens must be a LongTensor [batch, pos]; use model.to_tokens(prompts)")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] == 0 or tokens.shape[0] == 0:
        raise HeadscopeError(f"tokens must be [batch, pos] with batch, pos >= 1; got shape {tuple(tokens.shape)}")
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise HeadscopeError(
            f"the input is {tokens.shape[1]} tokens long but the model has {n_ctx} positions; shorten it"
        )
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
