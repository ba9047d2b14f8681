"""``headscope organism train|eval``: retrain a bundled organism from its fixed seed, or measure it."""

from __future__ import annotations

from pathlib import Path

from headscope.cli._args import BACKENDS, DEFAULT_BACKEND, out_dir_arg, out_file_arg
from headscope.common.errors import HeadscopeError
from headscope.common.io import write_json


def register(sub) -> None:
    """Add the ``organism`` group to the ``headscope`` subparsers."""
    o = sub.add_parser(
        "organism",
        help="train or evaluate a bundled model organism",
        description="Train (reproducibly, fixed seed) or evaluate the bundled organisms.",
    )
    osub = o.add_subparsers(dest="organism_cmd", metavar="ACTION")
    t = osub.add_parser(
        "train",
        help="train NAME and save it to data/models/NAME",
        description="Train an organism from its fixed seed and save weights, tokenizer and CARD.md.",
    )
    t.add_argument("name", choices=("llama", "induction"))
    t.add_argument("--out", default=None, type=out_dir_arg, help="output folder [data/models/NAME]")
    t.add_argument("--steps", type=int, default=None, help="override the number of optimisation steps")
    t.set_defaults(func=cmd_organism_train)
    e = osub.add_parser(
        "eval",
        help="measure NAME's behaviour table",
        description="Measure the organism's behaviours by exact match of greedy outputs on held-out items.",
    )
    e.add_argument("name", help="llama, induction, or a folder holding an organism")
    e.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS, help=f"[{DEFAULT_BACKEND}]")
    e.add_argument("--json", default=None, type=out_file_arg, help="also write the table to this JSON file")
    e.set_defaults(func=cmd_organism_eval)


def cmd_organism_train(args) -> int:
    from headscope.organisms.card import write_card
    from headscope.organisms.train import InductionConfig, TrainConfig, train_induction, train_llama
    from headscope.paths import organism_dir

    out = Path(args.out) if args.out else organism_dir(args.name)
    if args.steps is not None and args.steps < 1:
        raise HeadscopeError(f"--steps must be >= 1, got {args.steps}")
    if args.name == "llama":
        cfg = TrainConfig() if args.steps is None else TrainConfig(steps=args.steps)
        train_llama(out, train_cfg=cfg)
    else:
        cfg = TrainConfig(steps=2500, batch_size=64, lr=3e-3, warmup=100)
        if args.steps is not None:
            cfg.steps = args.steps
        train_induction(out, train_cfg=cfg, icfg=InductionConfig())
    write_card(args.name, out)
    print(f"saved {args.name} to {out}")
    return 0


def cmd_organism_eval(args) -> int:
    from headscope.organisms.card import measure

    table = measure(args.name, backend=args.backend)
    width = max(map(len, table))
    for k, v in table.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        write_json(args.json, table)
    return 0
