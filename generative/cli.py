"""``headscope gen ...``: train the bundled pixel DDPM, sample it, interpolate two images.

Loaded by ``headscope.cli`` through :func:`register`. Heavy imports (torch, diffusers)
happen inside the command functions so that other subcommands stay fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

from headscope.common import HeadscopeError, log


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gen`` group to the ``headscope`` parser."""
    gen = subparsers.add_parser(
        "gen", help="diffusion image interpolation: NoiseDiffusion, slerp, noise (generative/)"
    )
    sub = gen.add_subparsers(dest="gen_command", metavar="GEN_COMMAND", parser_class=type(gen))
    gen.set_defaults(func=lambda args: (gen.print_help(), 2)[1])

    tr = sub.add_parser("train", help="train the small pixel DDPM on scikit-image photo crops (offline)")
    tr.add_argument("--out", default="data/models/ddpm", help="output folder (diffusers DDPMPipeline layout)")
    tr.add_argument("--steps", type=int, default=1500, help="optimiser steps (batch 32)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--max-minutes", type=float, default=0.0, help="stop early after this many minutes (0: no cap)")
    tr.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="stop after this many steps on the --steps schedule (replays a capped run)",
    )
    tr.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    tr.set_defaults(func=_train)

    sm = sub.add_parser("sample", help="DDIM-sample the pixel model into an image grid")
    sm.add_argument("--model", default=None, help="pixel DDPM folder (default: the bundled data/models/ddpm)")
    sm.add_argument("--n", type=int, default=16)
    sm.add_argument("--steps", type=int, default=50, help="DDIM steps")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--upscale", type=int, default=2)
    sm.add_argument("--out", default="samples.png")
    sm.set_defaults(func=_sample)

    ip = sub.add_parser("interpolate", help="interpolate two images and write an image strip")
    ip.add_argument("image_a")
    ip.add_argument("image_b")
    ip.add_argument("--method", default="noisediffusion", help="noisediffusion | slerp | noise | lerp")
    ip.add_argument(
        "--steps", type=int, default=50, help="DDIM steps N (the latents are mixed after stop-frac*N inversion steps)"
    )
    ip.add_argument(
        "--stop-frac", type=float, default=0.7, help="share of the N steps to invert (paper: 140/200 = 0.7)"
    )
    ip.add_argument("--frames", type=int, default=7, help="frames in the strip, ends included")
    ip.add_argument("--gamma", type=float, default=0.0, help="NoiseDiffusion: share of fresh noise")
    ip.add_argument(
        "--boundary", type=float, default=2.0, help="NoiseDiffusion: clipping bound B (<= 0 disables clipping)"
    )
    ip.add_argument("--mu-scale", type=float, default=1.2, help="NoiseDiffusion: mu + nu")
    ip.add_argument("--model", default=None, help="pixel DDPM folder (default: bundled); see --latent-model")
    ip.add_argument(
        "--latent-model",
        default=None,
        help="a local Stable-Diffusion-style diffusers folder instead of the pixel model",
    )
    ip.add_argument("--prompt", default="", help="latent models: the text prompt the UNet is conditioned on")
    ip.add_argument("--negative-prompt", default="", help="latent models: the unconditional prompt for guidance")
    ip.add_argument(
        "--guidance", type=float, default=1.0, help="latent models: classifier-free guidance scale (1 = none)"
    )
    ip.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize inputs to SIZE x SIZE (default: the pixel model's size; 512 for latent models)",
    )
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscaling of the strip")
    ip.add_argument("--out", default="strip.png")
    ip.add_argument(
        "--metrics", action="store_true", help="print endpoint fidelity, smoothness and artifact metrics as JSON"
    )
    ip.set_defaults(func=_interpolate)


def _env_threads(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` on ``$HEADSCOPE_THREADS`` torch threads when that is set; the setting is restored afterwards."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from headscope.common.threads import num_threads  # imports torch: only when a command runs

        n = os.environ.get("HEADSCOPE_THREADS")
        with num_threads(int(n) if n else None):
            return command(args)

    return run


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train_ddpm

    if args.steps < 1:
        raise HeadscopeError(f"--steps must be a positive number of optimiser steps, got {args.steps}")
    summary = train_ddpm(
        TrainConfig(
            out=args.out,
            steps=args.steps,
            seed=args.seed,
            max_minutes=args.max_minutes,
            stop_after=args.stop_after,
            threads=args.threads,
        )
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


@_env_threads
def _sample(args: argparse.Namespace) -> int:
    import torch

    from .data import image_strip, save_image
    from .ddim import DDIM
    from .models import load_pixel_model

    if args.n < 1:
        raise HeadscopeError(f"--n must be at least 1, got {args.n}")
    model = load_pixel_model(args.model)
    ddim = DDIM(model, args.steps)
    s = model.sample_size
    _, x0 = ddim.generate(args.n, (3, s, s), generator=torch.Generator().manual_seed(args.seed))
    rows = [image_strip(model.decode(x0[i : i + 8]), upscale=args.upscale) for i in range(0, args.n, 8)]
    width = max(r.shape[-1] for r in rows)
    grid = torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows], dim=1)
    print(save_image(grid, args.out))
    return 0


@_env_threads
def _interpolate(args: argparse.Namespace) -> int:
    import torch

    from .data import center_square, image_strip, read_image, save_image
    from .metrics import evaluate_path
    from .models import LatentDenoiser, load_pixel_model
    from .pipeline import METHODS, InterpolationPipeline, default_lambdas

    if args.method not in METHODS:
        raise HeadscopeError(f"unknown --method {args.method!r}; choose one of {', '.join(METHODS)}")
    if args.steps < 2:
        raise HeadscopeError(f"--steps must be at least 2 DDIM steps, got {args.steps}")
    lambdas = default_lambdas(args.frames)
    a, b = read_image(args.image_a), read_image(args.image_b)  # fail on a bad path before loading a model
    if not args.latent_model and (args.prompt or args.negative_prompt or args.guidance != 1.0):
        raise HeadscopeError("--prompt, --negative-prompt, --guidance need --latent-model (a text-conditioned model)")
    if args.latent_model:
        model = LatentDenoiser.from_pretrained(
            args.latent_model,
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            guidance_scale=args.guidance,
        )
        size = args.size or 512
    else:
        model = load_pixel_model(args.model)
        size = args.size or model.sample_size
    a, b = center_square(a[0], size)[None], center_square(b[0], size)[None]
    pipe = InterpolationPipeline(model, args.steps, args.stop_frac)
    res = pipe(
        a,
        b,
        args.method,
        lambdas,
        gamma=args.gamma,
        boundary=args.boundary if args.boundary > 0 else None,
        mu_scale=args.mu_scale,
        generator=torch.Generator().manual_seed(args.seed),
    )
    out = save_image(image_strip(res.frames, upscale=args.upscale), args.out)
    log(
        f"[gen interpolate] {args.method}: {len(res.lambdas)} frames mixed at t={res.level} "
        f"(abar={res.alpha_bar:.3f}) -> {out}"
    )
    if args.metrics:
        print(json.dumps(evaluate_path(res.frames, a, b), indent=2))
    else:
        print(Path(out))
    return 0
