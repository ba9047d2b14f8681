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
from .io import atomic_path

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


def plotly_text(label: object) -> str:
    """``label`` as plotly shows it literally: ``<`` and ``>`` escaped (a token ``<s>`` would
    otherwise be read as a strike-through tag and vanish)."""
    return str(label).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def subplot_spacing(n: int, wanted: float) -> float:
    """Spacing between ``n`` subplots along one direction that plotly accepts (at most
    ``1 / (n - 1)``; the gap shrinks instead of failing as the count grows)."""
    if n <= 1:
        return wanted
    return min(wanted, 0.5 / (n - 1))


def subplot_grid(n: int, max_cols: int = 6) -> tuple[int, int]:
    """(rows, cols) of a grid with ``n`` panels, at most ``max_cols`` per row."""
    if n < 1:
        raise HeadscopeError("a figure needs at least one panel")
    cols = min(n, max_cols)
    return -(-n // cols), cols


def head_map_trace(values, lim: float, **kwargs) -> go.Heatmap:
    """A layer × head ``go.Heatmap`` trace for a panel of a larger figure: categorical
    head/layer ticks, RdBu centred on 0 within ``±lim``; ``kwargs`` go to the trace."""
    z = _to_numpy(values)
    return go.Heatmap(
        z=z,
        x=[str(h) for h in range(z.shape[1])],
        y=[str(layer) for layer in range(z.shape[0])],
        colorscale="RdBu",
        reversescale=True,
        zmin=-lim,
        zmax=lim,
        zmid=0,
        **kwargs,
    )


def symmetric_limit(values) -> float:
    """Largest finite ``|value|`` (1.0 when there is none or it is 0): the ends of a diverging scale."""
    z = _to_numpy(values)
    finite = np.abs(z[np.isfinite(z)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


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
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Heatmap of a 2-D array, rows = ``y`` (layers), columns = ``x`` (heads).

    With ``diverging`` the colour scale is RdBu centred on 0 with symmetric limits, so
    that white always means "no effect". Hover shows the head name and the value. Labels
    are shown literally (``<s>`` stays ``<s>``); both axes are categorical, so layer ticks
    are whole numbers. ``width``/``height`` default to plotly's size, grown for many rows
    or columns (about 16 px each) so that every tick label can be read.
    """
    z = _to_numpy(values)
    if z.ndim != 2:
        raise HeadscopeError(f"heatmap needs a 2-D array (layer × head), got shape {tuple(z.shape)}")
    n_y, n_x = z.shape
    xs = [plotly_text(v) for v in x_labels] if x_labels is not None else [str(i) for i in range(n_x)]
    ys = [plotly_text(v) for v in y_labels] if y_labels is not None else [str(i) for i in range(n_y)]
    text = [[hover_name.format(x=xs[j], y=ys[i]) for j in range(n_x)] for i in range(n_y)]
    kw: dict = {}
    if diverging:
        lim = symmetric_limit(z)
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
    if width is not None or n_x > 24:
        fig.update_layout(width=width or min(4000, 220 + 16 * n_x))
    if height is not None or n_y > 24:
        fig.update_layout(height=height or min(4000, 200 + 16 * n_y))
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

    ``path``'s suffix is replaced. Each file is written atomically (temporary file, then
    ``os.replace``). Returns the written paths. PNG needs kaleido and a
    Chromium browser; without one it raises a HeadscopeError naming the fix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    html = path.with_suffix(".html")
    with atomic_path(html) as tmp:
        fig.write_html(str(tmp), include_plotlyjs="cdn" if os.environ.get("HEADSCOPE_HTML_CDN") else True)
    written = [html]
    if png:
        written.append(save_png(fig, path.with_suffix(".png")))
    return written


def save_png(fig: go.Figure, path: str | os.PathLike, width: int | None = None, height: int | None = None) -> Path:
    """Write ``fig`` as PNG through kaleido (needs Chromium), atomically.

    The image takes the figure's layout ``width``/``height`` unless given here.
    """
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
    with atomic_path(path) as tmp:
        fig.write_image(str(tmp), format="png", width=width, height=height)
    return path
