"""A sharded head-patching sweep with 1 and 2 Ray workers (headscope/sharding.py).

The same per-position sweep (the random GPT-2-small-shaped Llama of
benchmarks/patching_speed.py, saved to a temporary folder so that workers can load it)
runs in one process and sharded by layer over 1 and 2 local Ray workers, one torch
thread each. Prints wall-clock seconds (Ray start included), the ratio to one worker and
whether every result equals the single-process sweep bit for bit. This machine has 2
cores, so 2 workers can at best halve the time, and less when anything else runs.

Each configuration runs ``--repeats`` times (interleaved); times and speed-ups are means
with a 95% t interval over the repeats.

``--rss``: instead, the peak memory of 10,000 prompt pairs on the bundled ``llama``
organism (TransformerLens backend), each configuration in its own process: the head sweep
(all positions, denoising) as one batch and in chunks of 1,024 pairs (``patch_task``'s
``max_pairs``), and an activation cache of ``z`` and ``resid_pre`` at every layer kept in
memory and spilling to safetensors shards above 64 MB (``headscope.spill``). The organism's
arithmetic task has only 126 distinct pairs, so the 10,000 are drawn from them with
replacement (seed 0); memory depends on the number of rows, not on their distinctness.
Peak RSS is ``ru_maxrss``; "added" is the peak minus the RSS after loading the model and
the prompts.

    python benchmarks/sweep_scaling.py [--batch 2] [--pos 8] [--vocab 50257] [--repeats 3]
    python benchmarks/sweep_scaling.py --rss [--pairs 10000] [--json docs/results/sweep_rss.json]
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


RSS_RUNS = {
    "sweep, one batch": ("sweep", None),
    "sweep, chunks of 1,024 pairs": ("sweep", 1024),
    "cache z + resid_pre, all layers, in memory": ("cache", None),
    "cache z + resid_pre, all layers, spilling above 64 MB": ("cache", "64MB"),
}


def rss_child(name: str, pairs: int, out: str) -> None:
    """One configuration of ``--rss`` in this process; writes its numbers and result to ``out``."""
    import dataclasses
    import json
    import resource

    from safetensors.torch import save_file

    from headscope.loading import load_model
    from headscope.patching import patch_task
    from headscope.spill import cache_activations
    from headscope.tasks import get_task

    torch.set_num_threads(1)
    kind, opt = RSS_RUNS[name]
    model = load_model("llama-v2", "tl")
    b0 = get_task("arithmetic", n=pairs, seed=0).prepare(model)
    idx = torch.randint(0, b0.clean.shape[0], (pairs,), generator=torch.Generator().manual_seed(0))
    batch = dataclasses.replace(b0, clean=b0.clean[idx], corrupt=b0.corrupt[idx], answer=b0.answer[idx],
                                wrong=b0.wrong[idx])  # fmt: skip
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.process_time()
    if kind == "sweep":
        res = patch_task(model, batch, max_pairs=opt, show_progress=False)
        result = res.scores
    else:
        cache = cache_activations(model, batch.clean, ("z", "resid_pre"), None, max_pairs=1024, max_memory=opt,
                                  show_progress=False)  # fmt: skip
        result = torch.stack([cache.get("z", L).sum(0) for L in range(model.n_layers)])  # a checksum per layer
        cache.close()
    cpu = time.process_time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    save_file({"result": result.contiguous()}, out + ".safetensors")
    Path(out + ".json").write_text(json.dumps({"base_mb": base, "peak_mb": peak, "cpu_s": cpu,
                                               "n_rows": int(batch.clean.shape[0])}))  # fmt: skip


def rss_table(pairs: int, json_path: str | None = None) -> None:
    """Run every ``--rss`` configuration in its own process and print the table."""
    import json
    import subprocess

    from safetensors.torch import load_file

    rows = {}
    with tempfile.TemporaryDirectory() as d:
        for i, name in enumerate(RSS_RUNS):
            out = f"{d}/run{i}"
            subprocess.run(
                [sys.executable, __file__, "--child", name, "--pairs", str(pairs), "--out", out], check=True
            )
            rows[name] = {
                **json.loads(Path(out + ".json").read_text()),
                "result": load_file(out + ".safetensors")["result"],
            }
    names = list(RSS_RUNS)
    print(
        f"{pairs:,} prompt pairs (arithmetic, 5 tokens) on the llama organism, TransformerLens backend, 1 torch thread"
    )
    print("| run | peak RSS MB | added RSS MB | CPU s | result vs the in-memory run |")
    print("|---|---|---|---|---|")
    for name in names:
        r = rows[name]
        ref = rows[names[0] if name.startswith("sweep") else names[2]]["result"]
        diff = float((r["result"] - ref).abs().max())
        print(
            f"| {name} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | {r['cpu_s']:.1f} | "
            f"max diff {diff:.1e} |"
        )
        r["max_diff_vs_in_memory"] = diff
    if json_path:
        keep = ("base_mb", "peak_mb", "cpu_s", "n_rows", "max_diff_vs_in_memory")
        Path(json_path).write_text(json.dumps({n: {k: rows[n][k] for k in keep} for n in names}, indent=2) + "\n")


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
    ap.add_argument("--rss", action="store_true", help="the memory table of a large prompt set instead")
    ap.add_argument("--pairs", type=int, default=10000, help="with --rss: prompt pairs [10000]")
    ap.add_argument("--json", default=None, help="with --rss: write the numbers to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rss_child(args.child, args.pairs, args.out)
        return
    if args.rss:
        rss_table(args.pairs, args.json)
        return
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
