"""B-spline Kolmogorov–Arnold layers: efficient-kan's ``KANLinear`` and SpectralKAN's ``WKANLinear``.

Both layers compute (Liu et al., "KAN", 2024, §2.2; efficient-kan's reformulation)::

    y_o = Σ_i W_base[o, i] · SiLU(x_i)  +  Σ_i W_spline[o, i] · φ_{o,i}(x_i)
    φ_{o,i}(x) = Σ_k c_{o,i,k} · B_k(x)

with B_k the order-K B-spline bases (Cox–de Boor recursion) on a uniform grid of
``grid_size`` intervals over ``grid_range`` extended by K knots on each side, so that
there are G + K bases per input.

- ``KANLinear`` (efficient-kan): one spline per (output, input) edge, coefficients
  ``(out, in, G+K)``.
- ``WKANLinear`` (SpectralKAN, Wang et al. 2024, §III-B "WKAN"): one spline per *input*,
  shared by every output, coefficients ``(1, in, G+K)``; the outputs mix the shared
  ``φ_i(x_i)`` through ``W_spline``. Parameters: ``2·out·in + in·(G+K)``.

Grid update (``update_grid``) follows efficient-kan: the new knots are a blend of the
data's quantiles and a uniform grid over its range (weight ``grid_eps`` on uniform), and
the spline coefficients are refitted by least squares so that each φ keeps its values at
the given samples. ``regularization_loss`` is efficient-kan's L1 + entropy surrogate on
the mean absolute coefficient of each spline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from headscope.common import HeadscopeError

__all__ = ["KAN", "WKAN", "KANLinear", "WKANLinear", "b_spline_bases", "uniform_grid", "uniform_spline_eval"]


def uniform_grid(
    in_features: int, grid_size: int = 5, spline_order: int = 3, grid_range: tuple[float, float] = (-1.0, 1.0)
) -> Float[Tensor, " in knots"]:
    """Knots ``t_j = lo + (j − K)·h`` for j = 0..G+2K, h = (hi − lo)/G, one row per input.

    Returns shape ``(in_features, G + 2K + 1)``.
    """
    lo, hi = float(grid_range[0]), float(grid_range[1])
    if not hi > lo:
        raise HeadscopeError(f"grid_range must be increasing, got {grid_range}; pass e.g. (-1, 1)")
    if grid_size < 1 or spline_order < 0:
        raise HeadscopeError(f"need grid_size >= 1 and spline_order >= 0, got {grid_size}, {spline_order}")
    h = (hi - lo) / grid_size
    knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * h + lo
    return knots.expand(in_features, -1).contiguous()


def b_spline_bases(
    x: Float[Tensor, " batch in"], grid: Float[Tensor, " in knots"], spline_order: int
) -> Float[Tensor, " batch in n_bases"]:
    """All order-K B-spline bases of every input, vectorised Cox–de Boor recursion.

    ``B_{j,0}(x) = 1[t_j <= x < t_{j+1}]`` and
    ``B_{j,k}(x) = (x − t_j)/(t_{j+k} − t_j) · B_{j,k−1}(x) + (t_{j+k+1} − x)/(t_{j+k+1} − t_{j+1}) · B_{j+1,k−1}(x)``
    (de Boor, "A Practical Guide to Splines", ch. IX). With ``knots = G + 2K + 1`` per
    input this returns ``n_bases = G + K`` values, which sum to 1 for x inside
    ``[t_K, t_{G+K})`` (the grid range).
    """
    if x.ndim != 2 or x.shape[1] != grid.shape[0]:
        raise HeadscopeError(f"b_spline_bases needs x of shape (batch, {grid.shape[0]}), got {tuple(x.shape)}")
    xe = x.unsqueeze(-1)  # (batch, in, 1)
    g = grid.to(x.dtype)
    bases = ((xe >= g[:, :-1]) & (xe < g[:, 1:])).to(x.dtype)  # (batch, in, knots-1)
    for k in range(1, spline_order + 1):
        left = (xe - g[:, : -(k + 1)]) / (g[:, k:-1] - g[:, : -(k + 1)])
        right = (g[:, k + 1 :] - xe) / (g[:, k + 1 :] - g[:, 1:-k])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases.contiguous()


def uniform_spline_eval(
    x: Float[Tensor, " batch in"],
    grid: Float[Tensor, " in knots"],
    coeff: Float[Tensor, " in n_bases"],
    spline_order: int,
) -> Float[Tensor, " batch in"]:
    """``φ_i(x_i) = Σ_k coeff[i, k] B_k(x_i)`` on a *uniform* grid, touching only the K+1 nonzero bases.

    For ``x ∈ [t_j, t_{j+1})`` only ``B_{j−K..j}`` are nonzero; they follow from the local
    de Boor triangle (Piegl & Tiller, "The NURBS Book", alg. A2.2) with
    ``left_r = (u + r − 1)``, ``right_r = (r − u)`` in units of the knot spacing,
    ``u = (x − t_j)/h``. Same values as ``b_spline_bases`` (tested), ~K× less memory.
    """
    K = spline_order
    g = grid.to(x.dtype)
    h = g[:, 1:2] - g[:, 0:1]  # (in, 1)
    s = (x - g[:, 0]) / h.squeeze(1)
    j = torch.floor(s)
    u = s - j
    j = j.long()
    n_int = g.shape[1] - 1  # number of knot intervals
    inside = ((j >= 0) & (j < n_int)).to(x.dtype)
    j = j.clamp(0, n_int - 1)
    N = [torch.ones_like(u)]
    for d in range(1, K + 1):
        saved = torch.zeros_like(u)
        new = []
        for r in range(d):
            # right[r+1] + left[d-r] = (r + 1 - u) + (u + d - r - 1) = d
            temp = N[r] / d
            new.append(saved + (r + 1 - u) * temp)
            saved = (u + d - r - 1) * temp
        new.append(saved)
        N = new
    w = torch.stack(N, dim=-1) * inside.unsqueeze(-1)  # (batch, in, K+1): B_{j-K+m}
    cpad = F.pad(coeff, (K, K))  # basis index b -> column b + K
    idx = j.unsqueeze(-1) + torch.arange(K + 1, device=x.device)  # (j - K + m) + K
    c = cpad.unsqueeze(0).expand(x.shape[0], -1, -1).gather(2, idx)
    return (w * c).sum(-1)


def _is_uniform(grid: Tensor) -> bool:
    d = grid[:, 1:] - grid[:, :-1]
    return bool(torch.allclose(d, d[:, :1].expand_as(d), rtol=1e-5, atol=1e-6))


class _SplineLayer(nn.Module):
    """Shared machinery: grid buffer, bases, least-squares coefficient fitting, grid update."""

    grid: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int,
        spline_order: int,
        grid_range: tuple[float, float],
        grid_eps: float,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise HeadscopeError(f"layer widths must be >= 1, got in={in_features}, out={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.grid_eps = grid_eps
        self.register_buffer("grid", uniform_grid(in_features, grid_size, spline_order, grid_range))

    @property
    def n_bases(self) -> int:
        return self.grid_size + self.spline_order

    def b_splines(self, x: Float[Tensor, " batch in"]) -> Float[Tensor, " batch in n_bases"]:
        return b_spline_bases(x, self.grid, self.spline_order)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise HeadscopeError(
                f"{type(self).__name__} expects input (batch, {self.in_features}), got {tuple(x.shape)}"
            )

    def curve2coeff(
        self, x: Float[Tensor, " batch in"], y: Float[Tensor, " batch in n_out"]
    ) -> Float[Tensor, " n_out in n_bases"]:
        """Least-squares coefficients c with ``Σ_k c[o, i, k] B_k(x[b, i]) ≈ y[b, i, o]``."""
        A = self.b_splines(x).transpose(0, 1)  # (in, batch, n_bases)
        B = y.transpose(0, 1)  # (in, batch, n_out)
        sol = torch.linalg.lstsq(A, B).solution  # (in, n_bases, n_out)
        return sol.permute(2, 0, 1).contiguous()

    @torch.no_grad()
    def _adaptive_grid(self, x: Float[Tensor, " batch in"], margin: float) -> Float[Tensor, " in knots"]:
        """efficient-kan's grid: ``eps·uniform + (1 − eps)·quantiles`` over the data, extended by K knots."""
        batch = x.shape[0]
        xs = torch.sort(x, dim=0).values
        idx = torch.linspace(0, batch - 1, self.grid_size + 1, dtype=torch.int64, device=x.device)
        adaptive = xs[idx]  # (G+1, in)
        step = (xs[-1] - xs[0] + 2 * margin) / self.grid_size  # (in,)
        uniform = torch.arange(self.grid_size + 1, dtype=x.dtype, device=x.device).unsqueeze(1) * step + xs[0] - margin
        grid = self.grid_eps * uniform + (1 - self.grid_eps) * adaptive
        ext = torch.arange(1, self.spline_order + 1, dtype=x.dtype, device=x.device).unsqueeze(1)
        grid = torch.cat([grid[:1] - step * ext.flip(0), grid, grid[-1:] + step * ext], dim=0)
        return grid.T.contiguous()


