"""Summarise repeated benchmark runs: mean speed-up and its 95% t interval over runs.

Each input is the ``--json`` file of one ``benchmarks/patching_speed.py`` process (a list
of rows); rows of the same model and sweep are pooled across files. Separate processes,
so that one run's warm caches or allocator state do not carry into the next::

    for i in 1 2 3 4 5; do
        python benchmarks/patching_speed.py --only llama --sweeps all --json out/allpos_$i.json
    done
    python benchmarks/repeat_summary.py out/allpos_*.json --out docs/results/patching_speed_allpos.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def summarise(rows: list[dict]) -> dict:
    """``speedup_mean``, its 95% t interval over runs, ``n_runs`` and the CPU-second ranges."""
    from scipy import stats

    s = [r["speedup"] for r in rows]
    n = len(s)
    mean = statistics.fmean(s)
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(s) / n**0.5
        ci = [mean - half, mean + half]
    else:
        ci = [float("nan"), float("nan")]
    return {
        "speedup_mean": mean,
        "speedup_ci95_t": ci,
        "n_runs": n,
        "speedups": s,
        "tl_cpu_s_range": [min(r["tl_cpu_s"] for r in rows), max(r["tl_cpu_s"] for r in rows)],
        "headscope_cpu_s_range": [min(r["headscope_cpu_s"] for r in rows), max(r["headscope_cpu_s"] for r in rows)],
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "headscope_rss_mb_max": max(r["headscope_rss_mb"] for r in rows),
        "tl_rss_mb_max": max(r["tl_rss_mb"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="--json outputs of benchmarks/patching_speed.py, one per run")
    ap.add_argument("--out", default=None, help="write the runs and the summary here (JSON)")
    ap.add_argument("--note", default="", help="what was run (command, date, commit)")
    args = ap.parse_args()
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for i, f in enumerate(args.files, 1):
        for r in json.loads(Path(f).read_text()):
            if "speedup" in r:
                groups.setdefault((r["model"], r["sweep"], r["prompts"]), []).append({**r, "repeat": i})
    out = []
    for (model, sweep, prompts), rows in groups.items():
        s = summarise(rows)
        lo, hi = s["speedup_ci95_t"]
        print(
            f"{model} | {sweep} | {prompts}: speed-up mean {s['speedup_mean']:.2f}× [95% t interval {lo:.2f}, "
            f"{hi:.2f}] over n = {s['n_runs']} runs ({', '.join(f'{x:.2f}' for x in s['speedups'])})"
        )
        out.append({"model": model, "sweep": sweep, "prompts": prompts, **s, "runs": rows})
    if args.out:
        Path(args.out).write_text(json.dumps({"command": args.note, "groups": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
