"""Train the bundled pixel-space DDPM (a small diffusers ``UNet2DModel``) on photo crops.

The model is the epsilon-prediction DDPM of Ho et al. (2020), Algorithm 1: sample
``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``
and minimise ``|eps - eps_theta(x_t, t)|^2``; ``abar_t`` follows the cosine schedule
(``squaredcos_cap_v2``, Nichol & Dhariwal 2021). Data are random crops of
scikit-image's bundled photos (:func:`generative.data.random_crops`), so everything runs
offline. The result is saved in diffusers' ``DDPMPipeline`` layout (``unet/`` with
safetensors weights, ``scheduler/``), loadable with :func:`generative.models.load_pixel_model`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from headscope.common import log, seed_everything
from headscope.common.threads import num_threads

from .data import PHOTOS, load_photos, random_crops


@dataclass
class TrainConfig:
    """Everything that determines the bundled model (seeded, so reruns reproduce it)."""

    out: str = "data/models/ddpm"
    seed: int = 0
    size: int = 32
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    block_out_channels: tuple[int, ...] = (32, 64, 96)
    layers_per_block: int = 1
    max_minutes: float = 0.0  # 0 = no wall-clock cap; else stop early and record it
    stop_after: int = 0  # 0 = run all `steps`; else stop after this many (same lr schedule), to replay a capped run
    threads: int = 1
    photos: tuple[str, ...] = field(default_factory=lambda: PHOTOS)


def build_unet(cfg: TrainConfig):
    """The small UNet: 3 resolutions (32, 16, 8), one ResNet block each, self-attention at 8x8."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=cfg.size,
        in_channels=3,
        out_channels=3,
        block_out_channels=cfg.block_out_channels,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=8,
        attention_head_dim=32,
    )


def train_ddpm(cfg: TrainConfig) -> dict:
    """Train, save to ``cfg.out`` and return a summary (steps done, final loss, minutes).

    Runs on ``cfg.threads`` torch threads; the caller's thread setting is restored afterwards.
    """
    with num_threads(cfg.threads):
        return _train_ddpm(cfg)


def _train_ddpm(cfg: TrainConfig) -> dict:
    from diffusers import DDPMPipeline, DDPMScheduler

    gen = seed_everything(cfg.seed)
    photos = load_photos(cfg.photos)
    unet = build_unet(cfg)
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,
    )
    abar = sched.alphas_cumprod.float()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    t0 = time.time()
    losses: list[float] = []
    step = 0
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x0 = random_crops(photos, cfg.batch_size, cfg.size, generator=gen)
        t = torch.randint(cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = (unet(xt, t).sample - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        losses.append(float(loss.detach()))
        minutes = (time.time() - t0) / 60
        if step % 25 == 0 or step == cfg.steps - 1:
            recent = sum(losses[-25:]) / len(losses[-25:])
            log(f"[gen train] step {step + 1}/{cfg.steps} loss {recent:.4f} lr {lr_at(step):.2e} {minutes:.1f} min")
        if cfg.max_minutes and minutes > cfg.max_minutes:
            log(f"[gen train] wall-clock cap of {cfg.max_minutes} min reached after {step + 1} steps; saving")
            break
        if cfg.stop_after and step + 1 >= cfg.stop_after:
            log(f"[gen train] stopping after {step + 1} steps as asked (--stop-after); saving")
            break
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=ema, scheduler=sched).save_pretrained(out, safe_serialization=True)
    summary = {
        "steps_done": step + 1,
        "final_loss_mean_last100": sum(losses[-100:]) / len(losses[-100:]),
        "minutes": (time.time() - t0) / 60,
        "n_params": sum(p.numel() for p in ema.parameters()),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the bundled pixel DDPM on scikit-image photo crops.")
    p.add_argument("--out", default=TrainConfig.out)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--max-minutes", type=float, default=0.0)
    p.add_argument("--stop-after", type=int, default=0)
    a = p.parse_args(argv)
    cfg = TrainConfig(out=a.out, steps=a.steps, seed=a.seed, max_minutes=a.max_minutes, stop_after=a.stop_after)
    print(json.dumps(train_ddpm(cfg), indent=2))


if __name__ == "__main__":
    main()