class KANLinear(_SplineLayer):
    """efficient-kan's KAN layer: a learnable B-spline on every (output, input) edge.

    ``x: (batch, in) -> (batch, out)``; ``y = SiLU(x) W_baseᵀ + Σ_{i,k} (c[o,i,k]·s[o,i]) B_k(x_i)``.
    Parameters: ``out·in·(G+K)`` coefficients + ``out·in`` base weights + ``out·in`` spline scalers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        grid_eps: float = 0.02,
        grid_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__(in_features, out_features, grid_size, spline_order, grid_range, grid_eps)
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, self.n_bases))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform base weights and scalers; splines fitted to small noise at the grid points."""
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            pts = self.grid.T[self.spline_order : -self.spline_order]  # (G+1, in)
            noise = (
                (torch.rand(pts.shape[0], self.in_features, self.out_features) - 0.5)
                * self.scale_noise
                / self.grid_size
            )
            self.spline_weight.copy_(self.curve2coeff(pts, noise))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    @property
    def scaled_spline_weight(self) -> Float[Tensor, " out in n_bases"]:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)

    def forward(self, x: Float[Tensor, " batch in"]) -> Float[Tensor, " batch out"]:
        self._check_input(x)
        base = F.linear(F.silu(x), self.base_weight)
        spline = F.linear(
            self.b_splines(x).reshape(x.shape[0], -1), self.scaled_spline_weight.reshape(self.out_features, -1)
        )
        return base + spline

    def edge_functions(self, x: Float[Tensor, " batch in"]) -> Float[Tensor, " batch out in"]:
        """``W_spline[o,i]·φ_{o,i}(x_i)`` for every edge (for plots and tests)."""
        return torch.einsum("bik,oik->boi", self.b_splines(x), self.scaled_spline_weight)

    @torch.no_grad()
    def update_grid(self, x: Float[Tensor, " batch in"], margin: float = 0.01) -> None:
        """Move the knots to the data's distribution and refit every edge spline to its old values."""
        self._check_input(x)
        old = torch.einsum("bik,oik->bio", self.b_splines(x), self.spline_weight)  # (batch, in, out)
        self.grid.copy_(self._adaptive_grid(x, margin))
        self.spline_weight.copy_(self.curve2coeff(x, old))

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Tensor:
        """efficient-kan surrogate: ``a·Σ|c|̄ + e·H(p)``, p = per-edge mean |c| normalised."""
        l1 = self.spline_weight.abs().mean(-1)
        total = l1.sum()
        p = l1 / total
        return regularize_activation * total + regularize_entropy * (-(p * p.clamp_min(1e-12).log()).sum())


