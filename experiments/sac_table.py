"""SAC results table on the bundled ``llama`` organism: docs/results/sac.{json,md} and docs/results/sac_identify/.

Identifies each task's heads by path patching, fits the controllers on the training
stimuli, and evaluates on held-out prompts: no control; SAC per task and all three at
once; RepE per task and all three at once (three layer-level shifts added together);
RepE-Mean; RepE-Merge; ITI top-K probe heads (per task, all); random heads (all, gated
Gaussian maps like SAC's; :func:`headscope.controls.random_heads`, seed = task index,
never a head any task selected); SAC without its in-distribution gate (all); SAC with
the radius gate only (all). ``kl_last`` is the next-token KL after the last token of
each held-out text (:func:`headscope.controls.next_token_kl`, ``positions="last"``).

    python experiments/sac_table.py [--k 4] [--alpha 1.0] [--out docs/results/sac]

Runs on 1 CPU thread in about 1–3 minutes.
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
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--repe-layers", default="1,2,3,4")
    ap.add_argument("--out", default="docs/results/sac")
    ap.add_argument("--backend", default="tl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from headscope.common.progress import log
    from headscope.loading import load_model
    from headscope.papers import sac
    from headscope.results import format_head
    from headscope.tasks.sac import organism_sac

    t0 = time.perf_counter()
    m = load_model("llama", args.backend)
    data = organism_sac()
    tasks = list(data.tasks)
    sel = sac.identify(m, data, k=args.k, show_progress=False)
    heads = sac.heads_of(sel)
    jac = sac.overlap(sel)
    log(f"identify {time.perf_counter() - t0:.1f}s heads={heads} jaccard={jac}")
    a = args.alpha
    sac_c = sac.fit_all(m, data, heads, alpha=a)
    layers = [int(x) for x in args.repe_layers.split(",")]
    diffs = {t: sac.repe_data(m, data.tasks[t], layers) for t in tasks}
    repe_c = {t: sac.repe_fit(f"repe:{t}", diffs[t], a) for t in tasks}
    iti_h = {t: sac.iti_heads(m, data.tasks[t], args.k) for t in tasks}
    iti_c = sac.fit_all(m, data, iti_h, kind="add", alpha=a)
    all_sac = [h for t in tasks for h in heads[t]]
    rnd_h = {t: sac.random_control_heads(m, args.k, seed=i, selected=all_sac) for i, t in enumerate(tasks)}
    rnd_c = sac.fit_all(m, data, rnd_h, alpha=a)
    cond = {"none": []}
    for name, cs in (("sac", sac_c), ("repe", repe_c), ("iti", iti_c)):
        for t in tasks:
            cond[f"{name}:{t}"] = cs[t].patches()
        cond[f"{name}:all"] = sac.compose(*cs.values())
    cond["repe-mean:all"] = sac.repe_mean("repe-mean", list(repe_c.values()), a).patches()
    cond["repe-merge:all"] = sac.repe_merge("repe-merge", list(diffs.values()), a).patches()
    cond["random:all"] = sac.compose(*rnd_c.values())
    # Ablation: SAC's maps without the in-distribution gate (applied to every input).
    cond["sac-ungated:all"] = sac.compose(*sac.fit_all(m, data, heads, alpha=a, gate=None).values())
    # Ablation: the gate's radius test alone (no source-vs-background test).
    cond["sac-radius-gate:all"] = sac.compose(*sac.fit_all(m, data, heads, alpha=a, background=False).values())
    rows = sac.evaluate_all(m, data, cond, show_progress=False)
    summary = {meth: sac.conflict_summary(rows, data, meth) for meth in ("sac", "repe", "iti")}
    base = rows["none"]
    allr = rows["sac:all"]
    accept = {
        "gains_ge_20pts": {t: allr[task.measure] - base[task.measure] >= 0.20 for t, task in data.tasks.items()},
        "arith_drop_le_3pts": base["arithmetic"] - allr["arithmetic"] <= 0.03,
        "facts_drop_le_3pts": base["facts"] - allr["facts"] <= 0.03,
    }
    res = {
        "identify": sac.summary(sel),
        "alpha": a,
        "k": args.k,
        "repe_layers": layers,
        "iti_heads": {t: [list(h) for h in hs] for t, hs in iti_h.items()},
        "random_heads": {t: [list(h) for h in hs] for t, hs in rnd_h.items()},
        "kl": "kl_last: mean next-token KL(unsteered || steered) after the last token of 120 held-out texts",
        "rows": rows,
        "conflict": summary,
        "acceptance": accept,
        "seconds": time.perf_counter() - t0,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1)

    def fmt(hs: list) -> str:
        return ", ".join(format_head(h) for h in hs)

    md = [
        "# SAC results on `llama` (held-out prompts)",
        "",
        f"k = {args.k} heads per task, α = {a}, RepE layers {layers}.",
        "",
        "Head sets: " + "; ".join(f"{t}: {fmt(hs)}" for t, hs in heads.items()),
        "",
        "Random heads (controls.random_heads, seed = task index, excluding every SAC head): "
        + "; ".join(f"{t}: {fmt(hs)}" for t, hs in rnd_h.items()),
        "",
        "Jaccard: " + ", ".join(f"{k} {v:.2f}" for k, v in jac.items()),
        "",
        "`kl_last`: mean next-token KL(unsteered ‖ steered) after the last token of each of 120 held-out texts.",
        "",
        sac.markdown_table(rows, data.columns),
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
    sac.save(sel, os.path.join(os.path.dirname(args.out) or ".", "sac_identify"))


if __name__ == "__main__":
    main()
