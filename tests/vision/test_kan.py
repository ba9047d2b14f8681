"""KANLinear / WKANLinear against a direct scalar Cox–de Boor evaluation and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from headscope.common import HeadscopeError
from vision.kan import KAN, WKAN, KANLinear, WKANLinear, b_spline_bases, uniform_grid, uniform_spline_eval

torch.set_num_threads(1)


def cox_de_boor(x: float, knots: list[float], j: int, k: int) -> float:
    """B_{j,k}(x) by the textbook recursion, one scalar at a time (independent of vision.kan)."""
    if k == 0:
        return 1.0 if knots[j] <= x < knots[j + 1] else 0.0
    out = 0.0
    d1 = knots[j + k] - knots[j]
    d2 = knots[j + k + 1] - knots[j + 1]
    if d1 > 0:
        out += (x - knots[j]) / d1 * cox_de_boor(x, knots, j, k - 1)
    if d2 > 0:
        out += (knots[j + k + 1] - x) / d2 * cox_de_boor(x, knots, j + 1, k - 1)
    return out


def knots_list(G: int, K: int, lo: float, hi: float) -> list[float]:
    h = (hi - lo) / G
    return [lo + (j - K) * h for j in range(G + 2 * K + 1)]


@pytest.mark.parametrize("G,K", [(5, 3), (4, 2), (7, 1)])
def test_bases_match_scalar_cox_de_boor(G: int, K: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 3, dtype=torch.float64) * 3.0 - 1.5  # also outside [-1, 1]
    kn = knots_list(G, K, -1.0, 1.0)
    torch.testing.assert_close(uniform_grid(3, G, K, (-1.0, 1.0)), torch.tensor([kn] * 3, dtype=torch.float32))
    got = b_spline_bases(x, torch.tensor([kn] * 3, dtype=torch.float64), K)
    assert got.shape == (40, 3, G + K)
    want = torch.tensor(
        [[[cox_de_boor(float(x[b, i]), kn, j, K) for j in range(G + K)] for i in range(3)] for b in range(40)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_bases_sum_to_one_inside_grid_and_not_outside() -> None:
    x = torch.linspace(-1.0, 0.999, 301).unsqueeze(1)
    s = b_spline_bases(x, uniform_grid(1, 5, 3), 3).sum(-1)
    torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=1e-5)
    # far outside the extended knots every basis is 0
    far = torch.tensor([[3.0], [-3.0]])
    assert b_spline_bases(far, uniform_grid(1, 5, 3), 3).abs().max() == 0


def test_kanlinear_forward_matches_formula() -> None:
    torch.manual_seed(1)
    layer = KANLinear(4, 3).double()
    x = torch.rand(6, 4, dtype=torch.float64) * 2 - 1
    kn = layer.grid[0].tolist()  # float32 knots; their placement is checked against the closed form above
    want = torch.zeros(6, 3, dtype=torch.float64)
    for b in range(6):
        for o in range(3):
            acc = 0.0
            for i in range(4):
                xi = float(x[b, i])
                acc += float(layer.base_weight[o, i].detach()) * xi / (1 + math.exp(-xi))
                phi = sum(float(layer.spline_weight[o, i, k].detach()) * cox_de_boor(xi, kn, k, 3) for k in range(8))
                acc += float(layer.spline_scaler[o, i].detach()) * phi
            want[b, o] = acc
    torch.testing.assert_close(layer(x), want, rtol=1e-9, atol=1e-10)


def test_wkan_shares_one_spline_per_input() -> None:
    torch.manual_seed(2)
    layer = WKANLinear(5, 7).double()
    assert layer.spline_weight.shape == (1, 5, 8)
    x = torch.rand(9, 5, dtype=torch.float64) * 2 - 1
    kn = layer.grid[0].tolist()
    phi = torch.tensor(
        [
            [
                sum(
                    float(layer.spline_weight[0, i, k].detach()) * cox_de_boor(float(x[b, i]), kn, k, 3)
                    for k in range(8)
                )
                for i in range(5)
            ]
            for b in range(9)
        ],
        dtype=torch.float64,
    )
    want = torch.nn.functional.silu(x) @ layer.base_weight.T + phi @ layer.spline_scaler.T
    # float32 knots are uniform only to ~1e-7, which the local (uniform) evaluation assumes
    torch.testing.assert_close(layer(x), want, rtol=1e-6, atol=1e-7)
    layer.fast = False
    torch.testing.assert_close(layer(x), want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("widths", [[25, 16, 1], [224, 2], [10, 3, 4, 2]])
def test_parameter_counts(widths: list[int]) -> None:
    G, K = 5, 3
    n_w = sum(p.numel() for p in WKAN(widths).parameters())
    n_k = sum(p.numel() for p in KAN(widths).parameters())
    pairs = list(zip(widths[:-1], widths[1:]))
    assert n_w == sum(2 * a * b + a * (G + K) for a, b in pairs)
    assert n_k == sum(a * b * (G + K) + 2 * a * b for a, b in pairs)


def test_grid_update_preserves_polynomial_splines() -> None:
    """Cubic splines reproduce cubics, so a refit onto the data grid must keep φ(x) = x² − x/2 exactly."""
    torch.manual_seed(3)
    layer = WKANLinear(2, 3).double()
    layer.fast = False  # exact Cox-de Boor path; the local path is checked separately

    def f(t):
        return t**2 - 0.5 * t

    pts = torch.linspace(-1, 0.99, 50, dtype=torch.float64).unsqueeze(1).expand(-1, 2)
    with torch.no_grad():
        layer.spline_weight.copy_(layer.curve2coeff(pts, f(pts).unsqueeze(-1)))
    torch.testing.assert_close(layer.phi(pts), f(pts), rtol=0, atol=1e-9)
    data = torch.rand(200, 2, dtype=torch.float64) * 1.2 - 0.7  # inside [-0.7, 0.5]
    before = layer(data)
    old_grid = layer.grid.clone()
    layer.update_grid(data)
    assert not torch.allclose(layer.grid, old_grid)
    assert layer.grid[:, 3].max() < -0.6 and layer.grid[:, -4].min() > 0.4  # knots moved to the data
    torch.testing.assert_close(layer(data), before, rtol=0, atol=1e-5)


def test_kanlinear_grid_update_keeps_outputs() -> None:
    torch.manual_seed(4)
    layer = KANLinear(3, 2).double()
    pts = torch.linspace(-1, 0.99, 40, dtype=torch.float64).unsqueeze(1).expand(-1, 3)
    y = torch.stack([pts**3, -pts], dim=-1)  # (40, 3, 2): cubic and linear edges
    with torch.no_grad():
        layer.spline_weight.copy_(layer.curve2coeff(pts, y))
    data = torch.rand(100, 3, dtype=torch.float64) - 0.5
    before = layer(data)
    layer.update_grid(data)
    torch.testing.assert_close(layer(data), before, rtol=0, atol=1e-5)


def test_regularization_loss_closed_form() -> None:
    layer = WKANLinear(3, 2)
    with torch.no_grad():
        layer.spline_weight.copy_(torch.tensor([1.0, 2.0, 1.0]).view(1, 3, 1).expand(1, 3, 8))
    # l1 = [1, 2, 1]; total = 4; p = [.25, .5, .25]; H = 1.5 ln 2
    want = 4.0 + 1.5 * torch.log(torch.tensor(2.0))
    torch.testing.assert_close(layer.regularization_loss(), want)
    assert WKAN([3, 2, 2]).regularization_loss().ndim == 0


def test_bad_input_raises() -> None:
    with pytest.raises(HeadscopeError, match="expects input"):
        KANLinear(3, 2)(torch.zeros(4, 5))
    with pytest.raises(HeadscopeError, match="at least two widths"):
        WKAN([3])


def test_gradients_flow_to_all_parameters() -> None:
    m = WKAN([4, 3, 2])
    m(torch.rand(8, 4) * 2 - 1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("K", [1, 2, 3])
def test_local_uniform_evaluation_matches_full_bases(K: int) -> None:
    torch.manual_seed(5)
    G = 5
    grid = torch.tensor([knots_list(G, K, -1.0, 1.0)] * 4, dtype=torch.float64)
    coeff = torch.randn(4, G + K, dtype=torch.float64)
    x = torch.rand(300, 4, dtype=torch.float64) * 4 - 2  # covers inside, the extension and far outside
    kn = grid[0].tolist()
    want = torch.tensor(
        [
            [sum(float(coeff[i, k]) * cox_de_boor(float(x[b, i]), kn, k, K) for k in range(G + K)) for i in range(4)]
            for b in range(300)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(uniform_spline_eval(x, grid, coeff, K), want, rtol=1e-9, atol=1e-10)


def test_wkan_fast_and_slow_paths_agree_with_gradients() -> None:
    torch.manual_seed(6)
    layer = WKANLinear(6, 3).double()
    x = (torch.rand(20, 6, dtype=torch.float64) * 2.4 - 1.2).requires_grad_(True)
    y_fast = layer(x)
    g_fast = torch.autograd.grad(y_fast.sum(), [x, layer.spline_weight])
    layer.fast = False
    y_slow = layer(x)
    g_slow = torch.autograd.grad(y_slow.sum(), [x, layer.spline_weight])
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
