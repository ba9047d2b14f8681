"""SpectralKAN for hyperspectral change detection (Wang et al., 2024), with an MLP and a CNN
baseline of similar size, training, metrics and full-scene change maps.

Model (paper §III-C; official ``demo.py``): the input is the difference of the two dates
over a ``5×5`` neighbourhood, ``x = X1 − X2 ∈ R^{B × bands × 25}``.

- spatial encoder ``WKAN([25, 16, 1])`` applied to every band separately (weights shared
  across bands) compresses each band's patch to one value → ``(B, bands)``;
- spectral encoder ``WKAN([bands, 2])`` maps the compressed spectrum to changed/unchanged
  logits.

At 224 bands this has 1,160 + 2,688 = 3,848 parameters. Training follows the official
script: ~1 % of the labelled pixels of each class, Adam (lr 1e-3), StepLR(step =
epochs/20, γ = 0.9), cross-entropy, batch 64, 200 epochs; per-band min–max normalisation
over both dates and mirror padding. Class 1 = changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from headscope.common import HeadscopeError, progress, seed_everything

from .data.hsi import BiTemporalScene, extract_patches, minmax_normalize_pair, mirror_pad, sample_train_test
from .kan import WKAN, WKANLinear

__all__ = [
    "CNNBaseline",
    "ChangeVectorDetector",
    "SpectralKANNoSpline",
    "ChangeMetrics",
    "MLPBaseline",
    "SpectralKAN",
    "build_change_model",
    "change_map",
    "change_metrics",
    "prepare_scene",
    "train_change_model",
]


class SpectralKAN(nn.Module):
    """``(B, bands, patch²) -> (B, 2)``: per-band spatial WKAN, then a spectral WKAN (SpectralKAN §III-C)."""

    def __init__(
        self,
        bands: int,
        patch: int = 5,
        hidden: int = 16,
        n_classes: int = 2,
        grid_size: int = 5,
        spline_order: int = 3,
    ) -> None:
        super().__init__()
        self.bands, self.patch = bands, patch
        self.spatial = WKAN([patch * patch, hidden, 1], grid_size=grid_size, spline_order=spline_order)
        self.spectral = WKAN([bands, n_classes], grid_size=grid_size, spline_order=spline_order)

    def encode(self, x: Float[Tensor, " B bands P2"]) -> Float[Tensor, " B bands"]:
        """The spatial encoder's per-band summary of the difference patch."""
        b, c, p2 = x.shape
        return self.spatial(x.reshape(b * c, p2)).reshape(b, c)

    def forward(self, x: Float[Tensor, " B bands P2"]) -> Float[Tensor, " B n_classes"]:
        _check(x, self.bands, self.patch)
        return self.spectral(self.encode(x))


class SpectralKANNoSpline(SpectralKAN):
    """SpectralKAN with every spline term removed: each WKAN layer is ``SiLU(x) W_baseᵀ`` only.

    The ablation that asks whether the learnable splines (the "KAN" part) matter: same
    layout, same base weights and training; the spline scalers are zero and frozen.
    """

    def __init__(self, bands: int, patch: int = 5, hidden: int = 16, n_classes: int = 2) -> None:
        super().__init__(bands, patch, hidden, n_classes)
        for m in self.modules():
            if isinstance(m, WKANLinear):
                with torch.no_grad():
                    m.spline_scaler.zero_()
                m.spline_scaler.requires_grad_(False)
                m.spline_weight.requires_grad_(False)


class ChangeVectorDetector(nn.Module):
    """Classical change-vector analysis: changed iff ``‖x1 − x2‖₂`` at the centre pixel exceeds a threshold.

    The threshold is the one fitted by :meth:`fit` on the training pixels (the same 1 % the
    learned models see): the midpoint between consecutive sorted magnitudes that maximises
    training accuracy (ties: the smallest such threshold). Outputs logits ``(−m, m)`` with
    ``m = magnitude − threshold`` so that ``argmax`` is the decision.
    """

    def __init__(self, bands: int, patch: int = 5) -> None:
        super().__init__()
        self.bands, self.patch = bands, patch
        self.register_buffer("threshold", torch.tensor(0.0))

    def magnitude(self, x: Float[Tensor, " B bands P2"]) -> Float[Tensor, " B"]:
        return x[:, :, (self.patch * self.patch) // 2].norm(dim=1)

    @torch.no_grad()
    def fit(self, x: Float[Tensor, " N bands P2"], y: Int[Tensor, " N"]) -> float:
        m = self.magnitude(x).double()
        order = torch.argsort(m)
        ms, ys = m[order], y[order].long()
        cand = torch.cat([ms[:1] - 1.0, (ms[1:] + ms[:-1]) / 2, ms[-1:] + 1.0])
        # accuracy of "changed iff m > c" for each candidate c: unchanged at or below + changed above
        zeros_below = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(1 - ys, 0)])
        ones_above = ys.sum() - torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(ys, 0)])
        acc = (zeros_below + ones_above).double() / len(ys)
        best = int(torch.argmax(acc))
        self.threshold.fill_(float(cand[best]))
        return float(acc[best])

    def forward(self, x: Float[Tensor, " B bands P2"]) -> Float[Tensor, " B 2"]:
        _check(x, self.bands, self.patch)
        d = self.magnitude(x) - self.threshold
        return torch.stack([-d, d], dim=1)


