"""Co-Boosting: data and ensemble boosted together for one-shot FL (Dai et al., ICLR 2024).

Server side, every epoch (Algorithm 1; official code rong-dai/Co-Boosting):

1. *hard-sample synthesis* (§4.1): a re-initialised generator and latent z are trained for
   ``g_steps`` on ``L = L_oh + adv·L_adv``, ``L_oh = mean((1 − p_y)^hs · CE(T_w(x), y))``,
   ``L_adv = −mean KL(T_w(x) ‖ S(x))``; the lowest-loss batch joins a growing pool;
2. *ensemble re-weighting* (§4.2): from epoch 1 on, the client weights w (start 1/M) take
   a signed-gradient step per pool batch on ``CE(T_w(x), y)``,
   ``w ← clip(w − μ·decay^epoch·sign(∇_w), 0, 1)``, where ``T_w = Σ w_m f_m / Σ w_m``;
3. *distillation* (§4.3): one pass over the pool, each batch first moved by
   output-diversified sampling, then ``KL(T_w ‖ S)`` at temperature ``kd_T``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .distill import DataFreeVariant, data_free_distill
from .ensemble import WeightedEnsemble
from .protocol import FLConfig, ServerEnv, ServerProgram, ServerResult, build_model, train_all_clients

VARIANT = DataFreeVariant(hard_samples=True, mask_disagree=False, reweight=True, ods=True)


def update_ensemble_weights(
    ensemble: WeightedEnsemble,
    x: Tensor,
    y: Tensor,
    mu: float,
    decay: float,
    epoch: int,
    batch_size: int = 64,
) -> Tensor:
    """One pass of Co-Boosting's signed-gradient step on the ensemble weights over ``(x, y)``; updates in place.

    Per batch: ``w ← clip(w − μ·decay^epoch·sign(∂CE(T_w(x), y)/∂w), 0, 1)`` (the official
    code's ±1 trust region around the starting w is implied by the [0, 1] box).
    Returns the new weights ``[M]``.
    """
    w = ensemble.weights.detach().clone()
    with torch.no_grad():
        member = torch.cat(
            [ensemble.member_logits(x[i : i + batch_size]) for i in range(0, len(x), batch_size)], dim=1
        )
    step = mu * decay**epoch
    for i in range(0, len(x), batch_size):
        w.requires_grad_(True)
        logits = (w.view(-1, 1, 1) * member[:, i : i + batch_size]).sum(0) / w.sum()
        loss = F.cross_entropy(logits, y[i : i + batch_size])
        (grad,) = torch.autograd.grad(loss, w)
        w = (w.detach() - step * grad.sign()).clamp(0.0, 1.0)
    if float(w.sum()) <= 0:  # every weight hit 0: the ensemble would be undefined; keep the old one
        w = ensemble.weights.detach().clone()
    ensemble.weights.copy_(w.detach())
    return ensemble.weights.clone()


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Server program: collect client models once, then co-boost synthetic data, ensemble weights and the student."""
    models, _ = yield from train_all_clients(cfg, env)
    teacher = WeightedEnsemble(models).eval()
    student = build_model(cfg, env.input_shape, env.num_classes, seed_offset=1)

    def reweight(px: Tensor, py: Tensor, ep: int) -> None:
        update_ensemble_weights(teacher, px, py, cfg.mu, cfg.wdc, ep, cfg.synth_batch)

    extra = data_free_distill(
        cfg, teacher, student, env.input_shape, env.num_classes, VARIANT, reweight_fn=reweight, desc="co-boosting"
    )
    extra.update({f"w{m}": float(w) for m, w in enumerate(teacher.weights)})
    return ServerResult(student.eval(), extra)
