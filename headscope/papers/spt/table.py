"""§5 results table: every method tuned on the same data and budget, evaluated, in the paper's layout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from headscope.common.progress import log
from headscope.results import Head
from headscope.tasks.sycophancy import SycophancyData
from headscope.tuning import TuneConfig, TuneLog

from .evaluate import evaluate
from .tune import METHODS, tune, tuning_data

COLUMNS = [
    ("first_correct", "1st answer correct", 100),
    ("confidence", "Conf.", 100),
    ("truthfulness", "Truth.", 100),
    ("confidence_ood", "Conf. (OOD)", 100),
    ("truthfulness_ood", "Truth. (OOD)", 100),
    ("retract", "Apologise after wrong 1st", 100),
    ("retract_correct", "…and correct it", 100),
    ("arith_add", "add", 100),
    ("arith_sub", "sub", 100),
    ("arith_mul", "mul", 100),
    ("arith_div", "div", 100),
    ("facts", "facts", 100),
    ("harmful_compliance", "harm. compl.", 100),
    ("premise_acceptance", "false prem.", 100),
    ("kl", "KL", 1),
]
LABELS = {
    "base": "Original (llama organism)",
    "spt": "SPT (selected heads)",
    "random_heads": "Random heads (same number)",
    "full_sft": "Full SFT",
    "lora": "LoRA r16 (all layers)",
    "lora_layers": "LoRA r16 (selected heads' layers)",
}


def markdown_table(rows: dict[str, dict], labels: dict[str, str] | None = None) -> str:
    """The results in the paper's layout: one row per method; sycophancy, general ability, side effects, cost.

    ``labels`` override :data:`LABELS` for the row names.
    """
    names = LABELS | (labels or {})
    head = ["Method", "Trainable params", "%"] + [c[1] for c in COLUMNS] + ["s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in rows.items():
        cells = [names.get(key, key), f"{r.get('n_trainable', 0):,}", f"{100 * r.get('trainable_share', 0):.2f}"]
        for k, _, scale in COLUMNS:
            v = r.get(k)
            cells.append("–" if v is None else (f"{v:.4f}" if scale == 1 else f"{scale * v:.1f}"))
        cells.append(f"{r['time_per_step']:.3f}" if r.get("time_per_step") else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    rows: dict[str, dict], extra: dict, out: str | Path, labels: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """``out``.json (rows + identification, knockout, attention...) and ``out``.md (the table)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    js, md = out.with_suffix(".json"), out.with_suffix(".md")
    js.write_text(json.dumps({"rows": rows, **extra}, indent=1, default=float) + "\n")
    md.write_text(markdown_table(rows, labels))
    return js, md


def tuned_row(model: torch.nn.Module, tokenizer, tlog: TuneLog, data: SycophancyData, base_hf, backend: str) -> dict:
    """:func:`evaluate` of a tuned model plus its cost (trainable parameters, s/step, final loss, info)."""
    row: dict = evaluate(model, tokenizer, data, base_hf, backend=backend)
    row.update(
        n_trainable=tlog.n_trainable,
        trainable_share=tlog.n_trainable / tlog.n_total,
        time_per_step=tlog.time_per_step,
        final_loss=sum(tlog.losses[-10:]) / len(tlog.losses[-10:]),
        info=tlog.info,
    )
    return row


def run_table(
    base_hf: torch.nn.Module,
    tokenizer,
    heads: Sequence[Head],
    data: SycophancyData,
    cfg: TuneConfig | None = None,
    methods: Sequence[str] = METHODS,
    n_examples: int = 2000,
    seed: int = 0,
    save_dir: str | Path | None = None,
    backend: str = "tl",
) -> dict[str, dict]:
    """Tune every method on the same data and budget and evaluate each; rows keyed by method (+ ``base``).

    ``seed`` seeds the tuning data and the random-heads draw; with ``save_dir`` the SPT
    slices are written to ``save_dir/spt_heads.safetensors``.
    """
    from headscope.tuning import head_slices, save_slices

    cfg = cfg or TuneConfig(seed=seed)
    examples = tuning_data(data, n_examples, seed=seed)
    rows = {
        "base": {
            **evaluate(base_hf, tokenizer, data, base_hf, backend=backend),
            "n_trainable": 0,
            "trainable_share": 0.0,
        }
    }
    log(f"[spt] base: {json.dumps({k: round(v, 4) for k, v in rows['base'].items() if isinstance(v, float)})}")
    for method in methods:
        model, tlog = tune(base_hf, tokenizer, method, heads, examples, cfg, seed=seed)
        row = tuned_row(model, tokenizer, tlog, data, base_hf, backend)
        rows[method] = row
        log(
            f"[spt] {method}: confidence {row['confidence']:.3f} truthfulness {row['truthfulness']:.3f} "
            f"kl {row.get('kl', float('nan')):.4f}"
        )
        if save_dir is not None and method == "spt":
            save_slices(
                model,
                head_slices(model, heads),
                Path(save_dir) / "spt_heads.safetensors",
                {"heads": [list(h) for h in heads]},
            )
    return rows


__all__ = ["COLUMNS", "LABELS", "markdown_table", "run_table", "tuned_row", "write_results"]
