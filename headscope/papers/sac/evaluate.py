"""SAC §4: score each condition (a set of steering patches) on every task and on general ability.

A row holds the data's own measures (:attr:`SacData.measures <headscope.tasks.sac.SacData>`:
on the organism, TrustLLM-style exact-match rates, arithmetic and fact accuracy on
held-out items) plus ``kl_last``: the mean KL(unsteered ‖ steered) of the next-token
distribution after the last token of each held-out text
(:func:`headscope.controls.next_token_kl` with ``positions="last"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.controls import next_token_kl, token_groups
from headscope.model import HeadModel, Patch
from headscope.tasks.sac import SacData

KL = "kl_last"


def last_token_kl(model: HeadModel, texts: Sequence[str], patches: Sequence[Patch]) -> float:
    """Mean KL(unsteered ‖ steered) of the next-token distribution after each text's last token."""
    patches = list(patches)

    def steered(toks):
        return model.run_patched(toks, patches) if patches else model.logits(toks)

    return next_token_kl(model.logits, steered, token_groups(texts, model.tokenizer), positions="last")


def evaluate_condition(model: HeadModel, data: SacData, patches: Sequence[Patch]) -> dict[str, float]:
    """``data.measures`` under ``patches`` and the last-position KL to the unsteered model on ``data.kl_texts``."""
    out = dict(data.measures(model, list(patches)))
    out[KL] = last_token_kl(model, data.kl_texts, patches)
    return out


def evaluate_outcomes(
    model: HeadModel, data: SacData, conditions: Mapping[str, Sequence[Patch]], show_progress: bool = True
) -> dict[str, dict]:
    """Per named condition: ``{"outcomes": {measure: [bool per prompt]}, "rates": {measure: mean}, "kl_last": float}``.

    Needs :attr:`SacData.outcomes <headscope.tasks.sac.SacData>` (per-prompt results, for
    paired confidence intervals between conditions on the same prompts).
    """
    if data.outcomes is None:
        raise HeadscopeError("this SAC data has no per-prompt outcomes; give SacData(outcomes=...)")
    names = list(conditions)
    it = progress(names, desc="sac evaluate") if show_progress else names
    out = {}
    for n in it:
        patches = list(conditions[n])
        oc = data.outcomes(model, patches)
        out[n] = {
            "outcomes": oc,
            "rates": {m: sum(v) / len(v) for m, v in oc.items()},
            KL: last_token_kl(model, data.kl_texts, patches),
        }
    return out


def evaluate_all(
    model: HeadModel, data: SacData, conditions: Mapping[str, Sequence[Patch]], show_progress: bool = True
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_condition` for every named condition (e.g. ``"none": []``, ``"sac:all": patches``)."""
    names = list(conditions)
    it = progress(names, desc="sac evaluate") if show_progress else names
    return {n: evaluate_condition(model, data, conditions[n]) for n in it}


def conflict_summary(
    rows: dict[str, dict[str, float]], data: SacData, method: str, base: str = "none"
) -> dict[str, dict[str, float]]:
    """Per task: gain of the single-task control (``method:task``) and of the all-tasks control (``method:all``)."""
    out = {}
    for t, task in data.tasks.items():
        single, multi = rows.get(f"{method}:{t}"), rows.get(f"{method}:all")
        if single is None or multi is None:
            continue
        m = task.measure
        out[t] = {"single_gain": single[m] - rows[base][m], "multi_gain": multi[m] - rows[base][m]}
    return out


def markdown_table(rows: dict[str, dict[str, float]], columns: Sequence[str] = ()) -> str:
    """One line per condition: ``columns`` (default: every measure of the first row) and the last-position KL."""
    first = next(iter(rows.values()))
    cols = [c for c in (columns or first) if c != KL] + [KL]
    head = "| condition | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols)
    lines = [head]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(c, r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _cell(col: str, v: float) -> str:
    if col != KL:
        return f"{v:.3f}"
    # a KL within float noise of 0 (it can come out as -1e-8) is shown as 0.0000, not -0.0000
    return f"{0.0 if abs(v) < 5e-5 else v:.4f}"
