"""Plotly figures shared by every package: layer×head heatmaps, line plots, saving.

HTML export needs nothing beyond plotly. PNG export goes through kaleido, which drives a
Chromium browser; where none is installed, ``save_figure(..., png=True)`` raises a
HeadscopeError that names ``apt-get install chromium``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from .errors import HeadscopeError

_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable kaleido can drive, or None."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in _CHROME_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _to_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def heatmap(
    values,
    *,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    x_title: str = "head",
    y_title: str = "layer",
    title: str = "",
    colorbar_title: str = "score",
    diverging: bool = True,
    hover_name: str = "L{y}H{x}",
) -> go.Figure:
    """Heatmap of a 2-D array, rows = ``y`` (layers), columns = ``x`` (heads).

    With ``diverging`` the colour scale is RdBu centred on 0 with symmetric limits, so
    that white always means "no effect". Hover shows the head name and the value.
    """
    z = _to_numpy(values)
    if z.ndim != 2:
        raise HeadscopeError(f"heatmap needs a 2-D array (layer × head), got shape {tuple(z.shape)}")
    n_y, n_x = z.shape
    xs = list(x_labels) if x_labels is not None else [str(i) for i in range(n_x)]
    ys = list(y_labels) if y_labels is not None else [str(i) for i in range(n_y)]
    text = [[hover_name.format(x=xs[j], y=ys[i]) for j in range(n_x)] for i in range(n_y)]
    kw: dict = {}
    if diverging:
        lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        lim = lim if lim > 0 else 1.0
        kw = dict(colorscale="RdBu", zmid=0.0, zmin=-lim, zmax=lim, reversescale=True)
    else:
        kw = dict(colorscale="Viridis")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=xs,
            y=ys,
            text=text,
            hovertemplate="%{text}<br>" + colorbar_title + ": %{z:.4f}<extra></extra>",
            colorbar=dict(title=colorbar_title),
            **kw,
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title=y_title,
        yaxis=dict(autorange="reversed", type="category"),
        xaxis=dict(type="category"),
        template="plotly_white",
    )
    return fig


def line_plot(
    xs,
    series: dict[str, Sequence[float]],
    *,
    x_title: str = "",
    y_title: str = "",
    title: str = "",
    bands: dict[str, Sequence[float]] | None = None,
) -> go.Figure:
    """Lines sharing one x axis; ``bands`` optionally gives a ± band per series."""
    fig = go.Figure()
    for name, raw in series.items():
        ys = _to_numpy(raw)
        err = None
        if bands and name in bands:
            err = dict(type="data", array=_to_numpy(bands[name]), visible=True)
        fig.add_trace(go.Scatter(x=list(xs), y=ys, mode="lines+markers", name=name, error_y=err))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white")
    return fig


def save_figure(fig: go.Figure, path: str | os.PathLike, png: bool = False) -> list[Path]:
    """Write ``fig`` to ``path`` as HTML (always) and, with ``png``, a PNG beside it.

    ``path``'s suffix is replaced. Returns the written paths. PNG needs kaleido and a
    Chromium browser; without one it raises a HeadscopeError naming the fix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    html = path.with_suffix(".html")
    fig.write_html(str(html), include_plotlyjs="cdn" if os.environ.get("HEADSCOPE_HTML_CDN") else True)
    written = [html]
    if png:
        written.append(save_png(fig, path.with_suffix(".png")))
    return written


def save_png(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG through kaleido (needs Chromium)."""
    try:
        import kaleido  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HeadscopeError(
            "PNG export needs kaleido: pip install 'headscope[png]' (and apt-get install chromium)"
        ) from e
    browser = find_chromium()
    if browser is None:
        raise HeadscopeError(
            "PNG export needs a Chromium browser for kaleido and none was found; install it with "
            "`apt-get install chromium` (or set BROWSER_PATH), or drop --png to write HTML only"
        )
    os.environ.setdefault("BROWSER_PATH", browser)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_image(str(path), format="png")
    return path
