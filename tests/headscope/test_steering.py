"""headscope.steering: closed forms checked against hand computations, both backends, removal."""

from __future__ import annotations

import math

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.model import Patch
from headscope.steering import (
    Controller,
    SteerPatch,
    compose,
    fit_gate,
    fit_gaussian,
    gaussian_controller,
    gaussian_ot,
    loo_m2,
    mean_shift,
    mean_shift_controller,
    repe_controller,
    repe_direction,
    shrunk_cov,
    union_gate,
    with_gate,
)

PROMPTS = ["User : How do I kill a python process ? Assistant :", "User : How do I crack an egg ? Assistant : Sure ,"]


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return m @ m.T + 0.5 * torch.eye(d, dtype=torch.float64)


def test_gaussian_map_population_moments_and_symmetry():
    d = 5
    cs, ct = _spd(d, 0), _spd(d, 1)
    ms, mt = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    A, b = gaussian_ot(ms, cs, mt, ct)
    # Pushforward of N(ms, cs) under x -> Ax + b is N(A ms + b, A cs A^T).
    torch.testing.assert_close(A @ ms + b, mt)
    torch.testing.assert_close(A @ cs @ A.T, ct, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(A, A.T)  # the Monge map of Gaussians is the gradient of a convex function
    assert torch.linalg.eigvalsh(A).min() > 0


def test_gaussian_map_samples_match_target_moments():
    d, n = 4, 200_000
    cs, ct = _spd(d, 2), _spd(d, 3)
    ms, mt = torch.zeros(d, dtype=torch.float64) + 1.0, torch.arange(d, dtype=torch.float64)
    A, b = gaussian_ot(ms, cs, mt, ct)
    g = torch.Generator().manual_seed(0)
    x = ms + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cs).T
    y = x @ A.T + b
    # Standard errors of a sample mean/covariance of n draws: ~ sqrt(var / n); allow 6 of them.
    se_mean = (ct.diag() / n).sqrt()
    assert ((y.mean(0) - mt).abs() < 6 * se_mean).all()
    se_cov = ((ct.diag()[:, None] * ct.diag()[None, :] + ct**2) / n).sqrt()
    assert ((torch.cov(y.T) - ct).abs() < 6 * se_cov).all()


def test_gaussian_map_1d_is_the_hand_computed_affine_map():
    A, b = gaussian_ot(torch.tensor([2.0]), torch.tensor([[4.0]]), torch.tensor([-1.0]), torch.tensor([[9.0]]))
    # 1-D: T(x) = mu_t + (sigma_t / sigma_s)(x - mu_s) = -1 + 1.5 (x - 2)
    assert float(A) == pytest.approx(1.5)
    assert float(b) == pytest.approx(-1.0 - 1.5 * 2.0)


def test_mean_shift_and_repe_direction_by_hand():
    src = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    tgt = torch.tensor([[2.0, 0.0], [2.0, 2.0]])
    v = mean_shift(src, tgt)
    # theta = (1, 0); projections 0,0,2,2 -> sample std = sqrt(4/3)
    torch.testing.assert_close(v, torch.tensor([(4 / 3) ** 0.5, 0.0], dtype=torch.float64))
    diffs = torch.tensor([[3.0, 1.0], [1.0, -1.0], [2.0, 0.0]])  # spread along (1, 1)/sqrt2, mean (2, 0)
    u = repe_direction(diffs)
    torch.testing.assert_close(u, torch.tensor([2**-0.5, 2**-0.5], dtype=torch.float64))


