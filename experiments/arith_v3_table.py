"""Paper table: arithmetic heads on organism v3 (issue 17), held-out items, CIs and placebo heads.

    python experiments/arith_v3_table.py [--model llama-v3] [--out docs/results/arith_v3]
    python experiments/arith_v3_table.py --stage table [--out docs/results/arith_v3]   # Markdown from the JSON only

Outputs: ``{out}.json`` (protocol, items, identification maps, knockout with every
per-prompt outcome as a "0110…" string) and ``{out}.md``. Seeds 1 and 2 (``--model
llama-v3-s1``) write ``{out}_s1.json`` and so on when their weights are bundled.

Protocol (fixed before the first run on v3; the arithmetic paper's §3.2–3.3 as in
experiments/arith_table.py, on the v3 data)
-----------------------------------------------------------------------------------
Items. Organism v3's held-out + and − operand pairs (never in training, in any frame;
docs/organism_v3.md §4) with two two-digit operands and a two-digit answer (so the
answer's first token, its leading digit, depends on both operands and on the carry),
split by item into halves ``identify`` / ``evaluate``
(``headscope.tasks.arithmetic_v3.part_of``, salted hash of (op, A, B)).

1. Identification on the identify half in two training frames (``eq/sym``
   ``A + B =`` and ``qa/sym`` ``Q : What is A + B ? A :``), kept where the model's greedy
   first answer token is right. Path patching head → logits with the paper's relative
   answer-logit score, once per counterfactual: operator → ``@`` (the paper), operand A →
   another number, operand B → another number (same digit counts, another leading digit
   of the answer); key heads: score ≤ −5 %; the union selects a head that passes in any
   map. "Fewer than 10 % of heads" is decided on the count: ≤ 4 of 48.
2. Knockout on the evaluate half in two held-out frames (``question/sym``
   ``Here is a question : what is A + B ? Answer :`` and ``find/sym`` ``Can you find A + B ?
   It is``; carriers never in training), correct prompts only. Mean ablation per token
   length and position, the means over the identify half's items in the same held-out
   frames (no evaluated item informs its own ablation). Every head alone (accuracy with
   Wilson 95 % CI, McNemar exact p); per condition (each map's heads, the union, the
   union's top-k for k = 1, 2, 4, 8) the accuracy against 50 placebo draws
   ``controls.random_heads(6, 8, k, seed=d, exclude=condition)``: placebo p and the gap
   (mean placebo accuracy − selected accuracy, paired over prompts, BCa 95 % CI).
   Bar (issue 4): gap ≥ 30 points, met iff the gap's lower bound > 0.30.
3. Accuracy is first-token accuracy (the leading digit), as in the paper's protocol.

Nothing here is tuned on v3's results: the frames, halves, thresholds and bars were
written before the model was trained (this docstring is committed with the script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headscope.papers import arithmetic as ar  # noqa: E402
from headscope.results import format_head  # noqa: E402
from headscope.stats import Estimate, fmt_ci, md_table, rate  # noqa: E402
from headscope.tasks.arithmetic_v3 import arithmetic_v3_task  # noqa: E402

IDENTIFY_FRAMES = ("eq/sym", "qa/sym")
EVALUATE_FRAMES = ("question/sym", "find/sym")
MAPS = ("operator", "A", "B")
KS = (1, 2, 4, 8)
GAP_BAR = 0.30
CRITICAL_BAR = 0.95


def rows_of(frames, part: str, corruption: str, organism: str) -> list[dict]:
    rows = []
    for frame in frames:
        t = arithmetic_v3_task(
            frame=frame, part=part, corruption=corruption, answer_digits=2, n=None, organism=organism
        )
        for clean, corrupt, ans, wrong, meta in zip(t.clean, t.corrupt, t.answers, t.wrong, t.meta):
            rows.append({"prompt": clean, "corrupt": corrupt, "answer": ans, "wrong": wrong, **meta})
    return rows


def _compact(obj):
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(x, bool) for x in obj):
        return "".join("1" if x else "0" for x in obj)
    if isinstance(obj, list):
        return [_compact(x) for x in obj]
    return obj


def run(model_name: str, draws: int, per_group: int, knockout: bool = True) -> dict:
    from headscope.loading import load_model

    t0 = time.time()
    model = load_model(model_name, "tl")
    res: dict = {"protocol": __doc__, "model": model_name, "draws": draws}
    ident_all = {m: rows_of(IDENTIFY_FRAMES, "identify", m, model_name) for m in MAPS}
    # the same clean prompts under each counterfactual; keep those the model answers (first token)
    ok = {r["prompt"] for r in ar.filter_correct(model, ident_all["A"])}
    rows_by = {m: [r for r in rows if r["prompt"] in ok] for m, rows in ident_all.items()}
    evaluate_all = rows_of(EVALUATE_FRAMES, "evaluate", "A", model_name)
    reference = rows_of(EVALUATE_FRAMES, "identify", "A", model_name)
    items_id = {(r["op"], r["a"], r["b"]) for r in ident_all["A"]}
    items_ev = {(r["op"], r["a"], r["b"]) for r in evaluate_all}
    assert not items_id & items_ev
    base_id = ar.correct_mask(model, ident_all["A"])
    base_ev = ar.correct_mask(model, evaluate_all)
    res["items"] = {"identify": len(items_id), "evaluate": len(items_ev)}
    res["base"] = {
        "identify": rate(sum(base_id), len(base_id)).to_dict(),
        "evaluate": rate(sum(base_ev), len(base_ev)).to_dict(),
    }
    print(f"[{model_name}] items {res['items']} base {res['base']}", flush=True)
    maps = ar.identify_maps(model, rows_by, max_per_group=per_group, mlps=False, show_progress=False)
    res["identify"] = {
        name: {
            "heads": [format_head(h) for h in sel.heads],
            "k": len(sel.heads),
            "scores": sel.scores.scores.tolist(),
            "n_prompts": sel.scores.info.get("n_prompts"),
        }
        for name, sel in maps.items()
    }
    for name, sel in maps.items():
        print(f"  {name}: {[format_head(h) for h in sel.heads]}", flush=True)
    union = maps["union"]
    flat = union.scores.scores.flatten()
    order = flat.argsort().tolist()  # most negative first
    ranked = [divmod(i, model.n_heads) for i in order]
    conditions: dict[str, list] = {}
    for m in MAPS:
        if maps[m].heads:
            conditions[f"{m} map"] = [tuple(h) for h in maps[m].heads]
    if union.heads:
        conditions["union"] = [tuple(h) for h in union.heads]
    for k in KS:
        conditions[f"union top-{k}"] = ranked[:k]
    res["conditions"] = {k: [format_head(h) for h in v] for k, v in conditions.items()}
    if not knockout:
        res["seconds"] = round(time.time() - t0, 1)
        return res
    evaluate = [r for r, b in zip(evaluate_all, base_ev) if b]
    ko = ar.knockout_placebo(model, evaluate, conditions, reference, n_draws=draws, show_progress=False)
    res["knockout"] = ko
    res["seconds"] = round(time.time() - t0, 1)
    return res


def table(res: dict) -> str:
    def est(d) -> Estimate:
        return Estimate(**d)

    lines = [
        f"# Arithmetic heads on `{res['model']}` (organism v3; issue 17)",
        "",
        "Regenerate: `python experiments/arith_v3_table.py --model " + res["model"] + "`; protocol: the script's "
        "docstring (copied into the JSON). First-token accuracy on held-out items (never in training); "
        f"items identify {res['items']['identify']} / evaluate {res['items']['evaluate']}, disjoint.",
        "",
        f"Base first-token accuracy: identify (training frames) {fmt_ci(est(res['base']['identify']))} "
        f"(n = {res['base']['identify']['n']}); evaluate (held-out frames) {fmt_ci(est(res['base']['evaluate']))} "
        f"(n = {res['base']['evaluate']['n']}).",
        "",
        "## Identification (path patching to logits, relative answer-logit score ≤ −5 %)",
        "",
    ]
    rows = []
    for name, d in res["identify"].items():
        flat = [(s, L, h) for L, row in enumerate(d["scores"]) for h, s in enumerate(row)]
        low = ", ".join(f"L{L}H{h} {s:+.3f}" for s, L, h in sorted(flat)[:5])
        rows.append([name, f"{d['k']} / 48", ", ".join(d["heads"]) or "–", low, "met" if d["k"] <= 4 else "not met"])
    lines.append(md_table(["counterfactual", "heads ≤ −5 %", "selected", "five lowest scores", "≤ 4 of 48"], rows))
    if "knockout" not in res:
        lines += ["", "Knockout: not run for this model (`--stage identify`).", ""]
        return "\n".join(lines)
    ko = res["knockout"]
    lines += [
        "",
        f"## Knockout (mean ablation, evaluate half in held-out frames, n = {ko['n']} correctly answered prompts; "
        f"{ko['n_draws']} placebo draws per condition)",
        "",
    ]
    rows = []
    for name, c in ko["conditions"].items():
        pl = c.get("placebo", {})
        gap = c.get("gap")
        rows.append(
            [
                name,
                ", ".join(res["conditions"][name]),
                fmt_ci(est(c["accuracy"])),
                f"{pl.get('mean', float('nan')):.3f} ± {pl.get('sd', float('nan')):.3f}",
                f"{pl.get('p', float('nan')):.3g}",
                fmt_ci(est(gap)) if gap else "–",
                "met" if gap and gap["lo"] > GAP_BAR else "not met",
            ]
        )
    lines.append(
        md_table(
            [
                "condition",
                "heads",
                "accuracy [95% CI]",
                "placebo mean ± sd",
                "placebo p",
                "gap [95% CI]",
                "gap > 0.30",
            ],
            rows,
        )
    )
    lines += ["", "Single heads (mean-ablated alone), the ten lowest:", ""]
    single = sorted(ko["single"].items(), key=lambda kv: kv[1]["accuracy"]["value"])[:10]
    lines.append(
        md_table(
            ["head", "accuracy [95% CI]", "McNemar p", "critical (hi < 0.95)"],
            [
                [
                    h,
                    fmt_ci(est(d["accuracy"])),
                    f"{d['mcnemar_p_vs_base']:.3g}",
                    "yes" if d["accuracy"]["hi"] < CRITICAL_BAR else "",
                ]
                for h, d in single
            ],
        )
    )
    lines.append("")
    return "\n".join(lines)


def seeds_table(base: Path) -> str:
    """Which selected heads recur across the training seeds whose results are present."""
    runs = {}
    for seed, path in ((0, base), *((s, Path(f"{base}_s{s}")) for s in (1, 2))):
        if path.with_suffix(".json").is_file():
            runs[seed] = json.loads(path.with_suffix(".json").read_text())
    lines = [
        "# Arithmetic key heads across organism v3's training seeds",
        "",
        "Regenerate: `python experiments/arith_v3_table.py --stage seeds` (reads `arith_v3.json`, "
        "`arith_v3_s1.json`, `arith_v3_s2.json` where present). Heads selected by path patching "
        "(relative answer-logit score ≤ −5 %) on each seed's identify half; seeds: "
        + ", ".join(str(s) for s in runs)
        + ". Seeds share the corpus and differ in initialisation and batch order. Heads of one layer "
        "are interchangeable under relabelling, so a role recurs when a head of the same layer is "
        "selected by the same counterfactual; the same index recurring is not expected.",
        "",
    ]
    rows = []
    for name in (*MAPS, "union"):
        per = {s: set(r["identify"][name]["heads"]) for s, r in runs.items()}
        common = set.intersection(*per.values()) if per else set()
        layers = [sorted({h.split("H")[0] for h in per[s]}) for s in runs]
        same_layers = "yes" if all(x == layers[0] for x in layers) else "no"
        cells = [", ".join(sorted(per[s])) or "–" for s in runs]
        rows.append([name, *cells, ", ".join(sorted(common)) or "none", same_layers])
    header = ["map", *(f"seed {s}" for s in runs), "same index in every seed", "same layers in every seed"]
    lines.append(md_table(header, rows))
    rows = []
    for s, r in runs.items():
        ko = r.get("knockout")
        u = ko["conditions"]["union"] if ko and "union" in ko["conditions"] else None
        rows.append(
            [
                s,
                f"{fmt_ci(Estimate(**r['base']['evaluate']))} ({r['base']['evaluate']['n']})",
                r["identify"]["union"]["k"],
                fmt_ci(Estimate(**u["accuracy"])) if u else "not run",
                f"{u['placebo']['mean']:.3f} ± {u['placebo']['sd']:.3f} (p {u['placebo']['p']:.3f})" if u else "–",
                fmt_ci(Estimate(**u["gap"])) if u else "not run",
            ]
        )
    header = [
        "seed",
        "base accuracy, evaluate [95% CI] (n)",
        "union k",
        "union knockout accuracy [95% CI]",
        "placebo mean ± sd (p)",
        "gap vs placebo [95% CI]",
    ]
    lines += ["", md_table(header, rows), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-v3")
    ap.add_argument("--out", default="docs/results/arith_v3")
    ap.add_argument(
        "--stage",
        default="main",
        choices=("main", "identify", "table", "seeds"),
        help="main: identify + knockout; identify: identification only; table: Markdown from the JSON; "
        "seeds: the cross-seed table of the selected heads from every {out}[_sN].json present",
    )
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--per-group", type=int, default=64)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    suffix = "_" + args.model.rsplit("-", 1)[-1] if args.model.startswith("llama-v3-s") else ""
    out = Path(args.out + suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.stage == "seeds":
        text = seeds_table(Path(args.out))
        Path(args.out + "_seeds.md").write_text(text)
        print(text)
        return 0
    if args.stage in ("main", "identify"):
        res = run(args.model, args.draws, args.per_group, knockout=args.stage == "main")
        out.with_suffix(".json").write_text(json.dumps(_compact(res), indent=1, default=str) + "\n")
    res = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".md").write_text(table(res))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
