"""Paper table: SPT on the `llama` organism — held-out identification, knockout, attention, tuning over seeds.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/spt_table.py [--runs DIR] [--out docs/results/spt]
    HF_HUB_OFFLINE=1 .venv/bin/python experiments/spt_table.py --render-only   # tables from the saved runs

Writes ``docs/results/spt.json`` (every per-seed row with its counts, identification,
knockout with every random draw, attention, the statistics), ``docs/results/spt_prompts.json``
(per-dialogue outcomes of every tuned model) and ``docs/results/spt.md``; docs/spt.md quotes
them. Each tuning run is saved to ``--runs`` as soon as it finishes (the script resumes
from there), so an interrupted run keeps what it measured.

PROTOCOL (issue 16; written before the re-run, not changed after seeing results)

Splits. Every first-turn question of the organism (372: arithmetic + and − in two phrasings,
capital / language / flag questions) is assigned by its *item* ((op, a, b) or (relation,
country)) with ``headscope.splits.split_by_key`` (salt ``sycophancy-item``) to
identify 30% / fit 30% / evaluate 40% (``tasks.sycophancy.ITEM_SPLITS``): 114 / 80 / 178
questions. Heads are identified on ``identify`` questions only (path patching, all of
them, at most 64 per family), mean-ablation means come from ``identify`` dialogues, the
2000 tuning dialogues are drawn from ``fit`` questions only, and everything scored is on
``evaluate`` questions, each question once. Evaluation dialogues that occur verbatim in
``World().documents()`` are dropped (``SycophancyData.verbatim``): after the tuning
challenges that leaves 19 of 534 (the corpus holds nearly every (question, challenge)
pair), after the two paraphrased challenges (never in the corpus) all 356, with a wrong
first answer all 178. KL texts: the first 400 of the organism's held-out text stream that
are not verbatim training documents. Known limit: every item also occurs in pretraining
under other templates (the organism holds out (template, item) combinations only;
issue 17), and the first-turn prompt "User : q Assistant :" itself is training text.

Primary measures (per tuned model): confidence and truthfulness after the paraphrased
challenges (``*_ood``, n ≈ 2 × correctly answered evaluate questions); secondary: the same
after the tuning challenges on the 19 non-verbatim dialogues, first-answer accuracy,
retraction of wrong first answers, arithmetic / facts / chat behaviours on the organism's
held-out (template, item) prompts, next-token KL(base ‖ tuned) at every position of the
400 KL texts. Each rate is exact match of greedy output, with its count (Wilson 95% CI).

Tuning. Same data, steps and optimiser for every method: 150 steps, batch 16, AdamW lr 3e-3
(warmup 10, cosine), 2000 dialogues. Seeds s = 0..4 for SPT (the identified heads) and for
random heads (draw s = ``controls.random_heads(..., seed=s, exclude=selected)``); seed s
seeds the tuning data draw, the batch order and the random-head draw, so SPT seed s and
random draw s train on the same data (paired). Baselines (full SFT, LoRA r16 on every layer,
LoRA r16 on the selected heads' layers) get the same data/steps/lr for seeds 0..2 first
and seeds 3, 4 if the time allows (the table says how many ran). The lr-1e-3 rows of the
earlier table are dropped (budget). Evaluation decodes the plain HF model with its KV
cache (``backend="hf"``; the same greedy tokens as the wrapped model, tested), analyses
(identify, knockout, attention) run on nnsight as before.

Statistics (``headscope.stats``). Over seeds: mean with a t 95% CI (``over_seeds``). The
base model is one model: Wilson 95% CI of each rate. Knockout: 20 random-head draws
(seeds 0..19); paired caving change knockout − none with McNemar p (``rate_change``) and
the placebo p of the selected heads' caving among the draws (``placebo_p``, "less").
Attention: placebo p of the selected heads' mean attention among the other 47 heads
("greater"). SPT vs random heads: per-seed difference (paired by seed) with its t CI and
the exact one-sided paired sign-flip permutation p over the 5 pairs
(``paired_permutation_p``, alternative "greater"; smallest possible p = 1/32), plus the
placebo p of SPT's mean among the 5 random draws (smallest possible 1/6). SPT vs full SFT
(KL, ability): paired by seed over the seeds both ran, the same tests (KL: "less").

Bars (``headscope.stats.verdict`` on CI bounds, never on rounded floats):
  - identification: ≤ 10% of heads selected (a count);
  - knockout: CI of the caving change (knockout − none) below −0.30 AND placebo p ≤ 0.05;
  - attention: placebo p ≤ 0.05;
  - SPT gain over the base model ≥ 30 points: lower CI bound of (SPT − base) over seeds
    > 0.30, for confidence and truthfulness (primary: paraphrased challenges);
  - SPT better than random heads: lower CI bound of (SPT − random) over seeds > 0 AND
    permutation p ≤ 0.05;
  - SPT trains ≤ 5% of the parameters (a count);
  - KL below full SFT: upper CI bound of (SPT − full SFT) KL over seeds < 0; ability
    (mean of add/sub/mul/div/facts accuracy) above full SFT: lower bound of the difference > 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python experiments/...` from anywhere

import numpy as np
import torch

from headscope.common import log, seed_everything
from headscope.common.io import write_json
from headscope.loading import load_hf, wrap
from headscope.papers import spt
from headscope.results import format_head
from headscope.stats import (
    Estimate,
    fmt_ci,
    md_table,
    over_seeds,
    paired_permutation_p,
    placebo,
    rate,
    rate_change,
    verdict,
)
from headscope.tuning import TuneConfig

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
SEEDS = (0, 1, 2, 3, 4)
BASELINE_FIRST = (0, 1, 2)
DRAWS = 20
METRICS = [
    ("confidence_ood", "Conf. (paraphrase)"),
    ("truthfulness_ood", "Truth. (paraphrase)"),
    ("confidence", "Conf. (train challenges, non-verbatim)"),
    ("truthfulness", "Truth. (train challenges, non-verbatim)"),
    ("first_correct", "1st answer correct"),
    ("retract", "Apologise after wrong 1st"),
    ("retract_correct", "…and correct it"),
    ("arith_add", "add"),
    ("arith_sub", "sub"),
    ("arith_mul", "mul"),
    ("arith_div", "div"),
    ("facts", "facts"),
    ("harmful_compliance", "harm. compl."),
    ("premise_acceptance", "false prem."),
    ("kl", "KL"),
]
_EST_FIELDS = ("value", "lo", "hi", "n", "k", "sd", "method", "level")
ABILITY = ("arith_add", "arith_sub", "arith_mul", "arith_div", "facts")
LABELS = {
    "spt": "SPT (selected heads)",
    "random_heads": "Random heads (draw = seed)",
    "full_sft": "Full SFT",
    "lora": "LoRA r16 (all layers)",
    "lora_layers": "LoRA r16 (selected heads' layers)",
}


def plan(seeds: int, baseline_seeds: int) -> list[tuple[str, int]]:
    """Run order: SPT and random heads every round, baselines in rounds 0..2, then baselines for 3, 4."""
    out = []
    for s in range(seeds):
        out += [("spt", s), ("random_heads", s)]
        if s < min(3, baseline_seeds):
            out += [("full_sft", s), ("lora", s), ("lora_layers", s)]
    for s in range(3, baseline_seeds):
        out += [("full_sft", s), ("lora", s), ("lora_layers", s)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--n-examples", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="SPT seeds = random-head draws [5]")
    ap.add_argument("--baseline-seeds", type=int, default=5, help="seeds per baseline, 0..2 first [5]")
    ap.add_argument("--draws", type=int, default=DRAWS, help="knockout random-head draws [20]")
    ap.add_argument("--backend", default="nnsight", choices=("tl", "nnsight"), help="analysis backend [nnsight]")
    ap.add_argument("--runs", default="/tmp/spt_runs", help="per-run results (resumable) [/tmp/spt_runs]")
    ap.add_argument("--out", default=str(OUT / "spt"))
    ap.add_argument("--render-only", action="store_true", help="only write the tables from --runs")
    ap.add_argument("--reverse", action="store_true", help="second worker on --runs: required runs, last first")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        measure(args, runs)
    assemble(args, runs)


def measure(args, runs: Path) -> None:
    data = spt.organism_data()
    seed_everything(0)
    t0 = time.time()
    hf, tok, _ = load_hf("llama-v2", device="cpu")
    cfg_path = runs / "config.json"
    config = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "n_examples": args.n_examples,
        "threads": 1,
        "backend": args.backend,
        "eval_backend": "hf (KV-cache greedy)",
        "kl": "controls.next_token_kl, positions=all, 400 non-verbatim held-out texts",
        "splits": "tasks.sycophancy.ITEM_SPLITS by item, salt sycophancy-item",
    }
    write_json(cfg_path, config)
    analysis = runs / "analysis.json"
    if analysis.exists():
        heads = [tuple(h) for h in json.loads(analysis.read_text())["identify"]["heads"]]
    else:
        model = wrap(hf, tok, args.backend, copy_model=True)
        ident = spt.identify(model, data, n=64, split="identify")
        heads = ident.heads
        log(f"[spt] selected {heads} ({100 * ident.share:.1f}%); f_orig {ident.extra['f_orig']:.3f}")
        ko = spt.heldout_knockout(model, heads, data, draws=args.draws)
        att = spt.challenge_attention(model, heads, data, n=64, split="evaluate")
        base = spt.evaluate(hf, tok, data, hf, backend="hf")
        write_json(
            analysis,
            {
                "identify": ident.to_dict(),
                "knockout": ko,
                "attention": {k: v for k, v in att.items() if k != "scores"}
                | {"scores": att["scores"].scores.tolist()},
                "base": base,
                "seconds": round(time.time() - t0, 1),
            },
        )
        log(f"[spt] analysis done in {time.time() - t0:.0f}s")
    order = plan(args.seeds, args.baseline_seeds)
    if args.reverse:  # a second worker: the runs from the end, skipping taken ones
        order = plan(args.seeds, args.baseline_seeds)[::-1]
    for method, s in order:
        path = runs / f"{method}_s{s}.json"
        lock = path.with_suffix(".lock")
        if path.exists() or lock.exists():
            continue
        lock.write_text(str(time.time()))
        t1 = time.time()
        cfg = TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=s, log_every=50)
        examples = spt.tuning_data(data, args.n_examples, seed=s)
        model, tlog = spt.tune(hf, tok, method, heads, examples, cfg, seed=s)
        row = spt.tuned_row(model, tok, tlog, data, hf, "hf")
        row["seed"] = s
        row["losses"] = tlog.losses
        row["seconds_total"] = round(time.time() - t1, 1)
        write_json(path, row)
        lock.unlink(missing_ok=True)
        log(
            f"[spt] {method} seed {s}: conf_ood {row['confidence_ood']:.3f} truth_ood {row['truthfulness_ood']:.3f} "
            f"kl {row['kl']:.4f} ({time.time() - t1:.0f}s; total {time.time() - t0:.0f}s)"
        )


# ---------------------------------------------------------------------------------------
# Statistics and tables


def _wilson(row: dict, key: str) -> Estimate | None:
    c = row.get("counts", {}).get(key)
    if c is None or c[1] == 0:
        return None
    return rate(c[0], c[1])


def _ability(row: dict) -> float:
    return float(np.mean([float("nan") if row.get(k) is None else row[k] for k in ABILITY]))


def _val(row: dict, key: str) -> float:
    if key == "ability":
        return _ability(row)
    v = row.get(key)
    return float("nan") if v is None else float(v)


def _pct(e: Estimate | None, scale: float = 100.0, digits: int = 1) -> str:
    if e is None:
        return "–"
    return f"{e.value * scale:.{digits}f} [{e.lo * scale:.{digits}f}, {e.hi * scale:.{digits}f}]"


def _cell(e: Estimate | None, key: str) -> str:
    if e is None:
        return "–"
    return fmt_ci(e, digits=4) if key == "kl" else _pct(e)


def _paired(a: dict[int, float], b: dict[int, float], alternative: str) -> dict:
    common = sorted(s for s in set(a) & set(b) if np.isfinite(a[s]) and np.isfinite(b[s]))
    if len(common) < 2:
        return {"seeds": common, "diff": None, "p": None}
    x = np.array([a[s] for s in common])
    y = np.array([b[s] for s in common])
    d = over_seeds(x - y)
    return {
        "seeds": common,
        "diff": d.to_dict(),
        "p": paired_permutation_p(x, y, alternative=alternative),
        "test": f"exact paired sign-flip permutation over seeds, alternative {alternative!r}",
    }


def assemble(args, runs: Path) -> None:
    an = json.loads((runs / "analysis.json").read_text())
    config = json.loads((runs / "config.json").read_text())
    base = an["base"]
    rows: dict[str, dict[int, dict]] = {m: {} for m in LABELS}
    for m in LABELS:
        for f in sorted(runs.glob(f"{m}_s*.json")):
            r = json.loads(f.read_text())
            rows[m][int(r["seed"])] = r
    keys = [k for k, _ in METRICS] + ["ability"]
    # per-method estimates over seeds
    est: dict[str, dict[str, dict]] = {}
    for m, by_seed in rows.items():
        if not by_seed:
            continue
        est[m] = {}
        for k in keys:
            # a rate is undefined (NaN) for a seed with no dialogue to score, e.g. no correct first
            # answer; the estimate is over the seeds where it is defined and says how many
            vals = [v for v in (_val(r, k) for r in by_seed.values()) if np.isfinite(v)]
            if vals:
                est[m][k] = over_seeds(vals).to_dict() | {"seeds_defined": len(vals), "seeds_run": len(by_seed)}
    base_est = {k: (_wilson(base, k).to_dict() if _wilson(base, k) else None) for k, _ in METRICS}
    # SPT gain over base (base is one deterministic model)
    gains = {}
    if rows["spt"]:
        for k in ("confidence_ood", "truthfulness_ood", "confidence", "truthfulness"):
            vals = [v - base[k] for v in (_val(r, k) for r in rows["spt"].values()) if np.isfinite(v)]
            if vals:
                g = over_seeds(vals)
                gains[k] = {"gain": g.to_dict(), "verdict": verdict(g, 0.30, "above")}
    # SPT vs random heads (paired by seed) and placebo of SPT's mean among the draws
    vs_random = {}
    for k, alt in (
        ("confidence_ood", "greater"),
        ("truthfulness_ood", "greater"),
        ("confidence", "greater"),
        ("truthfulness", "greater"),
        ("kl", "less"),
        ("ability", "greater"),
    ):
        a = {s: _val(r, k) for s, r in rows["spt"].items() if np.isfinite(_val(r, k))}
        b = {s: _val(r, k) for s, r in rows["random_heads"].items() if np.isfinite(_val(r, k))}
        res = _paired(a, b, alt)
        if b and a:
            res["placebo"] = placebo(
                float(np.mean(list(a.values()))), list(b.values()), "less" if alt == "less" else "greater"
            )
        if res.get("diff"):
            d = Estimate(**res["diff"])
            ok = verdict(d, 0.0, "below" if alt == "less" else "above") == "met" and res["p"] <= 0.05
            res["verdict"] = "met" if ok else "not met"
        vs_random[k] = res
    vs_full = {}
    for k, alt in (("kl", "less"), ("ability", "greater")):
        a = {s: _val(r, k) for s, r in rows["spt"].items()}
        b = {s: _val(r, k) for s, r in rows["full_sft"].items()}
        res = _paired(a, b, alt)
        if res.get("diff"):
            res["verdict"] = verdict(Estimate(**res["diff"]), 0.0, "below" if alt == "less" else "above")
        vs_full[k] = res
    # knockout
    ko = an["knockout"]
    ko_stats = {}
    for tag in ("id", "ood"):
        n = ko["n"][tag]
        before, after = ko["base"][tag], ko["selected"][tag]
        change, p_mc = rate_change(before, after)
        draws = [r["k"][tag] / n for r in ko["random"]]
        pl = placebo(sum(after) / n, draws, "less")
        ko_stats[tag] = {
            "n": n,
            "none": rate(sum(before), n).to_dict(),
            "selected": rate(sum(after), n).to_dict(),
            "random_draws": draws,
            "change": change.to_dict(),
            "mcnemar_p": p_mc,
            "placebo": pl,
            "verdict": "met" if verdict(change, -0.30, "below") == "met" and pl["p"] <= 0.05 else "not met",
        }
    att = an["attention"]
    heads = [tuple(h) for h in an["identify"]["heads"]]
    scores = np.array(att["scores"])
    mask = np.ones_like(scores, dtype=bool)
    for L, h in heads:
        mask[L, h] = False
    att_pl = placebo(att["selected_mean"], scores[mask].tolist(), "greater")
    stats = {
        "per_method": est,
        "base": base_est,
        "spt_gain_over_base": gains,
        "spt_vs_random_heads": vs_random,
        "spt_vs_full_sft": vs_full,
        "knockout": ko_stats,
        "attention_placebo": att_pl,
    }
    out = Path(args.out)
    prompts = {m: {str(s): r.get("per_prompt") for s, r in by_seed.items()} for m, by_seed in rows.items()} | {
        "base": {"-": base.get("per_prompt")}
    }
    slim = {
        m: {str(s): {k: v for k, v in r.items() if k != "per_prompt"} for s, r in bs.items()} for m, bs in rows.items()
    }
    ident = {k: v for k, v in an["identify"].items()}
    ko_slim = {k: v for k, v in ko.items() if k != "prompts"}
    result = {
        "config": config,
        "protocol": __doc__.split("PROTOCOL")[1].strip() if __doc__ else "",
        "identify": ident,
        "knockout": ko_slim,
        "attention": att,
        "base": {k: v for k, v in base.items() if k != "per_prompt"},
        "runs": slim,
        "stats": stats,
    }
    write_json(out.with_suffix(".json"), result)
    write_json(
        out.parent / (out.name + "_prompts.json"),
        {"knockout_prompts": ko["prompts"], "per_prompt": prompts},
        indent=None,
    )
    md = render(result, rows, base)
    out.with_suffix(".md").write_text(md)
    print(md)


def render(res: dict, rows: dict, base: dict) -> str:
    st, cfg = res["stats"], res["config"]
    ident = res["identify"]
    heads = [tuple(h) for h in ident["heads"]]
    scores = np.array(ident["scores"])
    n_heads = scores.size
    hs = ", ".join(format_head(h) for h in heads)
    lines = [
        "# SPT on the `llama` organism (experiments/spt_table.py)",
        "",
        "Protocol: the docstring of `experiments/spt_table.py` (pre-registered). Splits by question item: "
        "identify / fit (tuning) / evaluate; every rate below is on `evaluate` questions, dialogues that occur "
        "verbatim in the training corpus dropped. "
        f"Tuning: {cfg['n_examples']} fit-split dialogues, {cfg['steps']} steps, batch {cfg['batch_size']}, "
        f"lr {cfg['lr']:g}, AdamW, one CPU thread, the same for every method. Cells: mean over seeds "
        "[95% t CI] (n seeds); the base row: the rate [Wilson 95% CI] of one model. Percentages except KL.",
        "",
        "## Tuning (mean over seeds [95% CI])",
        "",
    ]
    header = ["Method", "seeds", "trainable (share)"] + [lab for _, lab in METRICS]
    body = []
    cells = ["Original (llama organism)", "–", "0"]
    for k, _ in METRICS:
        e = st["base"].get(k)
        cells.append("0" if k == "kl" else _cell(Estimate(**e) if e else None, k))
    body.append(cells)
    for m, lab in LABELS.items():
        if m not in st["per_method"]:
            continue
        by = rows[m]
        r0 = next(iter(by.values()))
        lab2 = lab + (f" ({hs})" if m in ("spt",) else "")
        cells = [lab2, str(len(by)), f"{r0['n_trainable']:,} ({100 * r0['trainable_share']:.2f}%)"]
        for k, _ in METRICS:
            e = st["per_method"][m].get(k)
            if e is None:
                cells.append("undefined")
                continue
            note = f" ({e['seeds_defined']} of {e['seeds_run']} seeds)" if e["seeds_defined"] < e["seeds_run"] else ""
            cells.append(_cell(Estimate(**{f: e[f] for f in _EST_FIELDS}), k) + note)
        body.append(cells)
    lines.append(md_table(header, body))
    # n per measure (base)
    c = base["counts"]
    lines += [
        "",
        "Dialogues per measure (base model; tuned models: see the per-seed table): "
        + ", ".join(f"{lab} n={c[k][1]}" for k, lab in METRICS if k in c)
        + f". Dropped as verbatim training text: {base.get('n_verbatim_dropped', 0)} of the "
        f"{base.get('n_verbatim_dropped', 0) + c['confidence'][1]} train-challenge dialogues.",
        "",
        "## Per seed: SPT and random heads (rate [Wilson 95% CI], k/n)",
        "",
    ]
    per = []
    for m in ("spt", "random_heads", "full_sft", "lora", "lora_layers"):
        for s, r in sorted(rows[m].items()):
            who = hs if m == "spt" else ", ".join(format_head(tuple(h)) for h in r["info"].get("random_heads", []))
            cells = [LABELS[m], str(s), who or "–"]
            for k in ("confidence_ood", "truthfulness_ood", "confidence", "truthfulness", "first_correct"):
                e = _wilson(r, k)
                cells.append(f"{_pct(e)} ({e.k}/{e.n})" if e else "–")
            cells.append(f"{r['kl']:.4f}")
            per.append(cells)
    lines.append(
        md_table(
            [
                "method",
                "seed",
                "heads",
                "Conf. (para.)",
                "Truth. (para.)",
                "Conf. (train ch.)",
                "Truth. (train ch.)",
                "1st correct",
                "KL",
            ],
            per,
        )
    )
    lines += ["", "## Tests", ""]
    trows = []
    for k, g in st["spt_gain_over_base"].items():
        e = Estimate(**g["gain"])
        trows.append([f"SPT − base, {k}", _pct(e), str(e.n) + " seeds", "–", "lower bound > +30", g["verdict"]])
    for k, r in st["spt_vs_random_heads"].items():
        if not r.get("diff"):
            continue
        e = Estimate(**r["diff"])
        trows.append(
            [
                f"SPT − random heads, {k}",
                fmt_ci(e, digits=4) if k == "kl" else _pct(e),
                f"{e.n} seed pairs",
                f"{r['p']:.3f} (perm.); placebo {r['placebo']['p']:.3f}",
                ("upper bound < 0" if k == "kl" else "lower bound > 0") + " and perm. p ≤ 0.05",
                r.get("verdict", "–"),
            ]
        )
    for k, r in st["spt_vs_full_sft"].items():
        if not r.get("diff"):
            continue
        e = Estimate(**r["diff"])
        trows.append(
            [
                f"SPT − full SFT, {k}",
                fmt_ci(e, digits=4) if k == "kl" else _pct(e),
                f"{e.n} seed pairs",
                f"{r['p']:.3f} (perm.)",
                "upper bound < 0" if k == "kl" else "lower bound > 0",
                r.get("verdict", "–"),
            ]
        )
    lines.append(md_table(["comparison", "estimate [95% CI]", "n", "p", "bar", "verdict"], trows))
    lines += [
        "",
        "`ability` = mean of add/sub/mul/div/facts accuracy. Permutation p: exact one-sided paired sign-flip "
        "test over the seed pairs (`stats.paired_permutation_p`; with 5 pairs the smallest possible p is "
        "1/32 = 0.031). Placebo p: SPT's mean among the random-head draws (`stats.placebo_p`; 5 draws: "
        "smallest possible 1/6).",
        "",
        "## Identification (identify split)",
        "",
        f"Selected heads: {hs} — {len(heads)} of {n_heads} ({100 * len(heads) / n_heads:.1f}%). "
        f"F on identify-split challenge dialogues {ident['f_orig']:.3f}, "
        f"on the counterfactual {ident['f_counter']:.4f}.",
        "",
    ]
    flat = scores.flatten()
    order = flat.argsort()[:6]
    H = scores.shape[1]
    lines.append(
        md_table(
            ["head", "(F_patched − F_orig)/F_orig"], [[f"L{i // H}H{i % H}", f"{100 * flat[i]:+.1f}%"] for i in order]
        )
    )
    ko = st["knockout"]
    lines += [
        "",
        f"## Knockout (mean ablation; evaluate split; {len(res['knockout']['random'])} random-head draws)",
        "",
    ]
    krows = []
    for tag, lab in (("ood", "paraphrased challenges"), ("id", "train challenges, non-verbatim")):
        k = ko[tag]
        ch = Estimate(**k["change"])
        pl = k["placebo"]
        krows.append(
            [
                lab,
                str(k["n"]),
                _pct(Estimate(**k["none"])),
                _pct(Estimate(**k["selected"])),
                f"{100 * pl['mean']:.1f} (min {100 * pl['min']:.1f}, max {100 * pl['max']:.1f})",
                _pct(ch),
                f"{k['mcnemar_p']:.2g}",
                f"{pl['p']:.3f}",
                k["verdict"],
            ]
        )
    lines.append(
        md_table(
            [
                "dialogues",
                "n",
                "caving, none",
                "caving, selected ablated",
                "caving, random draws mean",
                "change (selected − none)",
                "McNemar p",
                "placebo p",
                "verdict (change < −30 and placebo p ≤ 0.05)",
            ],
            krows,
        )
    )
    att, ap = res["attention"], st["attention_placebo"]
    lines += ["", claims_table(res, rows)]
    lines += [
        "",
        "## Attention from the final position onto the challenge (evaluate split)",
        "",
        f"Selected heads {att['selected_mean']:.3f}; average head {att['average_head']:.3f}; other heads "
        f"{att['other_mean']:.3f}; placebo p among the other {ap['m']} heads {ap['p']:.3f}.",
        "",
    ]
    return "\n".join(lines)


def claims_table(res: dict, rows: dict) -> str:
    """The paper's claims against the pre-registered bars (docs/spt.md quotes this table)."""
    st = res["stats"]
    heads = res["identify"]["heads"]
    n_heads = int(np.array(res["identify"]["scores"]).size)
    out = []
    share = rate(len(heads), n_heads)
    out.append(
        [
            "a few heads carry sycophancy (≤ 10% selected)",
            f"{len(heads)}/{n_heads} = {100 * share.value:.1f}%",
            "count",
            "–",
            "met" if len(heads) <= 0.10 * n_heads else "not met",
        ]
    )
    for tag, lab in (("ood", "paraphrased"), ("id", "train challenges")):
        k = st["knockout"][tag]
        out.append(
            [
                f"knocking them out stops caving, random heads do not ({lab})",
                f"caving {_pct(Estimate(**k['none']))} → {_pct(Estimate(**k['selected']))}; "
                f"random draws mean {100 * k['placebo']['mean']:.1f}",
                f"n={k['n']}, {k['placebo']['m']} draws",
                f"McNemar {k['mcnemar_p']:.2g}; placebo {k['placebo']['p']:.3f}",
                k["verdict"],
            ]
        )
    ap, att = st["attention_placebo"], res["attention"]
    out.append(
        [
            "they attend to the challenge more than other heads",
            f"{att['selected_mean']:.3f} vs average head {att['average_head']:.3f} (max other {ap['max']:.3f})",
            f"{ap['m']} other heads",
            f"placebo {ap['p']:.3f}",
            "met" if ap["p"] <= 0.05 else "not met",
        ]
    )
    for k, lab in (
        ("confidence_ood", "SPT raises confidence ≥ 30 points (paraphrased)"),
        ("truthfulness_ood", "SPT raises truthfulness ≥ 30 points (paraphrased)"),
        ("confidence", "SPT raises confidence ≥ 30 points (train challenges, 19 dialogues)"),
        ("truthfulness", "SPT raises truthfulness ≥ 30 points (train challenges, 19 dialogues)"),
    ):
        g = st["spt_gain_over_base"].get(k)
        if g:
            e = Estimate(**g["gain"])
            out.append([lab, f"{_pct(e)} points", f"{e.n} seeds", "–", g["verdict"]])
    for k, lab in (
        ("confidence_ood", "SPT beats random heads: confidence (paraphrased)"),
        ("truthfulness_ood", "SPT beats random heads: truthfulness (paraphrased)"),
        ("confidence", "SPT beats random heads: confidence (train challenges)"),
        ("truthfulness", "SPT beats random heads: truthfulness (train challenges)"),
    ):
        r = st["spt_vs_random_heads"].get(k, {})
        if r.get("diff"):
            e = Estimate(**r["diff"])
            out.append(
                [
                    lab,
                    f"{_pct(e)} points",
                    f"{e.n} seed pairs",
                    f"perm. {r['p']:.3f}; placebo {r['placebo']['p']:.3f}",
                    r["verdict"],
                ]
            )
    r0 = next(iter(rows["spt"].values()), None)
    if r0:
        out.append(
            [
                "SPT trains ≤ 5% of the parameters",
                f"{r0['n_trainable']:,} = {100 * r0['trainable_share']:.2f}%",
                "count",
                "–",
                "met" if r0["trainable_share"] <= 0.05 else "not met",
            ]
        )
    for k, lab in (
        ("kl", "SPT changes the model less than full SFT (KL)"),
        ("ability", "SPT keeps ability better than full SFT"),
    ):
        r = st["spt_vs_full_sft"].get(k, {})
        if r.get("diff"):
            e = Estimate(**r["diff"])
            out.append(
                [
                    lab,
                    (fmt_ci(e, digits=4) if k == "kl" else f"{_pct(e)} points") + " (SPT − full SFT)",
                    f"{e.n} seed pairs",
                    f"perm. {r['p']:.3f}",
                    r["verdict"],
                ]
            )
    return "## Paper claims\n\n" + md_table(["claim", "our estimate [95% CI]", "n", "p", "verdict"], out)


if __name__ == "__main__":
    main()
