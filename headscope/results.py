"""Result objects: a tensor with named axes plus labels; JSON/safetensors out, plotly figure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from headscope.common.plotting import heatmap, save_figure


@dataclass
class HeadResult:
    """Scores over (layer, head[, pos]) or (layer[, pos]).

    ``axes`` names the dimensions of ``scores`` in order, e.g. ``("layer", "head")`` or
    ``("layer", "pos", "head")``; ``labels`` maps an axis to its tick labels (``pos`` →
    the prompt's tokens); ``info`` holds method, model, task, clean/corrupt metrics...
    """

    scores: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.ndim != len(self.axes):
            raise ValueError(f"scores have {self.scores.ndim} dims but axes {self.axes}")

    # -- views ---------------------------------------------------------------------
    def by_head(self) -> Tensor:
        """``[layer, head]`` scores (summed over ``pos`` when present)."""
        s = self.scores
        if "pos" in self.axes:
            s = s.sum(self.axes.index("pos"))
        return s

    def top(self, k: int = 10, by: str = "abs") -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest score (``by="abs"``: largest magnitude; ``"value"``: largest; ``"neg"``: most negative)."""
        if "head" not in self.axes:
            raise ValueError("top() needs a head axis")
        s = self.by_head()
        key = {"abs": s.abs(), "value": s, "neg": -s}[by]
        key = torch.nan_to_num(key.float(), nan=float("-inf"))  # heads that were not scored rank last
        k = min(k, int(torch.isfinite(key).sum()))
        flat = key.flatten().argsort(descending=True)[:k]
        H = s.shape[1]
        return [(int(i) // H, int(i) % H, float(s.flatten()[i])) for i in flat]

    def table(self, k: int = 10, by: str = "abs") -> str:
        rows = [f"{'rank':>4}  {'head':<7} {'score':>9}"]
        for r, (L, H, v) in enumerate(self.top(k, by), 1):
            rows.append(f"{r:>4}  L{L}H{H:<4} {v:>9.4f}")
        return "\n".join(rows)

    # -- output --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "axes": list(self.axes),
            "shape": list(self.scores.shape),
            "scores": self.scores.tolist(),
            "labels": self.labels,
            "info": self.info,
        }

    def save(self, path: str | Path) -> list[Path]:
        """Write ``path.json`` (scores + labels + info) and ``path.safetensors``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        js = path.with_suffix(".json")
        js.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        st = path.with_suffix(".safetensors")
        save_file({"scores": self.scores.contiguous().float().cpu()}, str(st), metadata={"axes": ",".join(self.axes)})
        return [js, st]

    @classmethod
    def load(cls, path: str | Path) -> HeadResult:
        d = json.loads(Path(path).with_suffix(".json").read_text())
        return cls(torch.tensor(d["scores"]), tuple(d["axes"]), d.get("labels", {}), d.get("info", {}))

    def figure(self, title: str | None = None):
        """Plotly heatmap: layer × head (or layer × pos for layer sites; per-position head
        results are shown summed over positions)."""
        title = title or self.info.get("title", "")
        if self.axes == ("layer", "pos", "head"):
            return self._per_position_figure(title)
        if "head" in self.axes:
            return heatmap(self.by_head(), title=title, colorbar_title=self.info.get("metric_name", "score"))
        if self.axes == ("layer", "pos"):
            pos = self.labels.get("pos")
            xs = [f"{i}:{t}" for i, t in enumerate(pos)] if pos else None
            return heatmap(
                self.scores,
                x_labels=xs,
                x_title="position",
                title=title,
                hover_name="L{y} pos {x}",
                colorbar_title=self.info.get("metric_name", "score"),
            )
        s = self.scores.reshape(-1, 1) if self.scores.ndim == 1 else self.scores
        return heatmap(s, title=title, x_title="", hover_name="L{y}")

    def _per_position_figure(self, title: str):
        """One layer × head panel per position, sharing a symmetric colour scale."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        P = self.scores.shape[1]
        pos = self.labels.get("pos") or [str(i) for i in range(P)]
        lim = float(torch.nan_to_num(self.scores).abs().max()) or 1.0
        fig = make_subplots(
            rows=1, cols=P, subplot_titles=[f"{i}: {t}" for i, t in enumerate(pos)], horizontal_spacing=0.02
        )
        for p in range(P):
            fig.add_trace(
                go.Heatmap(
                    z=self.scores[:, p].numpy(),
                    colorscale="RdBu",
                    reversescale=True,
                    zmin=-lim,
                    zmax=lim,
                    zmid=0,
                    showscale=p == P - 1,
                    colorbar=dict(title=self.info.get("metric_name", "score")),
                    hovertemplate=f"pos {p} ({pos[p]})<br>L%{{y}}H%{{x}}: %{{z:.4f}}<extra></extra>",
                ),
                row=1,
                col=p + 1,
            )
            fig.update_yaxes(
                autorange="reversed", showticklabels=p == 0, title_text="layer" if p == 0 else None, row=1, col=p + 1
            )
            fig.update_xaxes(title_text="head", row=1, col=p + 1)
        fig.update_layout(title=title, template="plotly_white", width=max(700, 220 * P))
        return fig

    def save_figure(self, path: str | Path, png: bool = False) -> list[Path]:
        return save_figure(self.figure(), path, png=png)
