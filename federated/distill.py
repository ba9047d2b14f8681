"""Pieces shared by the server-side distillation methods (FedDF, DENSE, Co-Boosting)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from headscope.common import progress


def kl_teacher_student(s_logits: Tensor, t_logits: Tensor, T: float) -> Float[Tensor, " batch"]:
    """Per-sample ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (the distillation loss of Hinton et al. 2015)."""
    log_q = F.log_softmax(s_logits / T, dim=-1)
    p = F.softmax(t_logits / T, dim=-1)
    return F.kl_div(log_q, p, reduction="none").sum(-1) * T * T


class Generator(nn.Module):
    """z → a synthetic input of ``out_shape``: a 2-hidden-layer MLP with batch-norm.

    Its last layer is a non-affine batch-norm, so that samples have the per-feature
    scale of the (standardised) real data, as the last ``BatchNorm(affine=False)`` of
    the DCGAN-style generator used by DENSE and Co-Boosting does.
    """

    def __init__(self, nz: int, out_shape: tuple[int, ...], hidden: int = 256) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        d = math.prod(out_shape)
        self.net = nn.Sequential(
            nn.Linear(nz, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, d),
            nn.BatchNorm1d(d, affine=False),
        )

    def forward(self, z: Float[Tensor, " batch nz"]) -> Float[Tensor, " batch *shape"]:
        return self.net(z).view(-1, *self.out_shape)

    def reset(self, gen: torch.Generator) -> None:
        """Re-initialise (weights N(0, 0.02), biases 0, BN weights N(1, 0.02)), as both papers do every epoch."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
                    m.bias.zero_()
                elif isinstance(m, nn.BatchNorm1d):
                    if m.affine:
                        m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=gen) * 0.02)
                        m.bias.zero_()
                    m.reset_running_stats()


def seeded(fn, seed: int):
    """Call ``fn()`` with torch's global RNG seeded to ``seed``, restoring it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


@dataclass(frozen=True)
class DataFreeVariant:
    """Switches that tell DENSE and Co-Boosting apart (Co-Boosting §4, ablations in Table 4)."""

    hard_samples: bool  # L_oh weighted by (1 − p_y)^hs (Co-Boosting) vs. plain CE (DENSE)
    mask_disagree: bool  # L_adv only where student and teacher disagree (DENSE)
    reweight: bool  # learn the ensemble weights (Co-Boosting)
    ods: bool  # output-diversified sampling before distillation (Co-Boosting)


def synthesize(
    generator: Generator,
    teacher: nn.Module,
    student: nn.Module,
    steps: int,
    batch: int,
    nz: int,
    num_classes: int,
    lr_g: float,
    adv: float,
    hs: float,
    variant: DataFreeVariant,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Train a freshly reset generator and its latent z for ``steps``; return the lowest-loss batch and its targets.

    ``L = L_oh + adv · L_adv`` with ``L_oh = mean((1 − p_y)^hs · CE(T(x), y))`` (hard samples;
    plain CE for DENSE) and ``L_adv = −mean(KL(T(x) ‖ S(x)))`` at temperature 3 (masked to
    samples where S and T disagree for DENSE).
    """
    generator.reset(gen)
    generator.train()
    student.eval()
    teacher.eval()
    z = torch.randn(batch, nz, generator=gen).requires_grad_(True)
    y = torch.randint(num_classes, (batch,), generator=gen)
    opt = torch.optim.Adam([{"params": generator.parameters()}, {"params": [z]}], lr=lr_g, betas=(0.5, 0.999))
    best, best_x = float("inf"), None
    for _ in range(steps):
        x = generator(z)
        t = teacher(x)
        ce = F.cross_entropy(t, y, reduction="none")
        if variant.hard_samples:
            p_y = F.softmax(t, -1).gather(1, y[:, None]).squeeze(1).detach()
            l_oh = ((1 - p_y).pow(hs) * ce).mean()
        else:
            l_oh = ce.mean()
        s = student(x)
        kl = kl_teacher_student(s, t, 3.0)
        if variant.mask_disagree:
            kl = kl * (s.argmax(-1) != t.argmax(-1)).float()
        loss = l_oh - adv * kl.mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), 10.0)
        opt.step()
        if float(loss.detach()) < best:
            best, best_x = float(loss.detach()), x.detach().clone()
    assert best_x is not None
    return best_x, y


def ods_perturb(teacher: nn.Module, x: Tensor, eta: float, gen: torch.Generator) -> Tensor:
    """Output-diversified sampling (Tashiro et al. 2020; Co-Boosting §4.3).

    ``x + η·sign(∇_x wᵀσ(T(x)/4))`` with w ~ U(−1, 1).
    """
    x = x.detach().clone().requires_grad_(True)
    out = teacher(x)
    w = torch.rand(out.shape, generator=gen) * 2 - 1
    (w * F.softmax(out / 4, -1)).sum().backward()
    return (x + eta * x.grad.sign()).detach()


def data_free_distill(
    cfg,
    teacher: nn.Module,
    student: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    variant: DataFreeVariant,
    reweight_fn=None,
    desc: str = "distil",
) -> dict[str, float]:
    """The epoch loop of DENSE / Co-Boosting: synthesise a batch into a growing pool, (re-weight), distil on the pool.

    Student: SGD (momentum 0.9, weight decay 1e-4, cosine schedule), ``KL`` at ``cfg.kd_T``,
    gradients clipped at 10, one pass over the whole pool per epoch (both official codes).
    """
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 3)
    generator = seeded(lambda: Generator(cfg.nz, input_shape), cfg.seed + 17)
    opt = torch.optim.SGD(student.parameters(), lr=cfg.kd_lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.kd_epochs))
    pool_x: list[Tensor] = []
    pool_y: list[Tensor] = []
    for ep in progress(range(cfg.kd_epochs), desc=desc):
        x, y = synthesize(
            generator,
            teacher,
            student,
            cfg.g_steps,
            cfg.synth_batch,
            cfg.nz,
            num_classes,
            cfg.lr_g,
            cfg.adv,
            cfg.hs,
            variant,
            gen,
        )
        if variant.reweight and reweight_fn is not None and ep > 0:
            reweight_fn(torch.cat(pool_x), torch.cat(pool_y), ep)
        pool_x.append(x)
        pool_y.append(y)
        px = torch.cat(pool_x)
        perm = torch.randperm(len(px), generator=gen)
        student.train()
        for i in range(0, len(px), cfg.synth_batch):
            xb = px[perm[i : i + cfg.synth_batch]]
            if variant.ods:
                xb = ods_perturb(teacher, xb, cfg.ods_eta, gen)
            with torch.no_grad():
                t = teacher(xb)
            loss = kl_teacher_student(student(xb), t, cfg.kd_T).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), 10.0)
            opt.step()
        sched.step()
        student.eval()
    return {"pool_size": float(sum(len(p) for p in pool_x))}
