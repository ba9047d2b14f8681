"""Plotly views for head analyses: layer×head heatmaps, top-k tables, attention patterns, knockout curves.

All return ``plotly.graph_objects.Figure``; save with
:func:`headscope.common.plotting.save_figure` (HTML always, PNG on request).
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Int
from plotly.subplots import make_subplots
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.plotting import heatmap, line_plot
from headscope.results import HeadResult


def head_heatmap(result: HeadResult | Tensor, title: str = "", label: str = "score") -> go.Figure:
    """Layer × head heatmap with a diverging scale centred on 0."""
    if isinstance(result, HeadResult):
        return result.figure(title or None)
    return heatmap(result, title=title, colorbar_title=label)


def side_by_side(results: dict[str, HeadResult], title: str = "") -> go.Figure:
    """Several layer × head maps next to each other, one shared symmetric colour scale."""
    names = list(results)
    mats = [results[n].by_head() for n in names]
    lim = max(float(torch.nan_to_num(m).abs().max()) for m in mats) or 1.0
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.05)
    for i, m in enumerate(mats, 1):
        fig.add_trace(
            go.Heatmap(
                z=m.numpy(),
                colorscale="RdBu",
                reversescale=True,
                zmin=-lim,
                zmax=lim,
                zmid=0,
                showscale=i == len(names),
                hovertemplate="L%{y}H%{x}: %{z:.4f}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", title_text="layer" if i == 1 else None, row=1, col=i)
        fig.update_xaxes(title_text="head", row=1, col=i)
    fig.update_layout(title=title, template="plotly_white")
    return fig


def top_heads_table(result: HeadResult, k: int = 10, by: str = "abs") -> go.Figure:
    """The top-k heads as a plotly table (rank, head, score)."""
    rows = result.top(k, by)
    return go.Figure(
        go.Table(
            header=dict(values=["rank", "head", result.info.get("metric_name", "score")]),
            cells=dict(
                values=[
                    list(range(1, len(rows) + 1)),
                    [f"L{L}H{h}" for L, h, _ in rows],
                    [f"{v:.4f}" for _, _, v in rows],
                ]
            ),
        )
    )


def attention_patterns(
    model, tokens: Int[Tensor, " batch pos"], heads: Sequence[tuple[int, int]], row: int = 0
) -> go.Figure:
    """Attention patterns of chosen heads for one prompt (query tokens down, key tokens across)."""
    if not heads:
        raise HeadscopeError("name at least one head, e.g. [(1, 3)]")
    tokens = model.check_tokens(tokens)
    layers = sorted({L for L, _ in heads})
    _, cache = model.run_with_heads(tokens[row : row + 1], layers=layers, sites=(), pattern=True)
    labels = [f"{i}:{t}" for i, t in enumerate(model.to_str_tokens(tokens[row]))]
    fig = make_subplots(
        rows=1, cols=len(heads), subplot_titles=[f"L{L}H{h}" for L, h in heads], horizontal_spacing=0.06
    )
    for i, (L, h) in enumerate(heads, 1):
        pat = cache.pattern[L][0, h].cpu().numpy()
        fig.add_trace(
            go.Heatmap(
                z=pat,
                x=labels,
                y=labels,
                colorscale="Blues",
                zmin=0,
                zmax=1,
                showscale=i == len(heads),
                hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=i)
        fig.update_xaxes(type="category", row=1, col=i)
    fig.update_layout(title="attention patterns", template="plotly_white")
    return fig


def knockout_plot(curve: dict, title: str = "knockout", y_title: str = "score") -> go.Figure:
    """Score vs number of ablated heads: the top-k heads against k random heads (mean ± std)."""
    return line_plot(
        curve["k"],
        {"top-k heads": curve["top"], "random heads": curve["random_mean"]},
        bands={"random heads": curve["random_std"]},
        x_title="heads ablated (k)",
        y_title=y_title,
        title=title,
    )
