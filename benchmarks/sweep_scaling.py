"""A sharded head-patching sweep with 1 and 2 Ray workers (headscope/sharding.py).

The same per-position sweep (the random GPT-2-small-shaped Llama of
benchmarks/patching_speed.py, saved to a temporary folder so that workers can load it)
runs in one process and sharded by layer over 1 and 2 local Ray workers, one torch
thread each. Prints wall-clock seconds (Ray start included), the ratio to one worker and
whether every result equals the single-process sweep bit for bit. This machine has 2
cores, so 2 workers can at best halve the time, and less when anything else runs.

    python benchmarks/sweep_scaling.py [--batch 2] [--pos 8] [--vocab 50257]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from patching_speed import build

    from headscope.common.threads import num_threads
    from headscope.patching import patch_heads
    from headscope.sharding import sharded_patch_heads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--pos", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=50257)
    args = ap.parse_args()
    model, plain, clean, corrupt, metric, _ = build("llama", args.vocab, args.batch, args.pos, None)
    with tempfile.TemporaryDirectory() as d:
        plain.save_pretrained(d)
        model.tokenizer.save_pretrained(d)
        rows = []
        t0 = time.perf_counter()
        with num_threads(1):
            ref = patch_heads(model, clean, corrupt, metric, per_position=True, show_progress=False)
        rows.append(("single process", time.perf_counter() - t0, True))
        for w in (1, 2):
            t0 = time.perf_counter()
            res = sharded_patch_heads(d, clean, corrupt, metric, workers=w, per_position=True)
            rows.append(
                (
                    f"Ray, {w} worker{'s' if w > 1 else ''}",
                    time.perf_counter() - t0,
                    torch.equal(res.scores, ref.scores),
                )
            )
    base = rows[1][1]
    shape = f"12L×12H d768 vocab {args.vocab}, {args.batch}×{args.pos} tokens"
    print(f"per-position sweep, {shape}; 1 torch thread per process")
    print("| run | wall s | vs 1 worker | equal to single process |")
    print("|---|---|---|---|")
    for name, t, eq in rows:
        print(f"| {name} | {t:.1f} | {base / t:.2f}× | {'yes' if eq else 'NO'} |")


if __name__ == "__main__":
    main()
