"""``headscope fl run twinsight|fixmatch|freematch|fedavg_labelled|fedavg_all_labels``: the label-deficient options.

Hooks into the ``fl run`` parser of :mod:`federated.cli` (one call from its ``register``):
adds the multi-round / label-deficiency flags and routes the semi-supervised algorithms to
:class:`federated.semi.SemiConfig`, everything else to the one-shot ``cmd_run`` unchanged.
``--clients/--alpha/--local-epochs/--batch-size/--lr`` keep their one-shot defaults for
the one-shot algorithms and take Twin-sight's defaults (10 / 0.1 / 1 / 64 / 0.01) for the
semi-supervised ones. Torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from headscope.common import HeadscopeError

SEMI_ALGOS = ("twinsight", "fixmatch", "freematch", "fedavg_labelled", "fedavg_all_labels")
_SHARED = ("clients", "alpha", "local_epochs", "batch_size", "lr")
_SEMI_FLAGS = (
    "rounds",
    "labelled_clients",
    "labelled_fraction",
    "clients_per_round",
    "sim",
    "ins_dis",
    "twin_pseudo",
    "threshold",
)


def extend_run(
    parser: argparse.ArgumentParser, one_shot: Callable[[argparse.Namespace], int], one_shot_algos: tuple[str, ...]
) -> None:
    """Add the semi-supervised flags to ``fl run`` and dispatch by algorithm."""
    g = parser.add_argument_group(
        "label-deficient FL (twinsight, fixmatch, freematch, fedavg_labelled, fedavg_all_labels)"
    )
    g.add_argument("--rounds", type=int, default=None, help="FedAvg rounds (default 30)")
    g.add_argument("--labelled-clients", type=int, default=None, help="clients 0..N-1 hold labels (default 4)")
    g.add_argument(
        "--labelled-fraction", type=float, default=None, help="share of labelled rows on a labelled client (default 1)"
    )
    g.add_argument("--clients-per-round", type=int, default=None, help="clients sampled per round (default 5)")
    g.add_argument("--sim", type=float, default=None, help="Twin-sight weight of L_sim (default 1.0)")
    g.add_argument("--ins-dis", type=float, default=None, help="Twin-sight weight of the InfoNCE loss (default 0.5)")
    g.add_argument(
        "--twin-pseudo",
        default=None,
        help="Twin-sight pseudo-label loss on unlabelled clients: none | fixmatch | freematch",
    )
    g.add_argument("--threshold", type=float, default=None, help="FixMatch confidence threshold (default 0.95)")
    one_shot_defaults = {k: parser.get_default(k) for k in _SHARED}
    parser.set_defaults(**{k: None for k in _SHARED})
    for action in parser._actions:
        if action.dest == "algorithm":
            action.help = " | ".join((*one_shot_algos, *SEMI_ALGOS))

    def dispatch(args: argparse.Namespace) -> int:
        if args.algorithm in SEMI_ALGOS:
            return cmd_run_semi(args)
        if args.algorithm not in one_shot_algos:
            raise HeadscopeError(
                f"unknown algorithm {args.algorithm!r}; choose one of {', '.join((*one_shot_algos, *SEMI_ALGOS))}"
            )
        given = [f"--{k.replace('_', '-')}" for k in _SEMI_FLAGS if getattr(args, k) is not None]
        if given:
            raise HeadscopeError(
                f"{', '.join(given)} only apply to {', '.join(SEMI_ALGOS)}; drop them for {args.algorithm}"
            )
        for k, v in one_shot_defaults.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
        return one_shot(args)

    parser.set_defaults(func=dispatch)


def cmd_run_semi(args: argparse.Namespace) -> int:
    """Run one label-deficient algorithm and print/write the result like ``fl run``."""
    if args.engine not in ("inprocess", "flower"):
        raise HeadscopeError(f"unknown engine {args.engine!r}; choose inprocess or flower")
    if args.seed < 0:
        raise HeadscopeError(f"--seed must be >= 0, got {args.seed}")
    if args.alpha is not None and not args.alpha > 0:
        raise HeadscopeError(f"--alpha must be > 0, got {args.alpha}; smaller alpha = more label skew, e.g. 0.1")
    from headscope.common.threads import num_threads

    from ._report import report_run
    from .runner import run
    from .semi import SemiConfig

    kw = {k: getattr(args, k) for k in (*_SHARED, *_SEMI_FLAGS) if getattr(args, k) is not None}
    cfg = SemiConfig(
        algorithm=args.algorithm,
        dataset=args.dataset,
        data_root=args.data_root,
        seed=args.seed,
        model=args.model,
        width=args.width,
        n_blocks=args.blocks,
        **kw,
    )
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
        f"{r.algorithm}: test accuracy {r.accuracy:.4f} after {cfg.rounds} rounds "
        f"({cfg.labelled_clients} of {cfg.clients} clients labelled, α={cfg.alpha:g}), "
        f"sent up {r.bytes_up / 1024:.1f} KB, down {r.bytes_down / 1024:.1f} KB, {r.seconds:.1f} s ({r.engine})",
    )
