"""§5 precise SFT: fine-tune only the key heads, against full SFT and LoRA on the same data and budget.

Training is :mod:`headscope.tuning` (head slices under a masked optimiser, full SFT, peft
LoRA). What a tuned model is trained on and judged by arrives as a
:class:`~headscope.tasks.arithmetic.TuneSuite` (training pairs, held-out and unseen
arithmetic rows, other measures of general ability, text for KL), so the comparison runs
on any Llama-family model with the researcher's own data;
:func:`headscope.tasks.arithmetic.organism_tune_suite` is the bundled organism's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from torch import nn

from headscope import tuning
from headscope.common.errors import HeadscopeError
from headscope.controls import next_token_kl, token_groups
from headscope.papers.arithmetic.prompts import accuracy_table
from headscope.results import Head
from headscope.tasks.arithmetic import TuneSuite


def evaluate_tuned(
    hf: nn.Module, tokenizer, suite: TuneSuite, base_hf: nn.Module | None = None, backend: str = "tl"
) -> dict[str, float]:
    """Arithmetic accuracy (held-out per operator, unseen phrasings overall and per operator),
    ``suite.general`` (e.g. facts QA and chat rates) and, with ``base_hf``, ``kl_vs_base``.

    ``kl_vs_base``: :func:`headscope.controls.next_token_kl` with ``positions="all"`` —
    mean KL(base ‖ tuned) of the next-token distributions at every position of
    ``suite.kl_texts`` (grouped by length, batches of 64, no padding).
    """
    from headscope.loading import wrap

    hm = wrap(hf, tokenizer, backend, name="tuned", copy_model=True)
    out: dict[str, float] = {}
    for k, v in accuracy_table(hm, suite.heldout).items():
        if k.startswith("op:"):
            out[f"arith_{k[3:]}_heldout"] = v
    for k, v in accuracy_table(hm, suite.unseen).items():
        if k == "all" or k.startswith("op:"):
            out["unseen_" + ("all" if k == "all" else k[3:])] = v
    if suite.general is not None:
        out.update(suite.general(hm))
    if base_hf is not None:
        dev = next(base_hf.parameters()).device
        tuned_dev = next(hf.parameters()).device
        out["kl_vs_base"] = next_token_kl(
            lambda x: base_hf(input_ids=x).logits,
            lambda x: hf(input_ids=x.to(tuned_dev)).logits,
            token_groups(suite.kl_texts, tokenizer, batch_size=64, device=dev),
            positions="all",
        )
    return out


def tune_one(
    base_hf: nn.Module,
    tokenizer,
    method: str,
    examples: Sequence[tuple[str, str]],
    cfg: tuning.TuneConfig | None = None,
    heads: Sequence[Head] = (),
    lora_r: int = 4,
    projections: str | Sequence[str] = "auto",
) -> tuple[nn.Module, dict]:
    """Fine-tune a copy of ``base_hf`` with one method (``heads`` = precise SFT, ``full``,
    ``lora``); returns (tuned HF model, log dict with trainable parameters, time per step and,
    for ``heads``, ``untouched_bit_identical``).

    Precise SFT (§5): only the q/k/v/o slices of ``heads`` train (q and o for grouped-query
    models), with the gradient rescaled by ``H / h`` (all heads over selected heads).
    """
    cfg = cfg or tuning.TuneConfig()
    model = copy.deepcopy(base_hf)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    if method == "heads":
        if not heads:
            raise HeadscopeError("precise SFT needs the key heads; run identify first or pass heads")
        conf = getattr(model, "config", None)
        if conf is None:
            raise HeadscopeError("precise SFT needs a Hugging Face causal LM with a config (Llama family)")
        n_all = int(conf.num_hidden_layers) * int(conf.num_attention_heads)
        cfg = replace(cfg, grad_scale=n_all / len({tuple(h) for h in heads}))
    st = tuning.setup(model, method, cfg, heads=heads, projections=projections, lora_r=lora_r)
    log = tuning.train(st, tokenizer, examples, cfg, name=method)
    tuned = st.finish()
    d = log.to_dict()
    d.pop("losses")
    d["final_loss"] = sum(log.losses[-10:]) / len(log.losses[-10:])
    if method == "heads":
        masks = tuning.head_masks(tuned, heads, projections)
        d["untouched_bit_identical"] = tuning.untouched_identical(tuned, ref, masks)
        d["projections"] = list(tuning.resolve_projections(tuned, projections))
    return tuned, d


def tune(
    base_hf: nn.Module,
    tokenizer,
    suite: TuneSuite,
    heads: Sequence[Head],
    methods: Sequence[str] = ("heads", "full", "lora"),
    cfg: tuning.TuneConfig | None = None,
    lora_r: int = 4,
    out: str | Path | None = None,
    name: str = "model",
) -> dict:
    """Precise SFT of ``heads`` vs full SFT vs LoRA on the same data and budget (paper §5), with a table.

    Trains a copy of ``base_hf`` with each method on ``suite.examples``, evaluates the base
    and each tuned model with :func:`evaluate_tuned`, and (when ``out`` is given) writes
    ``out.json`` and ``out.md`` (:func:`tune_table`). ``name`` is recorded as the model.
    """
    bad = [m for m in methods if m not in tuning.METHODS]
    if bad:
        raise HeadscopeError(f"unknown tuning method(s) {bad}; use {', '.join(tuning.METHODS)}")
    if "heads" in methods and not heads:
        raise HeadscopeError("precise SFT needs the key heads; run identify first or pass heads")
    cfg = cfg or tuning.TuneConfig(steps=200, batch_size=32, lr=1e-3)
    res: dict = {
        "model": name,
        "heads": [list(h) for h in heads],
        "train_ops": list(suite.train_ops),
        "n_examples": len(suite.examples),
        "config": dict(cfg.__dict__),
        "lora_r": lora_r,
        "methods": {},
    }
    res["base"] = evaluate_tuned(base_hf, tokenizer, suite)
    res["base"]["kl_vs_base"] = 0.0
    for m in methods:
        tuned, log = tune_one(base_hf, tokenizer, m, suite.examples, cfg, heads=heads, lora_r=lora_r)
        res["methods"][m] = {"log": log, "eval": evaluate_tuned(tuned, tokenizer, suite, base_hf)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(tune_table(res) + "\n")
    return res


_TABLE_NAMES = {"heads": "precise SFT (key heads)", "full": "full SFT", "lora": "LoRA"}


def tune_table(res: dict) -> str:
    """Markdown table of a :func:`tune` result: one row per metric, one column per model."""
    cols = [("base", res["base"], None)] + [
        (_TABLE_NAMES.get(m, m), d["eval"], d["log"]) for m, d in res["methods"].items()
    ]
    keys = list(res["base"])
    lines = ["| metric | " + " | ".join(c for c, _, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{e.get(key, float('nan')):.3f}" for _, e, _ in cols) + " |")
    logs = [lg for _, _, lg in cols[1:] if lg is not None]
    lines.append(
        "| trainable params | – | "
        + " | ".join(f"{lg['n_trainable']:,} ({100 * lg['trainable_share']:.2f}%)" for lg in logs)
        + " |"
    )
    lines.append("| time per step (s) | – | " + " | ".join(f"{lg['time_per_step']:.4f}" for lg in logs) + " |")
    lines.append("| final train loss | – | " + " | ".join(f"{lg['final_loss']:.4f}" for lg in logs) + " |")
    return "\n".join(lines)


def tune_runs(
    base_hf: nn.Module,
    tokenizer,
    suite: TuneSuite,
    runs: Sequence[dict],
    cfg: tuning.TuneConfig,
    lora_r: int = 4,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train and evaluate one model per run (issue 16, item 6: several seeds per condition).

    Each run is ``{"label", "method", "seed", "heads" (for ``heads``)}``; the training seed
    (data order, LoRA init) is ``cfg.seed = run["seed"]``. Returns one row per run with the
    log and :func:`evaluate_tuned`'s scores; ``on_row`` is called after each (to save
    partial results).
    """
    out = []
    for run in runs:
        if run["method"] not in tuning.METHODS:
            raise HeadscopeError(f"unknown tuning method {run['method']!r}; use {', '.join(tuning.METHODS)}")
        c = replace(cfg, seed=int(run["seed"]))
        tuned, log = tune_one(
            base_hf, tokenizer, run["method"], suite.examples, c, heads=run.get("heads", ()), lora_r=lora_r
        )
        row = {
            **{k: v for k, v in run.items() if k != "heads"},
            "heads": [list(h) for h in run.get("heads", ())],
            "log": log,
            "eval": evaluate_tuned(tuned, tokenizer, suite, base_hf),
        }
        out.append(row)
        if on_row is not None:
            on_row(row)
    return out


def seed_summary(rows: Sequence[dict], metric: str) -> dict:
    """Per label: :func:`headscope.stats.over_seeds` of ``metric`` over that label's runs."""
    from headscope.stats import over_seeds

    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(float(r["eval"][metric]))
    return {label: over_seeds(v).to_dict() for label, v in by.items()}
