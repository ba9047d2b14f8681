"""Ensemble of the client models: the average of their logits (the upper bound the
one-shot methods distil from; FuseFL Table 1 and Co-Boosting Table 1 "Ensemble")."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .protocol import FLConfig, ServerEnv, ServerProgram, ServerResult, train_all_clients


class WeightedEnsemble(nn.Module):
    """``T(x) = Σ_m w_m f_m(x) / Σ_m w_m`` over client models ``f_m`` (logit averaging).

    With equal weights this is the plain ensemble; Co-Boosting (§4.2) learns ``w``.
    """

    def __init__(self, models: list[nn.Module], weights: Tensor | None = None) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        for p in self.models.parameters():
            p.requires_grad_(False)
        w = torch.full((len(models),), 1.0 / len(models)) if weights is None else weights.detach().clone().float()
        self.register_buffer("weights", w)

    def member_logits(self, x: Float[Tensor, " batch *shape"]) -> Float[Tensor, " members batch classes"]:
        return torch.stack([m(x) for m in self.models])

    def forward(
        self, x: Float[Tensor, " batch *shape"], weights: Tensor | None = None
    ) -> Float[Tensor, " batch classes"]:
        w = self.weights if weights is None else weights
        logits = self.member_logits(x)
        return (w.view(-1, 1, 1) * logits).sum(0) / w.sum()


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Server program: collect the client models once and deploy their (equal-weight) ensemble."""
    models, _ = yield from train_all_clients(cfg, env)
    return ServerResult(WeightedEnsemble(models).eval())
