import os

import pytest

from headscope.common.threads import num_threads

os.environ.setdefault("HEADSCOPE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield
