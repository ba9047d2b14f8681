"""The real Taizhou scene loader, the change-vector detector and SpectralKAN without splines.

- Taizhou: shapes, band means and label counts checked against a direct read of the raw
  bytes and masks (the data card's numbers: 4,227 changed, 17,163 unchanged);
- CVA: the fitted threshold's training accuracy equals a brute-force search over every
  midpoint (exact), and the decision is ``‖x1 − x2‖ > threshold`` at the centre pixel;
- no-spline SpectralKAN: its forward equals ``SiLU(x) W_baseᵀ`` layer by layer (tol 1e-6), and
  training leaves the spline coefficients untouched.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vision.data.hsi import TAIZHOU_DIR, load_taizhou
from vision.spectralkan import ChangeVectorDetector, SpectralKANNoSpline


def test_taizhou_matches_the_raw_files():
    s = load_taizhou()
    assert s.t1.shape == s.t2.shape == (400, 400, 6)
    raw = np.fromfile(TAIZHOU_DIR / "2003TM", dtype=np.uint8).reshape(6, 400, 400)
    np.testing.assert_array_equal(s.t2[..., 4], raw[4].astype(np.float32))
    changed = np.asarray(Image.open(TAIZHOU_DIR / "change.bmp")) == 255
    assert int((s.label == 1).sum()) == int(changed.sum()) == 4227
    assert int((s.label == 0).sum()) == 17163
    assert int((s.label == -1).sum()) == 160000 - 4227 - 17163


def test_cva_threshold_is_the_best_midpoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, 25, generator=g)
    y = (x[:, :, 12].norm(dim=1) + 0.5 * torch.randn(60, generator=g) > 2.0).long()
    det = ChangeVectorDetector(4)
    acc = det.fit(x, y)
    m = x[:, :, 12].norm(dim=1).sort().values
    cands = torch.cat([m[:1] - 1, (m[1:] + m[:-1]) / 2, m[-1:] + 1])
    brute = max(float(((x[:, :, 12].norm(dim=1) > c).long() == y).float().mean()) for c in cands)
    assert abs(acc - brute) < 1e-6  # float32 magnitudes vs the fit's float64; one sample is 1/60
    pred = det(x).argmax(-1)
    assert abs(float((pred == y).float().mean()) - acc) < 1e-6
    torch.testing.assert_close(pred, (x[:, :, 12].norm(dim=1) > det.threshold).long())


def test_nospline_spectralkan_is_the_base_path_only():
    torch.manual_seed(0)
    model = SpectralKANNoSpline(bands=5)
    x = torch.randn(7, 5, 25)
    h = x.reshape(35, 25)
    for layer in model.spatial.layers:
        h = F.silu(h) @ layer.base_weight.T
    h = h.reshape(7, 5)
    for layer in model.spectral.layers:
        h = F.silu(h) @ layer.base_weight.T
    torch.testing.assert_close(model(x), h, atol=1e-6, rtol=1e-5)
    F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1, 0, 1, 1])).backward()
    for layer in [*model.spatial.layers, *model.spectral.layers]:
        assert layer.spline_weight.grad is None and layer.spline_scaler.grad is None  # frozen: never trained
        assert layer.base_weight.grad is not None
        assert float(layer.spline_scaler.abs().max()) == 0.0
