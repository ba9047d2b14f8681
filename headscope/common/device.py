"""Device choice."""

from __future__ import annotations

import torch

from .errors import HeadscopeError


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` (CUDA, then MPS, then CPU), ``None`` (= auto) or an explicit device.

    An explicit device that is not available raises a HeadscopeError naming the ones
    that are.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HeadscopeError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise HeadscopeError(f"device {device!r} requested but MPS is not available; use --device cpu or auto")
    return dev
