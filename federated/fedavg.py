"""One-shot FedAvg: every client trains once from the same initial model; the server
averages the uploaded weights, weighted by sample count (McMahan et al. 2017, used as the
one-shot baseline in FuseFL §5 and Co-Boosting §5)."""

from __future__ import annotations

import torch
from torch import Tensor

from .protocol import FLConfig, ServerEnv, ServerProgram, ServerResult, build_model, train_all_clients


def average_states(states: list[dict[str, Tensor]], weights: list[float]) -> dict[str, Tensor]:
    """``Σ_m w_m θ_m / Σ_m w_m`` for every tensor (floating tensors only; others from client 0)."""
    if not states:
        raise ValueError("average_states needs at least one state")
    tot = float(sum(weights))
    out: dict[str, Tensor] = {}
    for k, v0 in states[0].items():
        if not torch.is_floating_point(v0):
            out[k] = v0.clone()
            continue
        acc = torch.zeros_like(v0, dtype=torch.float64)
        for s, w in zip(states, weights):
            acc += s[k].double() * (w / tot)
        out[k] = acc.to(v0.dtype)
    return out


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Server program: collect the client models once and deploy their weighted average."""
    models, sizes = yield from train_all_clients(cfg, env)
    glob = build_model(cfg, env.input_shape, env.num_classes)
    glob.load_state_dict(average_states([m.state_dict() for m in models], sizes))
    return ServerResult(glob.eval())