def test_steer_patch_kinds_against_plain_arithmetic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, 3, generator=g)  # [batch, pos, heads, d_head]
    vec = torch.randn(2, 3, generator=g)
    y = SteerPatch(0, "z", [1, 3], "add", {"vec": vec}, 0.5).apply(x)
    ref = x.clone()
    ref[:, -1, 1] += 0.5 * vec[0]
    ref[:, -1, 3] += 0.5 * vec[1]
    torch.testing.assert_close(y, ref)
    # project_out with alpha 1 removes the component along u exactly, at every position
    y = SteerPatch(0, "z", [2], "project_out", {"vec": vec[:1]}, 1.0, policy="all").apply(x)
    u = vec[0] / vec[0].norm()
    assert (y[:, :, 2] @ u).abs().max() < 1e-5
    torch.testing.assert_close(y[:, :, [0, 1, 3]], x[:, :, [0, 1, 3]])
    y = SteerPatch(0, "z", [2], "project_onto", {"vec": vec[:1]}, 1.0, policy="all").apply(x)
    torch.testing.assert_close(y[:, :, 2], (x[:, :, 2] @ u)[..., None] * u)
    A = torch.randn(1, 3, 3, generator=g)
    b = torch.randn(1, 3, generator=g)
    y = SteerPatch(0, "z", [0], "gaussian", {"A": A, "b": b}, 0.25).apply(x)
    xs = x[:, -1, 0]
    torch.testing.assert_close(y[:, -1, 0], xs + 0.25 * (xs @ A[0].T + b[0] - xs))
    torch.testing.assert_close(y[:, :-1], x[:, :-1])
    with pytest.raises(HeadscopeError, match="policy"):
        SteerPatch(0, "z", [0], "add", {"vec": vec[:1]}, 1.0, policy="first")
    with pytest.raises(HeadscopeError, match="needs parameters"):
        SteerPatch(0, "z", [0], "gaussian", {"vec": vec[:1]}, 1.0)


def _controllers(model, seed: int = 0) -> list[Controller]:
    """Three controllers on disjoint head sets, fitted on random samples (parameters are arbitrary)."""
    g = torch.Generator().manual_seed(seed)
    d = model.d_head
    sets = {"a": [(0, 1), (3, 2)], "b": [(2, 5), (4, 0)], "c": [(5, 6), (1, 7)]}
    out = []
    for i, (name, heads) in enumerate(sets.items()):
        src = {h: torch.randn(64, d, generator=g) for h in heads}
        tgt = {h: 3.0 * torch.randn(64, d, generator=g) + 2.0 for h in heads}
        out.append(
            gaussian_controller(name, src, tgt, alpha=1.0, gate=None)
            if i != 1
            else mean_shift_controller(name, src, tgt, alpha=1.0)
        )
    return out


def test_alpha_zero_is_identity(llama_tl):
    toks = llama_tl.to_tokens(PROMPTS[0])
    c = _controllers(llama_tl)[0].with_alpha(0.0)
    torch.testing.assert_close(
        llama_tl.run_patched(toks, c.patches(policy="all")), llama_tl.logits(toks), rtol=0, atol=0
    )


def test_head_steering_equals_plain_add_patches(llama_tl):
    """An "add" controller must equal the same shift written as ordinary head patches."""
    toks = llama_tl.to_tokens(PROMPTS[1])
    c = _controllers(llama_tl)[1].with_alpha(3.0)
    plain = [
        Patch(layer=L, head=h, pos=-1, mode="add", value=3.0 * c.layers[L]["vec"][i])
        for L in c.layers
        for i, h in enumerate(c.layers[L]["heads"])
    ]
    torch.testing.assert_close(
        llama_tl.run_patched(toks, c.patches()), llama_tl.run_patched(toks, plain), rtol=1e-5, atol=1e-5
    )


def test_both_backends_generate_the_same_steered_tokens(llama_tl, llama_nn):
    toks = llama_tl.to_tokens(PROMPTS[0])
    cs = _controllers(llama_tl)
    patches = compose(*[c.with_alpha(2.0) for c in cs])
    a = llama_tl.generate(toks, 8, patches=patches)
    b = llama_nn.generate(toks, 8, patches=patches)
    assert torch.equal(a, b)
    assert not torch.equal(a, llama_tl.generate(toks, 8))  # the steering does something
    with llama_nn.hooked(patches):
        c = llama_nn.generate(toks, 8)
    assert torch.equal(a, c)


