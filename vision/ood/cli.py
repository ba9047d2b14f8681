"""``headscope vision ood``: score ConjNorm and pytorch-ood's detectors on one ID setting.

    headscope vision ood --id digits --detectors all
    headscope vision ood --id mnist1d --detectors ConjNorm,Mahalanobis,KNN --seeds 0 1 2
    headscope vision ood --id path/to/cifar_png --id-classes airplane,automobile --image-size 16

Registered by ``vision/cli.py`` through `register_ood`; heavy imports happen when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headscope.common import HeadscopeError

# kept in sync with vision.ood.benchmark.DETECTORS (not imported here, so that building the
# parser does not import torch/pytorch-ood)
_DETECTORS = (
    "ConjNorm",
    "ConjNorm-p2.2-T0.05",
    "MaxSoftmax",
    "EnergyBased",
    "MaxLogit",
    "GEN",
    "Mahalanobis",
    "KNN",
    "ReAct",
    "ViM",
)


def register_ood(vision_subparsers) -> argparse.ArgumentParser:
    """Add the ``ood`` command to the ``headscope vision`` sub-command group."""
    p = vision_subparsers.add_parser(
        "ood",
        help="out-of-distribution detection: ConjNorm vs pytorch-ood's detectors on the same features",
        description="Train a small classifier on in-distribution data, then compare ConjNorm with pytorch-ood's "
        "detectors (FPR95 / AUROC / AUPR) on near-OOD (held-out classes) and far-OOD sets.",
    )
    p.add_argument(
        "--id",
        dest="id_setting",
        default="digits",
        help="in-distribution data: digits, mnist1d, or a CIFAR-style image folder path (default digits)",
    )
    p.add_argument("--detectors", default="all", help="'all' or a comma-separated list of: " + ", ".join(_DETECTORS))
    p.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="one run per seed; tables show mean ± std (default 0)"
    )
    p.add_argument("--epochs", type=int, default=60, help="classifier training epochs (default 60)")
    p.add_argument(
        "--id-classes",
        default=None,
        help="image folders: comma-separated in-distribution class names (default: first half)",
    )
    p.add_argument("--image-size", type=int, default=None, help="image folders: resize to N×N")
    p.add_argument("--grayscale", action="store_true", help="image folders: read images as one channel")
    p.add_argument(
        "--max-per-class", type=int, default=None, help="image folders: read at most this many images per class"
    )
    p.add_argument("--json", type=Path, default=None, help="write per-seed rows and the summary to this JSON file")
    p.set_defaults(func=run_ood)
    return p


# ``vision/cli.py`` imports this module's entry point as ``register``; both names work.
register = register_ood


def parse_detectors(spec: str) -> list[str]:
    """'all' or a comma-separated list of known detector names (case-insensitive)."""
    if spec.strip().lower() == "all":
        return list(_DETECTORS)
    by_lower = {d.lower(): d for d in _DETECTORS}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n.lower() not in by_lower]
    if bad or not names:
        raise HeadscopeError(
            f"unknown detector(s) {bad or [spec]}; use 'all' or a comma-separated list of: {', '.join(_DETECTORS)}"
        )
    return [by_lower[n.lower()] for n in names]


def run_ood(args: argparse.Namespace) -> int:
    detectors = parse_detectors(args.detectors)
    if any(s < 0 for s in args.seeds):
        raise HeadscopeError(f"seeds must be non-negative, got {args.seeds}")
    if args.epochs < 1:
        raise HeadscopeError(f"--epochs must be >= 1, got {args.epochs}")
    folder_kw = {}
    if args.id_setting not in ("digits", "mnist1d"):
        if not Path(args.id_setting).is_dir():
            raise HeadscopeError(f"--id {args.id_setting!r} is neither digits, mnist1d nor an existing image folder")
        folder_kw = dict(
            id_classes=[c.strip() for c in args.id_classes.split(",")] if args.id_classes else None,
            image_size=args.image_size,
            grayscale=args.grayscale,
            max_per_class=args.max_per_class,
        )
    from vision.ood import benchmark as bm

    rows, infos = bm.run([args.id_setting], args.seeds, detectors, epochs=args.epochs, **folder_kw)
    summary = bm.summarize(rows)
    for info in infos:
        print(
            f"{info['setting']} seed {info['seed']}: ID test accuracy {100 * info['id_test_accuracy']:.1f}% "
            f"({info['n_train']} train)"
        )
    print()
    for metric in ("fpr95", "auroc"):
        print(bm.markdown_table(summary, metric))
    if "ConjNorm" in detectors and len(detectors) > 1:
        for line in bm.wins(summary):
            print("- " + line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": infos, "rows": bm.rows_as_dicts(rows), "summary": summary}, indent=1))
        print(f"wrote {args.json}")
    return 0
