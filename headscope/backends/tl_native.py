"""``TLNativeModel``: the HeadModel protocol on a TransformerLens *native* bridge (no HF model).

Used for the tracr organisms (``data/models/tracr-NAME/``): RASP programs compiled by
tracr, converted with TransformerLens's ``utilities/tracr.py`` helpers by
``headscope/organisms/tracr_compile.py``, and booted here with
``TransformerBridge.boot_native(config)`` + ``load_state_dict``. TransformerLens backend
only (docs/design.md §3): nnsight wraps Hugging Face models, and these are not.

Differences from :class:`~headscope.backends.tl.TLModel`:

- dimensions come from ``bridge.cfg``; there is no ``hf_model``;
- tokens follow the program's input encoding: ``to_tokens("a b c")`` is
  ``[BOS, a, b, c]`` as ids; the output vocabulary (``d_vocab_out``, what the logits
  index) is the program's *output* encoding, so ``token_id(answer)`` maps an output
  value, e.g. ``"cb"``, to its logit column;
- ``run_from_layer`` is a full run with ``resid_pre`` of the re-entry layer replaced
  (exact, not faster); fast sweeps therefore use the plain patched path;
- ``generate`` is refused: outputs are not inputs (a tracr model maps a sequence to a
  sequence of the same length, it does not continue it);
- edge attribution and circuit faithfulness (:mod:`headscope.eap`,
  :mod:`headscope.faithfulness`) run on the native blocks through
  :class:`NativeBlockRunner` and :data:`NATIVE_PATHS` (the native model is pre-norm, with
  ``q``/``k``/``v``/``o`` linear layers and an ``in``/``out`` MLP, so the HF edge code's
  hooks apply unchanged); :func:`weight_edges` reads a compiled program's true circuit
  off its weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from headscope.backends._hf import ArchPaths
from headscope.backends.tl import TLModel
from headscope.common.errors import HeadscopeError
from headscope.model import Patch, _check_reentry, check_patches

#: Module paths of TransformerLens's native model under the bridge (its ``NativeBlock``:
#: ``ln1 -> attn(q, k, v, o) -> ln2 -> mlp(in, out)``, pre-norm, sequential).
NATIVE_PATHS = ArchPaths(
    layers="blocks",
    attn="attn",
    o_proj="o",
    mlp="mlp",
    final_norm="ln_final",
    unembed="unembed",
    embed="embed",
    qkv=("q", "k", "v"),
    attn_norm="ln1",
    mlp_norm="ln2",
    mlp_in="mlp",
)


class TracrTokenizer:
    """A word-level tokenizer for a tracr program's input encoding.

    ``tok("a b c")["input_ids"]`` → ``[id(BOS), id(a), id(b), id(c)]`` (BOS prepended
    unless ``add_special_tokens=False``); unknown words raise a HeadscopeError naming the
    vocabulary.
    """

    def __init__(self, encoding: dict[str, int], bos: str, pad: str, output: dict[str, int]) -> None:
        self.vocab = dict(encoding)
        self.ids_to_tokens = {v: k for k, v in encoding.items()}
        self.output_vocab = dict(output)
        self.bos_token, self.pad_token = bos, pad
        self.bos_token_id, self.pad_token_id = encoding[bos], encoding[pad]
        self.eos_token, self.eos_token_id, self.unk_token_id = None, None, None
        self.name_or_path = "tracr"

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        words = text.split()
        if words and words[0] == self.bos_token:
            words = words[1:]
        bad = [w for w in words if w not in self.vocab or w in (self.bos_token, self.pad_token)]
        if bad:
            usable = [w for w in self.vocab if w not in (self.bos_token, self.pad_token)]
            raise HeadscopeError(
                f"{bad[0]!r} is not in this tracr program's input vocabulary {usable}; write inputs as "
                "space-separated values"
            )
        ids = [self.vocab[w] for w in words]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.ids_to_tokens.get(int(i), f"<{int(i)}>") for i in ids]

    def __len__(self) -> int:
        return len(self.vocab)


class TLNativeModel(TLModel):
    """A HeadModel around a TransformerLens bridge built by ``TransformerBridge.boot_native``.

    Args:
        bridge: the booted bridge (weights loaded, ``eval()``).
        tokenizer: a :class:`TracrTokenizer` (or None: then give token ids).
        name: display name, e.g. ``"tracr-reverse"``.
        info: the organism's ``config.json`` (program, encodings, head roles).
    """

    backend = "tl"

    def __init__(self, bridge, tokenizer: TracrTokenizer | None, name: str, info: dict | None = None) -> None:  # noqa: D107
        self.bridge = bridge
        self.hf_model = None
        self.tokenizer = tokenizer
        self.name = name
        self.info = info or {}
        self.config = bridge.cfg
        cfg = bridge.cfg
        self.n_layers, self.n_heads = int(cfg.n_layers), int(cfg.n_heads)
        self.n_kv_heads = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        self.d_head, self.d_model = int(cfg.d_head), int(cfg.d_model)
        self.d_vocab = int(cfg.d_vocab)  # input ids
        self.d_vocab_out = (
            int(cfg.d_vocab_out) if cfg.d_vocab_out and cfg.d_vocab_out > 0 else self.d_vocab
        )  # logit columns
        self.n_ctx = int(cfg.n_ctx)
        self.device = next(bridge.parameters()).device
        self._active: list[Patch] = []
        self.paths = NATIVE_PATHS

    # -- tokens ----------------------------------------------------------------------
    def token_id(self, word: str) -> int:
        """The logit column of an *output* value of the program (e.g. ``"cb"`` or ``"5"``)."""
        out = getattr(self.tokenizer, "output_vocab", None)
        if out is None:
            raise HeadscopeError("this model has no output encoding; give answers as logit indices")
        if str(word) not in out:
            raise HeadscopeError(f"answer {word!r} is not an output value of {self.name} (outputs: {list(out)})")
        return out[str(word)]

    def check_tokens(self, tokens: Tensor) -> Tensor:
        """As the base check, plus the program's maximum length ``n_ctx``."""
        tokens = super().check_tokens(tokens)
        if self.n_ctx is not None and tokens.shape[1] > self.n_ctx:
            raise HeadscopeError(f"{self.name} takes at most {self.n_ctx} tokens including BOS; got {tokens.shape[1]}")
        return tokens

    # -- runs ------------------------------------------------------------------------
    @torch.no_grad()
    def run_from_layer(self, tokens: Tensor, resid_pre: Tensor, layer: int, patches: Sequence[Patch] = ()) -> Tensor:
        """Logits of a run whose block ``layer`` receives ``resid_pre`` (a full run with
        ``resid_pre`` replaced; exact, no blocks are skipped)."""
        if not 0 <= layer < self.n_layers:
            raise HeadscopeError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        patches = list(patches)
        check_patches(self, patches)
        _check_reentry(patches + list(self._active), layer)
        enter = Patch(layer=layer, site="resid_pre", mode="replace", value=resid_pre.to(self.device))
        return self.run_patched(tokens, [enter, *patches])

    def generate(
        self, tokens: Tensor, max_new_tokens: int = 8, patches: Sequence[Patch] = (), eos: bool = True
    ) -> Tensor:
        """Not available: a tracr program maps a sequence to one output per position."""
        raise HeadscopeError(
            f"{self.name} is a compiled RASP program: it maps a sequence to one output per position and cannot "
            "continue it; use logits()"
        )

    def supports(self, feature: str) -> bool:
        """A tracr program: no HF module tree (no fast re-entry, no tuning) and no generation;
        edge attribution runs on its native blocks (:class:`NativeBlockRunner`)."""
        return feature in ("qkv_sites", "head_grads", "edges")

    def block_runner(self, tokens: Tensor) -> NativeBlockRunner:
        """A :class:`NativeBlockRunner` on ``tokens`` (what edge attribution runs)."""
        return NativeBlockRunner(self, tokens)

    # -- weights ---------------------------------------------------------------------
    def final_norm(self) -> nn.Module | None:
        """tracr models have no final norm (TransformerLens ``normalization_type=None``)."""
        ln = getattr(self.bridge, "ln_final", None)
        return ln if isinstance(ln, nn.Module) and any(True for _ in ln.parameters()) else None

    def unembed_bias(self) -> Tensor | None:
        """The bridge's ``b_U``, or None."""
        b = getattr(self.bridge, "b_U", None)
        return None if b is None else b.detach()

    def blocks(self) -> list[nn.Module]:
        """The bridge's blocks, in order."""
        return list(self.bridge.blocks)

    def unembed_matrix(self) -> Tensor:
        """``W_U`` as ``[d_model, d_vocab_out]`` (TransformerLens's ``bridge.W_U``)."""
        return self.bridge.W_U.detach()

    def o_proj_weight(self, layer: int) -> Tensor:
        """``W_O`` of a layer as ``[n_heads, d_head, d_model]`` (``bridge.W_O[layer]``)."""
        return self.bridge.W_O[layer].detach()


