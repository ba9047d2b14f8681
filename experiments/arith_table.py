"""Paper table: arithmetic heads on the `llama` organism, with held-out items, CIs and placebo heads (issue 16).

Regenerates the numbers quoted in docs/arithmetic.md (``headscope.papers.arithmetic``):

    python experiments/arith_table.py --stage main [--out docs/results/arith]   # identify, knockout, attention
    python experiments/arith_table.py --stage tune [--out docs/results/arith]   # precise SFT over seeds
    python experiments/arith_table.py --stage table [--out docs/results/arith]  # Markdown from the JSON only

Outputs (``--out docs/results/arith``): ``arith_main.json`` (splits, the three maps and
the union, knockout with every per-prompt outcome as a "0110…" string in the order of
``knockout.per_prompt.items``, attention per prompt), ``arith_identify{,_operator,_A,_B,
_union}.json``, ``arith_knockout.html``, ``arith_tune.json`` (every run: config, log,
scores), and the tables ``arith.md`` / ``arith_tune.md``.

``--stage tune`` reads the selected heads from ``arith_identify.json`` (written by
``--stage main``; with ``--wait`` it waits for main to write a new one, so both stages
can be started together). One
torch thread per stage. ``--every N`` keeps every N-th prompt and ``--draws``/``--seeds``/
``--steps`` shrink the run (timing/smoke runs only; the table is the default setting).

Protocol (fixed before the run; issue 16)
-----------------------------------------
Items and splits. An item is ``(op, A, B)`` (288 items: + 81, − 45, × 81, ÷ 81).
``headscope.splits.split_by_key`` on the item, salt "arith", fractions identify 0.4 /
fit 0.2 / evaluate 0.4 (``tasks.arithmetic.arith_splits``):

- identify: all 12 organism templates on the identify items, kept where the base model
  answers correctly (the paper's §3.1 filter);
- fit: the 6 held-out templates (``UNSEEN_TEMPLATES``, never in the corpus) on the fit
  items: the mean-ablation reference (per token length and position);
- evaluate: the 6 held-out templates on the evaluate items; knockout is scored on the
  ones the base model answers correctly; tuning on all of them (``unseen_*``) and on the
  organism templates' held-out combinations of evaluate items that are not verbatim in
  the corpus (``arith_*_heldout``);
- precise-SFT training data: the organism's training combinations of ÷ and × on the
  identify + fit items (never an evaluate item).
Known limit: every item also occurs in pretraining under the organism's templates
(organism v2; issue 17 fixes it).

1. Identification (§3.2): path patching head → logits, relative answer-logit score, key
   heads ≤ −5 %, 32 prompts per length group (seed 0), once per counterfactual:
   operator → null word/symbol (the paper), operand A → another number, operand B →
   another number; the union selects a head that passes under any of them. The claim
   "< 10 % of heads" is decided on the count: met iff #selected < 4.8, i.e. ≤ 4 of 48.
2. Knockout (§3.3), mean ablation on the evaluate split (correct prompts): every head
   alone (accuracy, Wilson 95 % CI, McNemar exact p vs the unablated model); and per
   condition (the selected heads of each map, the union, and the top-k of the union's
   ranking for k = 1, 2, 4, 8) the accuracy against ``--draws`` (default 50) placebo draws
   ``controls.random_heads(6, 8, k, seed=d, exclude=condition)``: placebo p
   (``stats.placebo_p``, alternative "less"), and the gap (mean placebo accuracy −
   selected accuracy, paired over prompts, bootstrap BCa 95 % CI). Bar (issue 4's
   acceptance): gap ≥ 30 points → met iff the gap's lower CI bound > 0.30. A head is
   "knockout-critical" iff its single-head accuracy's upper CI bound < 0.95; we report
   which maps select each critical head.
3. Attention (§3.4): per evaluate prompt, the union heads' mean share of last-position
   attention on operand + operator tokens minus the all-head mean; bootstrap CI; claim
   met iff lower bound > 0.
4. Precise SFT (§5): 200 steps × batch 32, AdamW lr 1e-3, warmup 10 (as before).
   Conditions: the union's selected heads ("selected"; if the union has more than 8
   heads, its top 8), ``--rand-draws`` (5) random-head draws of the same size
   (``random_heads(..., seed=d, exclude=selected)``), LoRA r = 4 and full SFT, training
   seeds 0..4. Order (``tune_plan``): selected(s) and random draw d = s trained with
   seed s for s = 0..4; LoRA and full SFT for seeds 0–2, then 3–4; then every other
   (draw, seed) pair. The table reports the runs completed and says which are missing.
   Rows: mean with a t 95 % CI over seeds (``stats.over_seeds``), per-seed rows in the JSON. Comparisons per seed
   (paired by seed): selected − base, selected − LoRA, selected − random (the mean over
   the draws trained with that seed), full − selected for KL. Rules: "improves ÷ over the
   base" met iff lower bound > 0; "at least as much as LoRA" met iff the lower bound of
   (selected − LoRA) > −0.02 (a 2-point non-inferiority margin, stated before the run);
   "better than random heads" met iff lower bound > 0, with the placebo p of the
   selected heads' mean against the draws' means; "moves general ability less than full
   SFT" met iff the lower bound of (KL_full − KL_selected) > 0. Chat rates are not
   measured (time); general ability = held-out facts QA + next-token KL on 200 held-out
   documents + held-out + and − accuracy.

Inspection of MLPs and transfer across styles/operators (§3.4–3.5) are not part of this
re-run: they selected and scored on the same prompts and are not re-done under the split
protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headscope.common.plotting import save_figure  # noqa: E402
from headscope.controls import random_heads  # noqa: E402
from headscope.papers import arithmetic as ar  # noqa: E402
from headscope.results import HeadSelection, format_head  # noqa: E402
from headscope.splits import check_disjoint  # noqa: E402
from headscope.stats import (  # noqa: E402
    Estimate,
    fmt_ci,
    md_table,
    over_seeds,
    paired_permutation_p,
    placebo_p,
    rate,
    verdict,
)
from headscope.tasks import arithmetic as tasks  # noqa: E402
from headscope.tuning import TuneConfig  # noqa: E402

KS = (1, 2, 4, 8)
CRITICAL_BAR = 0.95
GAP_BAR = 0.30
NONINFERIORITY = 0.02
MAX_TUNED = 8
MAPS = ("operator", "A", "B")


def _est(d: dict) -> Estimate:
    return Estimate(**d)


def _p(p: float) -> str:
    return f"{p:.3g}"


def _compact(obj):
    """Per-prompt outcomes as strings: a list of booleans → "0110…" (one character per
    prompt, in the order of ``per_prompt["items"]``); floats in per-prompt lists to 6 digits."""
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(x, bool) for x in obj):
        return "".join("1" if x else "0" for x in obj)
    if isinstance(obj, list) and len(obj) > 50 and all(isinstance(x, float) for x in obj):
        return [round(x, 6) for x in obj]
    if isinstance(obj, list):
        return [_compact(x) for x in obj]
    return obj


def _write(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_compact(obj), indent=1, default=str) + "\n")
    tmp.replace(path)


def _splits(every: int):
    sp = tasks.arith_splits()
    check_disjoint({k: set(v) for k, v in sp.items.items()})
    if every > 1:
        sp.identify, sp.evaluate, sp.fit = sp.identify[::every], sp.evaluate[::every], sp.fit[::every]
    return sp


# ---------------------------------------------------------------------------------------
# main stage: identify, knockout, attention


def stage_main(out: Path, args) -> dict:
    from headscope.loading import load_model
    from headscope.viz import knockout_plot

    t0 = time.time()
    sp = _splits(args.every)
    model = load_model("llama-v2", "tl")
    base_id = ar.correct_mask(model, sp.identify)
    base_ev = ar.correct_mask(model, sp.evaluate)
    ident = [r for r, ok in zip(sp.identify, base_id) if ok]
    evaluate = [r for r, ok in zip(sp.evaluate, base_ev) if ok]
    res: dict = {
        "protocol": __doc__,
        "args": vars(args),
        "splits": {
            "items": {k: len(v) for k, v in sp.items.items()},
            "identify_prompts": len(sp.identify),
            "fit_prompts": len(sp.fit),
            "evaluate_prompts": len(sp.evaluate),
            "tune_examples": len(sp.tune_examples),
            "tune_heldout": len(sp.tune_heldout),
        },
        "base": {
            "identify": rate(sum(base_id), len(base_id)).to_dict(),
            "evaluate": rate(sum(base_ev), len(base_ev)).to_dict(),
        },
    }
    print(f"splits {res['splits']}; base {res['base']}", flush=True)
    rows_by = {m: tasks.with_operand_corruption(ident, m) for m in MAPS}
    maps = ar.identify_maps(model, rows_by, max_per_group=args.per_group, mlps=True, show_progress=False)
    for name, sel in maps.items():
        sel.save(out.with_name(f"{out.name}_identify_{name}"), figure=False)
    maps["union"].save(out.with_name(out.name + "_identify"))
    res["identify"] = {
        name: {
            "heads": [format_head(h) for h in sel.heads],
            "k": len(sel.heads),
            "share": sel.share,
            "rule": sel.rule,
            "scores": sel.scores.scores.tolist(),
            "top10": [(f"L{L}H{h}", v) for L, h, v in sel.scores.top(10, by="neg")],
            "mlps": sel.extra.get("mlps"),
        }
        for name, sel in maps.items()
    }
    res["identify_seconds"] = time.time() - t0
    print({k: v["heads"] for k, v in res["identify"].items()}, flush=True)
    _write(out.with_name(out.name + "_main.json"), res)

    ranking = maps["union"].top(max(KS))
    conds: dict[str, list] = {}
    for name in MAPS + ("union",):
        if maps[name].heads:
            conds[f"{name} map" if name != "union" else "union"] = list(maps[name].heads)
    for k in KS:
        conds[f"union top-{k}"] = ranking[:k]
    uniq: dict[str, list] = {}
    alias: dict[str, str] = {}
    for name, hs in conds.items():
        same = [n for n, h in uniq.items() if sorted(h) == sorted(hs)]
        if same:
            alias[name] = same[0]
        else:
            uniq[name] = hs
    ko = ar.knockout_placebo(model, evaluate, uniq, sp.fit, n_draws=args.draws, show_progress=False)
    ko["aliases"] = alias
    res["knockout"] = ko
    res["knockout_seconds"] = time.time() - t0
    print("knockout done", {n: c["accuracy"]["value"] for n, c in ko["conditions"].items()}, flush=True)
    curve = {"k": [0], "top": [1.0], "random_mean": [1.0], "random_std": [0.0]}
    for k in KS:
        c = ko["conditions"][alias.get(f"union top-{k}", f"union top-{k}")]
        curve["k"].append(k)
        curve["top"].append(c["accuracy"]["value"])
        curve["random_mean"].append(c["placebo"]["mean"])
        curve["random_std"].append(c["placebo"]["sd"])
    save_figure(
        knockout_plot(
            curve, "llama: mean-ablating the top-k union heads vs k random heads (evaluate split)", "accuracy"
        ),
        out.with_name(out.name + "_knockout"),
    )
    res["attention"] = {
        name: ar.attention_contrast(model, evaluate, maps[name].heads)
        for name in ("union", "operator")
        if maps[name].heads
    }
    res["seconds"] = time.time() - t0
    _write(out.with_name(out.name + "_main.json"), res)
    return res


# ---------------------------------------------------------------------------------------
# tune stage: precise SFT over seeds


def tune_plan(selected: list, n_layers: int, n_heads: int, seeds: int, draws: int) -> list[dict]:
    """The runs in the order they are trained: selected and random heads over the seeds
    first (random draw d = s with seed s), then LoRA and full SFT for seeds 0–2, then for
    the other seeds, then every other (draw, seed) pair of random heads."""
    rand = {d: random_heads(n_layers, n_heads, len(selected), d, exclude=selected) for d in range(draws)}
    sel_l, rnd_l = "precise SFT, selected heads", "precise SFT, random heads"
    heads_runs, base_first, base_rest, rest = [], [], [], []
    for s in range(seeds):
        heads_runs.append({"label": sel_l, "method": "heads", "seed": s, "heads": selected})
        if s < draws:
            heads_runs.append({"label": rnd_l, "method": "heads", "seed": s, "draw": s, "heads": rand[s]})
        for lab, m in (("LoRA r=4", "lora"), ("full SFT", "full")):
            (base_first if s < 3 else base_rest).append({"label": lab, "method": m, "seed": s})
        rest += [
            {"label": rnd_l, "method": "heads", "seed": s, "draw": d, "heads": rand[d]} for d in range(draws) if d != s
        ]
    return heads_runs + base_first + base_rest + rest


def _run_id(r: dict) -> tuple:
    return (r["label"], int(r["seed"]), r.get("draw"))


def stage_tune(out: Path, args) -> dict:
    from headscope.loading import load_hf

    ident_path = out.with_name(out.name + "_identify")
    js, start = ident_path.with_suffix(".json"), time.time()
    while args.wait and not (js.exists() and js.stat().st_mtime > start):
        print("waiting for a new", js, flush=True)
        time.sleep(20)
    if not js.exists():
        raise SystemExit(f"{js} is missing: run --stage main first (or start --stage tune --wait beside it)")
    time.sleep(2)
    union = HeadSelection.load(ident_path)
    selected = list(union.heads)[:MAX_TUNED] if union.heads else union.top(4)
    sp = _splits(1)
    suite = tasks.split_tune_suite(sp, chat=False)
    base, tok, _ = load_hf("llama-v2", "cpu")
    cfg = TuneConfig(steps=args.steps, batch_size=32, lr=1e-3, warmup=10, log_every=100)
    plan = tune_plan(
        selected, base.config.num_hidden_layers, base.config.num_attention_heads, args.seeds, args.rand_draws
    )
    path = out.with_name(out.name + "_tune.json")
    res: dict = {
        "protocol": __doc__,
        "args": vars(args),
        "selected": [format_head(h) for h in selected],
        "n_examples": len(suite.examples),
        "n_eval": {
            "tune_heldout": {op: sum(r["op"] == op for r in suite.heldout) for op in tasks.OPERATORS},
            "unseen": {op: sum(r["op"] == op for r in suite.unseen) for op in tasks.OPERATORS},
        },
        "config": dict(cfg.__dict__),
        "plan": [
            {k: v for k, v in p.items() if k != "heads"} | {"heads": [format_head(h) for h in p.get("heads", ())]}
            for p in plan
        ],
        "base": ar.evaluate_tuned(base, tok, suite),
        "runs": [],
    }
    res["base"]["kl_vs_base"] = 0.0
    t0 = time.time()

    def save(row: dict) -> None:
        res["runs"].append(row)
        res["seconds"] = time.time() - t0
        _write(path, res)
        e = row["eval"]
        print(
            f"[{time.time() - t0:.0f}s] {row['label']} seed {row['seed']} draw {row.get('draw', '-')}: "
            f"unseen ÷ {e['unseen_div']:.3f} × {e['unseen_mul']:.3f} KL {e['kl_vs_base']:.4f}",
            flush=True,
        )

    if args.resume and path.exists():
        old = json.loads(path.read_text())
        if old.get("selected") == res["selected"] and old.get("config") == json.loads(json.dumps(res["config"])):
            res["runs"] = old["runs"]
            done = {_run_id(r) for r in res["runs"]}
            plan = [p for p in plan if _run_id(p) not in done]
            print(f"resuming: {len(done)} runs done, {len(plan)} to go", flush=True)
    _write(path, res)
    ar.tune_runs(base, tok, suite, plan, cfg, lora_r=4, on_row=save)
    return res


# ---------------------------------------------------------------------------------------
# tables


def main_md(res: dict) -> str:
    sp, ident, ko = res["splits"], res["identify"], res["knockout"]
    n_heads = 48
    L = [
        "# Arithmetic heads on `llama` (issue 16 protocol: item splits, CIs, placebo heads)",
        "",
        "Regenerate: `python experiments/arith_table.py --stage main` then `--stage tune`, `--stage table`; "
        "the protocol is the script's docstring. Raw per-prompt outcomes: `arith_main.json`; per-seed runs: "
        "`arith_tune.json`.",
        "",
        f"Items (op, A, B) by split: {sp['items']}. Prompts: identify {sp['identify_prompts']} (12 organism "
        f"templates), fit {sp['fit_prompts']} (6 held-out templates; mean-ablation reference), evaluate "
        f"{sp['evaluate_prompts']} (6 held-out templates). Base accuracy: identify "
        f"{fmt_ci(_est(res['base']['identify']))} (n = {res['base']['identify']['n']}), evaluate "
        f"{fmt_ci(_est(res['base']['evaluate']))} (n = {res['base']['evaluate']['n']}).",
        "",
        "## Identification (path patching to logits, relative answer-logit score, ≤ −5 %)",
        "",
    ]
    rows = []
    for name in MAPS + ("union",):
        d = ident[name]
        rows.append(
            [
                name if name != "union" else "**union**",
                f"{d['k']} / {n_heads} ({100 * d['share']:.1f} %)",
                ", ".join(d["heads"]) or "–",
                ", ".join(f"{h} {v:+.3f}" for h, v in d["top10"][:5]),
            ]
        )
    L += [md_table(["counterfactual", "heads ≤ −5 %", "selected", "five lowest scores"], rows), ""]
    L += [
        f'Claim "fewer than 10 % of heads" (count rule: ≤ 4 of 48): operator map '
        f"{ident['operator']['k']} → {'met' if ident['operator']['k'] <= 4 else 'not met'}; union "
        f"{ident['union']['k']} → {'met' if ident['union']['k'] <= 4 else 'not met'}. "
        "(A count over the 48 heads of one model, not a sampled rate: no CI.)",
        "",
        f"## Knockout (mean ablation, evaluate split, n = {ko['n']} correctly answered prompts; "
        f"placebo: {ko['n_draws']} random-head draws per condition)",
        "",
    ]
    rows = []
    for name, c in ko["conditions"].items():
        pl, gap = c["placebo"], _est(c["gap"])
        names = [name] + [a for a, b in ko["aliases"].items() if b == name]
        rows.append(
            [
                " = ".join(names),
                ", ".join(c["heads"]),
                fmt_ci(_est(c["accuracy"])),
                f"{pl['mean']:.3f} ± {pl['sd']:.3f} [{pl['min']:.3f}, {pl['max']:.3f}]",
                _p(pl["p"]),
                fmt_ci(gap),
                verdict(gap, GAP_BAR, "above"),
            ]
        )
    L += [
        md_table(
            [
                "condition",
                "heads",
                "accuracy [95 % CI]",
                "placebo mean ± sd [min, max]",
                "placebo p",
                "gap [95 % CI]",
                f"gap > {GAP_BAR:.2f}",
            ],
            rows,
        ),
        "",
        "Every single head mean-ablated alone (sorted by accuracy; McNemar exact p vs the unablated model, "
        f"which answers all n correctly; knockout-critical = upper CI bound < {CRITICAL_BAR}):",
        "",
    ]
    single = sorted(ko["single"].items(), key=lambda kv: kv[1]["accuracy"]["value"])
    sel_by = {name: set(ident[name]["heads"]) for name in MAPS + ("union",)}
    rows = []
    for h, d in single:
        e = _est(d["accuracy"])
        crit = verdict(e, CRITICAL_BAR, "below") == "met"
        found = [m for m in MAPS if h in sel_by[m]]
        rows.append([h, fmt_ci(e), e.n, _p(d["mcnemar_p_vs_base"]), "yes" if crit else "", ", ".join(found) or "–"])
    L += [md_table(["head", "accuracy [95 % CI]", "n", "McNemar p", "critical", "selected by"], rows), ""]
    crit = [r[0] for r in rows if r[4] == "yes"]
    L += [
        f"Knockout-critical heads: {', '.join(crit) or 'none'}. Selected by the operator map: "
        f"{sum(h in sel_by['operator'] for h in crit)} of {len(crit)}; by the union: "
        f"{sum(h in sel_by['union'] for h in crit)} of {len(crit)}.",
        "",
        "## Attention onto operands + operators (evaluate split, last position)",
        "",
    ]
    rows = []
    for name, a in res.get("attention", {}).items():
        e = _est(a["difference"])
        rows.append(
            [
                name,
                ", ".join(a["heads"]),
                a["n"],
                f"{a['key_mean']:.3f}",
                f"{a['average_head_mean']:.3f}",
                fmt_ci(e),
                _p(a["permutation_p"]),
                verdict(e, 0.0, "above"),
            ]
        )
    L += [
        md_table(
            ["heads", "which", "n", "key heads", "average head", "difference [95 % CI]", "permutation p", "> 0"],
            rows,
        ),
        "",
        f"Run time {res.get('seconds', 0):.0f} s (CPU, 1 thread, shared machine).",
    ]
    return "\n".join(L)


TUNE_METRICS = (
    ("unseen_div", "÷ evaluate (held-out templates)"),
    ("unseen_mul", "× evaluate (held-out templates)"),
    ("arith_div_heldout", "÷ evaluate (organism templates, held-out combos)"),
    ("arith_mul_heldout", "× evaluate (organism templates, held-out combos)"),
    ("unseen_add", "+ evaluate"),
    ("unseen_sub", "− evaluate"),
    ("facts_qa_heldout", "facts QA held-out"),
    ("kl_vs_base", "next-token KL vs base"),
)
_N_OF = {
    "unseen_div": ("unseen", "div"),
    "unseen_mul": ("unseen", "mul"),
    "unseen_add": ("unseen", "add"),
    "unseen_sub": ("unseen", "sub"),
    "arith_div_heldout": ("tune_heldout", "div"),
    "arith_mul_heldout": ("tune_heldout", "mul"),
}


def _per_seed(runs: list[dict], label: str, metric: str) -> dict[int, float]:
    """label → seed → value (random heads: mean over the draws trained with that seed)."""
    by: dict[int, list[float]] = {}
    for r in runs:
        if r["label"] == label:
            by.setdefault(int(r["seed"]), []).append(float(r["eval"][metric]))
    return {s: float(np.mean(v)) for s, v in by.items()}


def _paired(runs, a: str, b: str, metric: str, sign: int = 1) -> tuple[Estimate | None, list[int], float | None]:
    pa, pb = _per_seed(runs, a, metric), _per_seed(runs, b, metric)
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        return None, [], None
    d = [sign * (pa[s] - pb[s]) for s in seeds]
    p = (
        paired_permutation_p([sign * pa[s] for s in seeds], [sign * pb[s] for s in seeds], alternative="greater")
        if len(seeds) > 1
        else None
    )
    return over_seeds(d), seeds, p


def tune_md(res: dict) -> str:
    runs = res["runs"]
    labels = list(dict.fromkeys(r["label"] for r in runs))
    n_ev = res["n_eval"]
    cfg = res["config"]
    L = [
        f"## Precise SFT over seeds ({cfg['steps']} steps × batch {cfg['batch_size']}, AdamW lr {cfg['lr']}; "
        f"{res['n_examples']} ÷/× training prompts on identify + fit items; selected heads "
        f"{', '.join(res['selected'])})",
        "",
        "Runs completed: "
        + ", ".join(
            f"{lab}: {sum(r['label'] == lab for r in runs)} "
            f"(seeds {sorted({r['seed'] for r in runs if r['label'] == lab})}"
            + (
                f", draws {sorted({r['draw'] for r in runs if r['label'] == lab})}"
                if lab.endswith("random heads")
                else ""
            )
            + ")"
            for lab in labels
        )
        + f" of the {len(res['plan'])} planned.",
        "",
        "Base: rates with Wilson 95 % CI over prompts (n). Tuned rows: mean over runs [t 95 % CI over runs] "
        "(runs); for rates also the Wilson interval over the n prompts at that mean (the seed interval measures "
        "training-seed variation only; every run is scored on the same prompts).",
        "",
    ]
    from headscope.organisms.world import World

    n_facts = len(World().fact_items("heldout"))  # what tasks.suite.facts_accuracy scores
    header = ["metric", "n prompts", "base"] + labels
    rows = []
    for key, title in TUNE_METRICS:
        nk = _N_OF.get(key)
        n = n_ev[nk[0]][nk[1]] if nk else n_facts if key == "facts_qa_heldout" else None
        b = res["base"].get(key, float("nan"))
        if n:
            bcell = fmt_ci(rate(round(b * n), n))
        else:
            bcell = f"{b:.4f}" if key == "kl_vs_base" else f"{b:.3f}"
        cells = []
        for lab in labels:
            v = [float(r["eval"][key]) for r in runs if r["label"] == lab]
            e = over_seeds(v)
            cell = f"{fmt_ci(e, digits=4 if key == 'kl_vs_base' else 3)} ({len(v)})"
            if n:  # the prompt-level interval of one evaluation at the mean rate (seeds share the prompts)
                w = rate(round(e.value * n), n)
                cell += f"; prompts [{w.lo:.3f}, {w.hi:.3f}]"
            cells.append(cell)
        rows.append([title, n if n else "–", bcell] + cells)
    L += [md_table(header, rows), ""]
    sel, rnd, lora, full = "precise SFT, selected heads", "precise SFT, random heads", "LoRA r=4", "full SFT"
    rows = []
    comps = [
        ("÷ evaluate: selected − base", sel, None, "unseen_div", 1, 0.0, "improves ÷ over the base"),
        ("÷ evaluate: selected − LoRA", sel, lora, "unseen_div", 1, -NONINFERIORITY, "at least as much as LoRA"),
        ("÷ evaluate: selected − random heads", sel, rnd, "unseen_div", 1, 0.0, "better than random heads"),
        ("× evaluate: selected − base", sel, None, "unseen_mul", 1, 0.0, "improves × over the base"),
        ("KL: full SFT − selected", full, sel, "kl_vs_base", 1, 0.0, "moves the model less than full SFT"),
        ("− evaluate: selected − base", sel, None, "unseen_sub", 1, -NONINFERIORITY, "keeps −"),
        ("+ evaluate: selected − base", sel, None, "unseen_add", 1, -NONINFERIORITY, "keeps +"),
    ]
    for title, a, b, key, sign, bar, claim in comps:
        if b is None:
            pa = _per_seed(runs, a, key)
            if not pa:
                continue
            seeds = sorted(pa)
            d = [pa[s] - res["base"][key] for s in seeds]
            e, p = over_seeds(d), None
        else:
            e, seeds, p = _paired(runs, a, b, key, sign)
            if e is None:
                continue
        extra = ""
        if b == rnd:
            draws: dict[int, list[float]] = {}
            for r in runs:
                if r["label"] == rnd:
                    draws.setdefault(int(r["draw"]), []).append(float(r["eval"][key]))
            obs = float(np.mean(list(_per_seed(runs, sel, key).values())))
            dm = [float(np.mean(v)) for v in draws.values()]
            extra = f"; placebo p {_p(placebo_p(obs, dm, 'greater'))} vs {len(dm)} draw means"
        rows.append(
            [
                title,
                fmt_ci(e, digits=4 if key == "kl_vs_base" else 3),
                len(seeds),
                (_p(p) if p is not None else "–") + extra,
                f"lower bound > {bar:+.2f}",
                verdict(e, bar, "above"),
                claim,
            ]
        )
    L += [
        "Paired by training seed (random heads: mean over the draws trained with that seed); p: one-sided "
        "paired permutation test over seeds (with 5 seeds the smallest possible p is 1/32).",
        "",
        md_table(["comparison", "mean [95 % CI]", "seeds", "p", "rule", "verdict", "claim"], rows),
        "",
        f"Tuning run time {res.get('seconds', 0):.0f} s (CPU, 1 thread, shared machine).",
    ]
    return "\n".join(L)


def stage_table(out: Path) -> None:
    parts = []
    main_p = out.with_name(out.name + "_main.json")
    tune_p = out.with_name(out.name + "_tune.json")
    if main_p.exists():
        res = json.loads(main_p.read_text())
        if "knockout" in res:
            parts.append(main_md(res))
    if tune_p.exists():
        tn = json.loads(tune_p.read_text())
        if tn["runs"]:
            md = tune_md(tn)
            out.with_name(out.name + "_tune.md").write_text(md + "\n")
            parts.append(md)
    if not parts:
        raise SystemExit("no results yet: run --stage main and --stage tune first")
    out.with_suffix(".md").write_text("\n\n".join(parts) + "\n")
    print("\n\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("main", "tune", "table"), required=True)
    ap.add_argument("--out", default="docs/results/arith")
    ap.add_argument("--per-group", type=int, default=32)
    ap.add_argument("--draws", type=int, default=50, help="placebo draws per knockout condition [50]")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5, help="training seeds [5]")
    ap.add_argument("--rand-draws", type=int, default=5, help="random-head draws for precise SFT [5]")
    ap.add_argument("--resume", action="store_true", help="tune: keep the runs already in arith_tune.json")
    ap.add_argument("--wait", action="store_true", help="tune: wait for main to write a new identify file")
    ap.add_argument("--every", type=int, default=1, help="keep every n-th prompt (smoke/timing runs) [1]")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("HEADSCOPE_HTML_CDN", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.stage == "main":
        stage_main(out, args)
    elif args.stage == "tune":
        stage_tune(out, args)
    stage_table(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
