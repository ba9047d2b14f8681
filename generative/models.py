"""Denoisers that DDIM drives: a pixel-space ``UNet2DModel`` or a latent pipeline (VAE + UNet).

Both expose the same three calls, so that :mod:`generative.ddim` and the interpolation
methods never know which one they have:

- ``encode(images) -> x0``: images in [-1, 1] ``[b, 3, H, W]`` to the diffusion space
  (identity for pixels; ``scaling_factor * VAE.encode(images).mean`` for latents);
- ``decode(x0) -> images``;
- ``eps(x_t, t) -> eps_hat``: the noise prediction at integer timestep ``t``.

``scheduler_config`` is the training noise schedule (diffusers scheduler config) from
which the DDIM schedulers are built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common import HeadscopeError

BUNDLED_DDPM = Path(__file__).resolve().parents[1] / "data" / "models" / "ddpm"
# What diffusers raises for a folder with missing, truncated or foreign files (OSError for
# absent weights, ValueError for bad JSON or configs, RuntimeError/KeyError for bad tensors).
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError)
_SD_FOLDER = "pass a complete Stable-Diffusion-style folder (model_index.json; vae/, unet/ with weights; scheduler/)"


def _reason(e: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, shortened to ``limit`` characters."""
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


class Denoiser(Protocol):
    scheduler_config: dict[str, Any]

    @property
    def device(self) -> torch.device: ...

    def encode(self, images: Float[Tensor, " b 3 H W"]) -> Float[Tensor, " b c h w"]: ...

    def decode(self, x0: Float[Tensor, " b c h w"]) -> Float[Tensor, " b 3 H W"]: ...

    def eps(self, x_t: Float[Tensor, " b c h w"], t: int) -> Float[Tensor, " b c h w"]: ...


class PixelDenoiser:
    """A pixel-space epsilon-prediction ``UNet2DModel``; the diffusion space is the image itself."""

    def __init__(self, unet, scheduler_config: dict[str, Any]):
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        if self.scheduler_config.get("prediction_type", "epsilon") != "epsilon":
            raise HeadscopeError(
                "only epsilon-prediction models are supported; retrain with prediction_type='epsilon'"
            )
        self.sample_size = int(unet.config.sample_size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode(self, images: Float[Tensor, " b 3 H W"]) -> Float[Tensor, " b 3 H W"]:
        if images.shape[-1] != self.sample_size or images.shape[-2] != self.sample_size:
            raise HeadscopeError(
                f"this pixel model works on {self.sample_size}x{self.sample_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}; resize the inputs (read_image(path, size={self.sample_size}))"
            )
        return images.to(self.device, torch.float32)

    def decode(self, x0: Float[Tensor, " b 3 H W"]) -> Float[Tensor, " b 3 H W"]:
        return x0.clamp(-1, 1)

    @torch.no_grad()
    def eps(self, x_t: Float[Tensor, " b 3 H W"], t: int) -> Float[Tensor, " b 3 H W"]:
        tt = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
        return self.unet(x_t, tt).sample


def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> Tensor:
    """Text embeddings ``[n, tokens, d]`` of ``prompts`` as Stable Diffusion computes them.

    Padded to the tokenizer's ``model_max_length`` and truncated, then the text encoder's last
    hidden state (``text_encoder(ids)[0]``).
    """
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0]