class NativeBlockRunner:
    """:class:`headscope.fastpatch.BlockRunner`'s interface on a native bridge: the cached
    input of block 0 (token + position embeddings), runs that enter block ``L`` with a given
    residual, and the unembedding. Attention is bidirectional or causal as the program's
    config says; positions are absolute (added before block 0), so re-entry needs no
    position arguments beyond the default ones.
    """

    def __init__(self, model: TLNativeModel, tokens: Tensor) -> None:  # noqa: D107
        if getattr(model, "_active", None):
            raise HeadscopeError("edge attribution cannot run under model.hooked(...) patches")
        self.model = model
        self.paths = model.paths
        self.B, self.T = tokens.shape
        self.blocks: list[nn.Module] = list(model.bridge.blocks)
        self.norm = model.bridge.ln_final
        self.lm_head = model.bridge.unembed
        got: list[Tensor] = []

        def keep(mod: nn.Module, args: tuple) -> None:
            got.append(args[0].detach())

        h = self.blocks[0].register_forward_pre_hook(keep)
        try:
            with torch.no_grad():
                model.logits(tokens)
        finally:
            h.remove()
        self.resid0: Tensor = got[0]

    def unembed(self, h: Tensor) -> Tensor:
        """Logits of final residuals ``[..., d_model]`` (final norm, if any, and ``W_U``)."""
        return self.lm_head(self.norm(h))

    @contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to swap: the native blocks are called as they are."""
        yield

    def forward(self, hidden: Tensor, start_layer: int = 0, rows: Tensor | None = None) -> Tensor:
        """The final residual of a run entering block ``start_layer`` with ``hidden``
        ``[R, T, d_model]`` (``rows`` is accepted for BlockRunner's signature: every row of a
        native run is called the same way)."""
        R, T = hidden.shape[:2]
        pos = torch.arange(T, device=hidden.device).expand(R, T)
        for blk in self.blocks[start_layer:]:
            (hidden,) = blk(hidden, attention_mask=None, position_ids=pos)
        return hidden


def weight_edges(model: TLNativeModel, tol: float = 1e-6) -> list[str]:
    """The edges of a compiled program's circuit, read off its weights.

    tracr gives every RASP variable its own residual dimensions, so writer ``u`` feeds reader
    ``v`` exactly when ``u``'s output matrix and ``v``'s input matrix share a dimension:
    ``max |W_write(u) @ W_read(v)| > tol``. Writers: ``input`` (token and position
    embeddings), each head (its ``z`` slice of ``W_O``), each MLP (``W_out``); readers: each
    head's ``W_Q``/``W_K``/``W_V`` slice, each MLP's ``W_in``, and ``W_U``. The names are
    :class:`headscope.graph.HeadGraph`'s; only edges the graph has (``u`` writes before
    ``v`` reads) are returned. Meaningful for tracr's one-variable-per-dimension residuals,
    not for trained models, where every product is non-zero.
    """
    from headscope.graph import HeadGraph

    g = HeadGraph.from_model(model)
    b = model.bridge
    H, dh = model.n_heads, model.d_head
    w_in: list[Tensor] = [torch.cat([b.embed.weight, b.pos_embed.weight]).detach()]  # [rows, d]
    r_in: list[Tensor] = []  # [d, cols], in reader order
    for L, blk in enumerate(b.blocks):
        Wo = blk.attn.o.weight.detach().T.reshape(H, dh, -1)  # [H, dh, d]
        w_in += [Wo[h] for h in range(H)] + [blk.mlp.out.weight.detach().T]
        for proj in (blk.attn.q, blk.attn.k, blk.attn.v):
            Wp = proj.weight.detach().reshape(-1, dh, proj.weight.shape[1])  # [n, dh, d]
            r_in += [Wp[h].T for h in range(Wp.shape[0])]
        r_in.append(getattr(blk.mlp, "in").weight.detach().T)
    r_in.append(model.unembed_matrix())
    mask = g.mask
    out = []
    for i, u in enumerate(g.writers):
        for j, v in enumerate(g.readers):
            if bool(mask[i, j]) and float((w_in[i] @ r_in[j]).abs().max()) > tol:
                out.append(f"{u}->{v}")
    return out


def boot_tracr(folder: Path, device: torch.device) -> TLNativeModel:
    """A TLNativeModel from a compiled tracr organism folder (``config.json`` + ``model.safetensors``).

    Boots ``TransformerBridge.boot_native`` from the stored bridge config and loads the
    weights; ``headscope.loading.load_model`` resolves names and reports missing folders.
    """
    from safetensors.torch import load_file
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources import native  # noqa: F401 - attaches boot_native

    info = json.loads((folder / "config.json").read_text())
    cfg = TransformerBridgeConfig(**info["bridge_config"])
    # boot_native is attached to the class by importing sources.native (not in its stubs)
    bridge = getattr(TransformerBridge, "boot_native")(cfg, model_name=folder.name)
    state = load_file(str(folder / "model.safetensors"))
    _, unexpected = bridge.load_state_dict(state, strict=False)
    if unexpected:
        raise HeadscopeError(
            f"{folder}/model.safetensors does not match its config.json (unexpected keys {unexpected[:3]}); "
            "recompile it"
        )
    if device.type != "cpu":  # boot_native builds on the CPU; TransformerLens logs every move
        bridge.to(device)
    bridge.eval()
    enc = {str(k): int(v) for k, v in info["input_encoding"]}
    out = {str(k): int(v) for k, v in info["output_encoding"]}
    tok = TracrTokenizer(enc, info["bos"], info["pad"], out)
    return TLNativeModel(bridge, tok, folder.name, info)


_CONFIG_FIELDS = (
    "n_layers",
    "d_model",
    "d_head",
    "n_ctx",
    "d_vocab",
    "d_vocab_out",
    "d_mlp",
    "n_heads",
    "act_fn",
    "attention_dir",
    "normalization_type",
)


def tracr_bridge(assembled, output_label: str | None = None) -> tuple[nn.Module, dict[str, Tensor], dict]:
    """Convert a tracr ``AssembledTransformerModel`` (or a stand-in with the same
    attributes) with TransformerLens's ``utilities/tracr.py`` helpers.

    ``output_label``: the program's output variable (tracr's ``program.label``). Without it
    TransformerLens infers it as the one variable whose values equal the output encoder's,
    which fails where several variables share those values (``dyck``: four booleans).

    Returns the booted native bridge (weights loaded, ``eval()``), its state dict, and the
    config fields that ``config.json`` stores for :func:`boot_tracr`.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources import native  # noqa: F401 - attaches boot_native
    from transformer_lens.utilities.tracr import (
        make_tracr_transformer_bridge_config,
        make_tracr_transformer_bridge_state_dict,
    )

    cfg = make_tracr_transformer_bridge_config(assembled)
    state = make_tracr_transformer_bridge_state_dict(assembled, output_label=output_label)
    fields = {k: getattr(cfg, k) for k in _CONFIG_FIELDS}
    bridge = getattr(TransformerBridge, "boot_native")(cfg)  # attached by importing sources.native
    _, unexpected = bridge.load_state_dict(state, strict=False)
    if unexpected:
        raise HeadscopeError(f"unexpected state-dict keys {unexpected} when converting a tracr model")
    bridge.eval()
    return bridge, state, fields
