"""The one-shot comparison table across algorithms and Dirichlet α (mean ± std over seeds).

Library side of ``headscope fl bench`` and of ``experiments/federated_table.py`` (which
regenerates the table in docs/federated.md). Local training is shared between the
algorithms that start from the same client models (FedAvg, Ensemble, FedDF, DENSE,
Co-Boosting) through the runner's reply cache, so each (α, seed) trains the clients once
for them; FuseFL trains its own staged models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from headscope.common import HeadscopeError, log

from .protocol import FLConfig
from .runner import ALGORITHMS, RunResult, run

ORDER = ("fedavg", "feddf", "dense", "coboosting", "fusefl", "ensemble")


def run_table(
    base: FLConfig, alphas: Sequence[float], seeds: Sequence[int], algorithms: Sequence[str] = ORDER
) -> list[RunResult]:
    """Run every algorithm for every (α, seed) in-process; returns all results."""
    for a in algorithms:
        if a not in ALGORITHMS:
            raise HeadscopeError(f"unknown algorithm {a!r}; choose from {', '.join(ALGORITHMS)}")
    out = []
    for alpha in alphas:
        for seed in seeds:
            cache: dict = {}
            for a in algorithms:
                r = run(base.replace(algorithm=a, alpha=float(alpha), seed=int(seed)), cache=cache)
                log(f"[fl table] α={alpha:g} seed={seed} {a}: acc={r.accuracy:.4f} ({r.seconds:.0f} s)")
                out.append(r)
    return out


def summary_table(results: list[RunResult]) -> str:
    """Markdown: rows = algorithms, columns = α, cells = mean ± std accuracy (%) over seeds; plus KB sent up."""
    alphas = sorted({r.alpha for r in results})
    algos = [a for a in ORDER if any(r.algorithm == a for r in results)] + sorted(
        {r.algorithm for r in results} - set(ORDER)
    )
    seeds = sorted({r.seed for r in results})
    head = "| algorithm | " + " | ".join(f"α={a:g}" for a in alphas) + " | up / client (KB) |"
    lines = [
        f"accuracy (%) on {results[0].dataset}, {results[0].clients} clients, mean ± std over seeds {seeds}",
        "",
        head,
        "|---" * (len(alphas) + 2) + "|",
    ]
    for algo in algos:
        cells = []
        for a in alphas:
            accs = np.array([r.accuracy for r in results if r.algorithm == algo and r.alpha == a]) * 100
            cells.append(f"{accs.mean():.1f} ± {accs.std():.1f}" if len(accs) else "–")
        ups = [r.bytes_up / r.clients / 1024 for r in results if r.algorithm == algo]
        lines.append(f"| {algo} | " + " | ".join(cells) + f" | {np.mean(ups):.0f} |")
    return "\n".join(lines)


def check_claims(results: list[RunResult]) -> list[str]:
    """The papers' expected orderings, checked per α on the seed means; one line per claim: holds / does not hold."""
    msgs = []
    for a in sorted({r.alpha for r in results}):
        mean = {}
        for algo in {r.algorithm for r in results}:
            accs = [r.accuracy for r in results if r.algorithm == algo and r.alpha == a]
            mean[algo] = float(np.mean(accs)) * 100
        for better in ("fusefl", "coboosting"):
            for worse in ("fedavg", "dense"):
                if better in mean and worse in mean:
                    ok = mean[better] > mean[worse]
                    rel, verdict = (">", "holds") if ok else ("<=", "DOES NOT HOLD")
                    msgs.append(f"α={a:g}: {better} {mean[better]:.1f} {rel} {worse} {mean[worse]:.1f} — {verdict}")
        if "fusefl" in mean and "ensemble" in mean:
            gap = mean["ensemble"] - mean["fusefl"]
            msgs.append(f"α={a:g}: fusefl {mean['fusefl']:.1f} vs ensemble {mean['ensemble']:.1f} (gap {gap:+.1f})")
    return msgs
