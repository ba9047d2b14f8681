"""Paper table: LSNet trained briefly on synthetic underwater pairs vs the identity (input as output).

Regenerates the LSNet table of docs/vision.md ("Measured results"). Training pairs: random
crops of scikit-image's ``TRAIN_PHOTOS`` degraded with the underwater formation model
(random β, B, depth per crop). Test pairs: crops of the held-out photos
(``HELD_OUT_PHOTOS``: chelsea, rocket), never seen in training. Loss L1 + (1 − SSIM), Adam
with cosine decay. Prints PSNR / SSIM (reference-based) and UIQM / UCIQE (no-reference) of
the identity and of LSNet, per seed and averaged, as the Markdown table quoted in
docs/vision.md; with ``--json`` also writes the raw per-seed values (docs/results/lsnet.json).
One thread; about 5–15 min per seed on a shared CPU.

    python experiments/lsnet_table.py [--seeds 0 1 2] [--epochs 15] [--size 64] [--json docs/results/lsnet.json]
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
from vision.data.underwater import HELD_OUT_PHOTOS, TRAIN_PHOTOS, synthetic_pairs
from vision.lsnet import LSNet, train_lsnet
from vision.metrics import psnr, ssim, uciqe, uiqm


def scores(pred: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float, float]:
    p = pred.clamp(0, 1)
    return psnr(p, ref), ssim(p, ref), float(np.mean([uiqm(x) for x in p])), float(np.mean([uciqe(x) for x in p]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train-per-photo", type=int, default=16)
    ap.add_argument("--test-per-photo", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--json", default=None, help="write per-seed raw values here (updated after every seed)")
    args = ap.parse_args()
    with num_threads(1):
        _main(args)


def _main(args: argparse.Namespace) -> None:
    test_in, test_ref, _ = synthetic_pairs(HELD_OUT_PHOTOS, args.test_per_photo, args.size, seed=1000)
    ident = scores(test_in, test_ref)
    print(f"held-out: {len(test_in)} crops of {HELD_OUT_PHOTOS} at {args.size}×{args.size}")
    print("| seed | method | PSNR dB | SSIM | UIQM | UCIQE | train s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| - | identity | {ident[0]:.2f} | {ident[1]:.4f} | {ident[2]:.3f} | {ident[3]:.4f} | - |")
    ref_scores = scores(test_ref, test_ref)
    print(f"| - | reference (clean) | inf | 1 | {ref_scores[2]:.3f} | {ref_scores[3]:.4f} | - |")
    rows = []
    metrics = ("psnr_db", "ssim", "uiqm", "uciqe")
    raw: dict = {
        "command": "python experiments/lsnet_table.py " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "held_out_photos": list(HELD_OUT_PHOTOS),
        "train_photos": list(TRAIN_PHOTOS),
        "n_test_crops": len(test_in),
        "identity": dict(zip(metrics, ident)),
        "reference_clean": {"uiqm": ref_scores[2], "uciqe": ref_scores[3]},
        "seeds": [],
    }
    for seed in args.seeds:
        tr_in, tr_ref, _ = synthetic_pairs(TRAIN_PHOTOS, args.train_per_photo, args.size, seed=seed)
        torch.manual_seed(seed)
        model = LSNet()
        t0 = time.time()
        losses = train_lsnet(
            model, tr_in, tr_ref, epochs=args.epochs, lr=args.lr, batch_size=8, seed=seed, show_progress=False
        )
        dt = time.time() - t0
        s = scores(model.enhance(test_in), test_ref)
        rows.append(s)
        raw["seeds"].append(
            {"seed": seed, **dict(zip(metrics, s)), "train_s": dt, "loss_first": losses[0], "loss_last": losses[-1]}
        )
        if args.json:
            Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
        label = f"LSNet ({len(tr_in)} pairs, {args.epochs} ep, loss {losses[0]:.3f}→{losses[-1]:.3f})"
        print(
            f"| {seed} | {label} | {s[0]:.2f} | {s[1]:.4f} | {s[2]:.3f} | {s[3]:.4f} | {dt:.0f} |",
            flush=True,
        )
    a = np.array(rows)
    cells = " | ".join(f"{a[:, j].mean():.3f} ± {a[:, j].std():.3f}" for j in range(4))
    print(f"| mean | LSNet | {cells} | |")


if __name__ == "__main__":
    main()
