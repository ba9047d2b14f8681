"""Forward + backward time of ``vision.kan`` layers vs pykan's ``KANLayer`` at equal widths.

Same process, same inputs, one CPU thread; G = 5, K = 3, grid [−1, 1] for all. pykan's
layer is built with ``save_plot_data=False``. Prints milliseconds per forward+backward
(median of ``--reps``) and parameter counts.

    pip install pykan        # the peer (listed in the `vision` extra)
    python benchmarks/kan_speed.py [--batch 512] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/...` from anywhere

from headscope.common.threads import num_threads
from vision.kan import KANLinear, WKANLinear


def bench(fn, x: torch.Tensor, reps: int) -> float:
    def step() -> None:
        xx = x.detach().requires_grad_(True)
        y = fn(xx)
        y = y[0] if isinstance(y, tuple) else y
        y.square().mean().backward()

    step()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--widths", type=str, default="25x16,64x64,224x2,128x128")
    args = ap.parse_args()
    with num_threads(1):
        _main(args)


def _main(args: argparse.Namespace) -> None:
    try:
        from kan.KANLayer import KANLayer
    except ImportError:
        KANLayer = None
        print("pykan is not installed (pip install pykan); its column is left empty")
    print(f"batch {args.batch}, forward+backward, median of {args.reps}, 1 thread")
    print(
        "| in×out | KANLinear ms | WKANLinear ms | pykan KANLayer ms | pykan / KANLinear "
        "| params KANLinear / WKAN / pykan |"
    )
    print("|---|---|---|---|---|---|")
    for spec in args.widths.split(","):
        d_in, d_out = map(int, spec.split("x"))
        torch.manual_seed(0)
        x = torch.rand(args.batch, d_in) * 2 - 1
        kl, wk = KANLinear(d_in, d_out), WKANLinear(d_in, d_out)
        t_k, t_w = bench(kl, x, args.reps), bench(wk, x, args.reps)
        n_k, n_w = (sum(p.numel() for p in m.parameters()) for m in (kl, wk))
        if KANLayer is not None:
            pk = KANLayer(in_dim=d_in, out_dim=d_out, num=5, k=3, save_plot_data=False)
            t_p = bench(pk, x, args.reps)
            n_p = sum(p.numel() for p in pk.parameters())
            print(
                f"| {d_in}×{d_out} | {t_k:.1f} | {t_w:.1f} | {t_p:.1f} | {t_p / t_k:.1f}× | {n_k} / {n_w} / {n_p} |",
                flush=True,
            )
        else:
            print(f"| {d_in}×{d_out} | {t_k:.1f} | {t_w:.1f} | - | - | {n_k} / {n_w} / - |", flush=True)


if __name__ == "__main__":
    main()
