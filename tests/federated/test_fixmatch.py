"""FedAvg+FixMatch / FedAvg+FreeMatch: consistency losses, label privacy, the bounds' client sampling, the views."""

import math

import pytest
import torch

from federated import augment
from federated.fixmatch import FreeMatchThreshold, fixmatch_loss
from federated.models import state_bytes
from federated.protocol import ClientEnv, Task, build_model, run_client_action
from federated.runner import client_env, run, server_env
from federated.semi import SemiConfig, pack, sample_round, task_config
from headscope.common import HeadscopeError

TINY = dict(model="mlp", width=4, n_blocks=2, batch_size=32, clients=4, labelled_clients=2, alpha=0.5)


def test_fixmatch_loss_hand_computed():
    # row 0: softmax([ln 19, 0]) = [0.95, 0.05] -> passes tau = 0.9, pseudo-label 0
    # row 1: softmax([0, 0]) = [0.5, 0.5] -> masked out
    lw = torch.tensor([[math.log(19.0), 0.0], [0.0, 0.0]])
    ls = torch.tensor([[0.0, 1.0], [3.0, -3.0]])
    loss, mask = fixmatch_loss(lw, ls, 0.9)
    ce_row0 = -(0.0 - math.log(1.0 + math.e))  # CE(ls[0], class 0)
    assert mask.tolist() == [1.0, 0.0]
    assert loss.item() == pytest.approx(ce_row0 / 2, rel=1e-6)


def test_freematch_threshold_is_the_ema():
    fm = FreeMatchThreshold(3, ema=0.9)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    fm.update(probs)
    tau = 0.9 / 3 + 0.1 * (0.7 + 0.5) / 2
    p = [0.9 / 3 + 0.1 * m for m in (0.4, 0.35, 0.25)]
    assert fm.tau.item() == pytest.approx(tau, rel=1e-6)
    assert fm.p.tolist() == pytest.approx(p, rel=1e-6)
    assert fm.class_thresholds().tolist() == pytest.approx([pc / max(p) * tau for pc in p], rel=1e-6)


@pytest.mark.parametrize("method", ["fixmatch", "freematch"])
def test_unlabelled_client_never_reads_labels(method):
    cfg = SemiConfig(algorithm=method, threshold=0.01, **TINY)
    env = client_env(cfg, 3)
    task = Task(
        "semi_consistency",
        pack({"sup": build_model(cfg, env.input_shape, env.num_classes)}),
        {**task_config(cfg, 3, 0, False), "method": method},
    )
    poisoned = ClientEnv(env.cid, cfg, env.x, (env.y + 3) % env.num_classes, env.num_classes)
    a, b = run_client_action(task, env), run_client_action(task, poisoned)
    assert a.metrics["mask_rate"] > 0  # pseudo-labels were used, so the check is not vacuous
    for k in a.arrays:
        assert torch.equal(a.arrays[k], b.arrays[k]), k
    if method == "freematch":
        assert torch.equal(env.state["freematch_tau"], poisoned.state["freematch_tau"])
    lab = Task(task.action, task.arrays, {**task.config, "labelled": 1})
    assert not torch.equal(
        run_client_action(lab, env).arrays["sup.classifier.weight"],
        run_client_action(lab, poisoned).arrays["sup.classifier.weight"],
    )


def test_lower_bound_samples_only_labelled_clients():
    cfg = SemiConfig(algorithm="fedavg_labelled", rounds=3, clients_per_round=3, **TINY)
    assert all(set(sample_round(cfg, r, list(range(cfg.labelled_clients)))) == {0, 1} for r in range(3))
    r = run(cfg)
    env = server_env(cfg)
    one = state_bytes(build_model(cfg, env.input_shape, env.num_classes).state_dict())
    assert r.bytes_up == 3 * 2 * one  # 3 rounds x the 2 labelled clients
    up = run(cfg.replace(algorithm="fedavg_all_labels"))
    assert up.bytes_up == 3 * 3 * one  # 3 rounds x 3 of the 4 clients


def test_no_labelled_clients_is_an_error_for_the_lower_bound():
    with pytest.raises(HeadscopeError, match="labelled_clients"):
        run(SemiConfig(algorithm="fedavg_labelled", **{**TINY, "labelled_clients": 0}))


@pytest.mark.parametrize("shape", [(6, 1, 8, 8), (6, 40)])
def test_views_are_seeded_and_shape_preserving(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    for view in (augment.weak, augment.strong):
        a, b = view(x, torch.Generator().manual_seed(1)), view(x, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_weak_image_view_is_a_translation():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(50, 1, 1, 1)
    w = augment.weak(x, torch.Generator().manual_seed(0))
    # every weak view equals x shifted by some (dy, dx) in {-1, 0, 1}^2 with replicated borders
    pad = torch.nn.functional.pad(x[:1], (1, 1, 1, 1), mode="replicate")[0, 0]
    crops = [pad[dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    assert all(any(torch.equal(w[i, 0], c) for c in crops) for i in range(50))


def test_views_reject_integer_batches():
    with pytest.raises(HeadscopeError, match="float batch"):
        augment.weak(torch.zeros(2, 8, dtype=torch.long), torch.Generator())
