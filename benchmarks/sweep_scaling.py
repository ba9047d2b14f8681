"""A sharded head-patching sweep with 1 and 2 Ray workers (headscope/sharding.py).

The same per-position sweep (the random GPT-2-small-shaped Llama of
benchmarks/patching_speed.py, saved to a temporary folder so that workers can load it)
runs in one process and sharded by layer over 1 and 2 local Ray workers, one torch
thread each. Prints wall-clock seconds (Ray start included), the ratio to one worker and
whether every result equals the single-process sweep bit for bit. This machine has 2
cores, so 2 workers can at best halve the time, and less when anything else runs.

Each configuration runs ``--repeats`` times (interleaved); times and speed-ups are means
with a 95% t interval over the repeats.

    python benchmarks/sweep_scaling.py [--batch 2] [--pos 8] [--vocab 50257] [--repeats 3]
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
    from headscope.stats import fmt_ci, over_seeds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--pos", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration [3]")
    args = ap.parse_args()
    model, plain, clean, corrupt, metric, _ = build("llama", args.vocab, args.batch, args.pos, None)
    names = ["single process", "Ray, 1 worker", "Ray, 2 workers"]
    times: dict[str, list[float]] = {n: [] for n in names}
    equal: dict[str, bool] = {n: True for n in names}
    with tempfile.TemporaryDirectory() as d:
        plain.save_pretrained(d)
        model.tokenizer.save_pretrained(d)
        for _ in range(args.repeats):  # interleaved, so that load drifts hit every configuration
            t0 = time.perf_counter()
            with num_threads(1):
                ref = patch_heads(model, clean, corrupt, metric, per_position=True, show_progress=False)
            times[names[0]].append(time.perf_counter() - t0)
            for w, name in ((1, names[1]), (2, names[2])):
                t0 = time.perf_counter()
                res = sharded_patch_heads(d, clean, corrupt, metric, workers=w, per_position=True)
                times[name].append(time.perf_counter() - t0)
                equal[name] &= torch.equal(res.scores, ref.scores)
    shape = f"12L×12H d768 vocab {args.vocab}, {args.batch}×{args.pos} tokens"
    print(f"per-position sweep, {shape}; 1 torch thread per process; {args.repeats} interleaved repeats,")
    print("mean [95% t interval]; the speed-up is the per-repeat ratio to that repeat's 1-worker run")
    print("| run | wall s [95% CI] | vs 1 worker [95% CI] | equal to single process |")
    print("|---|---|---|---|")
    for name in names:
        ratio = [a / b for a, b in zip(times[names[1]], times[name])]
        cells = f"{fmt_ci(over_seeds(times[name]), digits=1)} | {fmt_ci(over_seeds(ratio), digits=2)}×"
        print(f"| {name} | {cells} | {'yes' if equal[name] else 'NO'} |")


if __name__ == "__main__":
    main()
