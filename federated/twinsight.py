"""Twin-sight: federated semi-supervised learning with twin models (Zhang et al., ICLR 2024).

"Robust Training of Federated Models with Extremely Label Deficiency"; official code
``visitworld123/Twin-sight``. Every client trains two models of the same architecture on a
weak and a strong view of each batch (:mod:`federated.augment`):

- the *supervised* twin ``f_s`` (features → classes): cross-entropy on the weak view of
  labelled rows (§3.2, eq. 3);
- the *unsupervised* twin ``f_u`` (features → projection head): instance discrimination,
  SimCLR's InfoNCE over the 2B views of a batch (temperature 0.07; §3.2, eq. 4),
  :func:`info_nce`;
- the neighbourhood-preserving constraint (§3.2, eq. 5) ties them: with L2-normalised
  backbone features ``ẑ`` of the weak view, ``G = ẑ ẑᵀ`` for each twin and
  ``L_sim = ‖G_u − G_s‖²_F / B²`` (:func:`sim_loss`; the official code divides by
  ``B ^ 2``, a bitwise XOR in Python, which is not used here).

Client objective (§3.3): labelled client ``CE + insDis·L_inst + sim·L_sim``; unlabelled
client ``insDis·L_inst + sim·L_sim`` (+ ``pseudo_weight ·`` a FixMatch/FreeMatch loss on
the supervised twin when ``twin_pseudo`` is set; off by default). The server runs FedAvg on
*both* twins, weighted by sample count, with ``clients_per_round`` of the clients sampled
each round; the deployed model is the supervised twin. Defaults (official config): sim 1.0,
insDis 0.5, SGD lr 0.01 momentum 0.9, batch 64, 1 local epoch, 10 clients / 5 per round.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from headscope.common import HeadscopeError

from .fixmatch import FreeMatchThreshold, fixmatch_loss
from .protocol import (
    ClientEnv,
    FLConfig,
    Reply,
    ServerEnv,
    ServerProgram,
    ServerResult,
    Task,
    client_action,
)
from .semi import as_semi, batches, client_views, fedavg_rounds, load_models, pack, sgd, twin_builders, views


def gram(features: Float[Tensor, " batch dim"]) -> Float[Tensor, " batch batch"]:
    """``ẑ ẑᵀ`` with ``ẑ`` the row-wise L2-normalised features (cosine similarities of the batch)."""
    z = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return z @ z.T


def sim_loss(f_u: Float[Tensor, " batch du"], f_s: Float[Tensor, " batch ds"]) -> Tensor:
    """Twin-sight's neighbourhood-preserving loss ``‖G_u − G_s‖²_F / B²`` (§3.2, eq. 5).

    ``f_u``/``f_s`` are the two twins' features of the same B samples (their widths may
    differ: only the B×B Gram matrices are compared).
    """
    if f_u.shape[0] != f_s.shape[0] or f_u.dim() != 2 or f_s.dim() != 2:
        raise HeadscopeError(
            f"sim_loss needs two [B, d] feature matrices of the same B, got {tuple(f_u.shape)} and {tuple(f_s.shape)}"
        )
    b = f_u.shape[0]
    return ((gram(f_u) - gram(f_s)) ** 2).sum() / (b * b)


def info_nce(z1: Float[Tensor, " batch d"], z2: Float[Tensor, " batch d"], temperature: float = 0.07) -> Tensor:
    """SimCLR's InfoNCE (NT-Xent) over 2B views: sample i's positive is its other view, negatives the other 2B − 2.

    ``mean_i −log( exp(s_{i,i⁺}/T) / Σ_{j≠i} exp(s_{ij}/T) )`` with ``s`` the cosine similarity.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    s = (z @ z.T) / temperature
    s = s.masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(s, target)


@client_action("twinsight")
def _twinsight_action(task: Task, env: ClientEnv) -> Reply:
    """One Twin-sight local update of both twins (§3.3); unlabelled clients never read labels."""
    cfg, c = env.cfg, task.config
    seed = int(c["seed"])
    models = load_models(task.arrays, twin_builders(cfg, env.input_shape, env.num_classes, int(c["proj_dim"])))
    sup, unsup = models["sup"], models["unsup"]
    x_l, y_l, x_u = client_views(env, bool(int(c["labelled"])), float(c["labelled_fraction"]), seed)
    x_all = torch.cat([x_l, x_u])
    n_l = len(x_l)
    sim_w, ins_w, temp = float(c["sim"]), float(c["ins_dis"]), float(c["nce_T"])
    pseudo = str(c["twin_pseudo"])
    free = FreeMatchThreshold(env.num_classes, float(c["ema"])) if pseudo == "freematch" else None
    g = torch.Generator().manual_seed(seed)
    opt = sgd([sup, unsup], cfg.lr)
    sup.train()
    unsup.train()
    sums = {"loss": 0.0, "ce": 0.0, "inst": 0.0, "sim": 0.0}
    nb = 0
    for _ in range(cfg.local_epochs):
        for li, ui in batches(n_l, len(x_u), cfg.batch_size, g):
            rows = torch.cat([li, ui + n_l])
            b, k = len(rows), len(li)
            xw, xs = views(x_all[rows], g)
            both = torch.cat([xw, xs])
            feat_u = unsup.features(both)
            l_inst = info_nce(*unsup.classifier(feat_u).split(b), temperature=temp)
            with_strong = pseudo != "none" and len(ui) > 0
            feat_s = sup.features(both if with_strong else xw)
            logits = sup.classifier(feat_s)
            l_sim = sim_loss(feat_u[:b], feat_s[:b])
            loss = ins_w * l_inst + sim_w * l_sim
            ce = torch.zeros(())
            if k:
                ce = F.cross_entropy(logits[:k], y_l[li])
                loss = loss + ce
            if with_strong:
                lw, ls = logits[k:b], logits[b + k :]
                pl, _ = free.loss(lw, ls) if free is not None else fixmatch_loss(lw, ls, float(c["threshold"]))
                loss = loss + float(c["pseudo_weight"]) * pl
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key, v in (("loss", loss), ("ce", ce), ("inst", l_inst), ("sim", l_sim)):
                sums[key] += float(v.detach())
            nb += 1
    sup.eval()
    unsup.eval()
    metrics = {k: v / max(1, nb) for k, v in sums.items()}
    return Reply(pack(models), {"num_examples": float(len(env.x)), **metrics})


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Twin-sight server: FedAvg of both twins over sampled clients for ``rounds`` rounds.

    Deploys the supervised twin.
    """
    semi = as_semi(cfg)
    models = {
        name: build() for name, build in twin_builders(semi, env.input_shape, env.num_classes, semi.proj_dim).items()
    }
    metrics = yield from fedavg_rounds(
        semi, models, "twinsight", list(range(semi.clients)), lambda cid: cid < semi.labelled_clients
    )
    return ServerResult(models["sup"].eval(), {f"last_{k}": v for k, v in metrics.items()})
