"""The core ``headscope`` subcommands: ``patch`` (activation-patching sweep) and ``models``."""

from __future__ import annotations

import sys
from pathlib import Path

from headscope.cli._args import add_model_args, add_output_args, add_task_args, run_stem, task_from_args


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
    add_model_args(p)
    add_task_args(p, 48)
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
    add_output_args(p, "out/patch")
    p.set_defaults(func=cmd_patch)

    m = sub.add_parser(
        "models",
        help="list the bundled model organisms",
        description="List the bundled model organisms and whether their weights are present.",
    )
    m.set_defaults(func=cmd_models)


def cmd_patch(args) -> int:
    from headscope.loading import load_model
    from headscope.patching import patch_task

    task = task_from_args(args)  # validate the task before loading the model
    model = load_model(args.model, backend=args.backend, device=args.device)
    batch = task.prepare(model)
    print(
        f"model {args.model} ({model.n_layers} layers × {model.n_heads} heads, backend {model.backend}); task "
        f"{batch.name}: "
        f"{batch.clean.shape[0]} prompt pairs of {batch.clean.shape[1]} tokens ({task.description})",
        file=sys.stderr,
    )
    if args.site == "heads":
        res = patch_task(model, batch, mode=args.mode, per_position=args.per_position)
    else:
        res = patch_task(model, batch, sites=args.site, mode=args.mode, per_position=True)
    res.info.update({"task": batch.name, "prompts": batch.clean.shape[0], "task_description": task.description})
    stem = Path(args.out) / run_stem(args, batch.name, args.site, args.mode, "pos" if args.per_position else None)
    files = res.save(stem)
    files += res.save_figure(stem, png=args.png)
    print(
        f"clean metric {res.info['metric_clean']:.3f}, corrupt metric {res.info['metric_corrupt']:.3f} (logit diff "
        "answer − contrast)"
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
    from headscope.paths import ORGANISMS, bundled_models, organism_dir

    present = bundled_models()
    for name, desc in ORGANISMS.items():
        state = "ready" if name in present else "missing (headscope organism train " + name + ")"
        print(f"{name:<14} {state:<10} {desc}  [{organism_dir(name)}]")
    for folder in sorted((organism_dir("llama").parent).glob("tracr-*")):
        print(
            f"{folder.name:<14} {'ready':<10} RASP program compiled with tracr (TL backend only; see its CARD.md)  "
            f"[{folder}]"
        )
    return 0
