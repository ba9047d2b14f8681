"""The checkpoints that ``headscope vision ... train`` writes: ``{"kind", "config", "state_dict"}`` in one ``.pt``.

:func:`load_checkpoint` and :func:`load_weights` turn every way a file can be wrong (missing,
corrupt, not a checkpoint, another model's, weights of another shape) into a one-line
HeadscopeError that names the file and the command that writes a right one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headscope.common import HeadscopeError

__all__ = ["load_checkpoint", "load_weights", "save_checkpoint"]


def _one_line(e: BaseException, limit: int = 120) -> str:
    """``e`` as ``Type: message`` on one line, shortened to ``limit`` characters."""
    msg = " ".join(str(e).split())
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def save_checkpoint(path: str | os.PathLike, kind: str, config: dict[str, Any], model: nn.Module) -> Path:
    """Write ``model``'s weights with its ``kind`` (e.g. ``"lsnet"``) and the ``config`` that rebuilds it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "config": config, "state_dict": model.state_dict()}, p)
    return p


def load_checkpoint(
    path: str | os.PathLike, kind: str, train_cmd: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read a checkpoint of ``kind`` written by ``train_cmd``; returns ``{"config": dict, "state_dict": dict}``.

    Raises HeadscopeError when the file is missing or unreadable, is not such a dictionary,
    says it is another kind, or its config lacks a key of ``required``. Checkpoints written
    before ``kind`` was recorded are accepted when their config has the ``required`` keys.
    """
    p = Path(path)
    fix = f"pass the .pt file written by `{train_cmd}`"
    if not p.is_file():
        raise HeadscopeError(f"checkpoint {p} not found; train one with `{train_cmd}`")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # not a pickle, or one of objects other than tensors and plain data
        raise HeadscopeError(f"{p} is corrupt or not a checkpoint of tensors; {fix}") from e
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise HeadscopeError(f"{p} is corrupt, truncated or not a PyTorch checkpoint ({_one_line(e)}); {fix}") from e
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        what = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else type(state).__name__
        raise HeadscopeError(f"{p} holds {what}, not a {kind} checkpoint with 'config' and 'state_dict'; {fix}")
    config = state.get("config", {})
    if not isinstance(config, dict):
        raise HeadscopeError(f"{p}: 'config' is a {type(config).__name__}, not a dict; {fix}")
    found = state.get("kind")
    if found is not None and found != kind:
        raise HeadscopeError(f"{p} is a {found} checkpoint, not a {kind} one; {fix}")
    missing = [k for k in required if k not in config]
    if missing:
        raise HeadscopeError(f"{p} is not a {kind} checkpoint (its config lacks {', '.join(missing)}); {fix}")
    return {"config": config, "state_dict": state["state_dict"]}


def load_weights(model: nn.Module, state_dict: dict[str, Any], path: str | os.PathLike, train_cmd: str) -> nn.Module:
    """``model.load_state_dict(state_dict)``, or a HeadscopeError saying which weights are missing or misshapen."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    odd = [k for k, v in state_dict.items() if k in own and not isinstance(v, torch.Tensor)]
    shaped = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    if missing or extra or shaped or odd:
        parts = [
            f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else "",
            f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
            f"{len(shaped)} of another shape (e.g. {shaped[0]}, file vs model)" if shaped else "",
            f"{len(odd)} not tensors (e.g. {odd[0]})" if odd else "",
        ]
        raise HeadscopeError(
            f"the weights in {path} do not fit the {type(model).__name__} its config describes: "
            f"{'; '.join(p for p in parts if p)}; pass the .pt file written by `{train_cmd}`"
        )
    model.load_state_dict(state_dict)
    return model