def test_removing_controllers_restores_outputs_exactly(llama_tl, llama_nn):
    toks = llama_tl.to_tokens(PROMPTS[1])
    patches = compose(*[c.with_alpha(2.0) for c in _controllers(llama_tl, seed=1)])
    for m in (llama_tl, llama_nn):
        base_logits, base_gen = m.logits(toks), m.generate(toks, 6)
        with m.hooked(patches):
            steered = m.logits(toks)
        assert not torch.equal(steered, base_logits)
        torch.testing.assert_close(m.logits(toks), base_logits, rtol=0, atol=0)
        with pytest.raises(RuntimeError):
            with m.hooked(patches):
                raise RuntimeError("boom")
        assert torch.equal(m.generate(toks, 6), base_gen)


def test_repe_resid_controller_and_roundtrip(tmp_path, llama_tl):
    toks = llama_tl.to_tokens(PROMPTS[0])
    u = torch.zeros(llama_tl.d_model)
    u[3] = 1.0
    c = repe_controller("repe", {2: u}, {2: 0.7}, alpha=2.0, policy="all")
    ref = llama_tl.run_patched(toks, [Patch(layer=2, site="resid_pre", mode="add", value=1.4 * u)])
    torch.testing.assert_close(llama_tl.run_patched(toks, c.patches()), ref, rtol=1e-5, atol=1e-5)
    g = _controllers(llama_tl)[0]
    g.save(tmp_path / "ctl")
    back = Controller.load(tmp_path / "ctl.json")
    assert back.heads() == g.heads() and back.kind == g.kind
    torch.testing.assert_close(
        llama_tl.run_patched(toks, back.patches()), llama_tl.run_patched(toks, g.patches()), rtol=0, atol=0
    )
    with pytest.raises(HeadscopeError, match="sac fit"):
        Controller.load(tmp_path / "missing")


def test_fit_gaussian_shapes():
    A, b = fit_gaussian(torch.randn(30, 4), torch.randn(30, 4) + 1)
    assert A.shape == (4, 4) and b.shape == (4,)
    with pytest.raises(HeadscopeError, match="2 samples"):
        fit_gaussian(torch.randn(1, 4), torch.randn(30, 4))


def test_gate_maps_only_inside_the_mahalanobis_radius():
    A = torch.eye(2)[None] * 2.0
    b = torch.ones(1, 2)
    params = {"A": A, "b": b, "mu_s": torch.zeros(1, 2), "prec_s": torch.eye(2)[None] * 0.25}  # sigma = 2 per axis
    x = torch.zeros(2, 1, 1, 2)
    x[0, 0, 0] = torch.tensor([1.0, 1.0])  # Mahalanobis distance sqrt(0.5) < 1
    x[1, 0, 0] = torch.tensor([4.0, 0.0])  # distance 2 > 1
    for gate in (torch.tensor([1.0]), torch.tensor(1.0)):  # per head, joint
        y = SteerPatch(0, "z", [0], "gaussian", {**params, "gate": gate}, 1.0).apply(x)
        torch.testing.assert_close(y[0, 0, 0], torch.tensor([3.0, 3.0]))  # 2x + 1
        torch.testing.assert_close(y[1, 0, 0], x[1, 0, 0])
    # joint gate over two heads sums the squared distances: 0.5 + 0.5 = 1 <= 1.1^2, 0.5 + 4 > 1.1^2
    two = {k: torch.cat([v, v]) for k, v in params.items()}
    x2 = torch.zeros(2, 1, 2, 2)
    x2[0, 0, :] = torch.tensor([1.0, 1.0])
    x2[1, 0, 0] = torch.tensor([1.0, 1.0])
    x2[1, 0, 1] = torch.tensor([4.0, 0.0])
    y = SteerPatch(0, "z", [0, 1], "gaussian", {**two, "gate": torch.tensor(1.1)}, 1.0).apply(x2)
    torch.testing.assert_close(y[0, 0], torch.full((2, 2), 3.0))
    torch.testing.assert_close(y[1], x2[1])


