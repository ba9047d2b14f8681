"""Paper table: Twin-sight vs FedAvg (labelled clients), FedAvg+FixMatch/FreeMatch and FedAvg (all labels).

Regenerates the "Results" table of docs/twinsight.md. Twin-sight's Table 1 setting scaled
to the offline datasets: 10 clients of which 4 are labelled (clients 0–3, all their rows)
and 6 unlabelled, Dirichlet α ∈ {0.1, 0.5}, 5 clients sampled per round, seeds 0, 1, 2,
on digits (8×8) and MNIST-1D. All algorithms run in the same process on the same
partitions, the same initial model and the same hyper-parameters: MLP (3 blocks, 128
hidden), SGD lr 0.05 momentum 0.9, batch 64, 30 rounds, 5 local epochs on digits / 2 on
MNIST-1D; Twin-sight sim 1.0, insDis 0.5, InfoNCE T 0.07; FixMatch τ 0.95; FreeMatch EMA
0.999. Prints mean ± std test accuracy and says, per setting, whether Twin-sight beats
each baseline — with numbers where it does not.

    python experiments/twinsight_table.py [--datasets digits,mnist1d] [--alphas 0.1,0.5] [--seeds 0,1,2]
                                          [--rounds 30] [--local-epochs digits:5,mnist1d:2] [--out docs/results]

Writes ``<out>/twinsight.json`` (every run; rewritten after each one) and
``<out>/twinsight.md`` (the table and claims quoted in docs/twinsight.md); ``--out`` defaults
to docs/results. Runs on one thread; the full table took 546 s (measured) on a shared
2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python experiments/...` from anywhere

from federated.runner import RunResult, run
from federated.semi import SemiConfig
from headscope.common import log
from headscope.common.threads import num_threads

ORDER = ("fedavg_labelled", "fixmatch", "freematch", "twinsight", "fedavg_all_labels")
NAMES = {
    "fedavg_labelled": "FedAvg, labelled clients only (lower bound)",
    "fixmatch": "FedAvg + FixMatch",
    "freematch": "FedAvg + FreeMatch",
    "twinsight": "Twin-sight",
    "fedavg_all_labels": "FedAvg, all labels (upper bound)",
}


def settings(res: list[RunResult]) -> list[tuple[str, float]]:
    return sorted({(r.dataset, r.alpha) for r in res}, key=lambda t: (t[0] != "digits", t[0], t[1]))


def accs(res: list[RunResult], algo: str, ds: str, alpha: float) -> np.ndarray:
    rows = sorted(
        (r for r in res if r.algorithm == algo and r.dataset == ds and r.alpha == alpha), key=lambda r: r.seed
    )
    return np.array([r.accuracy for r in rows]) * 100


def table(res: list[RunResult]) -> str:
    """Markdown: rows = algorithms, columns = (dataset, α), cells = mean ± std accuracy (%) over seeds."""
    cols = settings(res)
    seeds = sorted({r.seed for r in res})
    lines = [
        f"test accuracy (%), mean ± std over seeds {seeds}; {res[0].clients} clients, 4 labelled",
        "",
        "| algorithm | " + " | ".join(f"{d} α={a:g}" for d, a in cols) + " | up / round, digits (KB) |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for algo in ORDER:
        if not any(r.algorithm == algo for r in res):
            continue
        cells = []
        for d, a in cols:
            v = accs(res, algo, d, a)
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}" if len(v) else "–")
        up = np.mean([r.bytes_up / r.rounds / 1024 for r in res if r.algorithm == algo and r.dataset == cols[0][0]])
        lines.append(f"| {NAMES[algo]} | " + " | ".join(cells) + f" | {up:.0f} |")
    return "\n".join(lines)


def claims(res: list[RunResult]) -> list[str]:
    """Twin-sight vs each baseline per setting, on the seed means and seed by seed."""
    out = []
    for d, a in settings(res):
        ts = accs(res, "twinsight", d, a)
        if not len(ts):
            continue
        for base in ("fedavg_labelled", "fixmatch", "freematch"):
            b = accs(res, base, d, a)
            if len(b) != len(ts):
                continue
            wins = int((ts > b).sum())
            verdict = "holds" if ts.mean() > b.mean() else "DOES NOT HOLD"
            rel = ">" if ts.mean() > b.mean() else "<="
            out.append(
                f"- {d} α={a:g}: Twin-sight {ts.mean():.1f} {rel} {NAMES[base]} {b.mean():.1f} "
                f"(Δ {ts.mean() - b.mean():+.1f}; Twin-sight ahead on {wins}/{len(ts)} seeds) — {verdict}"
            )
        up = accs(res, "fedavg_all_labels", d, a)
        if len(up):
            out.append(
                f"- {d} α={a:g}: gap to {NAMES['fedavg_all_labels']} {up.mean():.1f}: {ts.mean() - up.mean():+.1f}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="digits,mnist1d")
    p.add_argument("--alphas", default="0.1,0.5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--algorithms", default=",".join(ORDER))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument(
        "--local-epochs",
        default="digits:5,mnist1d:2",
        help="per dataset (official: 1 epoch over CIFAR-size clients; the clients here hold ~120 / ~360 rows)",
    )
    p.add_argument(
        "--lr", type=float, default=0.05, help="official 0.01 is for hundreds of rounds; 0.05 for the 30 run here"
    )
    p.add_argument("--model", default="mlp")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--from-json", nargs="*", default=None, help="only summarise these twinsight.json files")
    args = p.parse_args(argv)
    with num_threads(1):
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    epochs = {k: int(v) for k, v in (kv.split(":") for kv in args.local_epochs.split(",") if kv)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        res = [RunResult(**d) for f in args.from_json for d in json.loads(Path(f).read_text())]
    else:
        res = []
        t0 = time.perf_counter()
        for ds in [d for d in args.datasets.split(",") if d]:
            for alpha in [float(a) for a in args.alphas.split(",") if a]:
                for seed in [int(s) for s in args.seeds.split(",") if s]:
                    for algo in [a for a in args.algorithms.split(",") if a]:
                        cfg = SemiConfig(
                            algorithm=algo,
                            dataset=ds,
                            alpha=alpha,
                            seed=seed,
                            rounds=args.rounds,
                            local_epochs=epochs.get(ds, 1),
                            lr=args.lr,
                            model=args.model,
                        )
                        r = run(cfg)
                        res.append(r)
                        log(
                            f"[twinsight table] {ds} α={alpha:g} seed={seed} {algo}: {r.accuracy:.4f} "
                            f"({r.seconds:.1f} s, total {time.perf_counter() - t0:.0f} s)"
                        )
                        (out / "twinsight.json").write_text(json.dumps([x.to_dict() for x in res], indent=1))
        log(f"[twinsight table] total {time.perf_counter() - t0:.0f} s")
    text = table(res) + "\n\n" + "\n".join(claims(res)) + "\n"
    print(text)
    (out / "twinsight.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
