"""Co-Boosting's hard-sample synthesis, DENSE's disagreement mask and the output-diversified sampling step.

Each is checked against an independent computation written here from the papers' formulas
(not by calling the code under test twice):

- synthesis: the generator/latent gradients of the first step equal autograd of
  ``L_oh + adv·L_adv`` computed here (tolerance 1e-5 absolute on float32 gradients), and the
  returned batch is the lowest-loss batch of the trajectory (recomputed from snapshots);
- DENSE's mask: when student and teacher agree on every argmax, the adversarial term must
  not contribute (gradient = plain CE's), while the unmasked loss does differ;
- ODS: a linear teacher gives the closed form ``∇_x uᵀσ(Wx/4) = Wᵀ(p ⊙ (u − pᵀu))/4``.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from federated import distill
from federated.coboosting import VARIANT as COBOOST
from federated.dense import VARIANT as DENSE
from federated.distill import Generator, ods_perturb, synthesize

C, D, NZ, B = 4, 6, 8, 12


def _nets(seed=0, agree=False):
    torch.manual_seed(seed)
    teacher = nn.Linear(D, C)
    if agree:  # same argmax everywhere, different probabilities
        student = copy.deepcopy(teacher)
        with torch.no_grad():
            student.weight.mul_(2.0)
            student.bias.mul_(2.0)
    else:
        student = nn.Linear(D, C)
    return teacher.eval(), student.eval()


class _Spy(torch.optim.Adam):
    """Adam that records, before each step, the generator's state, z and their gradients."""

    records: list = []
    generator: nn.Module | None = None

    def step(self, closure=None):
        z = self.param_groups[1]["params"][0]
        _Spy.records.append(
            {
                "gen_state": copy.deepcopy(_Spy.generator.state_dict()),
                "z": z.detach().clone(),
                "z_grad": z.grad.detach().clone(),
                "w_grad": self.param_groups[0]["params"][0].grad.detach().clone(),
            }
        )
        return super().step(closure)


def _loss_here(x, y, teacher, student, adv, hs, hard, mask):
    """L = L_oh + adv·L_adv from the papers (Co-Boosting Eq. 5–7; DENSE with the disagreement mask)."""
    t = teacher(x)
    ce = F.cross_entropy(t, y, reduction="none")
    if hard:
        p_y = t.softmax(-1)[torch.arange(len(y)), y].detach()
        l_oh = ((1 - p_y) ** hs * ce).mean()
    else:
        l_oh = ce.mean()
    s = student(x)
    p, log_q = (t / 3).softmax(-1), (s / 3).log_softmax(-1)
    kl = (p * (p.log() - log_q)).sum(-1) * 9.0
    if mask:
        kl = kl * (s.argmax(-1) != t.argmax(-1)).float()
    return l_oh - adv * kl.mean()


def _run_synth(variant, teacher, student, steps, seed=5, adv=1.0, hs=1.0, monkeypatch=None):
    gen_rng = torch.Generator().manual_seed(seed)
    generator = Generator(NZ, (D,), hidden=16)
    _Spy.records, _Spy.generator = [], generator
    monkeypatch.setattr(distill.torch.optim, "Adam", _Spy)
    x, y = synthesize(generator, teacher, student, steps, B, NZ, C, 1e-2, adv, hs, variant, gen_rng)
    return x, y, generator, list(_Spy.records)


def _grads_here(record, y, teacher, student, adv, hs, hard, mask):
    g = Generator(NZ, (D,), hidden=16)
    g.load_state_dict(record["gen_state"])
    g.train()
    z = record["z"].clone().requires_grad_(True)
    loss = _loss_here(g(z), y, teacher, student, adv, hs, hard, mask)
    loss.backward()
    # the code clips the generator's gradients (not z's) to total norm 10, as both official codes do
    total = torch.norm(torch.stack([p.grad.norm() for p in g.parameters() if p.grad is not None]))
    scale = min(1.0, 10.0 / (float(total) + 1e-6))
    return z.grad, g.net[0].weight.grad * scale, float(loss.detach())


