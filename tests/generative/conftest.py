"""Shared fixtures for the generative tests: one thread, offline hub, the bundled DDPM."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HEADSCOPE_PROGRESS", "0")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def pixel_model():
    from generative.models import BUNDLED_DDPM, load_pixel_model

    if not (BUNDLED_DDPM / "unet" / "config.json").is_file():
        pytest.skip("bundled DDPM missing; train it with `headscope gen train`")
    return load_pixel_model()


@pytest.fixture(scope="session")
def eval_images():
    from generative.data import evaluation_images

    return evaluation_images()
