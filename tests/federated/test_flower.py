"""The Flower app, started by `run(cfg, engine="flower")` (`flwr run`, local simulation), agrees with in-process.

FedAvg and Twin-sight through `flwr run` are in test_flower_app.py; FuseFL (K + 1 rounds with client state kept
in ``context.state`` between them) is checked here.
"""

import pytest
import torch

from federated.flower import from_record, to_record
from federated.protocol import FLConfig
from federated.runner import run


def test_record_round_trip_keeps_dtype_and_shape():
    arrays = {"w": torch.randn(3, 2), "stage": torch.tensor(2), "n": torch.arange(4)}
    back = from_record(to_record(arrays))
    assert set(back) == set(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and back[k].shape == arrays[k].shape
        assert torch.equal(back[k], arrays[k])


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fusefl"])
def test_flower_and_inprocess_agree(algorithm):
    cfg = FLConfig(
        algorithm=algorithm, clients=3, alpha=0.5, seed=1, local_epochs=4, width=4, n_blocks=3, ccvr_samples=30
    )
    local = run(cfg)
    flower = run(cfg, engine="flower")
    assert flower.engine == "flower"
    assert flower.accuracy == local.accuracy
    assert (flower.bytes_up, flower.bytes_down, flower.rounds) == (local.bytes_up, local.bytes_down, local.rounds)
    assert flower.extra == local.extra
