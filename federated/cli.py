"""``headscope fl ...``: run one one-shot FL algorithm, or the comparison table.

Imports of torch/flwr happen inside the commands, so that other ``headscope`` commands
stay fast.
"""

from __future__ import annotations

import argparse

from headscope.common import HeadscopeError

ALGOS = ("fusefl", "coboosting", "dense", "feddf", "ensemble", "fedavg")


def _floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError as e:
        raise HeadscopeError(f"expected comma-separated numbers, got {s!r}") from e


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError as e:
        raise HeadscopeError(f"expected comma-separated integers, got {s!r}") from e


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", default="digits", help="digits | mnist1d | mnist | cifar10 (the last two from --data-root)"
    )
    p.add_argument("--data-root", default="", help="folder with torchvision-format MNIST/CIFAR-10 files")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--model", default="auto", help="cnn | mlp | auto (cnn for images)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--blocks", type=int, default=3, help="number of blocks (FuseFL stages)")
    p.add_argument("--local-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--adaptor", default="avg", help="FuseFL adaptor: avg | conv1x1")
    p.add_argument("--kd-epochs", type=int, default=30, help="DENSE/Co-Boosting epochs")
    p.add_argument("--g-steps", type=int, default=30, help="generator steps per epoch")
    p.add_argument("--out", default="", help="write results.json and results.md here")


def _config(args: argparse.Namespace, algorithm: str, alpha: float, seed: int):
    from .protocol import FLConfig

    return FLConfig(
        algorithm=algorithm,
        dataset=args.dataset,
        data_root=args.data_root,
        clients=args.clients,
        alpha=alpha,
        seed=seed,
        model=args.model,
        width=args.width,
        n_blocks=args.blocks,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        adaptor=args.adaptor,
        kd_epochs=args.kd_epochs,
        g_steps=args.g_steps,
    )


def cmd_run(args: argparse.Namespace) -> int:
    if args.algorithm not in ALGOS:
        raise HeadscopeError(f"unknown algorithm {args.algorithm!r}; choose one of {', '.join(ALGOS)}")
    if args.engine not in ("inprocess", "flower"):
        raise HeadscopeError(f"unknown engine {args.engine!r}; choose inprocess or flower")
    if not args.alpha > 0:
        raise HeadscopeError(f"--alpha must be > 0, got {args.alpha}; smaller alpha = more label skew, e.g. 0.1")
    if args.seed < 0:
        raise HeadscopeError(f"--seed must be >= 0, got {args.seed}")
    from headscope.common.threads import num_threads

    from ._report import report_run
    from .runner import run

    cfg = _config(args, args.algorithm, args.alpha, args.seed)
    with num_threads(max(1, args.threads)):
        r = (
            run(cfg, engine=args.engine)
            if args.engine == "inprocess"
            else run(cfg, engine="flower", num_cpus=args.flower_cpus)
        )
    return report_run(
        cfg,
        r,
        args,
        f"{r.algorithm}: test accuracy {r.accuracy:.4f}, sent up {r.bytes_up / 1024:.1f} KB, "
        f"down {r.bytes_down / 1024:.1f} KB, {r.seconds:.1f} s ({r.engine})",
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from headscope.common.threads import num_threads

    from .runner import save_results
    from .table import ORDER, check_claims, run_table, summary_table

    algos = [a.strip() for a in args.algorithms.split(",") if a.strip()] if args.algorithms else list(ORDER)
    alphas, seeds = _floats(args.alphas), _ints(args.seeds)
    if not alphas or any(not a > 0 for a in alphas):
        raise HeadscopeError(f"--alphas must be positive numbers, got {args.alphas!r}")
    if not seeds or any(s < 0 for s in seeds):
        raise HeadscopeError(f"--seeds must be non-negative integers, got {args.seeds!r}")
    with num_threads(max(1, args.threads)):
        results = run_table(_config(args, "fedavg", alphas[0], seeds[0]), alphas, seeds, algos)
    print(summary_table(results))
    print()
    print("\n".join(check_claims(results)))
    if args.out:
        for p in save_results(results, args.out):
            print(f"wrote {p}")
    return 0


def register(subparsers) -> None:
    fl = subparsers.add_parser("fl", help="one-shot federated learning: FuseFL, Co-Boosting and baselines (Flower)")
    sub = fl.add_subparsers(dest="fl_command", metavar="FL_COMMAND", parser_class=type(fl))

    r = sub.add_parser("run", help="train the clients, run one algorithm, print accuracy / bytes / time")
    r.add_argument("algorithm", help=" | ".join(ALGOS))
    r.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (> 0; smaller = more skew)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--engine", default="inprocess", help="inprocess | flower (`flwr run` of federated/app)")
    r.add_argument("--flower-cpus", type=int, default=1, help="CPUs Ray may use with --engine flower")
    r.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    r.add_argument("--plot", default="", help="also write the per-client label histogram (HTML) to this path")
    _common(r)
    r.set_defaults(func=cmd_run)
    # twinsight, fixmatch, freematch and the two bounds (multi-round, torch-free import)
    from .semi_cli import extend_run

    extend_run(r, cmd_run, ALGOS)

    b = sub.add_parser("bench", help="comparison table across algorithms and Dirichlet α (in-process)")
    b.add_argument("--alphas", default="0.1,0.3,0.5")
    b.add_argument("--seeds", default="0,1,2")
    b.add_argument("--algorithms", default="", help="comma-separated; default all")
    b.add_argument("--threads", type=int, default=1)
    _common(b)
    b.set_defaults(func=cmd_bench)

    def _help(args: argparse.Namespace) -> int:
        fl.print_help()
        return 2

    fl.set_defaults(func=_help)
