"""Running circuit specs: ``check(spec)``, ``assert_circuit`` and the reports.

``check(path)`` reruns every analysis of a spec (:mod:`headscope.circuits.methods`) and
reports, per expected head, the measured score, its rank among all heads (by
``|score|``, 1 = strongest) and whether every expectation holds — and, as every results
table does (docs/design.md §6), the score's 95% interval over the prompts/inputs it was
computed on (n), and a placebo p-value: how often a head the spec does not name scores
at least as strongly (``|score|``; ``(1 + #) / (1 + m)`` over the m other heads).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from headscope.circuits.spec import METHODS, CheckSpec, CircuitSpec, Expectation, HeadSpec, load_spec
from headscope.common.errors import HeadscopeError
from headscope.results import HeadResult
from headscope.stats import Estimate, bootstrap_ci, placebo_p


# --------------------------------------------------------------------------------------
# running a spec
# --------------------------------------------------------------------------------------
@dataclass
class HeadCheck:
    """The measured result for one expected head."""

    spec: HeadSpec
    score: float
    rank: int
    failed: list[Expectation]
    ci: Estimate | None = None
    p: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass
class CheckReport:
    """One analysis: its [layer, head] scores and the per-head verdicts."""

    check: CheckSpec
    scores: Float[Tensor, " layer head"]
    heads: list[HeadCheck]
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(h.passed for h in self.heads)

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        s = torch.nan_to_num(self.scores, nan=0.0)
        H = s.shape[1]
        idx = s.abs().flatten().argsort(descending=True)[:k]
        return [(int(i) // H, int(i) % H, float(s.flatten()[i])) for i in idx]


@dataclass
class CircuitReport:
    """Every check of one spec; ``passed`` is False on any failing head; ``skipped`` holds
    the reason when the spec could not run here (``needs_weights`` and no local weights)."""

    spec: CircuitSpec
    checks: list[CheckReport] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.skipped is None and all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")

    def table(self) -> str:
        """A plain-text report: one block per check, one row per head, then the verdict."""
        s = self.spec
        lines = [f"circuit {s.name!r} ({s.where}): model {s.model}, backend {s.backend}"]
        if self.skipped:
            lines.append(f"SKIP: {self.skipped}")
            return "\n".join(lines)
        for c in self.checks:
            lines.append(
                f"check {c.check.index + 1}: {c.check.describe()}  [{c.seconds:.1f} s; top: "
                + ", ".join(f"L{L}H{h} {v:+.3f}" for L, h, v in c.top(3))
                + "]"
            )
            rw = max([4] + [len(h.spec.role) for h in c.heads])
            lines.append(
                f"  {'head':<7} {'role':<{rw}} {'score':>9} {'95% CI':>20} {'n':>4} {'rank':>5} {'p':>6}  "
                f"{'expect':<28} result"
            )
            for h in c.heads:
                exp = ", ".join(str(e) for e in h.spec.expect)
                res = "pass" if h.passed else "FAIL (" + ", ".join(str(e) for e in h.failed) + ")"
                ci = f"[{h.ci.lo:.4f}, {h.ci.hi:.4f}]" if h.ci else "–"
                n_txt = str(h.ci.n) if h.ci else "–"
                p = f"{h.p:.3f}" if h.p is not None else "–"
                lines.append(
                    f"  {h.spec.label:<7} {h.spec.role:<{rw}} {h.score:>9.4f} {ci:>20} {n_txt:>4} {h.rank:>5} {p:>6}  "
                    f"{exp:<28} {res}"
                )
        n = sum(len(c.heads) for c in self.checks)
        ok = sum(h.passed for c in self.checks for h in c.heads)
        lines.append(f"{self.status} ({ok}/{n} heads) in {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.where,
            "name": self.spec.name,
            "model": self.spec.model,
            "status": self.status,
            "skipped": self.skipped,
            "checks": [
                {
                    "method": c.check.method,
                    "options": c.check.options,
                    "passed": c.passed,
                    "seconds": c.seconds,
                    "heads": [
                        {
                            "head": h.spec.label,
                            "role": h.spec.role,
                            "score": h.score,
                            "ci": h.ci.to_dict() if h.ci else None,
                            "p_placebo": h.p,
                            "rank": h.rank,
                            "expect": [str(e) for e in h.spec.expect],
                            "passed": h.passed,
                        }
                        for h in c.heads
                    ],
                }
                for c in self.checks
            ],
        }


def ranks_by_abs(scores: Float[Tensor, " layer head"]) -> Tensor:
    """``[layer, head]`` ranks by ``|score|``: 1 + the number of heads with a strictly larger
    magnitude (ties share a rank; NaN, e.g. an unpatched layer, ranks last)."""
    a = torch.nan_to_num(scores.abs().float(), nan=-1.0)
    flat = a.flatten()
    return (1 + (flat[None, :] > flat[:, None]).sum(1)).reshape(scores.shape)


def _as_layer_head(out: HeadResult | Tensor, model, check: CheckSpec) -> tuple[Tensor, dict]:
    if isinstance(out, HeadResult):
        info = dict(out.info)
        s = out.by_head() if "head" in out.axes else None
        if s is None:
            raise HeadscopeError(
                f"method {check.method!r} returned scores with axes {out.axes}; a circuit check needs (layer, head)"
            )
    else:
        info, s = {}, torch.as_tensor(out)
    if tuple(s.shape) != (model.n_layers, model.n_heads):
        raise HeadscopeError(
            f"method {check.method!r} returned scores of shape {tuple(s.shape)}; expected [layer, head] = "
            f"{(model.n_layers, model.n_heads)}"
        )
    return s.detach().float().cpu(), info


def run_check(model, check: CheckSpec, intervals: bool = True) -> CheckReport:
    """Run one analysis on ``model`` and judge its heads (``intervals``: also each expected
    head's 95% interval over inputs, which is reported and never judged)."""
    for h in check.heads:
        if not (0 <= h.layer < model.n_layers and 0 <= h.head < model.n_heads):
            raise HeadscopeError(
                f"{check.circuit.where}: head {h.label} does not exist in {getattr(model, 'name', 'the model')} "
                f"({model.n_layers} layers x {model.n_heads} heads)"
            )
    t0 = time.perf_counter()
    scores, info = _as_layer_head(METHODS[check.method](model, check), model, check)
    per_input = info.pop("per_input", None)
    ranks = ranks_by_abs(scores)
    named = {(h.layer, h.head) for h in check.heads}
    others = [
        float(scores[L, H].abs())
        for L in range(scores.shape[0])
        for H in range(scores.shape[1])
        if (L, H) not in named and not bool(torch.isnan(scores[L, H]))
    ]
    cis: dict[tuple[int, int], Estimate] = {}
    if not intervals:
        pass
    elif per_input is not None:
        for h in check.heads:
            cis[h.layer, h.head] = bootstrap_ci(per_input[:, h.layer, h.head].double().numpy())
    elif check.method == "patching":
        cis = patching_interval(model, check)
    heads = []
    for h in check.heads:
        sc, rk = float(scores[h.layer, h.head]), int(ranks[h.layer, h.head])
        p = placebo_p(abs(sc), others, "greater") if others else None
        heads.append(HeadCheck(h, sc, rk, [e for e in h.expect if not e.holds(rk, sc)], cis.get((h.layer, h.head)), p))
    return CheckReport(check, scores, heads, time.perf_counter() - t0, info)


@torch.no_grad()
def patching_interval(model, check: CheckSpec) -> dict[tuple[int, int], Estimate]:
    """95% bootstrap intervals over prompts of each named head's activation-patching score.

    The sweep's score of head h is ``(m̄_h − m̄_corrupt) / (m̄_clean − m̄_corrupt)`` (minus 1
    when noising), each ``m̄`` a mean logit difference over the n prompts. Here the head
    is patched alone (one :class:`~headscope.model.Patch` per head, all positions or the
    check's ``pos``), per-prompt logit differences are kept, and the same ratio is
    recomputed on resampled prompt sets (BCa). Per-position checks without ``pos`` (scores
    summed over positions) get no interval.
    """
    from headscope.common.metrics import logit_diff
    from headscope.model import Patch

    per_pos = bool(check.opt("per_position", False))
    pos = check.opt("pos")
    if per_pos and pos is None:
        return {}
    mode = check.opt("mode", "denoise")
    batch = check.make_task().prepare(model)
    ans, wrong = batch.answer, batch.wrong
    cl_logits, cl_cache = model.run_with_heads(batch.clean, sites=("z",))
    co_logits, co_cache = model.run_with_heads(batch.corrupt, sites=("z",))

    def ld(logits: Tensor) -> np.ndarray:
        return logit_diff(logits, ans.to(logits.device), wrong.to(logits.device), reduce=False).double().cpu().numpy()

    m_cl, m_co = ld(cl_logits), ld(co_logits)
    src, dst = (cl_cache, batch.corrupt) if mode == "denoise" else (co_cache, batch.clean)
    shift = 1.0 if mode == "noise" else 0.0
    out: dict[tuple[int, int], Estimate] = {}
    for h in check.heads:
        z = src.z[h.layer][:, :, h.head]
        if per_pos:
            z = z[:, int(pos)]
        patch = Patch(h.layer, "z", head=h.head, pos=int(pos) if per_pos else None, mode="replace", value=z)
        m_p = ld(model.run_patched(dst, [patch]))

        def ratio(ix: np.ndarray, axis: int = -1, m_p: np.ndarray = m_p) -> np.ndarray:
            i = ix.astype(int)
            num = m_p[i].mean(axis) - m_co[i].mean(axis)
            return num / (m_cl[i].mean(axis) - m_co[i].mean(axis)) - shift

        out[h.layer, h.head] = bootstrap_ci(np.arange(len(m_p), dtype=float), ratio)
    return out


def weights_available(model: str) -> tuple[bool, str]:
    """Whether ``model`` loads without a network: a folder, a bundled organism, or a hub id
    whose config and weights are in the local Hugging Face cache. Returns (ok, reason)."""
    from headscope.paths import ORGANISMS

    if model.startswith(("tracr-", "tracr:")) or model in ORGANISMS or Path(model).expanduser().is_dir():
        return True, ""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False, "huggingface_hub is not installed"
    cfg = try_to_load_from_cache(model, "config.json")
    has_w = any(
        isinstance(try_to_load_from_cache(model, f), str)
        for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    )
    if isinstance(cfg, str) and has_w:
        return True, ""
    return (
        False,
        f"weights of {model!r} are not in the local Hugging Face cache (no network here); run once where the hub is "
        "reachable",
    )


_MODELS: dict[tuple[str, str, str], Any] = {}


def _get_model(spec: CircuitSpec, reuse: bool):
    from headscope.loading import load_model

    key = (spec.model, spec.backend, spec.device)
    if reuse and key in _MODELS:
        return _MODELS[key]
    model = load_model(spec.model, backend=spec.backend, device=spec.device)
    if reuse:
        _MODELS[key] = model
    return model


def check(
    spec: str | Path | CircuitSpec, model=None, reuse_models: bool = True, intervals: bool = True
) -> CircuitReport:
    """Rerun every analysis of a circuit spec and judge each expected head.

    Args:
        spec: a spec file path or a parsed :class:`CircuitSpec`.
        model: a HeadModel to use instead of loading ``spec.model``.
        reuse_models: keep loaded models in a per-process cache keyed by (model,
            backend, device), so that several specs on one model load it once.
            Analyses leave no intervention behind (every patch is removed on exit).
        intervals: give each expected head a 95% interval over inputs (reported, never
            judged; activation patching pays one patched run per head for it).

    Returns:
        A :class:`CircuitReport`; ``.passed`` is False when any head misses an
        expectation, ``.skipped`` says why a ``needs_weights`` spec did not run.
    """
    spec = spec if isinstance(spec, CircuitSpec) else load_spec(spec)
    t0 = time.perf_counter()
    if model is None and spec.needs_weights:
        ok, why = weights_available(spec.model)
        if not ok:
            return CircuitReport(spec, skipped=why)
    model = model if model is not None else _get_model(spec, reuse_models)
    reports = [run_check(model, c, intervals) for c in spec.checks]
    return CircuitReport(spec, reports, None, time.perf_counter() - t0)


def assert_circuit(spec: str | Path | CircuitSpec, model=None, intervals: bool = True) -> CircuitReport:
    """pytest helper: check the spec, skip (with the reason) when it needs absent weights,
    and fail with the whole report table when any head drifted::

        from headscope.circuits import assert_circuit

        def test_induction_circuit():
            assert_circuit("tests/circuits/induction.toml")
    """
    report = check(spec, model=model, intervals=intervals)
    if report.skipped:
        import pytest

        pytest.skip(report.skipped)
    if not report.passed:
        raise AssertionError("circuit drifted:\n" + report.table())
    return report
