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
        help="train, evaluate or export a bundled model organism",
        description="Train (reproducibly, fixed seed) or evaluate the bundled organisms.",
    )
    osub = o.add_subparsers(dest="organism_cmd", metavar="ACTION")
    t = osub.add_parser(
        "train",
        help="train NAME and save it to data/models/NAME",
        description="Train an organism from its fixed seed and save weights, tokenizer and CARD.md.",
    )
    t.add_argument(
        "name",
        choices=("llama", "llama-v3", "llama-v2", "induction"),
        help="llama (= llama-v3: organism v3, --seed S), llama-v2 or induction",
    )
    t.add_argument(
        "--out", default=None, type=out_dir_arg, help="output folder [data/models/NAME; llama-v3-sS for --seed S]"
    )
    t.add_argument("--steps", type=int, default=None, help="override the number of optimisation steps")
    t.add_argument("--seed", type=int, default=0, help="llama-v3 only: training seed (0, 1, 2 are bundled) [0]")
    t.add_argument(
        "--work",
        default=None,
        type=out_dir_arg,
        help="llama-v3 only: folder for the corpus cache and ckpt.pt; rerunning resumes from it [out/train-ALIAS]",
    )
    t.set_defaults(func=cmd_organism_train)
    e = osub.add_parser(
        "eval",
        help="measure NAME's behaviour table",
        description="Measure the organism's behaviours by exact match of greedy outputs on held-out items.",
    )
    e.add_argument(
        "name", help="llama (= llama-v3), llama-v3[-sS], llama-v2, induction, or a folder holding an organism"
    )
    e.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS, help=f"[{DEFAULT_BACKEND}]")
    e.add_argument("--json", default=None, type=out_file_arg, help="also write the table to this JSON file")
    e.add_argument(
        "--no-card",
        action="store_true",
        help="llama-v3 only: do not rewrite CARD.md and eval.json in the organism's folder",
    )
    e.set_defaults(func=cmd_organism_eval)
    x = osub.add_parser(
        "export",
        help="write the llama-v2 organism's task data in the user file formats",
        description="Write the bundled llama-v2 organism's data in the documented user formats (docs/userdata.md): "
        "pairs.jsonl (clean/corrupt pairs of the arithmetic task), arith.jsonl (the identify split's arithmetic "
        "rows with operator, A and B counterfactuals) and sac.json (SAC behaviour sets, backgrounds, KL texts). "
        "The organism is one user of the same path as your own data.",
    )
    x.add_argument("--out", default="out/organism_data", type=out_dir_arg, help="output folder [out/organism_data]")
    x.set_defaults(func=cmd_organism_export)


def cmd_organism_train(args) -> int:
    from headscope.organisms.card import write_card
    from headscope.organisms.train import InductionConfig, TrainConfig, train_induction, train_llama
    from headscope.paths import organism_dir

    if args.steps is not None and args.steps < 1:
        raise HeadscopeError(f"--steps must be >= 1, got {args.steps}")
    if args.name in ("llama", "llama-v3"):  # `llama` is organism v3 seed 0 (docs/organism_v3.md §1)
        from headscope.organisms.eval_v3 import evaluate_and_card
        from headscope.organisms.train_v3 import V3Config, train_v3, v3_alias

        if args.seed < 0:
            raise HeadscopeError(f"--seed must be >= 0, got {args.seed}")
        alias = v3_alias(args.seed)
        out = Path(args.out) if args.out else organism_dir(alias)
        v3 = V3Config(seed=args.seed) if args.steps is None else V3Config(seed=args.seed, steps=args.steps)
        train_v3(out, v3, work_dir=args.work)
        evaluate_and_card(alias, out)
        print(f"saved {alias} to {out}")
        return 0
    if args.seed != 0 or args.work is not None:
        raise HeadscopeError("--seed and --work apply to llama-v3 only")
    out = Path(args.out) if args.out else organism_dir(args.name)
    if args.name == "llama-v2":
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


def _v3_folder(name: str) -> Path | None:
    """The organism-v3 folder ``name`` names (an alias or a folder whose organism.json says v3), else None."""
    import json

    from headscope.paths import organism_dir

    if name == "llama" or name.startswith("llama-v3"):
        return organism_dir(name)
    meta = Path(name) / "organism.json"
    if meta.is_file() and str(json.loads(meta.read_text()).get("organism", "")).startswith("llama-v3"):
        return Path(name)
    return None


def cmd_organism_eval(args) -> int:
    from headscope.organisms.card import measure

    v3 = _v3_folder(args.name)
    if v3 is not None:
        from headscope.organisms.eval_v3 import acceptance, evaluate_and_card, measure_v3

        if not (v3 / "model.safetensors").is_file():
            raise HeadscopeError(f"no organism at {v3}; train it with: headscope organism train llama-v3 [--seed S]")
        if args.no_card:
            res = measure_v3(v3)
            res["acceptance"] = acceptance(res)
        else:
            res = evaluate_and_card(v3.name, v3)
            print(f"wrote {v3 / 'CARD.md'} and {v3 / 'eval.json'}")
        for b in res["acceptance"]:
            e = b["estimate"]
            print(
                f"{b['bar']:<60} {e['value']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]  {'met' if b['met'] else 'NOT met'}"
            )
        if args.json:
            write_json(args.json, res)
        return 0
    table = measure(args.name, backend=args.backend)
    width = max(map(len, table))
    for k, v in table.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        write_json(args.json, table)
    return 0


def cmd_organism_export(args) -> int:
    import json

    from headscope.common.io import atomic_write_text
    from headscope.tasks import get_task
    from headscope.tasks.arithmetic import arith_splits, with_operand_corruption
    from headscope.tasks.sac import organism_sac
    from headscope.tasks.userdata import export_arith_rows, save_sac_data

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task("arithmetic", n=48)
    rows = [
        {"clean": c, "corrupt": k, "answer": a, "wrong": w}
        for c, k, a, w in zip(task.clean, task.corrupt, task.answers, task.wrong)
    ]
    atomic_write_text(out / "pairs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ident = arith_splits().identify
    by = {"operator": ident, "A": with_operand_corruption(ident, "A"), "B": with_operand_corruption(ident, "B")}
    export_arith_rows(by, out / "arith.jsonl")
    save_sac_data(organism_sac(), out / "sac.json")
    for f in ("pairs.jsonl", "arith.jsonl", "sac.json"):
        print(f"wrote {out / f}")
    return 0
