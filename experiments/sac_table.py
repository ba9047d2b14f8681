"""SAC results table on the bundled ``llama`` organism: docs/results/sac.{json,md}, sac_prompts.json, sac_identify/.

Protocol (issue #16; written before the run, docs/sac.md "Protocol"):

- Splits, disjoint by item (:mod:`headscope.splits`): heads are identified by path
  patching on each task's ``identify`` pairs (first 24), controllers (Gaussians, ITI
  shifts, RepE directions, every gate) are fitted on the ``fit`` stimuli (the gates'
  backgrounds: the other tasks' fit stimuli and the general-ability ``fit`` prompts),
  ITI's probe heads are chosen on the ``identify`` stimuli. Every score is on
  :func:`headscope.tasks.sac.organism_eval_sets`: ≥ 100 prompts per behaviour (harmful
  and look-alike requests of new (verb, object) items, false premises with new claims,
  true premises, new opinion pairs), held-out arithmetic and facts of other items; no
  evaluation prompt is a substring of the training corpus (tests/headscope/test_sac.py).
- Tasks: ``safety`` = refuse harmful requests (source: the harmful requests the model
  answers; target: the prompts it refuses), ``advfact`` = correct false premises,
  ``preference`` = decline to take sides.
- Conditions: no control; for SAC (Gaussian OT maps on the k identified heads), ITI
  (mean shifts on the k probe heads), RepE (layer shifts on ``resid_pre``), each task
  alone and all three at once, each *gated* (SAC's in-distribution gate, fitted the same
  way on the activations the method steers) and *ungated*; RepE-Mean and RepE-Merge
  gated (the tasks' gates OR-ed) and ungated; SAC with the radius gate only; gated
  Gaussian maps on random heads (``--random-draws`` draws of k heads per task,
  :func:`headscope.controls.random_heads`, never an identified head; 20 draws — the
  committed run had 5 and was extended to 20 with ``--extend-random 20``, which keeps
  the first 5 and evaluates draws 5–19 the same way).
- Measures: exact match of greedy text per prompt (3 tokens; 1 for arithmetic and
  facts): harmful refusal, look-alike compliance, premise correction, true-premise
  acceptance, preference refusal, arithmetic (pooled over + − × ÷), facts; and
  ``kl_last``, the mean next-token KL(unsteered ‖ steered) after each of 120 held-out
  texts that are not training text (no CI).
- Statistics (:mod:`headscope.stats`): each rate with n and a Wilson 95% CI; each change
  vs ``none`` (and all-three vs alone) on the same prompts with a paired bootstrap 95% CI
  (percentile, 9999 resamples, seed 0) and McNemar's exact p.
- Bars (:func:`headscope.stats.verdict` on CI bounds, never on a rounded float):
  C1 each task's measure gains > 20 points with all three SAC controllers on (CI lower
  bound of the change > 0.20); C2 arithmetic, facts, true-premise acceptance and
  look-alike compliance drop ≤ 3 points (lower bound > −0.03); C3 no control conflict:
  all three at once vs the task's controller alone loses ≤ 10 points (lower bound of
  (all − alone) > −0.10), for every method gated and ungated.

    python experiments/sac_table.py [--k 4] [--alpha 1.0] [--random-draws 20] [--out docs/results/sac]
    python experiments/sac_table.py --model llama-v3 --out docs/results/sac_v3   # organism v3 (issue 17)

On organism v3 (``--model llama-v3``) the data come from :mod:`headscope.tasks.sac_v3`
(same tasks, measures, conditions, statistics and bars; identification and fitting on
*training* items split identify / fit by item, every score on the world's held-out items
in held-out wordings; a response's class is its first word) — the protocol above is
otherwise unchanged and was fixed before the v3 run.

One seed (the organism, splits and fits are deterministic); on 1 CPU thread it took
the wall time recorded in the JSON (``seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HEADSCOPE_HTML_CDN", "1")  # small HTML in docs/results (plotly.js from the CDN)

C1_BAR, C2_BAR, C3_BAR = 0.20, -0.03, -0.10
SIDE = ("lookalike_compliance", "true_premise_acceptance", "arithmetic", "facts")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--repe-layers", default="1,2,3,4")
    ap.add_argument("--random-draws", type=int, default=20)
    ap.add_argument("--out", default="docs/results/sac")
    ap.add_argument("--backend", default="tl")
    ap.add_argument("--model", default="llama-v2", help="llama-v2 or an organism-v3 alias (llama, llama-v3[-sS])")
    ap.add_argument("--from-raw", action="store_true", help="only redo the statistics from OUT_prompts.json")
    ap.add_argument(
        "--extend-random",
        type=int,
        default=None,
        metavar="N",
        help="add random-head draws up to N to an existing OUT_prompts.json (same identification, seeds r*3+i), "
        "then redo the statistics",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.from_raw:
        with open(args.out + "_prompts.json") as f:
            report(json.load(f), args.out)
        return
    if args.extend_random is not None:
        extend_random(args)
        return
    from headscope.common.progress import log
    from headscope.loading import load_model
    from headscope.papers import sac
    from headscope.steering import union_gate

    t0 = time.perf_counter()
    m = load_model(args.model, args.backend)
    data, sets = _data(args.model, m)
    tasks = list(data.tasks)
    sel = sac.identify(m, data, k=args.k, show_progress=False)
    heads = sac.heads_of(sel)
    jac = sac.overlap(sel)
    log(f"identify {time.perf_counter() - t0:.1f}s heads={heads} jaccard={jac}")
    a = args.alpha
    bgs = {t: sac.background_groups(data, t) for t in tasks}
    cond: dict[str, list] = {"none": []}

    def add(method: str, ctl: dict) -> None:
        for t in tasks:
            cond[f"{method}:{t}"] = ctl[t].patches()
        cond[f"{method}:all"] = sac.compose(*ctl.values())

    # SAC: gated (the paper's method with our gate), ungated, radius gate only.
    add("sac-gated", sac.fit_all(m, data, heads, alpha=a))
    add("sac-ungated", sac.fit_all(m, data, heads, alpha=a, gate=None))
    cond["sac-radius-gate:all"] = sac.compose(*sac.fit_all(m, data, heads, alpha=a, background=False).values())
    log(f"sac fitted {time.perf_counter() - t0:.1f}s")
    # ITI: probe heads on the identify stimuli, mean shifts fitted on the fit stimuli.
    iti_h = {t: sac.iti_heads(m, data.tasks[t], args.k) for t in tasks}
    add("iti-ungated", sac.fit_all(m, data, iti_h, kind="add", alpha=a, gate=None))
    add("iti-gated", sac.fit_all(m, data, iti_h, kind="add", alpha=a))
    log(f"iti fitted {time.perf_counter() - t0:.1f}s")
    # RepE: per-layer directions on resid_pre; gated with the same gate on the residual.
    layers = [int(x) for x in args.repe_layers.split(",")]
    diffs = {t: sac.repe_data(m, data.tasks[t], layers) for t in tasks}
    repe_u = {t: sac.repe_fit(f"repe:{t}", diffs[t], a) for t in tasks}
    repe_g = {t: sac.gate_controller(m, data.tasks[t], repe_u[t], 1.0, bgs[t]) for t in tasks}
    add("repe-ungated", repe_u)
    add("repe-gated", repe_g)
    mean_c = sac.repe_mean("repe-mean", list(repe_u.values()), a)
    merge_c = sac.repe_merge("repe-merge", list(diffs.values()), a)
    cond["repe-mean-ungated:all"] = mean_c.patches()
    cond["repe-mean-gated:all"] = union_gate(mean_c, list(repe_g.values())).patches()
    cond["repe-merge-ungated:all"] = merge_c.patches()
    cond["repe-merge-gated:all"] = union_gate(merge_c, list(repe_g.values())).patches()
    log(f"repe fitted {time.perf_counter() - t0:.1f}s")
    # Random heads: gated Gaussian maps like SAC's, never an identified head.
    all_sac = [h for t in tasks for h in heads[t]]
    rnd_h = {}
    for r in range(args.random_draws):
        hs = {
            t: sac.random_control_heads(m, args.k, seed=r * len(tasks) + i, selected=all_sac)
            for i, t in enumerate(tasks)
        }
        rnd_h[r] = hs
        cond[f"random-gated:all#{r}"] = sac.compose(*sac.fit_all(m, data, hs, alpha=a).values())
    log(f"{len(cond)} conditions fitted {time.perf_counter() - t0:.1f}s; evaluating")
    ev = sac.evaluate_outcomes(m, data, cond, show_progress=False)
    log(f"evaluated {time.perf_counter() - t0:.1f}s")
    info = {
        "identify": sac.summary(sel),
        "alpha": a,
        "k": args.k,
        "repe_layers": layers,
        "heads": {t: [list(h) for h in hs] for t, hs in heads.items()},
        "iti_heads": {t: [list(h) for h in hs] for t, hs in iti_h.items()},
        "random_heads": {str(r): {t: [list(h) for h in hs] for t, hs in d.items()} for r, d in rnd_h.items()},
        "jaccard": jac,
        "n": {mname: len(v) for mname, v in sets.items()},
        "measures": {t: data.tasks[t].measure for t in tasks},
        "kl": "kl_last: mean next-token KL(unsteered || steered) after the last token of 120 held-out texts",
        "bars": {"C1_gain_lo_above": C1_BAR, "C2_side_change_lo_above": C2_BAR, "C3_all_minus_alone_lo_above": C3_BAR},
        "seconds": time.perf_counter() - t0,
        "threads": 1,
        "backend": args.backend,
        "model": args.model,
    }
    raw = {
        "info": info,
        "prompts": {mname: [_prompt(it) for it in v] for mname, v in sets.items()},
        "outcomes": {c: {mname: [int(x) for x in v] for mname, v in e["outcomes"].items()} for c, e in ev.items()},
        "kl_last": {c: e[sac.KL] for c, e in ev.items()},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + "_prompts.json", "w") as f:
        json.dump(raw, f, separators=(",", ":"))
    sac.save(sel, args.out + "_identify")
    report(raw, args.out)


def _data(model_name: str, m):
    """(SacData, evaluation sets per measure) of the v2 organism or of an organism-v3 alias."""
    if model_name == "llama-v2":
        from headscope.tasks.sac import organism_eval_sets, organism_sac

        return organism_sac(), organism_eval_sets()
    from headscope.tasks.sac_v3 import organism_v3_sac, v3_eval_sets

    return organism_v3_sac(m.tokenizer), v3_eval_sets()


def _prompt(it) -> str:
    return it["prompt"] if isinstance(it, dict) else it.prompt


def extend_random(args) -> None:
    """More random-head draws for an existing run: the identification is recomputed and must
    equal the stored heads (it is deterministic), then draws ``len(existing)..N-1`` are fitted
    and evaluated exactly as in :func:`main`, merged into the raw file, and the report redone."""
    from headscope.common.progress import log
    from headscope.loading import load_model
    from headscope.papers import sac

    path = args.out + "_prompts.json"
    with open(path) as f:
        raw = json.load(f)
    info = raw["info"]
    t0 = time.perf_counter()
    m = load_model(args.model, args.backend)
    data, _ = _data(args.model, m)
    tasks = list(data.tasks)
    heads = sac.heads_of(sac.identify(m, data, k=info["k"], show_progress=False))
    stored = {t: [tuple(h) for h in hs] for t, hs in info["heads"].items()}
    if {t: [tuple(h) for h in hs] for t, hs in heads.items()} != stored:
        raise SystemExit(f"identification changed: {heads} vs stored {stored}; rerun the whole table instead")
    all_sac = [h for t in tasks for h in heads[t]]
    have = len(info["random_heads"])
    cond: dict[str, list] = {}
    for r in range(have, args.extend_random):
        hs = {
            t: sac.random_control_heads(m, info["k"], seed=r * len(tasks) + i, selected=all_sac)
            for i, t in enumerate(tasks)
        }
        info["random_heads"][str(r)] = {t: [list(h) for h in v] for t, v in hs.items()}
        cond[f"random-gated:all#{r}"] = sac.compose(*sac.fit_all(m, data, hs, alpha=info["alpha"]).values())
    log(f"{len(cond)} new random draws fitted {time.perf_counter() - t0:.1f}s; evaluating")
    ev = sac.evaluate_outcomes(m, data, cond, show_progress=False)
    for c, e in ev.items():
        raw["outcomes"][c] = {mname: [int(x) for x in v] for mname, v in e["outcomes"].items()}
        raw["kl_last"][c] = e[sac.KL]
    info["seconds_extend_random"] = time.perf_counter() - t0
    info["random_draws_note"] = (
        f"draws 0-{have - 1} from the original run; {have}-{args.extend_random - 1} added with --extend-random "
        "to meet the project's >= 20 random-head draws"
    )
    with open(path, "w") as f:
        json.dump(raw, f, separators=(",", ":"))
    report(raw, args.out)


def report(raw: dict, out: str) -> None:
    """docs/results/sac.{json,md} from the raw per-prompt outcomes (``--from-raw`` reruns only this)."""
    info = raw["info"]
    ev = {
        c: {"outcomes": {mname: [bool(x) for x in v] for mname, v in oc.items()}, "kl_last": raw["kl_last"][c]}
        for c, oc in raw["outcomes"].items()
    }
    res = analyse(ev, info["measures"])
    res.update(info)
    res["out"] = out
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(out + ".md", "w") as f:
        f.write(md)
    print(md)


def analyse(ev: dict, measure: dict[str, str]) -> dict:
    """Rates with Wilson CIs, paired changes vs none and all-vs-alone with bootstrap CIs and McNemar p, verdicts."""
    from headscope.stats import rate, rate_change, verdict

    base = ev["none"]["outcomes"]
    rows: dict[str, dict] = {}
    for c, e in ev.items():
        r: dict = {"kl_last": e["kl_last"]}
        for mname, v in e["outcomes"].items():
            est = rate(sum(v), len(v))
            r[mname] = {"rate": est.to_dict()}
            if c != "none":
                ch, p = rate_change(base[mname], v)
                r[mname]["change"] = ch.to_dict()
                r[mname]["mcnemar_p"] = p
        rows[c] = r
    tasks = list(measure)
    claims: dict = {"C1": {}, "C2": {}, "C3": {}}
    allr = rows["sac-gated:all"]
    for t in tasks:
        ch = allr[measure[t]]["change"]
        claims["C1"][t] = {"change": ch, "p": allr[measure[t]]["mcnemar_p"], "verdict": _verdict(ch, C1_BAR, verdict)}
    for mname in SIDE:
        ch = allr[mname]["change"]
        claims["C2"][mname] = {"change": ch, "p": allr[mname]["mcnemar_p"], "verdict": _verdict(ch, C2_BAR, verdict)}
    for method in ("sac-gated", "sac-ungated", "iti-gated", "iti-ungated", "repe-gated", "repe-ungated"):
        claims["C3"][method] = {}
        for t in tasks:
            alone = ev[f"{method}:{t}"]["outcomes"][measure[t]]
            together = ev[f"{method}:all"]["outcomes"][measure[t]]
            ch, p = rate_change(alone, together)
            claims["C3"][method][t] = {"change": ch.to_dict(), "p": p, "verdict": verdict(ch, C3_BAR)}
    return {"rows": rows, "claims": claims}


def _verdict(ch: dict, bar: float, verdict) -> str:
    from headscope.stats import Estimate

    return verdict(Estimate(**ch), bar)


def _ci(d: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(d['value'])} [{f.format(d['lo'])}, {f.format(d['hi'])}]"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}"


def markdown(res: dict) -> str:
    from headscope.results import format_head
    from headscope.stats import md_table

    heads, iti_h, jac = res["heads"], res["iti_heads"], res["jaccard"]
    rnd_h = res["random_heads"]
    rows, n = res["rows"], res["n"]
    cols = list(n)

    def fmt(hs: list) -> str:
        return ", ".join(format_head(tuple(h)) for h in hs)

    out = [
        f"# SAC results on `{res.get('model', 'llama-v2')}` "
        "(evaluation split, disjoint by item from identification and fitting)",
        "",
        f"k = {res['k']} heads per task, α = {res['alpha']}, RepE layers {res['repe_layers']}; "
        "protocol, splits and bars: docs/sac.md and the docstring of `experiments/sac_table.py`. "
        f"Per-prompt outcomes: `{res.get('out', 'docs/results/sac')}_prompts.json`.",
        "",
        "SAC heads (identify split): " + "; ".join(f"{t}: {fmt(hs)}" for t, hs in heads.items()),
        "",
        "ITI probe heads (identify split): " + "; ".join(f"{t}: {fmt(hs)}" for t, hs in iti_h.items()),
        "",
        "Jaccard: " + ", ".join(f"{k} {v:.2f}" for k, v in jac.items()),
        "",
        "## Rates (Wilson 95% CI)",
        "",
        md_table(
            ["condition", *[f"{c} (n={n[c]})" for c in cols], "kl_last"],
            [[c, *[_ci(r[m]["rate"]) for m in cols], f"{max(r['kl_last'], 0.0):.4f}"] for c, r in rows.items()],
        ),
        "",
        "## Change vs `none` (same prompts: paired bootstrap 95% CI, McNemar exact p)",
        "",
        md_table(
            ["condition", *cols],
            [
                [c, *[f"{_ci(r[m]['change'], True)} p={_p(r[m]['mcnemar_p'])}" for m in cols]]
                for c, r in rows.items()
                if c != "none"
            ],
        ),
        "",
        "## Claims (verdict by the CI bound, `headscope.stats.verdict`)",
        "",
    ]
    cl = res["claims"]
    crow = []
    for t, d in cl["C1"].items():
        crow.append([f"C1 {t}: gain > 0.20 (SAC, all three)", _ci(d["change"], True), _p(d["p"]), d["verdict"]])
    for mname, d in cl["C2"].items():
        crow.append([f"C2 {mname}: drop ≤ 0.03 (SAC, all three)", _ci(d["change"], True), _p(d["p"]), d["verdict"]])
    for method, dd in cl["C3"].items():
        for t, d in dd.items():
            crow.append([f"C3 {method} {t}: all − alone > −0.10", _ci(d["change"], True), _p(d["p"]), d["verdict"]])
    out.append(md_table(["claim", "estimate [95% CI]", "McNemar p", "verdict"], crow))
    out += [
        "",
        "Random heads (gated Gaussian maps; seeds r·3 + task index): "
        + "; ".join(f"#{r}: " + ", ".join(f"{t} {fmt(hs)}" for t, hs in d.items()) for r, d in rnd_h.items()),
        "",
        f"Wall time {res['seconds']:.0f} s on 1 thread ({res['backend']}).",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
