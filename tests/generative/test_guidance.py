"""Prompt and classifier-free guidance in the latent path, on a tiny random text-conditioned model.

No Stable Diffusion weights are here, so a randomly initialised VAE, ``UNet2DConditionModel``,
``CLIPTextModel`` and a word-level tokenizer stand in. Checked against independent
computations (direct UNet calls), tolerance 1e-5:

- the prompt embedding is the text encoder's last hidden state of the padded token ids;
- guidance scale s gives ``eps_u + s (eps_c − eps_u)`` with both UNet outputs computed here;
  s = 1 is the conditional model alone; a different prompt changes eps;
- interpolation with a prompt and s = 3 still returns DDIM reconstructions at lambda 0 and 1.
"""

from __future__ import annotations

import pytest
import torch

from generative.ddim import DDIM
from generative.models import LatentDenoiser, encode_prompts
from generative.pipeline import InterpolationPipeline
from headscope.common import HeadscopeError

WORDS = ["[PAD]", "[UNK]", "a", "photo", "of", "cat", "dog", "blurry"]


@pytest.fixture(scope="module")
def parts():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

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
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(WORDS),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=6,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).eval()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", model_max_length=6)
    sched = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    return vae, unet, dict(sched.config), tokenizer, text_encoder


def _emb(parts, prompt):
    _, _, _, tokenizer, text_encoder = parts
    ids = torch.tensor([[WORDS.index(w) for w in prompt.split()] + [0] * (6 - len(prompt.split()))])
    with torch.no_grad():
        return text_encoder(ids)[0]


def test_prompt_embedding_is_the_text_encoders_output(parts):
    _, _, _, tokenizer, text_encoder = parts
    got = encode_prompts(tokenizer, text_encoder, ["a photo of cat", ""])
    torch.testing.assert_close(got[0:1], _emb(parts, "a photo of cat"))
    torch.testing.assert_close(got[1:2], _emb(parts, ""))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_guided_eps_is_the_cfg_combination(parts, scale):
    vae, unet, sched, tokenizer, text_encoder = parts
    model = LatentDenoiser.from_components(
        vae,
        unet,
        sched,
        tokenizer,
        text_encoder,
        prompt="a photo of cat",
        negative_prompt="blurry",
        guidance_scale=scale,
    )
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = 500
    tt = torch.full((2,), t)
    with torch.no_grad():
        e_c = unet(x, tt, encoder_hidden_states=_emb(parts, "a photo of cat").expand(2, -1, -1)).sample
        e_u = unet(x, tt, encoder_hidden_states=_emb(parts, "blurry").expand(2, -1, -1)).sample
    expected = e_u + scale * (e_c - e_u)
    torch.testing.assert_close(model.eps(x, t), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(e_c, e_u, atol=1e-4)  # the two prompts do condition the UNet differently
    other = LatentDenoiser.from_components(
        vae,
        unet,
        sched,
        tokenizer,
        text_encoder,
        prompt="a photo of dog",
        negative_prompt="blurry",
        guidance_scale=scale,
    )
    assert not torch.allclose(other.eps(x, t), model.eps(x, t), atol=1e-5)


def test_guided_interpolation_ends_are_reconstructions(parts):
    vae, unet, sched, tokenizer, text_encoder = parts
    model = LatentDenoiser.from_components(
        vae, unet, sched, tokenizer, text_encoder, prompt="a photo of dog", guidance_scale=3.0
    )
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1, torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    steps = 5
    res = InterpolationPipeline(model, steps, 0.7)(a, b, "noisediffusion", [0.0, 0.5, 1.0])
    ddim = DDIM(model, steps)
    k = ddim.steps_for(0.7)
    for frame, img in ((res.frames[0:1], a), (res.frames[2:3], b)):
        rec = model.decode(ddim.reconstruct(model.encode(img), k))
        torch.testing.assert_close(frame, rec, rtol=0, atol=1e-3)


def test_guidance_without_text_encoder_is_an_error(parts):
    vae, unet, sched, _, _ = parts
    with pytest.raises(HeadscopeError, match="tokenizer and text encoder"):
        LatentDenoiser.from_components(vae, unet, sched, guidance_scale=2.0)
    with pytest.raises(HeadscopeError, match="unconditional"):
        LatentDenoiser(vae, unet, sched, prompt_embeds=torch.zeros(1, 6, 8), guidance_scale=2.0)