@pytest.mark.parametrize("name,variant", [("coboosting", COBOOST), ("dense", DENSE)])
def test_first_step_gradient_is_the_papers_loss(name, variant, monkeypatch):
    teacher, student = _nets(1)
    adv, hs = 0.7, 2.0
    _, y, _, recs = _run_synth(variant, teacher, student, steps=1, adv=adv, hs=hs, monkeypatch=monkeypatch)
    z_grad, w_grad, _ = _grads_here(recs[0], y, teacher, student, adv, hs, variant.hard_samples, variant.mask_disagree)
    torch.testing.assert_close(recs[0]["z_grad"], z_grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(recs[0]["w_grad"], w_grad, atol=1e-5, rtol=1e-4)
    # the check can fail: the other variant's loss gives a different gradient
    z_other, _, _ = _grads_here(
        recs[0], y, teacher, student, adv, hs, not variant.hard_samples, not variant.mask_disagree
    )
    assert not torch.allclose(z_other, z_grad, atol=1e-5, rtol=1e-4)


def test_returned_batch_is_the_lowest_loss_one(monkeypatch):
    teacher, student = _nets(3)
    x, y, _, recs = _run_synth(COBOOST, teacher, student, steps=6, adv=1.0, hs=1.0, monkeypatch=monkeypatch)
    assert len(recs) == 6
    losses, xs = [], []
    for r in recs:
        g = Generator(NZ, (D,), hidden=16)
        g.load_state_dict(r["gen_state"])
        g.train()
        with torch.no_grad():
            xb = g(r["z"])
        xs.append(xb)
        losses.append(float(_loss_here(xb, y, teacher, student, 1.0, 1.0, hard=True, mask=False).detach()))
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(set(round(v, 6) for v in losses)) > 1  # the trajectory moves, so "which batch" matters
    torch.testing.assert_close(x, xs[best], atol=1e-6, rtol=1e-5)


def test_dense_mask_drops_the_adversarial_term_where_student_agrees(monkeypatch):
    teacher, student = _nets(4, agree=True)
    _, y, _, recs = _run_synth(DENSE, teacher, student, steps=1, adv=1.0, monkeypatch=monkeypatch)
    g = Generator(NZ, (D,), hidden=16)
    g.load_state_dict(recs[0]["gen_state"])
    g.train()
    with torch.no_grad():
        x = g(recs[0]["z"])
        assert bool((student(x).argmax(-1) == teacher(x).argmax(-1)).all())
    ce_only, _, _ = _grads_here(recs[0], y, teacher, student, 0.0, 1.0, hard=False, mask=False)
    unmasked, _, _ = _grads_here(recs[0], y, teacher, student, 1.0, 1.0, hard=False, mask=False)
    torch.testing.assert_close(recs[0]["z_grad"], ce_only, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(unmasked, ce_only, atol=1e-5, rtol=1e-4)


def test_ods_step_is_the_closed_form():
    torch.manual_seed(6)
    teacher = nn.Linear(D, C, bias=True).eval()
    x = torch.randn(10, D)
    eta = 0.03
    out = ods_perturb(teacher, x, eta, torch.Generator().manual_seed(11))
    u = torch.rand(10, C, generator=torch.Generator().manual_seed(11)) * 2 - 1
    with torch.no_grad():
        p = (teacher(x) / 4).softmax(-1)
        g_logit = p * (u - (p * u).sum(-1, keepdim=True)) / 4
        grad_x = g_logit @ teacher.weight
    expected = x + eta * grad_x.sign()
    torch.testing.assert_close(out, expected)
    assert torch.allclose((out - x).abs(), torch.full_like(x, eta), atol=1e-6)
    # a different direction u gives a different step (the sampling is diversified)
    other = ods_perturb(teacher, x, eta, torch.Generator().manual_seed(12))
    assert not torch.equal(other, out)
