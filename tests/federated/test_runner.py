"""The in-process runner: config checks, FedAvg's average, the ensemble, bytes, results files."""

import json

import pytest
import torch

from federated.ensemble import WeightedEnsemble
from federated.fedavg import average_states
from federated.models import make_model, state_bytes
from federated.protocol import FLConfig
from federated.runner import results_markdown, run, save_results
from headscope.common import HeadscopeError


def test_unknown_algorithm():
    with pytest.raises(HeadscopeError, match="unknown algorithm"):
        run(FLConfig(algorithm="fedprox"))


@pytest.mark.parametrize("alpha", [0.0, -0.3])
def test_alpha_must_be_positive(alpha):
    with pytest.raises(HeadscopeError, match="alpha"):
        run(FLConfig(algorithm="fedavg", alpha=alpha))


def test_more_clients_than_samples():
    with pytest.raises(HeadscopeError, match="clients"):
        run(FLConfig(algorithm="fedavg", clients=5000))


def test_average_states_is_the_weighted_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    out = average_states([a, b], [1.0, 3.0])
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    assert int(out["n"]) == 3


def test_ensemble_averages_logits():
    torch.manual_seed(0)
    ms = [make_model("mlp", (6,), 3, width=1, n_blocks=1) for _ in range(3)]
    x = torch.randn(4, 6)
    torch.testing.assert_close(WeightedEnsemble(ms)(x), sum(m(x) for m in ms) / 3)


def test_fedavg_run_counts_one_model_each_way(tmp_path):
    cfg = FLConfig(algorithm="fedavg", clients=3, alpha=0.5, seed=0, local_epochs=1, width=4)
    r = run(cfg)
    one = state_bytes(make_model("cnn", (1, 8, 8), 10, width=4, n_blocks=3).state_dict())
    assert r.bytes_up == 3 * one and r.bytes_down == 3 * one
    assert r.rounds == 1
    paths = save_results([r], tmp_path)
    assert json.loads(paths[0].read_text())[0]["accuracy"] == r.accuracy
    assert "| fedavg |" in results_markdown([r])
