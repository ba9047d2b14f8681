"""Result objects: a tensor with named axes plus labels; JSON/safetensors out, plotly figure.

- :class:`HeadResult`: scores over (layer, head[, pos]) with labels and run information;
- :class:`HeadSelection`: scores + the heads chosen from them + the rule that chose them,
  the one identification result of every paper (arithmetic, SPT, SAC) and of the CLI;
- :func:`parse_head` / :func:`format_head`: the one head syntax (``L2H7`` or ``2.7``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.io import atomic_write_bytes, nan_for_null, write_json
from headscope.common.plotting import head_map_trace, heatmap, plotly_text, save_figure, symmetric_limit

Head = tuple[int, int]
_HEAD_FORMS = (re.compile(r"^[Ll](\d+)[Hh](\d+)$"), re.compile(r"^(\d+)[.:](\d+)$"))


def parse_head(value: Any, where: str = "head") -> Head:
    """``"L9H6"``, ``"9.6"``, ``"9:6"`` or ``[9, 6]`` → ``(9, 6)``; anything else is a HeadscopeError."""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    if isinstance(value, str):
        for rx in _HEAD_FORMS:
            m = rx.match(value.strip())
            if m:
                return int(m.group(1)), int(m.group(2))
    raise HeadscopeError(f"{where}: unknown head format {value!r}; write a head as 'L9H6', '9.6' or [9, 6]")


def format_head(head: Head) -> str:
    """``(9, 6)`` → ``"L9H6"``."""
    return f"L{head[0]}H{head[1]}"


@dataclass
class HeadResult:
    """Scores over (layer, head[, pos]) or (layer[, pos]).

    ``axes`` names the dimensions of ``scores`` in order, e.g. ``("layer", "head")`` or
    ``("layer", "pos", "head")``; ``labels`` maps an axis to its tick labels (``pos`` →
    the prompt's tokens); ``info`` holds method, model, task, clean/corrupt metrics...

    Per-position results (a ``pos`` axis) are read per head by summing over positions
    (:meth:`by_head`, :meth:`top`, :meth:`table`, the layer × head views), or at one
    position with ``pos=``.
    """

    scores: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.ndim != len(self.axes):
            raise ValueError(f"scores have {self.scores.ndim} dims but axes {self.axes}")

    def __repr__(self) -> str:
        parts = [f"axes={self.axes}", f"shape={tuple(self.scores.shape)}"]
        for key in ("method", "model", "task", "metric_name"):
            if self.info.get(key) not in (None, ""):
                parts.append(f"{key.removesuffix('_name')}={self.info[key]!r}")
        if "head" in self.axes and self.scores.numel():
            top = ", ".join(f"{format_head((L, h))} {v:+.3g}" for L, h, v in self.top(3))
            parts.append(f"top=[{top}]" + (" (summed over pos)" if "pos" in self.axes else ""))
        return f"HeadResult({', '.join(parts)})"

    # -- views ---------------------------------------------------------------------
    def _position(self, pos: int) -> int:
        P = self.scores.shape[self.axes.index("pos")]
        if not -P <= pos < P:
            raise HeadscopeError(f"position {pos} out of range: this result has {P} positions (0..{P - 1})")
        return pos % P

    def by_head(self, pos: int | None = None) -> Tensor:
        """``[layer, head]`` scores: summed over ``pos`` when the result has that axis, or
        read at one position with ``pos=`` (negative counts from the end)."""
        s = self.scores
        if "pos" in self.axes:
            i = self.axes.index("pos")
            s = s.sum(i) if pos is None else s.select(i, self._position(pos))
        elif pos is not None:
            raise HeadscopeError(f"pos= needs a per-position result; this one has axes {self.axes}")
        return s

    def top(self, k: int = 10, by: str = "abs", pos: int | None = None) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest score, as ``(layer, head, score)``.

        ``by="abs"``: largest magnitude; ``"value"``: largest; ``"neg"``: most negative.
        On a per-position result the score of a head is its sum over all positions,
        unless ``pos`` picks one position. Heads whose score is NaN rank last and are
        left out.
        """
        if "head" not in self.axes:
            raise ValueError("top() needs a head axis")
        if by not in ("abs", "value", "neg"):
            raise HeadscopeError(f"unknown order {by!r}; use abs, value or neg")
        s = self.by_head(pos)
        key = {"abs": s.abs(), "value": s, "neg": -s}[by]
        key = torch.nan_to_num(key.float(), nan=float("-inf"))  # heads that were not scored rank last
        k = min(k, int(torch.isfinite(key).sum()))
        flat = key.flatten().argsort(descending=True)[:k]
        H = s.shape[1]
        return [(int(i) // H, int(i) % H, float(s.flatten()[i])) for i in flat]

    def table(self, k: int = 10, by: str = "abs", pos: int | None = None) -> str:
        """:meth:`top` as a text table; a per-position result says whether it was summed
        over positions or read at ``pos``."""
        rows = []
        if "pos" in self.axes:
            P = self.scores.shape[self.axes.index("pos")]
            if pos is None:
                rows.append(f"scores summed over all {P} positions (pass pos= to read one)")
            else:
                p = self._position(pos)
                tok = (self.labels.get("pos") or [""] * P)[p]
                rows.append(f"scores at position {p}" + (f" ({tok})" if tok else ""))
        rows.append(f"{'rank':>4}  {'head':<7} {'score':>9}")
        for r, (L, H, v) in enumerate(self.top(k, by, pos), 1):
            rows.append(f"{r:>4}  L{L}H{H:<4} {v:>9.4f}")
        return "\n".join(rows)

    # -- output --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything as JSON-able Python (scores as nested lists; NaN stays NaN here, the
        writers turn it into ``null``)."""
        return {
            "axes": list(self.axes),
            "shape": list(self.scores.shape),
            "scores": self.scores.tolist(),
            "labels": self.labels,
            "info": self.info,
        }

    def save(self, path: str | Path) -> list[Path]:
        """Write ``path.json`` (scores + labels + info) and ``path.safetensors``.

        The JSON is strict (NaN and infinities are written as ``null``; :meth:`load` reads
        them back as NaN) and both files are written atomically: a crash leaves either the
        old file or the new one, never half of one.
        """
        from safetensors.torch import save

        path = Path(path)
        js = write_json(path.with_suffix(".json"), self.to_dict())
        st = atomic_write_bytes(
            path.with_suffix(".safetensors"),
            save({"scores": self.scores.contiguous().float().cpu()}, metadata={"axes": ",".join(self.axes)}),
        )
        return [js, st]

    @classmethod
    def load(cls, path: str | Path) -> HeadResult:
        """Read a result written by :meth:`save` (``null`` scores become NaN)."""
        d = json.loads(Path(path).with_suffix(".json").read_text())
        scores = torch.tensor(nan_for_null(d["scores"]), dtype=torch.float32)
        return cls(scores, tuple(d["axes"]), d.get("labels", {}), d.get("info", {}))

    def title(self, title: str | None = None) -> str:
        """The figure title: ``title`` (or ``info["title"]``, or the method) over a line
        naming model, task, metric and method, each where ``info`` has it."""
        info = self.info
        method = str(info.get("method", "")).replace("_", " ")
        main = title or info.get("title") or method or "head scores"
        facts = [f"{k}: {info[k]}" for k in ("model", "task") if info.get(k)]
        if info.get("metric_name"):
            facts.append(f"metric: {info['metric_name']}")
        if method and method not in main:
            facts.append(f"method: {method}")
        if "pos" in self.axes and "head" in self.axes:
            facts.append(f"{self.scores.shape[self.axes.index('pos')]} positions")
        main = plotly_text(main)
        return main + (f"<br><sup>{plotly_text(' · '.join(facts))}</sup>" if facts else "")

    def figure(self, title: str | None = None, pos: int | None = None, layout: str = "auto"):
        """Plotly figure of the result.

        - ``(layer, head)``: a layer × head heatmap;
        - ``(layer, pos, head)``: ``layout="rows"``: one (layer·head) × position heatmap, a
          row per head; ``"slider"``: one layer × head map with a slider over positions;
          ``"auto"``: rows up to 256 heads, the slider beyond (both work for any number of
          positions); with ``pos=`` the layer × head map at that one position;
        - ``(layer, pos)``: a layer × position heatmap; ``(layer,)``: one column.

        The title names model, task, metric and method where ``info`` has them.
        """
        if layout not in ("auto", "rows", "slider"):
            raise HeadscopeError(f"unknown figure layout {layout!r}; use auto, rows or slider")
        full = self.title(title)
        metric = self.info.get("metric_name", "score")
        if self.axes == ("layer", "pos", "head") and pos is None:
            n_heads = self.scores.shape[0] * self.scores.shape[2]
            if layout == "slider" or (layout == "auto" and n_heads > 256):
                return self._slider_figure(full)
            return self._per_position_figure(full)
        if "head" in self.axes:
            return heatmap(self.by_head(pos), title=full, colorbar_title=metric)
        if self.axes == ("layer", "pos"):
            labels = self.labels.get("pos")
            xs = [f"{i}:{t}" for i, t in enumerate(labels)] if labels else None
            return heatmap(
                self.scores,
                x_labels=xs,
                x_title="position",
                title=full,
                hover_name="L{y} pos {x}",
                colorbar_title=metric,
            )
        s = self.scores.reshape(-1, 1) if self.scores.ndim == 1 else self.scores
        return heatmap(s, title=full, x_title="", hover_name="L{y}", colorbar_title=metric)

    def _per_position_figure(self, title: str):
        """(layer·head) × position heatmap: a row per head (``L0H0``, ``L0H1``...), a column
        per position (``i:token``), thin lines between layers, one symmetric colour scale."""
        L, P, H = self.scores.shape
        labels = self.labels.get("pos") or [""] * P
        xs = [f"{i}:{t}" if t else str(i) for i, t in enumerate(labels)]
        ys = [format_head((layer, h)) for layer in range(L) for h in range(H)]
        z = self.scores.permute(0, 2, 1).reshape(L * H, P)
        fig = heatmap(
            z,
            x_labels=xs,
            y_labels=ys,
            x_title="position",
            y_title="head",
            title=title,
            hover_name="{y} at {x}",
            colorbar_title=self.info.get("metric_name", "score"),
            width=min(4000, max(700, 260 + 16 * P)),
            height=min(4000, max(450, 220 + 18 * L * H)),
        )
        for layer in range(1, L):  # a line between layers (categories sit at 0, 1, ...)
            fig.add_hline(y=layer * H - 0.5, line_width=1, line_color="#555")
        fig.update_xaxes(tickangle=-90 if P > 12 else 0)
        return fig

    def _slider_figure(self, title: str):
        """Layer × head heatmap of one position at a time, chosen with a slider (one trace
        per position; one symmetric colour scale over all of them)."""
        import plotly.graph_objects as go

        L, P, H = self.scores.shape
        labels = self.labels.get("pos") or [""] * P
        names = [plotly_text(f"{i}:{t}" if t else str(i)) for i, t in enumerate(labels)]
        lim = symmetric_limit(self.scores)
        metric = plotly_text(self.info.get("metric_name", "score"))
        fig = go.Figure()
        for p in range(P):
            fig.add_trace(
                head_map_trace(
                    self.scores[:, p],
                    lim,
                    visible=p == 0,
                    colorbar=dict(title=metric),
                    name=names[p],
                    hovertemplate=f"L%{{y}}H%{{x}} at {names[p]}<br>{metric}: %{{z:.4f}}<extra></extra>",
                )
            )
        steps = [
            dict(method="update", label=names[p], args=[{"visible": [q == p for q in range(P)]}]) for p in range(P)
        ]
        fig.update_layout(
            title=title,
            template="plotly_white",
            xaxis=dict(title="head", type="category"),
            yaxis=dict(title="layer", type="category", autorange="reversed"),
            sliders=[dict(active=0, currentvalue=dict(prefix="position "), pad=dict(t=50), steps=steps)],
            width=min(2000, max(700, 260 + 24 * H)),
            height=min(2400, max(550, 300 + 20 * L)),
        )
        return fig

    def save_figure(self, path: str | Path, png: bool = False) -> list[Path]:
        """:meth:`figure` as ``path.html`` (and ``path.png`` with ``png``), written atomically."""
        return save_figure(self.figure(), path, png=png)


def select_heads(
    scores: Tensor,
    *,
    by: str = "neg",
    k: int | None = None,
    threshold: float | None = None,
    max_share: float | None = None,
) -> list[Head]:
    """Choose heads from ``[layer, head]`` scores.

    ``by``: ``"neg"`` (most negative first), ``"value"`` (largest first) or ``"abs"``
    (largest magnitude first). ``k``: exactly the first ``k``. Otherwise every head past
    ``threshold`` (``score <= threshold`` for ``neg``, ``>=`` for ``value``, ``|score| >=``
    for ``abs``), at most ``max_share`` of all heads. NaN scores are never chosen.
    """
    if by not in ("neg", "value", "abs"):
        raise HeadscopeError(f"unknown selection order {by!r}; use neg, value or abs")
    L, H = scores.shape
    flat = scores.flatten().float()
    key = {"neg": flat, "value": -flat, "abs": -flat.abs()}[by]
    key = torch.nan_to_num(key, nan=float("inf"))
    order = [i for i in key.argsort(stable=True).tolist() if torch.isfinite(flat[i])]
    if k is not None:
        if not 1 <= k <= L * H:
            raise HeadscopeError(f"k must be in 1..{L * H}, got {k}")
        return [(i // H, i % H) for i in order[:k]]
    if threshold is None:
        raise HeadscopeError("select_heads needs k or threshold")
    passes = {
        "neg": lambda v: v <= threshold,
        "value": lambda v: v >= threshold,
        "abs": lambda v: abs(v) >= threshold,
    }[by]
    picked = [(i // H, i % H) for i in order if passes(float(flat[i]))]
    if max_share is not None:
        if not 0 < max_share <= 1:
            raise HeadscopeError(f"max_share must be in (0, 1], got {max_share}")
        picked = picked[: max(1, int(max_share * L * H))]
    return picked


@dataclass
class HeadSelection:
    """Scores of every head, the heads chosen from them, and how they were chosen.

    The identification result of every paper and of ``headscope * identify``:
    ``scores`` is a ``("layer", "head")`` :class:`HeadResult`; ``heads`` the chosen heads
    in rank order; ``rule`` says how (e.g. ``"relative score <= -0.05"`` or ``"top 4 by
    |score|"``); ``extra`` holds method-specific JSON-able results (MLP scores,
    per-group metrics...).
    """

    scores: HeadResult
    heads: list[Head]
    rule: str
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "head" not in self.scores.axes:
            raise HeadscopeError(f"a head selection needs layer x head scores, got axes {self.scores.axes}")
        self.heads = [(int(L), int(h)) for L, h in self.heads]

    @property
    def share(self) -> float:
        """Share of all heads that were chosen."""
        return len(self.heads) / self.scores.by_head().numel()

    def top(self, k: int, by: str = "neg") -> list[Head]:
        """The ``k`` heads ranked first by the scores (``by`` as in :func:`select_heads`), chosen or not."""
        return select_heads(self.scores.by_head(), by=by, k=k)

    def __repr__(self) -> str:
        shown = ", ".join(format_head(h) for h in self.heads[:8]) + (" ..." if len(self.heads) > 8 else "")
        return f"HeadSelection({len(self.heads)} heads [{shown}], rule={self.rule!r})"

    def to_dict(self) -> dict:
        return {
            "heads": [list(h) for h in self.heads],
            "rule": self.rule,
            "share": self.share,
            "scores": self.scores.scores.tolist(),
            "info": self.scores.info,
            **self.extra,
        }

    def save(self, path: str | Path, figure: bool = True) -> list[Path]:
        """``path.json`` (everything) and, with ``figure``, ``path_heatmap.html``.

        Strict JSON (NaN → ``null``), written atomically, as :meth:`HeadResult.save`.
        """
        path = Path(path)
        files = [write_json(path.with_suffix(".json"), self.to_dict())]
        if figure:
            files += self.scores.save_figure(path.with_name(path.stem + "_heatmap"))
        return files

    @classmethod
    def load(cls, path: str | Path) -> HeadSelection:
        d = json.loads(Path(path).with_suffix(".json").read_text())
        known = {"heads", "rule", "share", "scores", "info"}
        scores = torch.tensor(nan_for_null(d["scores"]), dtype=torch.float32)
        res = HeadResult(scores, ("layer", "head"), {}, d.get("info", {}))
        return cls(
            res, [tuple(h) for h in d["heads"]], d.get("rule", ""), {k: v for k, v in d.items() if k not in known}
        )
