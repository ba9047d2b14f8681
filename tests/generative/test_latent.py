"""The latent path (VAE + conditional UNet): a tiny random-weight model checks the plumbing;
a real Stable Diffusion checkpoint is exercised when HEADSCOPE_SD_PATH points to one."""

from __future__ import annotations

import os

import pytest
import torch

from generative.ddim import DDIM
from generative.models import LatentDenoiser
from generative.pipeline import InterpolationPipeline


@pytest.fixture(scope="module")
def tiny_latent_model() -> LatentDenoiser:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    sched = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    return LatentDenoiser(vae, unet, dict(sched.config), prompt_embeds=torch.randn(1, 5, 8))


def _check_endpoints(model, a, b, steps: int) -> None:
    pipe = InterpolationPipeline(model, steps, 0.7)
    res = pipe(a, b, "noisediffusion", [0.0, 0.5, 1.0])
    ddim = DDIM(model, steps)
    k = ddim.steps_for(0.7)
    assert res.x1_t.shape[1] == 4 and res.x1_t.shape[-1] == a.shape[-1] // 2 ** (
        len(model.vae.config.block_out_channels) - 1
    )
    for frame, img in ((res.frames[0:1], a), (res.frames[2:3], b)):
        rec = model.decode(ddim.reconstruct(model.encode(img), k))
        torch.testing.assert_close(frame, rec, rtol=0, atol=1e-3)


def test_tiny_latent_model_endpoints_are_reconstructions(tiny_latent_model) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1, torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    _check_endpoints(tiny_latent_model, a, b, steps=5)


@pytest.mark.needs_weights
def test_stable_diffusion_checkpoint(eval_images) -> None:
    path = os.environ.get("HEADSCOPE_SD_PATH")
    if not path or not os.path.isdir(path):
        pytest.skip("set HEADSCOPE_SD_PATH to a local Stable Diffusion diffusers folder to run this")
    model = LatentDenoiser.from_pretrained(path)
    imgs = torch.nn.functional.interpolate(eval_images[1][[0, 3]], size=(256, 256), mode="bilinear")
    _check_endpoints(model, imgs[0:1], imgs[1:2], steps=10)
