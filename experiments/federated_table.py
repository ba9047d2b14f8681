"""Paper table: one-shot FL with FedAvg, FedDF, DENSE, Co-Boosting, FuseFL and the Ensemble (docs/federated.md).

Regenerates the "Results" table of docs/federated.md. Digits (scikit-learn), 5 clients,
Dirichlet α ∈ {0.1, 0.3, 0.5}, seeds 0, 1, 2, all algorithms in the same process on the
same partitions and (where they share it) the same trained client models. Prints mean ± std
test accuracy per α and checks the orderings the FuseFL and Co-Boosting papers report
(FuseFL, Co-Boosting > one-shot FedAvg, DENSE; FuseFL close to the ensemble), saying with
numbers where they do not hold.

    python experiments/federated_table.py [--seeds 0,1,2] [--alphas 0.1,0.3,0.5] [--out out/federated_bench]
    python experiments/federated_table.py --alphas 0.1 --out out/fl_a01   # one process per α, then:
    python experiments/federated_table.py --from-json out/fl_a0*/results.json --out out/federated_bench

Writes ``<out>/results.json`` (one row per run), ``<out>/results.md`` and ``<out>/summary.md``
(the table and the claims quoted in docs/federated.md). ``headscope fl bench --kd-epochs 20
--g-steps 20`` runs the same table (library: :mod:`federated.table`). Runs on one thread;
tens of minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python experiments/...` from anywhere

from federated.protocol import FLConfig
from federated.runner import RunResult, save_results
from federated.table import ORDER, check_claims, run_table, summary_table
from headscope.common.threads import num_threads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--alphas", default="0.1,0.3,0.5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--algorithms", default=",".join(ORDER))
    p.add_argument("--local-epochs", type=int, default=30)
    p.add_argument("--kd-epochs", type=int, default=20, help="DENSE/Co-Boosting epochs (papers: 200 on CIFAR)")
    p.add_argument("--g-steps", type=int, default=20, help="generator steps per epoch (papers: 30)")
    p.add_argument("--out", default="out/federated_bench")
    p.add_argument(
        "--from-json",
        nargs="*",
        default=None,
        help="only summarise these results.json files (e.g. from parallel runs)",
    )
    args = p.parse_args(argv)
    with num_threads(1):
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    if args.from_json:
        results = [RunResult(**d) for f in args.from_json for d in json.loads(Path(f).read_text())]
    else:
        base = FLConfig(
            dataset=args.dataset,
            clients=args.clients,
            local_epochs=args.local_epochs,
            kd_epochs=args.kd_epochs,
            g_steps=args.g_steps,
        )
        results = run_table(
            base,
            [float(a) for a in args.alphas.split(",")],
            [int(s) for s in args.seeds.split(",")],
            [a for a in args.algorithms.split(",") if a],
        )
    table = summary_table(results)
    claims = "\n".join(check_claims(results))
    print(table)
    print()
    print(claims)
    save_results(results, args.out)
    (Path(args.out) / "summary.md").write_text(table + "\n\n" + claims + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
