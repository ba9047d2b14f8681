"""`gen train` end to end on a tiny budget: seeded, saved in diffusers' layout, loadable."""

from __future__ import annotations

import torch

from generative.ddim import DDIM
from generative.models import load_pixel_model
from generative.train import TrainConfig, train_ddpm


def test_tiny_training_run_is_reproducible_and_loadable(tmp_path) -> None:
    kw = dict(steps=3, batch_size=4, size=16, warmup=1, photos=("astronaut", "coins"), threads=1)
    s1 = train_ddpm(TrainConfig(out=str(tmp_path / "a"), **kw))
    s2 = train_ddpm(TrainConfig(out=str(tmp_path / "b"), stop_after=2, **kw))
    assert s1["steps_done"] == 3 and s2["steps_done"] == 2
    m1 = load_pixel_model(tmp_path / "a")
    train_ddpm(TrainConfig(out=str(tmp_path / "c"), **kw))
    m3 = load_pixel_model(tmp_path / "c")
    for p, q in zip(m1.unet.parameters(), m3.unet.parameters()):
        assert torch.equal(p, q)  # same seed, same weights
    assert m1.sample_size == 16 and m1.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    _, x0 = DDIM(m1, 3).generate(1, (3, 16, 16), generator=torch.Generator().manual_seed(0))
    assert x0.shape == (1, 3, 16, 16) and torch.isfinite(x0).all()
