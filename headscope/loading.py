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


def load_hf(
    name: str,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
):
    """(hf_model, tokenizer or None, path) for an alias, a local folder or a cached hub id.

    ``device_map`` / ``max_memory`` / ``offload_folder`` go to ``from_pretrained``
    (accelerate): layers may sit on different devices, in CPU memory or on disk
    (``"disk"``; a temporary folder is used when ``offload_folder`` is not given)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    src, local = _resolve(name)
    dev = get_device(device)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # loading is quick; restored below (no global side effect)
    try:
        placement: dict = {}
        if device_map is not None:
            placement = {"device_map": device_map, "max_memory": max_memory}
            if offload_folder is None and _wants_disk(device_map):
                import tempfile

                offload_folder = tempfile.mkdtemp(prefix="headscope-offload-")
            if offload_folder is not None:
                placement["offload_folder"] = offload_folder
        elif max_memory is not None or offload_folder is not None:
            raise HeadscopeError("max_memory and offload_folder go with device_map (e.g. device_map='auto')")
        hf = AutoModelForCausalLM.from_pretrained(
            str(src), attn_implementation="eager", dtype=dtype, local_files_only=local or None, **placement
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
    if device_map is None:
        nn.Module.to(hf, dev)  # the untyped-decorated HF .to() confuses type checkers
    hf.eval()
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
    remote: bool | str | None = None,
):
    """A HeadModel around an in-memory HF causal LM (``copy_model`` deep-copies it first,
    which you need to give the same model to both backends: the TL bridge edits it in place).
    ``allow_unk``: accept text prompts with words outside the vocabulary (default: an error).
    ``remote``: see :func:`load_model`."""
    if backend not in BACKENDS:
        raise HeadscopeError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    remote = check_remote(remote, backend)
    if copy_model:
        hf_model = copy.deepcopy(hf_model)
    model: Any
    if backend == "tl":
        from headscope.backends.tl import TLModel

        model = TLModel.from_hf(hf_model, tokenizer, name=name, path=path)
    else:
        from headscope.backends.nnsight import NNsightModel

        model = NNsightModel.from_hf(hf_model, tokenizer, name=name, path=path)
        model.remote = remote
    model.allow_unk = allow_unk
    return model


def check_remote(remote: bool | str | None, backend: str) -> bool | str:
    """``remote`` as nnsight takes it (``False``, ``True``, ``"local"`` or a host URL), or a
    HeadscopeError naming what is accepted."""
    if remote in (None, False, "", "off"):
        return False
    if remote in ("ndif", "1", "true"):
        remote = True
    if not (
        remote is True or remote == "local" or (isinstance(remote, str) and remote.startswith(("http://", "https://")))
    ):
        raise HeadscopeError(
            f"remote={remote!r} is not understood; use True (NDIF), 'local' (nnsight's local simulation of a "
            "remote job) or a host URL"
        )
    if backend != "nnsight":
        raise HeadscopeError("remote execution runs through nnsight; use backend='nnsight' (CLI: --backend nnsight)")
    return remote


def _wants_disk(device_map) -> bool:
    return isinstance(device_map, dict) and "disk" in {str(v) for v in device_map.values()}


def load_model(
    name: str = "llama",
    backend: str = "tl",
    device: str | torch.device | None = "auto",
    allow_unk: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    remote: bool | str | None = None,
):
    """Load a HeadModel.

    Args:
        name: a bundled organism alias (``llama`` = organism v3 seed 0, ``llama-v3-s1``/``-s2``,
            ``llama-v2``, ``induction``, ``tracr-NAME``), a local Hugging Face
            model folder, or a hub id (works where the weights are cached or the network
            is reachable; otherwise a HeadscopeError lists the bundled organisms).
        backend: ``"tl"`` (TransformerLens TransformerBridge) or ``"nnsight"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        allow_unk: accept text prompts with words outside the vocabulary (by default they
            raise a HeadscopeError naming the words, instead of silently becoming ``<unk>``).
        device_map, max_memory, offload_folder: spread a model that does not fit one device
            over several, CPU memory or disk (accelerate; e.g. ``device_map="auto"`` or
            ``{"model.layers.1": "disk", ...}``); see docs/scale.md.
        remote: nnsight backend only. ``True`` (or ``"ndif"``) runs every trace on NDIF
            (key from the ``NDIF_API_KEY`` environment variable), a URL another host,
            ``"local"`` nnsight's local simulation of a remote job (serialised and run
            here, what the tests use). Sweeps run as one remote session each; fast paths
            are off. See docs/scale.md.
    """
    if backend not in BACKENDS:
        raise HeadscopeError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    remote = check_remote(remote, backend)
    if name.startswith(("tracr-", "tracr:")):  # compiled RASP programs: TL native bridge
        return load_tracr(name, backend=backend, device=device)
    if device_map is not None and name.startswith(("tracr-", "tracr:")):
        raise HeadscopeError("tracr organisms are tiny and load whole; drop device_map")
    hf, tok, path = load_hf(name, device, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
    return wrap(hf, tok, backend=backend, name=name, path=path, allow_unk=allow_unk, remote=remote)


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
