"""The core ``headscope`` subcommands: ``patch``, ``models``, ``organism train|eval``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from headscope.common.errors import HeadscopeError


def register(sub) -> None:
    p = sub.add_parser(
        "patch",
        help="activation-patching sweep over every attention head",
        description=(
            "Activation patching of every head's output (z) on a task's clean/corrupt prompt pairs. "
            "Prints the top heads and writes a layer×head heatmap (HTML, PNG with --png) and the scores "
            "(JSON + safetensors) to --out."
        ),
    )
    p.add_argument(
        "--model", default="llama", help="bundled organism (llama, induction), local HF folder or hub id [llama]"
    )
    p.add_argument(
        "--task", default=None, help="arithmetic, facts or induction [arithmetic; induction for --model induction]"
    )
    p.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="your own pairs instead of --task: JSON Lines with clean, corrupt, answer, wrong",
    )
    p.add_argument("--backend", default="tl", choices=("tl", "nnsight"), help="TransformerLens bridge or nnsight [tl]")
    p.add_argument(
        "--mode",
        default="denoise",
        choices=("denoise", "noise"),
        help="denoise: clean into corrupt; noise: corrupt into clean [denoise]",
    )
    p.add_argument("--per-position", action="store_true", help="patch each (head, position) separately")
    p.add_argument(
        "--site", default="heads", choices=("heads", "resid_pre", "attn_out", "mlp_out"), help="what to patch [heads]"
    )
    p.add_argument("-n", "--n-prompts", type=int, default=48, help="number of prompt pairs [48]")
    p.add_argument("--top", type=int, default=10, help="rows of the top-heads table [10]")
    p.add_argument("--out", default="out/patch", help="output folder [out/patch]")
    p.add_argument("--png", action="store_true", help="also write a PNG (needs kaleido + chromium)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_patch)

    m = sub.add_parser(
        "models",
        help="list the bundled model organisms",
        description="List the bundled model organisms and whether their weights are present.",
    )
    m.set_defaults(func=cmd_models)

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
    t.add_argument("--out", default=None, help="output folder [data/models/NAME]")
    t.add_argument("--steps", type=int, default=None, help="override the number of optimisation steps")
    t.set_defaults(func=cmd_organism_train)
    e = osub.add_parser(
        "eval",
        help="measure NAME's behaviour table",
        description="Measure the organism's behaviours by exact match of greedy outputs on held-out items.",
    )
    e.add_argument("name", help="llama, induction, or a folder holding an organism")
    e.add_argument("--backend", default="tl", choices=("tl", "nnsight"))
    e.add_argument("--json", default=None, help="also write the table to this JSON file")
    e.set_defaults(func=cmd_organism_eval)

    # Each analysis family keeps its CLI beside its code; all are core, so import errors surface.
    import importlib

    for mod in ("analysis_cli", "circuits_cli", "arith_cli", "spt_cli", "steer_cli"):
        importlib.import_module(f"headscope.{mod}").register(sub)


def _task_for(args) -> object:
    from headscope.tasks import get_task

    if args.prompts:
        from headscope.tasks.base import load_pairs

        return load_pairs(args.prompts)
    name = args.task or ("induction" if args.model == "induction" else "arithmetic")
    if args.n_prompts < 1:
        raise HeadscopeError(f"--n-prompts must be >= 1, got {args.n_prompts}")
    return get_task(name, n=args.n_prompts, seed=args.seed)


def cmd_patch(args) -> int:
    from headscope.loading import load_model
    from headscope.patching import patch_task

    task = _task_for(args)  # validate the task before loading the model
    model = load_model(args.model, backend=args.backend, device=args.device)
    batch = task.prepare(model)
    print(
        f"model {args.model} ({model.n_layers} layers × {model.n_heads} heads, backend {model.backend}); task {batch.name}: "
        f"{batch.clean.shape[0]} prompt pairs of {batch.clean.shape[1]} tokens ({task.description})",
        file=sys.stderr,
    )
    if args.site == "heads":
        res = patch_task(model, batch, mode=args.mode, per_position=args.per_position)
    else:
        res = patch_task(model, batch, sites=args.site, mode=args.mode, per_position=True)
    res.info.update({"task": batch.name, "prompts": batch.clean.shape[0], "task_description": task.description})
    out = Path(args.out)
    stem = (
        out
        / f"{args.model.replace('/', '_')}_{batch.name}_{args.site}_{args.mode}{'_pos' if args.per_position else ''}"
    )
    files = res.save(stem)
    files += res.save_figure(stem, png=args.png)
    print(
        f"clean metric {res.info['metric_clean']:.3f}, corrupt metric {res.info['metric_corrupt']:.3f} (logit diff answer − contrast)"
    )
    if "head" in res.axes:
        print(f"top {args.top} heads by |normalised patching effect| ({args.mode}):")
        print(res.table(args.top))
    else:
        s = res.scores
        flat = s.abs().flatten().argsort(descending=True)[: args.top]
        print(f"top {args.top} (layer, position) by |effect|:")
        P = s.shape[1] if s.ndim == 2 else 1
        for i in flat:
            L, p = int(i) // P, int(i) % P
            print(f"  L{L} pos {p} ({res.labels['pos'][p]!r}): {float(s.flatten()[i]):.4f}")
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_models(args) -> int:
    from headscope.loading import ORGANISMS, bundled_models, organism_dir

    present = bundled_models()
    for name, desc in ORGANISMS.items():
        state = "ready" if name in present else "missing (headscope organism train " + name + ")"
        print(f"{name:<14} {state:<10} {desc}  [{organism_dir(name)}]")
    for folder in sorted((organism_dir("llama").parent).glob("tracr-*")):
        print(
            f"{folder.name:<14} {'ready':<10} RASP program compiled with tracr (TL backend only; see its CARD.md)  [{folder}]"
        )
    return 0


def cmd_organism_train(args) -> int:
    from headscope.loading import organism_dir
    from headscope.organisms.card import write_card
    from headscope.organisms.train import InductionConfig, TrainConfig, train_induction, train_llama

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
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    return 0
