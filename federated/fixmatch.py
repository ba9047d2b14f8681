"""FedAvg + FixMatch and FedAvg + FreeMatch: the pseudo-labelling baselines of Twin-sight's Table 1.

Each round (multi-round FedAvg, :func:`federated.semi.fedavg_rounds`) a sampled client
trains one model for ``local_epochs``:

- labelled rows: cross-entropy on the weak view;
- unlabelled rows: ``lambda_u ·`` a consistency loss — the prediction on the weak view
  (no gradient) gives a hard pseudo-label ``ŷ = argmax p`` with confidence ``max p``, and
  the strong view is trained towards ``ŷ`` where the confidence passes a threshold:

  * FixMatch (Sohn et al. 2020, §3.2, eq. 2): fixed threshold τ (0.95);
  * FreeMatch (Wang et al. 2023, §3.2, eqs. 5–8): self-adaptive threshold
    ``τ_t(c) = MaxNorm(p̃_t)(c) · τ_t`` with the global EMA ``τ_t = λ τ_{t−1} + (1−λ) mean max p``
    and the local EMA ``p̃_t = λ p̃_{t−1} + (1−λ) mean p`` (both start at 1/C). The EMAs
    live in the client's state and persist across rounds (the official Twin-sight code
    restarts them at every local epoch). FreeMatch's fairness term is not used, as in
    Twin-sight's baseline code.

The server averages the uploaded models weighted by sample count; the test accuracy is
that of the averaged model. An unlabelled client never reads its labels
(:func:`federated.semi.client_views`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .protocol import (
    ClientEnv,
    FLConfig,
    Reply,
    ServerEnv,
    ServerProgram,
    ServerResult,
    Task,
    build_model,
    client_action,
)
from .semi import as_semi, batches, client_views, fedavg_rounds, load_models, pack, sgd, views


def fixmatch_loss(logits_w: Tensor, logits_s: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """FixMatch consistency: ``mean_b 1[max p_b ≥ τ] · CE(logits_s_b, argmax p_b)``, ``p = softmax(logits_w)``.

    ``p`` carries no gradient.

    Returns (loss, mask). The mean is over all unlabelled rows, masked ones count as 0.
    """
    p = logits_w.detach().softmax(-1)
    conf, pseudo = p.max(-1)
    mask = (conf >= threshold).to(logits_s.dtype)
    return (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean(), mask


class FreeMatchThreshold:
    """FreeMatch's self-adaptive threshold (global τ_t and class-wise p̃_t EMAs, §3.2)."""

    def __init__(self, num_classes: int, ema: float, tau: Tensor | None = None, p: Tensor | None = None) -> None:
        self.ema = ema
        self.tau = tau.clone() if tau is not None else torch.tensor(1.0 / num_classes)
        self.p = p.clone() if p is not None else torch.full((num_classes,), 1.0 / num_classes)

    def update(self, probs: Tensor) -> None:
        """EMA step with a batch of weak-view probabilities ``[B, C]`` (eqs. 5 and 6)."""
        lam = self.ema
        self.tau = lam * self.tau + (1 - lam) * probs.max(-1).values.mean()
        self.p = lam * self.p + (1 - lam) * probs.mean(0)

    def class_thresholds(self) -> Tensor:
        """``τ_t(c) = p̃_t(c) / max_c p̃_t(c) · τ_t`` (eq. 7)."""
        return self.p / self.p.max() * self.tau

    def loss(self, logits_w: Tensor, logits_s: Tensor) -> tuple[Tensor, Tensor]:
        """Update the EMAs with this batch, then the masked consistency loss (eq. 8); returns (loss, mask)."""
        p = logits_w.detach().softmax(-1)
        self.update(p)
        conf, pseudo = p.max(-1)
        mask = (conf >= self.class_thresholds()[pseudo]).to(logits_s.dtype)
        return (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean(), mask


@client_action("semi_consistency")
def _consistency_action(task: Task, env: ClientEnv) -> Reply:
    """One FedAvg+FixMatch / FedAvg+FreeMatch local update (``task.config["method"]``)."""
    cfg, c = env.cfg, task.config
    models = load_models(task.arrays, {"sup": lambda: build_model(cfg, env.input_shape, env.num_classes)})
    model = models["sup"]
    seed, method = int(c["seed"]), str(c["method"])
    x_l, y_l, x_u = client_views(env, bool(int(c["labelled"])), float(c["labelled_fraction"]), seed)
    x_all = torch.cat([x_l, x_u])
    n_l = len(x_l)
    free = None
    if method == "freematch":
        free = FreeMatchThreshold(
            env.num_classes, float(c["ema"]), env.state.get("freematch_tau"), env.state.get("freematch_p")
        )
    g = torch.Generator().manual_seed(seed)
    opt = sgd([model], cfg.lr)
    model.train()
    tot = masked = 0.0
    nb = nu = 0
    for _ in range(cfg.local_epochs):
        for li, ui in batches(n_l, len(x_u), cfg.batch_size, g):
            rows = torch.cat([li, ui + n_l])
            xw, xs = views(x_all[rows], g)
            k = len(li)
            logits = model(torch.cat([xw, xs[k:]]))
            loss = logits.sum() * 0.0
            if k:
                loss = loss + F.cross_entropy(logits[:k], y_l[li])
            if len(ui):
                lw, ls = logits[k : len(rows)], logits[len(rows) :]
                cons, mask = free.loss(lw, ls) if free is not None else fixmatch_loss(lw, ls, float(c["threshold"]))
                loss = loss + float(c["lambda_u"]) * cons
                masked, nu = masked + float(mask.sum()), nu + len(ui)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, nb = tot + float(loss.detach()), nb + 1
    model.eval()
    if free is not None:
        env.state["freematch_tau"], env.state["freematch_p"] = free.tau.detach().clone(), free.p.detach().clone()
    return Reply(
        pack(models), {"num_examples": float(len(env.x)), "loss": tot / max(1, nb), "mask_rate": masked / max(1, nu)}
    )


def _server(cfg: FLConfig, env: ServerEnv, method: str) -> ServerProgram:
    semi = as_semi(cfg)
    model = build_model(semi, env.input_shape, env.num_classes)
    metrics = yield from fedavg_rounds(
        semi,
        {"sup": model},
        "semi_consistency",
        list(range(semi.clients)),
        lambda cid: cid < semi.labelled_clients,
        {"method": method},
    )
    return ServerResult(model.eval(), {f"last_{k}": v for k, v in metrics.items()})


def server_fixmatch(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """FedAvg + FixMatch over all clients (labelled: CE; unlabelled: FixMatch consistency)."""
    return (yield from _server(cfg, env, "fixmatch"))


def server_freematch(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """FedAvg + FreeMatch over all clients (labelled: CE; unlabelled: FreeMatch consistency)."""
    return (yield from _server(cfg, env, "freematch"))
