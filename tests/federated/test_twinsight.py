"""Twin-sight: the neighbourhood-preserving loss, InfoNCE, label privacy of unlabelled clients, runner and Flower."""

import math

import pytest
import torch

from federated.models import state_bytes
from federated.protocol import ClientEnv, Task, run_client_action
from federated.runner import client_env, run, server_env
from federated.semi import SemiConfig, pack, task_config, twin_builders
from federated.twinsight import info_nce, sim_loss
from headscope.common import HeadscopeError

TINY = dict(algorithm="twinsight", model="mlp", width=4, n_blocks=2, batch_size=32, proj_dim=8)


def test_sim_loss_hand_computed():
    # twin u: three orthogonal directions (lengths 1, 2, 3) -> G_u = I_3
    f_u = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    # twin s: rows 0 and 1 point the same way, row 2 orthogonal -> G_s = [[1,1,0],[1,1,0],[0,0,1]]
    f_s = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 3.0]])
    # G_u - G_s has two entries of -1: ||.||_F^2 = 2, divided by B^2 = 9
    assert sim_loss(f_u, f_s).item() == pytest.approx(2.0 / 9.0, abs=1e-7)
    # B = 2: G_u = I, G_s = all ones -> 2 / 4
    assert sim_loss(
        torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    ).item() == pytest.approx(0.5, abs=1e-7)


def test_sim_loss_zero_for_same_normalised_features():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(16, 8, generator=g)
    scales = torch.rand(16, 1, generator=g) * 5 + 0.1
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert sim_loss(f, f * scales).item() == pytest.approx(0.0, abs=1e-10)  # same direction, other lengths
    assert sim_loss(f, f @ q).item() == pytest.approx(0.0, abs=1e-10)  # rotated features: same Gram matrix
    assert sim_loss(f, torch.randn(16, 8, generator=g)).item() > 0.01  # and not zero otherwise


def test_sim_loss_rejects_mismatched_batches():
    with pytest.raises(HeadscopeError, match="same B"):
        sim_loss(torch.randn(4, 3), torch.randn(5, 3))


def test_info_nce_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    t = 0.5
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(10):
        pos = (i + 5) % 10
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(10) if j != i)
        total += -(float(z[i] @ z[pos]) / t - math.log(den))
    assert info_nce(z1, z2, t).item() == pytest.approx(total / 10, rel=1e-5)


def _task(cfg: SemiConfig, cid: int, labelled: bool) -> tuple[Task, ClientEnv]:
    env = client_env(cfg, cid)
    builders = twin_builders(cfg, env.input_shape, env.num_classes, cfg.proj_dim)
    arrays = pack({name: b() for name, b in builders.items()})
    return Task("twinsight", arrays, task_config(cfg, cid, 0, labelled)), env


def _poisoned(env: ClientEnv) -> ClientEnv:
    """The same client with every label shifted to a wrong class."""
    return ClientEnv(env.cid, env.cfg, env.x, (env.y + 3) % env.num_classes, env.num_classes)


@pytest.mark.parametrize("pseudo", ["none", "fixmatch"])
def test_unlabelled_client_never_reads_labels(pseudo):
    cfg = SemiConfig(**TINY, clients=4, labelled_clients=2, alpha=0.5, twin_pseudo=pseudo, threshold=0.01)
    task, env = _task(cfg, 3, labelled=False)
    clean = run_client_action(task, env)
    poisoned = run_client_action(task, _poisoned(env))
    assert set(clean.arrays) == set(poisoned.arrays)
    for k in clean.arrays:
        assert torch.equal(clean.arrays[k], poisoned.arrays[k]), k
    # control: the same poisoning changes a labelled client's training
    task_l, env_l = _task(cfg, 0, labelled=True)
    a, b = run_client_action(task_l, env_l), run_client_action(task_l, _poisoned(env_l))
    assert not torch.equal(a.arrays["sup.classifier.weight"], b.arrays["sup.classifier.weight"])