class MLPBaseline(nn.Module):
    """The same two-stage layout with MLPs: per-band ``25→h→1`` then ``bands→h2→2`` (ReLU).

    ``h2`` defaults to the width that makes the parameter count closest to SpectralKAN's
    at the same ``bands`` (≈3.8K at 224 bands), so the comparison is at similar size.
    """

    def __init__(
        self, bands: int, patch: int = 5, hidden: int = 16, hidden_spectral: int | None = None, n_classes: int = 2
    ) -> None:
        super().__init__()
        self.bands, self.patch = bands, patch
        p2 = patch * patch
        if hidden_spectral is None:
            target = sum(p.numel() for p in SpectralKAN(bands, patch, hidden, n_classes).parameters())
            spatial = p2 * hidden + hidden + hidden + 1
            hidden_spectral = max(1, round((target - spatial - n_classes) / (bands + 1 + n_classes)))
        self.spatial = nn.Sequential(nn.Linear(p2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.spectral = nn.Sequential(
            nn.Linear(bands, hidden_spectral), nn.ReLU(), nn.Linear(hidden_spectral, n_classes)
        )

    def forward(self, x: Float[Tensor, " B bands P2"]) -> Float[Tensor, " B n_classes"]:
        _check(x, self.bands, self.patch)
        b, c, p2 = x.shape
        return self.spectral(self.spatial(x.reshape(b * c, p2)).reshape(b, c))


class CNNBaseline(nn.Module):
    """A small CNN on the difference patch: 1×1 conv ``bands→h`` (spectral), depthwise 3×3, global pool, linear.

    ``h = 16`` gives ≈3.8K parameters at 224 bands.
    """

    def __init__(self, bands: int, patch: int = 5, hidden: int = 16, n_classes: int = 2) -> None:
        super().__init__()
        self.bands, self.patch = bands, patch
        self.net = nn.Sequential(
            nn.Conv2d(bands, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: Float[Tensor, " B bands P2"]) -> Float[Tensor, " B n_classes"]:
        _check(x, self.bands, self.patch)
        return self.net(x.reshape(x.shape[0], self.bands, self.patch, self.patch))


MODELS = {
    "spectralkan": SpectralKAN,
    "spectralkan_nospline": SpectralKANNoSpline,
    "mlp": MLPBaseline,
    "cnn": CNNBaseline,
    "cva": ChangeVectorDetector,
}


def build_change_model(kind: str, bands: int, patch: int = 5) -> nn.Module:
    """``kind`` in ``spectralkan | spectralkan_nospline | mlp | cnn | cva`` (``cva`` is fitted, not trained)."""
    if kind not in MODELS:
        raise HeadscopeError(f"unknown change-detection model {kind!r}; choose one of {sorted(MODELS)}")
    return MODELS[kind](bands, patch)


def _check(x: Tensor, bands: int, patch: int) -> None:
    if x.ndim != 3 or x.shape[1] != bands or x.shape[2] != patch * patch:
        raise HeadscopeError(
            f"expected a difference patch batch of shape (B, {bands}, {patch * patch}), got {tuple(x.shape)}; "
            "was the model built for this many bands?"
        )


# ----------------------------------------------------------------------------- data


@dataclass
class PreparedScene:
    """Normalised, padded dates plus the train/test split of one scene."""

    pad1: np.ndarray
    pad2: np.ndarray
    patch: int
    train_pos: np.ndarray
    train_y: np.ndarray
    test_pos: np.ndarray
    test_y: np.ndarray
    shape: tuple[int, int]

    def diff_patches(self, pos: Int[np.ndarray, " N 2"]) -> Float[Tensor, " N bands P2"]:
        """``X1 − X2`` patches at ``pos`` (positions in the unpadded image)."""
        return torch.from_numpy(
            extract_patches(self.pad1, pos, self.patch) - extract_patches(self.pad2, pos, self.patch)
        )


def prepare_scene(
    scene: BiTemporalScene, patch: int = 5, train_fraction: float = 0.01, seed: int = 0
) -> PreparedScene:
    """Min–max normalise over both dates, mirror-pad, and split 1 % of each class for training."""
    n1, n2 = minmax_normalize_pair(scene.t1, scene.t2)
    tr, ytr, te, yte = sample_train_test(scene.label, train_fraction, seed)
    return PreparedScene(mirror_pad(n1, patch), mirror_pad(n2, patch), patch, tr, ytr, te, yte, scene.shape)


# ----------------------------------------------------------------------------- training / metrics


@dataclass
class ChangeMetrics:
    """Overall accuracy, average (per-class) accuracy, Cohen's κ and the changed class's F1."""

    oa: float
    aa: float
    kappa: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def change_metrics(y_true: Int[np.ndarray, " N"], y_pred: Int[np.ndarray, " N"]) -> ChangeMetrics:
    """From the 2×2 confusion matrix M (rows = truth): ``OA = tr M / n``, ``AA = mean_c M_cc / Σ_j M_cj``,
    ``κ = (OA − p_e)/(1 − p_e)`` with ``p_e = Σ_c (row_c · col_c) / n²``, F1 of class 1."""
    y_true = np.asarray(y_true).astype(int).ravel()
    y_pred = np.asarray(y_pred).astype(int).ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise HeadscopeError(f"need equally long non-empty label arrays, got {y_true.shape} and {y_pred.shape}")
    M = np.zeros((2, 2), dtype=np.float64)
    np.add.at(M, (y_true, y_pred), 1)
    n = M.sum()
    oa = np.trace(M) / n
    rows, cols = M.sum(1), M.sum(0)
    aa = float(np.mean([M[c, c] / rows[c] for c in range(2) if rows[c] > 0]))
    pe = float((rows * cols).sum() / n**2)
    kappa = (oa - pe) / (1 - pe) if pe < 1 else 1.0
    tp, fp, fn = M[1, 1], M[0, 1], M[1, 0]
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 1.0
    return ChangeMetrics(float(oa), aa, float(kappa), float(f1))


def train_change_model(
    model: nn.Module,
    x: Float[Tensor, " N bands P2"],
    y: Int[Tensor, " N"],
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 64,
    gamma: float = 0.9,
    seed: int = 0,
    show_progress: bool = True,
) -> list[float]:
    """Adam + StepLR(step = max(1, epochs // 20), γ) + cross-entropy, as the official script.

    Returns the per-epoch mean loss.
    """
    if epochs < 1:
        raise HeadscopeError(f"epochs must be >= 1, got {epochs}")
    gen = seed_everything(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 20), gamma=gamma)
    losses = []
    model.train()
    it = progress(range(epochs), desc=f"train {type(model).__name__}") if show_progress else range(epochs)
    for _ in it:
        perm = torch.randperm(len(x), generator=gen)
        tot = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        sched.step()
        losses.append(tot / len(x))
    model.eval()
    return losses


@torch.no_grad()
def predict(
    model: nn.Module, prepared: PreparedScene, positions: Int[np.ndarray, " N 2"], batch_size: int = 512
) -> Int[np.ndarray, " N"]:
    """Class (1 changed) of every position, in chunks so a whole scene fits in memory."""
    model.eval()
    out = []
    for i in range(0, len(positions), batch_size):
        out.append(model(prepared.diff_patches(positions[i : i + batch_size])).argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def change_map(model: nn.Module, prepared: PreparedScene, batch_size: int = 512) -> Int[np.ndarray, " H W"]:
    """Full-scene inference: the predicted class of every pixel as an ``(H, W)`` map (1 changed)."""
    h, w = prepared.shape
    pos = np.argwhere(np.ones((h, w), dtype=bool))
    return predict(model, prepared, pos, batch_size).reshape(h, w)


def evaluate(model: nn.Module, prepared: PreparedScene) -> ChangeMetrics:
    """Metrics on the held-out (non-training) labelled pixels."""
    return change_metrics(prepared.test_y, predict(model, prepared, prepared.test_pos))


def change_map_figure(pred: np.ndarray, label: np.ndarray | None = None, title: str = "change map"):
    """Plotly figure: predicted change map, and the ground truth beside it when given."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [("prediction", pred.astype(float))]
    if label is not None:
        panels.append(("ground truth (grey = unlabelled)", np.where(label < 0, 0.5, label).astype(float)))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    for j, (_, z) in enumerate(panels, start=1):
        fig.add_trace(
            go.Heatmap(z=z, colorscale="Greys", reversescale=True, zmin=0, zmax=1, showscale=False), row=1, col=j
        )
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{j if j > 1 else ''}", row=1, col=j)
    fig.update_layout(title=title, template="plotly_white")
    return fig