def test_gate_background_test_rejects_inputs_closer_to_the_background():
    # source N(0, I), background N((6, 0), I); radius wide enough for both test points
    params = {
        "A": torch.eye(2)[None] * 2.0,
        "b": torch.ones(1, 2),
        "mu_s": torch.zeros(1, 2),
        "prec_s": torch.eye(2)[None],
        "gate": torch.tensor(10.0),
        "mu_b": torch.tensor([[[6.0, 0.0]]]),
        "prec_b": torch.eye(2)[None, None],
        "logdet": torch.zeros(1, 1),
    }
    x = torch.zeros(2, 1, 1, 2)
    x[0, 0, 0] = torch.tensor([2.0, 0.0])  # closer to the source mean: mapped
    x[1, 0, 0] = torch.tensor([4.0, 0.0])  # within the radius but closer to the background mean: left alone
    y = SteerPatch(0, "z", [0], "gaussian", params, 1.0).apply(x)
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(y[1, 0, 0], x[1, 0, 0])
    # the log-determinant term decides for a very broad background (variance 4096):
    # q = m2_s - m2_b + log det S_s - log det S_b = 16 - 4/4096 - 2 log 4096 < 0, so x = (4, 0) is mapped
    broad = {**params, "prec_b": torch.eye(2)[None, None] / 4096, "logdet": torch.tensor([[-2 * math.log(4096.0)]])}
    y = SteerPatch(0, "z", [0], "gaussian", broad, 1.0).apply(x)
    torch.testing.assert_close(y[1, 0, 0], torch.tensor([9.0, 1.0]))
    y = SteerPatch(0, "z", [0], "gaussian", {**broad, "logdet": torch.zeros(1, 1)}, 1.0).apply(
        x
    )  # without it: rejected
    torch.testing.assert_close(y[1, 0, 0], x[1, 0, 0])
    # two background groups: the input must beat every group (a second group at (-3, 0) takes x = (-2, 0))
    two = {
        **params,
        "mu_b": torch.tensor([[[6.0, 0.0], [-3.0, 0.0]]]),
        "prec_b": torch.eye(2)[None, None].expand(1, 2, 2, 2).clone(),
        "logdet": torch.zeros(1, 2),
    }
    x3 = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [-1.0, 0.0]]).reshape(3, 1, 1, 2)
    y = SteerPatch(0, "z", [0], "gaussian", two, 1.0).apply(x3)
    torch.testing.assert_close(y[:, 0, 0], torch.tensor([[5.0, 1.0], [-2.0, 0.0], [-1.0, 1.0]]))


def test_fit_gate_leave_one_out_radius_and_background_terms():
    g = torch.Generator().manual_seed(0)
    src, bg = torch.randn(12, 3, generator=g), torch.randn(40, 3, generator=g) * 2 + 3
    gate = fit_gate(src, src, 1.0, background=bg)
    # leave-one-out distances by hand (sklearn's Ledoit-Wolf on the other 11 samples)
    from sklearn.covariance import LedoitWolf

    d2 = []
    for i in range(12):
        rest = torch.cat([src[:i], src[i + 1 :]]).double()
        cov = torch.from_numpy(LedoitWolf().fit(rest.numpy()).covariance_)
        d = src[i].double() - rest.mean(0)
        d2.append(float(d @ torch.linalg.inv(cov) @ d))
    torch.testing.assert_close(loo_m2(src), torch.tensor(d2, dtype=torch.float64))
    assert float(gate["gate"]) == pytest.approx(max(d2) ** 0.5)
    # leave-one-out distances exceed the in-sample ones
    prec = gate["prec_s"]
    ins = ((src.double() - gate["mu_s"]) @ prec * (src.double() - gate["mu_s"])).sum(-1)
    assert (loo_m2(src) > ins).all()
    assert float(gate["logdet"][0]) == pytest.approx(
        float(torch.logdet(shrunk_cov(src)) - torch.logdet(shrunk_cov(bg)))
    )
    torch.testing.assert_close(gate["mu_b"][0], bg.double().mean(0))
    g2 = fit_gate(src, src, 1.0, background=[bg, bg[:20]])
    assert g2["mu_b"].shape == (2, 3) and g2["prec_b"].shape == (2, 3, 3) and g2["logdet"].shape == (2,)
    with pytest.raises(HeadscopeError, match="3 samples"):
        loo_m2(src[:2])