def test_supervised_twin_of_unlabelled_client_learns_only_through_l_sim():
    cfg = SemiConfig(**TINY, clients=4, labelled_clients=2, alpha=0.5)
    task, env = _task(cfg, 3, labelled=False)
    moved = run_client_action(task, env)
    frozen = run_client_action(Task(task.action, task.arrays, {**task.config, "sim": 0.0}), env)
    head = "sup.blocks.0.1.weight"
    assert not torch.equal(moved.arrays[head], task.arrays[head])  # L_sim pulls the supervised twin
    for k in task.arrays:
        if k.startswith("sup."):
            assert torch.equal(frozen.arrays[k], task.arrays[k]), k  # no CE, no L_sim: no gradient reaches it


def test_run_sends_both_twins_each_round():
    cfg = SemiConfig(**TINY, clients=4, labelled_clients=2, clients_per_round=2, rounds=2, alpha=0.5)
    r = run(cfg)
    env = server_env(cfg)
    one = sum(
        state_bytes(b().state_dict())
        for b in twin_builders(cfg, env.input_shape, env.num_classes, cfg.proj_dim).values()
    )
    assert r.rounds == 2
    assert r.bytes_up == r.bytes_down == 2 * 2 * one
    assert 0.0 <= r.accuracy <= 1.0 and {"last_sim", "last_inst", "last_ce"} <= set(r.extra)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(labelled_clients=7), "labelled_clients"),
        (dict(rounds=0), "rounds"),
        (dict(labelled_fraction=0.0), "labelled_fraction"),
        (dict(twin_pseudo="mixmatch"), "twin_pseudo"),
    ],
)
def test_bad_semi_config(kw, match):
    with pytest.raises(HeadscopeError, match=match):
        run(SemiConfig(**{**TINY, "clients": 4, **kw}))


def test_plain_flconfig_gets_semi_defaults():
    from federated.protocol import FLConfig
    from federated.semi import as_semi

    s = as_semi(FLConfig(algorithm="twinsight", clients=6, alpha=0.3))
    assert (s.clients, s.alpha, s.labelled_clients, s.sim, s.ins_dis) == (6, 0.3, 4, 1.0, 0.5)


@pytest.mark.slow
def test_flower_and_inprocess_agree():
    cfg = SemiConfig(**TINY, clients=3, labelled_clients=1, clients_per_round=2, rounds=2, alpha=0.5, seed=1)
    local = run(cfg)
    flower = run(cfg, engine="flower")
    assert flower.engine == "flower"
    assert flower.accuracy == local.accuracy
    assert (flower.bytes_up, flower.bytes_down, flower.rounds) == (local.bytes_up, local.bytes_down, local.rounds)
    assert flower.extra == local.extra


def _parse(argv):
    import argparse

    from federated.cli import register

    p = argparse.ArgumentParser(prog="headscope")
    register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["fl", "run", "twinsight", "--labelled-clients", "20"], "labelled_clients"),
        (["fl", "run", "twinsight", "--alpha", "0"], "alpha"),
        (["fl", "run", "fedavg", "--rounds", "3"], "only apply"),
        (["fl", "run", "fedprox"], "twinsight"),
    ],
)
def test_cli_bad_input(argv, match):
    args = _parse(argv)
    with pytest.raises(HeadscopeError, match=match):
        args.func(args)


def test_cli_runs_twinsight(tmp_path, capsys):
    import json

    args = _parse(
        [
            "fl",
            "run",
            "twinsight",
            "--clients",
            "4",
            "--labelled-clients",
            "2",
            "--clients-per-round",
            "2",
            "--rounds",
            "1",
            "--alpha",
            "0.5",
            "--model",
            "mlp",
            "--width",
            "4",
            "--blocks",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())[0]
    assert res["algorithm"] == "twinsight" and res["clients"] == 4 and res["rounds"] == 1
    assert f"{res['accuracy']:.4f}" in capsys.readouterr().out


def test_cli_one_shot_algorithms_keep_their_defaults():
    import argparse

    from federated.cli import _common
    from federated.semi_cli import extend_run

    p = argparse.ArgumentParser()
    p.add_argument("algorithm")
    p.add_argument("--alpha", type=float, default=0.5)
    _common(p)
    seen = {}
    extend_run(p, lambda a: seen.update(vars(a)) or 0, ("fedavg",))
    args = p.parse_args(["fedavg"])
    assert args.func(args) == 0
    assert (seen["clients"], seen["alpha"], seen["local_epochs"], seen["batch_size"], seen["lr"]) == (
        5,
        0.5,
        30,
        16,
        0.05,
    )
