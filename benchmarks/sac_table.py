"""SAC results table on the bundled ``llama`` organism (run once; numbers go to docs/results/sac.*).

Identifies each task's heads by path patching, fits the controllers on the training
stimuli, and evaluates on held-out prompts: no control; SAC per task and all three at
once; RepE per task and all three at once (three layer-level shifts added together);
RepE-Mean; RepE-Merge; ITI top-K probe heads (per task, all); random heads (all, gated
Gaussian maps like SAC's); SAC without its in-distribution gate (all).

    python benchmarks/sac_table.py [--k 4] [--alpha 1.0] [--out docs/results/sac]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HEADSCOPE_HTML_CDN", "1")  # small HTML in docs/results (plotly.js from the CDN)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--repe-layers", default="1,2,3,4")
    ap.add_argument("--out", default="docs/results/sac")
    ap.add_argument("--backend", default="tl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from headscope import sac
    from headscope.common.progress import log
    from headscope.loading import load_model
    from headscope.steering import compose

    t0 = time.perf_counter()
    m = load_model("llama", args.backend)
    ident = sac.identify(m, k=args.k, show_progress=False)
    log(f"identify {time.perf_counter() - t0:.1f}s heads={ident.heads} jaccard={ident.jaccard}")
    tasks = list(sac.SAC_TASKS)
    a = args.alpha
    sac_c = {t: sac.fit(m, t, ident.heads[t], alpha=a) for t in tasks}
    layers = [int(x) for x in args.repe_layers.split(",")]
    diffs = {t: sac.repe_data(m, t, layers) for t in tasks}
    repe_c = {t: sac.repe_fit(f"repe:{t}", diffs[t], a) for t in tasks}
    merged = {L: torch.cat([diffs[t][L] for t in tasks]) for L in layers}
    iti_h = {t: sac.iti_heads(m, t, args.k) for t in tasks}
    iti_c = {t: sac.fit(m, t, iti_h[t], kind="add", alpha=a) for t in tasks}
    all_sac = [h for t in tasks for h in ident.heads[t]]
    rnd_c = {
        t: sac.fit(m, t, sac.random_heads(m, args.k, seed=i, exclude=all_sac), alpha=a) for i, t in enumerate(tasks)
    }
    cond = {"none": []}
    for name, cs in (("sac", sac_c), ("repe", repe_c), ("iti", iti_c)):
        for t in tasks:
            cond[f"{name}:{t}"] = cs[t].patches()
        cond[f"{name}:all"] = compose(*cs.values())
    cond["repe-mean:all"] = sac.repe_mean("repe-mean", list(repe_c.values()), a).patches()
    cond["repe-merge:all"] = sac.repe_fit("repe-merge", merged, a).patches()
    cond["random:all"] = compose(*rnd_c.values())
    # Ablation: SAC's maps without the in-distribution gate (applied to every input).
    cond["sac-ungated:all"] = compose(*(sac.fit(m, t, ident.heads[t], alpha=a, gate=None) for t in tasks))
    # Ablation: the gate's radius test alone (no source-vs-background test).
    cond["sac-radius-gate:all"] = compose(*(sac.fit(m, t, ident.heads[t], alpha=a, background=False) for t in tasks))
    rows = sac.evaluate_all(m, cond, show_progress=False)
    summary = {meth: sac.conflict_summary(rows, meth) for meth in ("sac", "repe", "iti")}
    base = rows["none"]
    allr = rows["sac:all"]
    accept = {
        "gains_ge_20pts": {t: allr[mt] - base[mt] >= 0.20 for t, mt in sac.TASK_METRIC.items()},
        "arith_drop_le_3pts": base["arithmetic"] - allr["arithmetic"] <= 0.03,
        "facts_drop_le_3pts": base["facts"] - allr["facts"] <= 0.03,
    }
    res = {
        "identify": ident.to_dict(),
        "alpha": a,
        "k": args.k,
        "repe_layers": layers,
        "iti_heads": {t: [list(h) for h in hs] for t, hs in iti_h.items()},
        "rows": rows,
        "conflict": summary,
        "acceptance": accept,
        "seconds": time.perf_counter() - t0,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    md = [
        "# SAC results on `llama` (held-out prompts)",
        "",
        f"k = {args.k} heads per task, α = {a}, RepE layers {layers}.",
        "",
        "Head sets: " + "; ".join(f"{t}: " + ", ".join(f"L{L}H{h}" for L, h in hs) for t, hs in ident.heads.items()),
        "",
        "Jaccard: " + ", ".join(f"{k} {v:.2f}" for k, v in ident.jaccard.items()),
        "",
        sac.markdown_table(rows),
        "",
        "## Control conflict (gain over no control: single-task control vs all three at once)",
        "",
    ]
    for meth, s in summary.items():
        md.append(
            f"- {meth}: " + "; ".join(f"{t} {v['single_gain']:+.3f} → {v['multi_gain']:+.3f}" for t, v in s.items())
        )
    md += ["", f"Acceptance (SAC, all three): {json.dumps(accept)}", ""]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    ident.save(os.path.join(os.path.dirname(args.out) or ".", "sac_identify"))


if __name__ == "__main__":
    main()
