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
def pixel_model_path() -> str:
    from generative.models import BUNDLED_DDPM

    path = os.environ.get("HEADSCOPE_GEN_MODEL", str(BUNDLED_DDPM))  # override: test another pixel DDPM
    if not os.path.isfile(os.path.join(path, "unet", "config.json")):
        pytest.skip(f"no pixel DDPM at {path}; train the bundled one with `headscope gen train`")
    return path


@pytest.fixture(scope="session")
def pixel_model(pixel_model_path):
    from generative.models import load_pixel_model

    return load_pixel_model(pixel_model_path)


@pytest.fixture(scope="session")
def eval_images():
    from generative.data import evaluation_images

    return evaluation_images()
