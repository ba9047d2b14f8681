"""``num_threads`` changes torch's thread count for a block only; the runner leaves the caller's count alone."""

import pytest
import torch

from federated.protocol import FLConfig
from federated.runner import run
from headscope.common.threads import num_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_count_is_set_inside_and_restored_after(two_threads):
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_count_is_restored_after_an_exception(two_threads):
    with pytest.raises(RuntimeError, match="boom"):
        with num_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_none_leaves_the_count_unchanged(two_threads):
    with num_threads(None):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_count_changed_inside_the_block_is_restored(two_threads):
    with num_threads(1):
        torch.set_num_threads(3)
    assert torch.get_num_threads() == 2


def test_a_bad_count_is_refused_before_anything_changes(two_threads):
    with pytest.raises(ValueError, match=">= 1"):
        with num_threads(0):
            pass
    assert torch.get_num_threads() == 2


def test_runner_restores_the_callers_count(two_threads):
    run(FLConfig(algorithm="fedavg", dataset="digits", clients=2, alpha=1.0, local_epochs=1, width=8))
    assert torch.get_num_threads() == 2
