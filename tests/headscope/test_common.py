import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headscope.common import (
    HeadscopeError,
    accuracy,
    chunk_ranges,
    heatmap,
    kl_div,
    logit_diff,
    map_chunked,
    normalized_patching_metric,
    plotting,
    save_figure,
    seed_everything,
)


def test_logit_diff_and_accuracy_by_hand():
    logits = torch.tensor([[[0.0, 1.0, 3.0]], [[2.0, 0.5, 0.0]]])  # [batch 2, pos 1, vocab 3]
    ans, wrong = torch.tensor([2, 0]), torch.tensor([1, 1])
    assert logit_diff(logits, ans, wrong).item() == pytest.approx(((3 - 1) + (2 - 0.5)) / 2)
    assert logit_diff(logits, ans, wrong, reduce=False).tolist() == pytest.approx([2.0, 1.5])
    assert accuracy(logits, ans) == 1.0
    assert accuracy(logits, wrong) == 0.0


def test_normalized_metric_endpoints_and_error():
    assert normalized_patching_metric(5.0, 5.0, 1.0).item() == pytest.approx(1.0)
    assert normalized_patching_metric(1.0, 5.0, 1.0).item() == pytest.approx(0.0)
    assert normalized_patching_metric(2.0, 5.0, 1.0).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="undefined"):
        normalized_patching_metric(1.0, 2.0, 2.0)


def test_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(4, 7, 11, generator=g), torch.randn(4, 7, 11, generator=g)
    ref = F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), log_target=True, reduction="none").sum(-1).mean()
    assert kl_div(p, q).item() == pytest.approx(ref.item(), rel=1e-5)
    assert kl_div(p, p).item() == pytest.approx(0.0, abs=1e-6)


def test_chunking_covers_everything():
    assert list(chunk_ranges(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    x = torch.arange(10.0)
    assert torch.equal(map_chunked(lambda t: t * 2, x, 3), x * 2)
    with pytest.raises(ValueError):
        list(chunk_ranges(3, 0))


def test_seed_everything_reproducible():
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))


def test_heatmap_is_centred_and_labelled():
    z = torch.tensor([[0.5, -2.0], [1.0, 0.0]])
    fig = heatmap(z, title="t")
    tr = fig.data[0]
    assert tr.zmid == 0 and tr.zmin == -2.0 and tr.zmax == 2.0
    assert tr.text[0][1] == "L0H1"
    assert np.allclose(np.asarray(tr.z), z.numpy())
    with pytest.raises(HeadscopeError):
        heatmap(torch.zeros(3))


def test_save_html(tmp_path):
    files = save_figure(heatmap(torch.eye(2)), tmp_path / "fig.whatever")
    assert files == [tmp_path / "fig.html"]
    assert "plotly" in files[0].read_text()[:5000].lower()


def test_png_without_chromium_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "find_chromium", lambda: None)
    with pytest.raises(HeadscopeError, match="apt-get install chromium"):
        save_figure(heatmap(torch.eye(2)), tmp_path / "fig", png=True)


@pytest.mark.skipif(
    plotting.find_chromium() is None, reason="Chromium not installed (make test installs it with apt-get where it can)"
)
def test_png_with_chromium(tmp_path):
    files = save_figure(heatmap(torch.eye(3)), tmp_path / "fig", png=True)
    png = tmp_path / "fig.png"
    assert png in files and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isfinite(png.stat().st_size) and png.stat().st_size > 1000


def _demo_style_results():
    """The demo's layer × head map (llama organism: 6 layers × 8 heads) and a 64-position sweep."""
    from headscope.results import HeadResult

    g = torch.Generator().manual_seed(0)
    info = {
        "method": "activation_patching",
        "model": "llama",
        "task": "arithmetic",
        "metric_name": "normalised logit diff",
        "title": "denoising patching of z",
    }
    demo = HeadResult(torch.randn(6, 8, generator=g), ("layer", "head"), {}, info)
    toks = ["<bos>"] + [f"t{i}" for i in range(63)]
    per_pos = HeadResult(torch.randn(2, 64, 4, generator=g), ("layer", "pos", "head"), {"pos": toks}, info)
    return {"demo": demo, "per_position": per_pos}


@pytest.mark.skipif(
    plotting.find_chromium() is None, reason="Chromium not installed (make test installs it with apt-get where it can)"
)
@pytest.mark.parametrize("which", ["demo", "per_position"])
def test_screenshot_of_heatmaps(tmp_path, which):
    """Render with headless Chromium (kaleido) and look at the pixels: the image has the
    figure's size, is not one flat colour, and has dark text pixels beside the plot (tick
    labels of both axes) and above it (the title). The same bands of a figure without
    labels or title hold no dark pixel at all."""
    from PIL import Image

    res = _demo_style_results()[which]
    fig = res.figure()
    png = res.save_figure(tmp_path / which, png=True)[1]
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h, w, _ = img.shape
    assert (w, h) == (fig.layout.width or 700, fig.layout.height or 500)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # colour scale, text, background
    dark = img.sum(-1) < 450  # text (#2a3f5f, anti-aliased) on white
    left_band = dark[int(0.25 * h) : int(0.75 * h), : int(0.09 * w)]  # y tick labels and the axis title
    bottom_band = dark[int(0.8 * h) :, int(0.2 * w) : int(0.7 * w)]  # x tick labels and the axis title
    top_band = dark[: int(0.12 * h), :]  # title
    assert left_band.sum() > 60 and bottom_band.sum() > 100 and top_band.sum() > 100, (
        left_band.sum(),
        bottom_band.sum(),
        top_band.sum(),
    )