class LatentDenoiser:
    """A latent diffusion model (VAE + ``UNet2DConditionModel``), optionally text-guided.

    The UNet is conditioned on the text embedding of ``prompt`` (default: the empty prompt).
    With ``guidance_scale`` s != 1, classifier-free guidance (Ho & Salimans 2022) as in
    Stable Diffusion: ``eps = eps(x, t, ∅) + s · (eps(x, t, prompt) − eps(x, t, ∅))``, where ∅
    is the embedding of ``negative_prompt`` (default ""). The same ``eps`` drives DDIM
    inversion and sampling, as in the official NoiseDiffusion scripts (prompt + guidance in
    both directions). s = 1 is the plain conditional model (one UNet call per step).
    """

    def __init__(
        self,
        vae,
        unet,
        scheduler_config: dict[str, Any],
        prompt_embeds: Tensor | None = None,
        uncond_embeds: Tensor | None = None,
        guidance_scale: float = 1.0,
    ):
        self.vae = vae.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.prompt_embeds = prompt_embeds
        self.uncond_embeds = uncond_embeds
        self.guidance_scale = float(guidance_scale)
        if self.guidance_scale != 1.0 and (prompt_embeds is None or uncond_embeds is None):
            raise HeadscopeError(
                f"guidance_scale {self.guidance_scale} needs both a prompt and an unconditional embedding; "
                "load with LatentDenoiser.from_pretrained(path, prompt=..., guidance_scale=...)"
            )

    @classmethod
    def from_components(
        cls,
        vae,
        unet,
        scheduler_config: dict[str, Any],
        tokenizer=None,
        text_encoder=None,
        prompt: str = "",
        negative_prompt: str = "",
        guidance_scale: float = 1.0,
    ) -> LatentDenoiser:
        """Build from loaded parts; the prompt (and the negative prompt when guiding) are encoded once here."""
        if text_encoder is None or tokenizer is None:
            if prompt or guidance_scale != 1.0:
                raise HeadscopeError("a prompt or guidance_scale != 1 needs the pipeline's tokenizer and text encoder")
            return cls(vae, unet, scheduler_config)
        embs = encode_prompts(tokenizer, text_encoder, [prompt, negative_prompt])
        uncond = embs[1:2] if guidance_scale != 1.0 else None
        return cls(vae, unet, scheduler_config, embs[0:1], uncond, guidance_scale)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        prompt: str = "",
        dtype: torch.dtype = torch.float32,
        negative_prompt: str = "",
        guidance_scale: float = 1.0,
    ) -> LatentDenoiser:
        """Load a local Stable-Diffusion-style checkpoint folder (never downloads)."""
        from diffusers import DiffusionPipeline

        if not (Path(path) / "model_index.json").is_file():
            raise HeadscopeError(
                f"{str(path)!r} is not a local diffusers checkpoint folder; pass the folder holding model_index.json"
            )
        for sub in ("unet", "vae"):
            if not any((Path(path) / sub).glob("diffusion_pytorch_model*")):
                raise HeadscopeError(f"{str(path)!r} has no {sub}/diffusion_pytorch_model.* weights; {_SD_FOLDER}")
        try:
            pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        except _LOAD_ERRORS as e:
            raise HeadscopeError(
                f"could not load the diffusers pipeline at {str(path)!r} ({_reason(e)}); {_SD_FOLDER}"
            ) from e
        return cls.from_components(
            pipe.vae,
            pipe.unet,
            dict(pipe.scheduler.config),
            getattr(pipe, "tokenizer", None),
            getattr(pipe, "text_encoder", None),
            prompt,
            negative_prompt,
            guidance_scale,
        )

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def encode(self, images: Float[Tensor, " b 3 H W"]) -> Float[Tensor, " b 4 h w"]:
        images = images.to(self.device, self.vae.dtype)
        return self.vae.encode(images).latent_dist.mean.float() * self.scaling_factor

    @torch.no_grad()
    def decode(self, x0: Float[Tensor, " b 4 h w"]) -> Float[Tensor, " b 3 H W"]:
        return self.vae.decode((x0 / self.scaling_factor).to(self.vae.dtype)).sample.float().clamp(-1, 1)

    @torch.no_grad()
    def eps(self, x_t: Float[Tensor, " b 4 h w"], t: int) -> Float[Tensor, " b 4 h w"]:
        b = x_t.shape[0]
        tt = torch.full((b,), int(t), dtype=torch.long, device=x_t.device)
        x = x_t.to(self.unet.dtype)
        if self.prompt_embeds is None:
            return self.unet(x, tt).sample.float()
        cond = self.prompt_embeds.expand(b, -1, -1).to(self.unet.dtype)
        if self.guidance_scale == 1.0:
            return self.unet(x, tt, encoder_hidden_states=cond).sample.float()
        assert self.uncond_embeds is not None
        uncond = self.uncond_embeds.expand(b, -1, -1).to(self.unet.dtype)
        both = self.unet(torch.cat([x, x]), torch.cat([tt, tt]), encoder_hidden_states=torch.cat([uncond, cond]))
        e_u, e_c = both.sample.float().chunk(2)
        return e_u + self.guidance_scale * (e_c - e_u)


def load_pixel_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> PixelDenoiser:
    """Load a pixel DDPM saved in diffusers' ``DDPMPipeline`` layout (default: the bundled one)."""
    from diffusers import UNet2DModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = Path(path) if path is not None else BUNDLED_DDPM
    fix = "train one with `headscope gen train --out DIR` or pass the folder of a diffusers DDPMPipeline"
    if not (p / "unet" / "config.json").is_file():
        raise HeadscopeError(f"no pixel DDPM at {str(p)!r} (expected unet/config.json and scheduler/); {fix}")
    if not any((p / "unet").glob("diffusion_pytorch_model*")):
        raise HeadscopeError(
            f"{str(p / 'unet')!r} has a config.json but no weights (diffusion_pytorch_model.safetensors/.bin); {fix}"
        )
    sched_path = p / "scheduler" / "scheduler_config.json"
    if not sched_path.is_file():
        raise HeadscopeError(f"no noise schedule at {str(sched_path)!r}; {fix}")
    try:
        unet = UNet2DModel.from_pretrained(p, subfolder="unet", local_files_only=True).to(device)
        sched_cfg = json.loads(sched_path.read_text())
    except _LOAD_ERRORS as e:
        raise HeadscopeError(f"could not load the pixel DDPM at {str(p)!r} ({_reason(e)}); {fix}") from e
    if not isinstance(sched_cfg, dict):
        raise HeadscopeError(f"{str(sched_path)!r} is not a scheduler config (a JSON object); {fix}")
    return PixelDenoiser(unet, sched_cfg)
