"""The Flower app that `flwr run` starts (federated/app): its run config, and a real `flwr run` against in-process.

- the app's ``[tool.flwr.app.config]`` lists every field of ``SemiConfig`` (a superset of
  ``FLConfig``), with ``"auto"`` exactly where the one-shot and label-deficient defaults differ;
- a Twin-sight config carried to the app comes back field for field (rounds, labelled clients,
  epochs, ...) and the app's bare defaults give Twin-sight its own defaults, not the one-shot ones;
- ``flwr run federated/app`` on the local simulation federation (a managed local SuperLink,
  Ray) completes 2-client FedAvg and 2-round, 2-client Twin-sight runs whose accuracy, bytes and
  rounds equal the in-process runner's exactly.
"""

import dataclasses
import tomllib

import pytest

from federated.flower import APP_DIR, AUTO, RESULT_KEY, flwr_run, from_run_config, to_run_config
from federated.protocol import FLConfig
from federated.runner import run
from federated.semi import SemiConfig
from headscope.common import HeadscopeError


def _app():
    return tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]


def test_app_points_at_this_packages_apps():
    app = _app()
    assert app["components"] == {
        "serverapp": "federated.flower:server_app",
        "clientapp": "federated.flower:client_app",
    }


def test_app_config_lists_every_field_with_its_default():
    conf = _app()["config"]
    semi = {f.name: f.default for f in dataclasses.fields(SemiConfig)}
    one_shot = {f.name: f.default for f in dataclasses.fields(FLConfig)}
    assert set(conf) == set(semi) | {RESULT_KEY}
    for k, default in semi.items():
        differs = k in one_shot and one_shot[k] != default
        if differs:
            assert conf[k] == AUTO, k
        elif k != "algorithm":
            assert conf[k] == default, k


def _deployed(cfg):
    """What the ServerApp sees: the app's defaults overridden by ``--run-config`` (flwr's fuse)."""
    return {**_app()["config"], **to_run_config(cfg)}


def test_twinsight_config_survives_the_trip():
    cfg = SemiConfig(
        algorithm="twinsight", clients=3, alpha=0.7, rounds=2, labelled_clients=1, local_epochs=2, batch_size=32
    )
    back = from_run_config(_deployed(cfg))
    assert type(back) is SemiConfig
    assert back == cfg


def test_one_shot_config_survives_the_trip():
    cfg = FLConfig(algorithm="fusefl", clients=4, alpha=0.2, local_epochs=3, adaptor="conv1x1", width=8)
    back = from_run_config(_deployed(cfg))
    assert type(back) is FLConfig
    assert back == cfg


def test_bare_app_defaults_give_each_algorithm_its_own_defaults():
    conf = dict(_app()["config"])
    ts = from_run_config({**conf, "algorithm": "twinsight"}, n_nodes=2)
    assert (ts.local_epochs, ts.batch_size, ts.lr, ts.alpha, ts.rounds) == (1, 64, 0.01, 0.1, 30)
    assert ts.clients == 2  # "auto": one client per node
    fa = from_run_config({**conf, "algorithm": "fedavg"}, n_nodes=3)
    assert type(fa) is FLConfig and (fa.local_epochs, fa.batch_size, fa.lr, fa.clients) == (30, 16, 0.05, 3)


def test_misspelt_key_is_an_error():
    with pytest.raises(HeadscopeError, match="unknown run-config keys"):
        from_run_config({"algorithm": "fedavg", "local_epoch": 3})


def _same(a, b):
    assert a.engine == "flower" and b.engine == "inprocess"
    assert a.accuracy == b.accuracy
    assert (a.bytes_up, a.bytes_down, a.rounds) == (b.bytes_up, b.bytes_down, b.rounds)
    assert a.extra == b.extra


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [
        FLConfig(algorithm="fedavg", clients=2, alpha=0.5, seed=1, local_epochs=2, width=4),
        SemiConfig(
            algorithm="twinsight",
            clients=2,
            alpha=0.5,
            seed=1,
            rounds=2,
            labelled_clients=1,
            clients_per_round=2,
            width=4,
        ),
    ],
    ids=["fedavg", "twinsight"],
)
def test_flwr_run_equals_inprocess(cfg):
    deployed = flwr_run(cfg)
    local = run(cfg)
    _same(deployed, local)
    if isinstance(cfg, SemiConfig):
        assert deployed.rounds == cfg.rounds
