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
from headscope.common.plotting import heatmap, save_figure

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
        """The ``k`` heads with the largest score, as ``(layer, head, score)``.

        ``by="abs"``: largest magnitude; ``"value"``: largest; ``"neg"``: most negative.
        """
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
        """``path.json`` (everything) and, with ``figure``, ``path_heatmap.html``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        js = path.with_suffix(".json")
        js.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        files = [js]
        if figure:
            files += self.scores.save_figure(path.with_name(path.stem + "_heatmap"))
        return files

    @classmethod
    def load(cls, path: str | Path) -> HeadSelection:
        d = json.loads(Path(path).with_suffix(".json").read_text())
        known = {"heads", "rule", "share", "scores", "info"}
        res = HeadResult(torch.tensor(d["scores"]), ("layer", "head"), {}, d.get("info", {}))
        return cls(
            res, [tuple(h) for h in d["heads"]], d.get("rule", ""), {k: v for k, v in d.items() if k not in known}
        )
