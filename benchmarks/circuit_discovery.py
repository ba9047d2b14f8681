"""Circuit discovery against a known circuit: EAP, EAP-IG and exact edge patching, with
TransformerLens 4.3's ``attribution_patch`` (edge granularity) as the peer.

Ground truth: the ``induction`` organism's circuit in ``tests/circuits/induction.edges.json``
(previous-token head L0H0 -> the induction heads' keys; their queries and values from the
input; the induction heads -> logits), written from the heads that
``tests/circuits/induction.toml`` establishes, before any edge score was computed. The
tracr programs' circuits are not scored here: edge attribution runs on Hugging Face
decoders, and the tracr models load through TransformerLens's native bridge.

Per method: AUROC of ``|score|`` for the true edges, CPR and CMD of the top-n faithfulness
curve (MIB circuit sizes, corrupt ablation) and CPU seconds. Peer: TransformerLens's edge
scores (one pair at a time, summed over positions, denoising convention) against
headscope's EAP in the same convention (max difference; they should agree to float
rounding) and its CPU time; Spearman correlation of TransformerLens's ``|score|`` with each
headscope method's (magnitudes: circuits are chosen by them, and the noising methods'
signs are opposite to the peer's denoising ones). One torch thread, same process, same model and prompts.

    python benchmarks/circuit_discovery.py [--n 24] [--steps 5] [--json out/circuit_discovery.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from scipy.stats import spearmanr

    from headscope.backends.tl import tl_edge_attribution
    from headscope.eap import edge_attribution
    from headscope.faithfulness import MIB_FRACTIONS, Ablator, edge_auroc
    from headscope.graph import load_edges
    from headscope.loading import load_model
    from headscope.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    _, truth = load_edges(ROOT / "tests/circuits/induction.edges.json")
    model = load_model("induction", "tl")
    batch = get_task("induction", n=args.n).prepare(model)
    clean, corrupt, metric = batch.clean, batch.corrupt, batch.metric_fn()
    ab = Ablator(model, clean, corrupt, metric)
    rows = []
    scores = {}
    for method in ("eap", "eap-ig", "eap-ig-activations", "exact"):
        t0 = time.process_time()
        s = edge_attribution(model, clean, corrupt, metric, method=method, steps=args.steps)
        dt = time.process_time() - t0
        scores[method] = s
        curve = ab.curve(s, MIB_FRACTIONS)
        rows.append(
            {
                "method": method + (f" ({args.steps} steps)" if method.startswith("eap-ig") else ""),
                "auroc": edge_auroc(s, truth)["auroc"],
                "cpr": curve["cpr"],
                "cmd": curve["cmd"],
                "cpu_s": dt,
                "curve": curve["points"],
            }
        )
    t0 = time.process_time()
    peer = tl_edge_attribution(model, clean, corrupt, batch.answer, batch.wrong)
    t_tl = time.process_time() - t0
    t0 = time.process_time()
    den = edge_attribution(model, clean, corrupt, metric, direction="denoise")
    t_den = time.process_time() - t0
    names = sorted(peer)
    diff = max(abs(den.edge(e) - peer[e]) for e in names)
    tl_abs = [abs(peer[e]) for e in names]
    corr = {m: float(spearmanr(tl_abs, [abs(s.edge(e)) for e in names]).statistic) for m, s in scores.items()}
    print(
        f"induction organism, task induction (n = {args.n}), {int(ab.graph.mask.sum())} edges, "
        f"{len(truth)} true edges; corrupt ablation; 1 torch thread, CPU seconds"
    )
    print("| method | AUROC | CPR | CMD | CPU s | Spearman of |score| with TL's |score| |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        m = r["method"].split(" ")[0]
        cells = f"{r['auroc']:.3f} | {r['cpr']:.3f} | {r['cmd']:.3f} | {r['cpu_s']:.1f} | {corr[m]:+.3f}"
        print(f"| {r['method']} | {cells} |")
    print()
    print("| peer | CPU s | headscope EAP (denoise) CPU s | max |difference| |")
    print("|---|---|---|---|")
    print(f"| TransformerLens 4.3 attribution_patch (edge) | {t_tl:.1f} | {t_den:.1f} | {diff:.1e} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "rows": rows,
                    "peer": {"tl_cpu_s": t_tl, "headscope_cpu_s": t_den, "max_diff": diff},
                    "spearman_with_tl": corr,
                    "truth": truth,
                },
                indent=2,
            )  # fmt: skip
            + "\n"
        )


if __name__ == "__main__":
    main()
