"""Paper table: SpectralKAN vs an MLP and a CNN of similar size on the synthetic bi-temporal HSI scene.

Regenerates the SpectralKAN tables of docs/vision.md ("Measured results"). Each seed makes
its own scene (120×120, 224 bands), takes 1 % of each class's pixels for training and
tests on the rest; the official training recipe (Adam 1e-3, StepLR(10, 0.9), batch 64, 200
epochs). Prints OA / AA / Kappa / F1 per seed and mean ± std as the Markdown tables quoted
in docs/vision.md (``--size 240`` gives the second one); writes no files. One thread.

    python experiments/spectralkan_table.py [--seeds 0 1 2] [--epochs 200] [--bands 224] [--size 120]
    python experiments/spectralkan_table.py --scene taizhou --models cva mlp spectralkan_nospline spectralkan \
        --json docs/results/spectralkan_taizhou.json

Real scene (``--scene taizhou``; protocol fixed before the run, issue 23): the Taizhou
Landsat 7 ETM+ pair (2000 vs 2003, 400×400, 6 bands; data/taizhou/CARD.md), labelled
pixels only (4,227 changed, 17,163 unchanged; the rest unlabelled and never used). Per
seed 0, 1, 2: 1 % of each class for training (``sample_train_test``), the rest for testing;
per-band min–max normalisation over both dates, 5×5 difference patches, the official
recipe for the learned models (Adam 1e-3, StepLR, batch 64, 200 epochs). Methods:

- ``cva``: change-vector analysis, ``‖x1 − x2‖`` at the centre pixel with one threshold
  fitted on the same training pixels (maximising training accuracy);
- ``mlp``: the same two-stage layout with MLPs, at SpectralKAN's size;
- ``spectralkan_nospline``: SpectralKAN with the spline terms removed (base weights only);
- ``spectralkan``.

Metrics OA, AA, Kappa, F1 (changed class) on the test pixels; mean ± std over seeds; the
per-seed values go to ``--json``. Nothing is changed after seeing results.

Physical synthetic scene (``--scene physical``; protocol fixed before the run, issue 23):
``vision.data.hsi.physical_scene`` with its default parameters (120×120, 81 bands 380–780 nm,
six measured ColorChecker reflectances, bilinear mixing, D65 vs D50 illumination with
per-date shading and haze on date 2), one scene per seed 0, 1, 2; the same four methods,
split, recipe and metrics as for Taizhou:

    python experiments/spectralkan_table.py --scene physical --models cva mlp spectralkan_nospline spectralkan \
        --json docs/results/spectralkan_physical.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python experiments/...` from anywhere

from headscope.common.threads import num_threads
from vision.data.hsi import load_taizhou, physical_scene, synthetic_scene
from vision.spectralkan import build_change_model, evaluate, prepare_scene, train_change_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--bands", type=int, default=224)
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--models", nargs="+", default=["spectralkan", "mlp", "cnn"])
    ap.add_argument("--scene", default="synthetic", choices=("synthetic", "taizhou", "physical"))
    ap.add_argument("--json", default=None, help="write settings and per-seed metrics here")
    args = ap.parse_args()
    with num_threads(1):
        _main(args)


def _main(args: argparse.Namespace) -> None:
    rows: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in args.models}
    raw: list[dict] = []
    print("| seed | model | params | OA | AA | Kappa | F1 | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        if args.scene == "taizhou":
            scene = load_taizhou()
        elif args.scene == "physical":
            scene = physical_scene(seed=seed)
        else:
            scene = synthetic_scene(args.size, args.size, args.bands, seed=seed)
        bands = scene.bands
        prep = prepare_scene(scene, patch=5, train_fraction=0.01, seed=seed)
        x = prep.diff_patches(prep.train_pos)
        y = torch.from_numpy(prep.train_y)
        for kind in args.models:
            torch.manual_seed(seed)
            model = build_change_model(kind, bands)
            t0 = time.time()
            if kind == "cva":
                model.fit(x, y)
            else:
                train_change_model(model, x, y, epochs=args.epochs, seed=seed, show_progress=False)
            dt = time.time() - t0
            m = evaluate(model, prep)
            rows[kind].append((m.oa, m.aa, m.kappa, m.f1))
            raw.append({"seed": seed, "model": kind, "train_seconds": dt, **m.as_dict()})
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(
                f"| {seed} | {kind} | {n} | {m.oa:.4f} | {m.aa:.4f} | {m.kappa:.4f} | {m.f1:.4f} | {dt:.0f} |",
                flush=True,
            )
    print()
    n_pix = scene.shape[0] * scene.shape[1]
    print(f"mean ± std over seeds {args.seeds} ({len(prep.train_y)} training pixels of {n_pix}):")
    print("| model | OA | AA | Kappa | F1 |")
    print("|---|---|---|---|---|")
    for kind, r in rows.items():
        a = np.array(r)
        cells = " | ".join(f"{a[:, j].mean():.4f} ± {a[:, j].std():.4f}" for j in range(4))
        print(f"| {kind} | {cells} |")
    if args.json:
        settings = vars(args) | {"train_pixels": int(len(prep.train_y)), "test_pixels": int(len(prep.test_y))}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": settings, "per_seed": raw}, indent=2) + "\n")


if __name__ == "__main__":
    main()
