"""``load_model``: bundled organisms, local HF directories, hub ids and in-memory models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headscope.common.device import get_device
from headscope.common.errors import HeadscopeError
from headscope.names import resolve_model_name
from headscope.paths import ORGANISMS, bundled_tracr, tracr_dir

BACKENDS = ("tl", "nnsight")


def _resolve(name: str) -> tuple[Path | str, bool]:
    return resolve_model_name(name)


def load_hf(name: str, device: str | torch.device | None = "auto", dtype: torch.dtype = torch.float32):
    """(hf_model, tokenizer or None, path) for an alias, a local folder or a cached hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    src, local = _resolve(name)
    dev = get_device(device)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # loading is quick; restored below (no global side effect)
    try:
        hf = AutoModelForCausalLM.from_pretrained(
            str(src), attn_implementation="eager", dtype=dtype, local_files_only=local or None
        )
    except (OSError, ValueError) as e:
        if local:
            raise HeadscopeError(f"could not load the model in {src}: {' '.join(str(e).split())[:300]}") from e
        known = ", ".join(ORGANISMS)
        raise HeadscopeError(
            f"unknown model {name!r}: not a bundled organism ({known}), not a local folder, and not loadable from the "
            "Hugging Face hub here (offline or not cached); use --model llama, or a local HF model folder"
        ) from e
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    nn.Module.to(hf, dev).eval()  # the untyped-decorated HF .to() confuses type checkers
    tok = None
    try:
        if _declares_generic_tokenizer(src):
            # transformers 5's AutoTokenizer picks the architecture's own tokenizer class
            # (e.g. Qwen2's byte-level BPE) even when the folder names the generic one, and
            # that class re-splits a custom vocabulary; load what the folder declares.
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(str(src), local_files_only=True)
        else:
            tok = AutoTokenizer.from_pretrained(str(src), local_files_only=local or None)
    except (OSError, ValueError, TypeError):
        tok = None
    return hf, tok, (str(src) if local else None)


def _declares_generic_tokenizer(src: Path | str) -> bool:
    """Whether a local folder's tokenizer_config.json names PreTrainedTokenizerFast."""
    import json

    cfg = Path(src) / "tokenizer_config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("tokenizer_class") == "PreTrainedTokenizerFast"
    except (OSError, ValueError):
        return False


def wrap(
    hf_model: nn.Module,
    tokenizer=None,
    backend: str = "tl",
    name: str = "model",
    path: str | None = None,
    copy_model: bool = False,
    allow_unk: bool = False,
):
    """A HeadModel around an in-memory HF causal LM (``copy_model`` deep-copies it first,
    which you need to give the same model to both backends: the TL bridge edits it in place).
    ``allow_unk``: accept text prompts with words outside the vocabulary (default: an error)."""
    if backend not in BACKENDS:
        raise HeadscopeError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if copy_model:
        hf_model = copy.deepcopy(hf_model)
    model: Any
    if backend == "tl":
        from headscope.backends.tl import TLModel

        model = TLModel.from_hf(hf_model, tokenizer, name=name, path=path)
    else:
        from headscope.backends.nnsight import NNsightModel

        model = NNsightModel.from_hf(hf_model, tokenizer, name=name, path=path)
    model.allow_unk = allow_unk
    return model


def load_model(
    name: str = "llama", backend: str = "tl", device: str | torch.device | None = "auto", allow_unk: bool = False
):
    """Load a HeadModel.

    Args:
        name: a bundled organism alias (``llama``, ``induction``, ``tracr-NAME``), a local Hugging Face
            model folder, or a hub id (works where the weights are cached or the network
            is reachable; otherwise a HeadscopeError lists the bundled organisms).
        backend: ``"tl"`` (TransformerLens TransformerBridge) or ``"nnsight"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        allow_unk: accept text prompts with words outside the vocabulary (by default they
            raise a HeadscopeError naming the words, instead of silently becoming ``<unk>``).
    """
    if backend not in BACKENDS:
        raise HeadscopeError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if name.startswith(("tracr-", "tracr:")):  # compiled RASP programs: TL native bridge
        return load_tracr(name, backend=backend, device=device)
    hf, tok, path = load_hf(name, device)
    return wrap(hf, tok, backend=backend, name=name, path=path, allow_unk=allow_unk)


def load_tracr(name: str, backend: str = "tl", device: str | torch.device | None = "auto"):
    """Load a bundled tracr organism (``tracr-NAME`` or ``tracr:NAME``) into a TransformerLens native bridge."""
    if backend != "tl":
        raise HeadscopeError(
            f"{name} is a tracr organism and runs on the TransformerLens backend only; use backend='tl'"
        )
    d = tracr_dir(name)
    if not (d / "model.safetensors").exists():
        have = ", ".join(bundled_tracr()) or "none"
        raise HeadscopeError(
            f"unknown tracr organism {name!r} (no weights in {d}); bundled: {have}. "
            "Compile more with headscope/organisms/tracr_compile.py"
        )
    from headscope.backends.tl_native import boot_tracr

    return boot_tracr(d, get_device(device))