class WKANLinear(_SplineLayer):
    """SpectralKAN's WKAN layer: one B-spline φ_i per input, shared by all outputs.

    ``x: (batch, in) -> (batch, out)``; ``y = SiLU(x) W_baseᵀ + φ(x) W_splineᵀ`` with
    ``φ_i(x_i) = Σ_k c[0, i, k] B_k(x_i)``. Parameters: ``2·out·in + in·(G+K)``.
    (SpectralKAN §III-B; the official ``WKANLinear`` stores ``spline_weight`` as
    ``(1, in, G+K)`` and ``W_spline`` as ``spline_scaler``.)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        grid_eps: float = 0.02,
        grid_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__(in_features, out_features, grid_size, spline_order, grid_range, grid_eps)
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(1, in_features, self.n_bases))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.fast = True  # use uniform_spline_eval while the grid is uniform
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            pts = self.grid.T[self.spline_order : -self.spline_order]
            noise = (torch.rand(pts.shape[0], self.in_features, 1) - 0.5) * self.scale_noise / self.grid_size
            self.spline_weight.copy_(self.curve2coeff(pts, noise))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    def phi(self, x: Float[Tensor, " batch in"]) -> Float[Tensor, " batch in"]:
        """The shared per-input spline values ``φ_i(x_i)`` (local evaluation while the grid is uniform)."""
        if self.fast and _is_uniform(self.grid):
            return uniform_spline_eval(x, self.grid, self.spline_weight[0], self.spline_order)
        return (self.b_splines(x) * self.spline_weight).sum(-1)

    def forward(self, x: Float[Tensor, " batch in"]) -> Float[Tensor, " batch out"]:
        self._check_input(x)
        return F.linear(F.silu(x), self.base_weight) + F.linear(self.phi(x), self.spline_scaler)

    @torch.no_grad()
    def update_grid(self, x: Float[Tensor, " batch in"], margin: float = 0.01) -> None:
        """Move the knots to the data and refit each shared φ_i to its old values at ``x``.

        (The official WKAN ``update_grid`` refers to efficient-kan's per-edge weights and
        cannot run; this is the per-input equivalent.)
        """
        self._check_input(x)
        old = self.phi(x).unsqueeze(-1)  # (batch, in, 1)
        self.grid.copy_(self._adaptive_grid(x, margin))
        self.spline_weight.copy_(self.curve2coeff(x, old))

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Tensor:
        l1 = self.spline_weight.abs().mean(-1)
        total = l1.sum()
        p = l1 / total
        return regularize_activation * total + regularize_entropy * (-(p * p.clamp_min(1e-12).log()).sum())


class _Stack(nn.Module):
    layer_cls: type[_SplineLayer] = KANLinear

    def __init__(
        self,
        widths: Sequence[int],
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        **kw,
    ) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2:
            raise HeadscopeError(f"{type(self).__name__} needs at least two widths [in, ..., out], got {widths}")
        self.widths = widths
        self.layers = nn.ModuleList(
            self.layer_cls(a, b, grid_size=grid_size, spline_order=spline_order, grid_range=grid_range, **kw)
            for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: Float[Tensor, " batch d_in"], update_grid: bool = False) -> Float[Tensor, " batch d_out"]:
        for layer in self.layers:
            if update_grid:
                layer.update_grid(x)
            x = layer(x)
        return x

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Tensor:
        return sum(layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers)  # type: ignore[return-value]


class KAN(_Stack):
    """A stack of ``KANLinear`` layers with widths ``[d_in, h_1, ..., d_out]``."""

    layer_cls = KANLinear


class WKAN(_Stack):
    """A stack of ``WKANLinear`` layers with widths ``[d_in, h_1, ..., d_out]`` (SpectralKAN's encoders)."""

    layer_cls = WKANLinear


def kan_parameter_count(widths: Sequence[int], grid_size: int = 5, spline_order: int = 3, shared: bool = True) -> int:
    """Closed-form parameter count: Σ_layers ``2·out·in + in·(G+K)`` (WKAN) or ``out·in·(G+K+2)`` (KAN)."""
    n = grid_size + spline_order
    total = 0
    for a, b in zip(list(widths)[:-1], list(widths)[1:]):
        total += 2 * a * b + (a * n if shared else a * b * n)
    return total
