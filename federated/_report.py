"""What `headscope fl run` prints and writes after a run (shared by the one-shot and semi-supervised CLIs)."""

from __future__ import annotations

import argparse


def report_run(cfg, r, args: argparse.Namespace, headline: str) -> int:
    """Print the results table and ``headline``; write the label histogram (``--plot``) and results (``--out``)."""
    from .runner import results_markdown, save_results

    print(results_markdown([r]))
    print(headline)
    if getattr(args, "plot", None):
        from headscope.common import save_figure

        from .data import make_split, plot_label_histogram

        split = make_split(cfg.dataset, cfg.clients, cfg.alpha, cfg.seed, cfg.data_root or None)
        paths = save_figure(plot_label_histogram(split.histogram(), f"{cfg.dataset}, α={cfg.alpha:g}"), args.plot)
        print(f"label histogram: {paths[0]}")
    if getattr(args, "out", None):
        for p in save_results([r], args.out):
            print(f"wrote {p}")
    return 0
