"""Plotly views for head analyses: layer×head heatmaps, top-k tables, attention patterns, knockout curves.

All return ``plotly.graph_objects.Figure``; save with
:func:`headscope.common.plotting.save_figure` (HTML always, PNG on request).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from jaxtyping import Int
from plotly.subplots import make_subplots
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.plotting import (
    head_map_trace,
    heatmap,
    line_plot,
    plotly_text,
    subplot_grid,
    subplot_spacing,
    symmetric_limit,
)
from headscope.results import HeadResult, format_head


def head_heatmap(result: HeadResult | Tensor, title: str = "", label: str = "score") -> go.Figure:
    """Layer × head heatmap with a diverging scale centred on 0."""
    if isinstance(result, HeadResult):
        return result.figure(title or None)
    return heatmap(result, title=title, colorbar_title=label)


def side_by_side(results: dict[str, HeadResult], title: str = "", max_cols: int = 4) -> go.Figure:
    """Several layer × head maps in a grid (``max_cols`` per row), one shared symmetric colour scale."""
    names = list(results)
    mats = [results[n].by_head() for n in names]
    lim = max(symmetric_limit(m) for m in mats)
    n_rows, n_cols = subplot_grid(len(names), max_cols)
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=[plotly_text(n) for n in names],
        horizontal_spacing=subplot_spacing(n_cols, 0.05),
        vertical_spacing=subplot_spacing(n_rows, 0.12),
    )
    for i, m in enumerate(mats):
        r, c = divmod(i, n_cols)
        fig.add_trace(
            head_map_trace(
                m,
                lim,
                showscale=i == 0,
                hovertemplate="L%{y}H%{x}: %{z:.4f}<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
        fig.update_yaxes(
            autorange="reversed", type="category", title_text="layer" if c == 0 else None, row=r + 1, col=c + 1
        )
        fig.update_xaxes(type="category", title_text="head" if r == n_rows - 1 else None, row=r + 1, col=c + 1)
    fig.update_layout(title=title, template="plotly_white", height=max(450, 320 * n_rows))
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


def check_heads(model, heads: Sequence[tuple[int, int]], where: str = "heads") -> list[tuple[int, int]]:
    """``heads`` as ``(layer, head)`` pairs, each checked against the model's shape.

    Raises a HeadscopeError naming the valid range for a head the model does not have.
    """
    out = []
    for L, h in heads:
        if not (0 <= L < model.n_layers and 0 <= h < model.n_heads):
            raise HeadscopeError(
                f"{where}: {model.name} has no head L{L}H{h}; it has layers 0..{model.n_layers - 1} and heads "
                f"0..{model.n_heads - 1} per layer (L0H0 .. L{model.n_layers - 1}H{model.n_heads - 1})"
            )
        out.append((int(L), int(h)))
    return out


def attention_patterns(
    model,
    tokens: Int[Tensor, " batch pos"],
    heads: Sequence[tuple[int, int]],
    row: int = 0,
    max_cols: int | None = None,
) -> go.Figure:
    """Attention patterns of chosen heads for one prompt (query tokens down, key tokens across).

    Any number of heads: panels wrap into rows of ``max_cols`` (default: about the square
    root of the number of heads, at most 8). A head the model does not
    have, or a ``row`` outside the batch, is a HeadscopeError naming the valid range.
    """
    if not heads:
        raise HeadscopeError("name at least one head, e.g. [(1, 3)]")
    heads = check_heads(model, heads)
    tokens = model.check_tokens(tokens)
    if not -tokens.shape[0] <= row < tokens.shape[0]:
        raise HeadscopeError(f"row {row} out of range: the batch has {tokens.shape[0]} prompts")
    row %= tokens.shape[0]
    layers = sorted({L for L, _ in heads})
    _, cache = model.run_with_heads(tokens[row : row + 1], layers=layers, sites=(), pattern=True)
    labels = [plotly_text(f"{i}:{t}") for i, t in enumerate(model.to_str_tokens(tokens[row]))]
    n_cols = max_cols or min(8, math.ceil(math.sqrt(len(heads))))
    n_rows, n_cols = subplot_grid(len(heads), n_cols)
    # Square panels with fixed gaps in pixels (room for titles and token labels); the
    # figure stays within 4000 × 6000 px however many heads and tokens there are.
    margin = dict(l=90, r=90, t=90, b=100)
    gap_x, gap_y = 30, 50
    side = max(260, min(600, 8 * len(labels)))
    side = max(120, min(side, (3820 - gap_x * (n_cols - 1)) // n_cols, (5810 - gap_y * (n_rows - 1)) // n_rows))
    inner_w, inner_h = n_cols * side + gap_x * (n_cols - 1), n_rows * side + gap_y * (n_rows - 1)
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=[format_head(hd) for hd in heads],
        horizontal_spacing=subplot_spacing(n_cols, gap_x / inner_w),
        vertical_spacing=subplot_spacing(n_rows, gap_y / inner_h),
    )
    for i, (L, h) in enumerate(heads):
        r, c = divmod(i, n_cols)
        pat = cache.pattern[L][0, h].float().cpu().numpy()
        fig.add_trace(
            go.Heatmap(
                z=pat,
                x=labels,
                y=labels,
                colorscale="Blues",
                zmin=0,
                zmax=1,
                showscale=i == 0,
                hovertemplate=f"L{L}H{h}<br>query %{{y}}<br>key %{{x}}<br>attention %{{z:.3f}}<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
        fig.update_yaxes(autorange="reversed", type="category", showticklabels=c == 0, row=r + 1, col=c + 1)
        fig.update_xaxes(type="category", showticklabels=r == n_rows - 1, row=r + 1, col=c + 1)
    fig.update_layout(
        title=plotly_text(f"attention patterns: {model.name}"),
        template="plotly_white",
        width=inner_w + margin["l"] + margin["r"],
        height=inner_h + margin["t"] + margin["b"],
        margin=margin,
    )
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


def circuit_graph(scores, edges: Sequence[str] | None = None, title: str = "circuit") -> go.Figure:
    """A circuit as a graph: layers left to right, nodes (input, heads, MLPs, logits),
    one line per edge whose width follows ``|score|`` (blue > 0, red < 0).

    Args:
        scores: :class:`headscope.eap.EdgeScores`.
        edges: the edges to draw (default: the 30 strongest).
    """
    g = scores.graph
    edges = list(edges) if edges is not None else scores.top(30)
    H = g.n_heads

    def where(node: str) -> tuple[float, float]:
        node = node.split("<")[0]
        if node == "input":
            return -1.0, (H - 1) / 2
        if node == "logits":
            return float(g.n_layers), (H - 1) / 2
        if node.startswith("m"):
            return int(node[1:]) + 0.5, H + 0.5
        layer, rest = node[1:].split(".")
        idx = int(rest[2:]) if rest.startswith("kv") else int(rest[1:])
        if rest.startswith("kv"):
            idx = idx * (H // g.n_kv_heads) + (H // g.n_kv_heads - 1) / 2
        return float(layer), float(idx)

    vals = [scores.edge(e) for e in edges]
    top = max([abs(v) for v in vals] + [1e-12])
    fig = go.Figure()
    for e, v in zip(edges, vals):
        u, r = e.split("->")
        (x0, y0), (x1, y1) = where(u), where(r)
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                line={"width": 0.5 + 6 * abs(v) / top, "color": "#2166ac" if v >= 0 else "#b2182b"},
                hovertext=plotly_text(f"{e}: {v:+.4g}"),
                hoverinfo="text",
                showlegend=False,
            )
        )
    nodes = sorted({n.split("<")[0] for e in edges for n in e.split("->")})
    xy = [where(n) for n in nodes]
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in xy],
            y=[p[1] for p in xy],
            mode="markers+text",
            text=nodes,
            textposition="top center",
            marker={"size": 12, "color": "#444"},
            hoverinfo="text",
            showlegend=False,
        )
    )
    fig.update_layout(
        title=plotly_text(title),
        xaxis={"title": "layer", "tickvals": list(range(-1, g.n_layers + 1)),
               "ticktext": ["input", *[str(i) for i in range(g.n_layers)], "logits"]},
        yaxis={"title": "head (MLPs on top)", "zeroline": False},
        template="plotly_white",
    )  # fmt: skip
    return fig
