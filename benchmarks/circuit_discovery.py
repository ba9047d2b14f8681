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

Each AUROC, CPR and CMD has a 95% percentile-bootstrap interval over the prompt pairs
(``--boot`` resamples; every method is rescored on each resample).

    python benchmarks/circuit_discovery.py [--n 24] [--steps 5] [--boot 200] [--json out/circuit_discovery.json]
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


METHODS = ("eap", "eap-ig", "eap-ig-activations", "exact")


def evaluate(model, clean, corrupt, ans, wrong, truth, steps: int) -> dict:
    """Per method: edge scores, AUROC against ``truth``, the top-n faithfulness curve (CPR,
    CMD) and CPU seconds, on one set of prompt pairs."""
    from headscope.common.metrics import logit_diff
    from headscope.eap import edge_attribution
    from headscope.faithfulness import MIB_FRACTIONS, Ablator, edge_auroc

    def metric(lg):
        return logit_diff(lg, ans, wrong)

    ab = Ablator(model, clean, corrupt, metric)
    out = {}
    for method in METHODS:
        t0 = time.process_time()
        s = edge_attribution(model, clean, corrupt, metric, method=method, steps=steps)
        dt = time.process_time() - t0
        curve = ab.curve(s, MIB_FRACTIONS)
        out[method] = {
            "scores": s,
            "auroc": edge_auroc(s, truth)["auroc"],
            "cpr": curve["cpr"],
            "cmd": curve["cmd"],
            "cpu_s": dt,
            "curve": curve["points"],
        }
    return out


def main() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from headscope.backends.tl import tl_edge_attribution
    from headscope.eap import edge_attribution
    from headscope.graph import load_edges
    from headscope.loading import load_model
    from headscope.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples of the prompt pairs [200]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    _, truth = load_edges(ROOT / "tests/circuits/induction.edges.json")
    model = load_model("induction", "tl")
    batch = get_task("induction", n=args.n).prepare(model)
    clean, corrupt, ans, wrong = batch.clean, batch.corrupt, batch.answer, batch.wrong
    full = evaluate(model, clean, corrupt, ans, wrong, truth, args.steps)
    # Percentile bootstrap over prompt pairs: every method rescored on each resample.
    rng = np.random.default_rng(0)
    boot: dict[str, dict[str, list[float]]] = {m: {"auroc": [], "cpr": [], "cmd": []} for m in METHODS}
    for _ in range(args.boot):
        idx = torch.as_tensor(rng.integers(0, clean.shape[0], clean.shape[0]))
        res = evaluate(model, clean[idx], corrupt[idx], ans[idx], wrong[idx], truth, args.steps)
        for m in METHODS:
            for k in ("auroc", "cpr", "cmd"):
                boot[m][k].append(res[m][k])

    def ci(m: str, k: str) -> list[float]:
        return [float(np.percentile(boot[m][k], 2.5)), float(np.percentile(boot[m][k], 97.5))]

    t0 = time.process_time()
    peer = tl_edge_attribution(model, clean, corrupt, ans, wrong)
    t_tl = time.process_time() - t0
    t0 = time.process_time()
    den = edge_attribution(model, clean, corrupt, batch.metric_fn(), direction="denoise")
    t_den = time.process_time() - t0
    names = sorted(peer)
    diff = max(abs(den.edge(e) - peer[e]) for e in names)
    tl_abs = [abs(peer[e]) for e in names]
    corr = {m: float(spearmanr(tl_abs, [abs(r["scores"].edge(e)) for e in names]).statistic) for m, r in full.items()}
    print(
        f"induction organism, task induction (n = {args.n} prompt pairs), {len(names)} edges, {len(truth)} true "
        f"edges; corrupt ablation; 1 torch thread, CPU seconds; [95% CI]: percentile bootstrap over the prompt "
        f"pairs, {args.boot} resamples, every method rescored on each"
    )
    print(
        "| method | AUROC [95% CI] | CPR [95% CI] | CMD [95% CI] | CPU s | "
        f"Spearman of |score| with TL's (n = {len(names)} edges) |"
    )
    print("|---|---|---|---|---|---|")
    rows = []
    for m in METHODS:
        r = full[m]
        label = m + (f" ({args.steps} steps)" if m.startswith("eap-ig") else "")
        cells = " | ".join(f"{r[k]:.3f} [{ci(m, k)[0]:.3f}, {ci(m, k)[1]:.3f}]" for k in ("auroc", "cpr", "cmd"))
        print(f"| {label} | {cells} | {r['cpu_s']:.1f} | {corr[m]:+.3f} |")
        rows.append({"method": label, **{k: r[k] for k in ("auroc", "cpr", "cmd", "cpu_s", "curve")},
                     **{f"{k}_ci95": ci(m, k) for k in ("auroc", "cpr", "cmd")},
                     "bootstrap": boot[m]})  # fmt: skip
    print()
    print("| peer | CPU s | headscope EAP (denoise) CPU s | max |difference| |")
    print("|---|---|---|---|")
    print(f"| TransformerLens 4.3 attribution_patch (edge) | {t_tl:.1f} | {t_den:.1f} | {diff:.1e} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "n_boot": args.boot,
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
