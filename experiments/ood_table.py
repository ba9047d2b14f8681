"""Paper table: ConjNorm vs pytorch-ood's detectors on the same features, FPR95 / AUROC / AUPR over seeds.

Regenerates the tables of docs/ood.md ("Results"): digits and mnist1d as in-distribution
data, seeds 0, 1, 2, every detector of :mod:`vision.ood.benchmark` (the protocol is in that
module's docstring).

    python experiments/ood_table.py                         # digits + mnist1d, seeds 0 1 2
    python experiments/ood_table.py --settings digits --seeds 0 1 2 3 4 --json out/ood.json

Prints the FPR95, AUROC and AUPR tables and the "where ConjNorm wins" lines quoted in
docs/ood.md; ``--json PATH`` also writes the per-seed rows and the summary there (nothing is
written otherwise). ``headscope vision ood`` runs one setting of the same benchmark.
Everything runs offline on the CPU (about 5 s per digits seed and 15 s per mnist1d seed on
one thread).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python experiments/...` from anywhere

from headscope.common.threads import num_threads
from vision.ood import benchmark as bm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=list(bm.SETTINGS), choices=bm.SETTINGS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--detectors", default="all", help="comma-separated subset of: " + ", ".join(bm.DETECTORS))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write per-seed rows and the summary here")
    args = ap.parse_args(argv)
    dets = list(bm.DETECTORS) if args.detectors == "all" else [d.strip() for d in args.detectors.split(",")]
    with num_threads(args.threads):
        rows, infos = bm.run(args.settings, args.seeds, dets, epochs=args.epochs)
    summary = bm.summarize(rows)
    for info in infos:
        print(
            f"- {info['setting']} seed {info['seed']}: ID test accuracy {100 * info['id_test_accuracy']:.1f}% "
            f"({info['n_train']} train)"
        )
    print()
    for metric in ("fpr95", "auroc", "aupr"):
        print(bm.markdown_table(summary, metric))
    if "ConjNorm" in dets:
        print(
            "Where ConjNorm (p, T chosen on held-out ID data) wins against the best other detector "
            "(mean over seeds):\n"
        )
        for line in bm.wins(summary):
            print("- " + line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": infos, "rows": bm.rows_as_dicts(rows), "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