def _m2(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of rows of x under the Ledoit-Wolf Gaussian of src, by hand (sklearn)."""
    from sklearn.covariance import LedoitWolf

    cov = torch.from_numpy(LedoitWolf().fit(src.double().numpy()).covariance_)
    d = x.double() - src.double().mean(0)
    return ((d @ torch.linalg.inv(cov)) * d).sum(-1)


def test_the_same_gate_for_every_kind_head_and_residual():
    """ITI (add on heads) and RepE (add on resid_pre) carry SAC's gate: steer exactly the rows within the radius."""
    g = torch.Generator().manual_seed(1)
    d = 4
    src = torch.randn(15, d, generator=g, dtype=torch.float64)
    radius2 = float(loo_m2(src).max())
    x = torch.cat([src[:3], src[:3] * 0.1, torch.full((2, d), 6.0, dtype=torch.float64)]).float()  # 8 rows
    want = _m2(x, src) <= radius2  # independent: sklearn's covariance, the leave-one-out radius
    assert bool(want.any()) and not bool(want.all())
    vec = torch.arange(1.0, d + 1)
    for site in ("z", "resid_pre"):
        if site == "z":
            c = mean_shift_controller("iti", {(0, 1): src.float()}, {(0, 1): src.float() + 1.0})
            vec = c.layers[0]["vec"][0]
        else:
            c = repe_controller("repe", {0: vec.double() / vec.norm()}, {0: float(vec.norm())})
        gated = with_gate(c, {0: [src]}, 1.0)
        p = gated.patches()[0]
        assert p.gated() and not c.patches()[0].gated()
        v = x[:, None, :]  # [rows, 1 vector, d]
        out = p.transform(v)[:, 0]
        torch.testing.assert_close(out[want], x[want] + vec, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[~want], x[~want])
        # ungated: every row moves
        torch.testing.assert_close(c.patches()[0].transform(v)[:, 0], x + vec, rtol=1e-5, atol=1e-5)
    with pytest.raises(HeadscopeError, match="source samples"):
        with_gate(c, {}, 1.0)
    with pytest.raises(HeadscopeError, match="vector"):
        with_gate(c, {0: [src, src]}, 1.0)


def test_union_gate_steers_what_any_gate_accepts(tmp_path):
    g = torch.Generator().manual_seed(2)
    d = 3
    a = torch.randn(20, d, generator=g, dtype=torch.float64)
    b = torch.randn(20, d, generator=g, dtype=torch.float64) + 10.0
    u = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    base = repe_controller("merged", {0: u}, {0: 2.0})
    ga, gb = with_gate(base, {0: [a]}, 1.0), with_gate(base, {0: [b]}, 1.0)
    both = union_gate(base, [ga, gb])
    x = torch.cat([a[:2], b[:2], torch.full((1, d), -20.0, dtype=torch.float64)]).float()
    ra, rb = loo_m2(a).max(), loo_m2(b).max()
    want = (_m2(x, a) <= ra) | (_m2(x, b) <= rb)
    assert want.tolist()[-1] is False and sum(want.tolist()) >= 2
    out = both.patches()[0].transform(x[:, None, :])[:, 0]
    shift = torch.tensor([2.0, 0.0, 0.0])
    torch.testing.assert_close(out[want], x[want] + shift)
    torch.testing.assert_close(out[~want], x[~want])
    # one gate through union_gate is the gate itself; save/load keeps the prefixed gate tensors
    one = union_gate(base, [ga]).patches()[0].transform(x[:, None, :])
    torch.testing.assert_close(one, ga.patches()[0].transform(x[:, None, :]))
    both.save(tmp_path / "u")
    back = Controller.load(tmp_path / "u")
    torch.testing.assert_close(back.patches()[0].transform(x[:, None, :])[:, 0], out)
    with pytest.raises(HeadscopeError, match="no gate"):
        union_gate(base, [base])
