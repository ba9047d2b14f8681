"""The core ``headscope`` subcommands: ``patch`` (activation-patching sweep) and ``models``."""

from __future__ import annotations

import sys
from pathlib import Path

from headscope.cli._args import (
    add_model_args,
    add_output_args,
    add_task_args,
    model_from_args,
    run_stem,
    task_from_args,
)
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
    p.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="activation memory one forward pass of the sweep may hold, e.g. 512MB or 2GB [256MB]",
    )
    p.add_argument(
        "--max-pairs",
        type=int,
        default=1024,
        metavar="N",
        help="run a larger prompt set in chunks of N pairs, so memory stays bounded (docs/scale.md) [1024]",
    )
    p.add_argument(
        "--no-fast",
        action="store_true",
        help="run every patched copy through the whole model (the exact fast path is the default; "
        "docs/headscope.md, 'How the sweep is fast')",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="spread the sweep's layers over N Ray workers, each with its own model copy (docs/scale.md) [off]",
    )
    p.add_argument("--address", default=None, help="with --workers: join this Ray cluster (auto, ray://host:10001)")
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="with --workers: write finished layers to DIR; rerunning the same sweep resumes from it",
    )
    add_output_args(p, "out/patch")
    p.set_defaults(func=cmd_patch)

    m = sub.add_parser(
        "models",
        help="list the bundled model organisms; --check: which architectures and analyses work",
        description="List the bundled model organisms and whether their weights are present. With --check, build a "
        "tiny random model of every supported architecture, run every analysis on both backends against a "
        "hand-written reference and print the architectures x features x backends table (docs/models.md).",
    )
    m.add_argument("--check", action="store_true", help="run the architecture checks (about 2-4 min on a CPU)")
    m.add_argument("--arch", action="append", help="with --check: only this architecture (repeatable)")
    m.add_argument("--write", metavar="FILE", help="with --check: write the markdown table to FILE")
    m.set_defaults(func=cmd_models)


def cmd_patch(args) -> int:
    from headscope.fastpatch import parse_memory
    from headscope.patching import patch_task

    task = task_from_args(args)  # validate the task and the memory budget before loading the model
    max_memory = parse_memory(args.max_memory)
    if args.workers < 0:
        raise HeadscopeError(f"--workers must be >= 0; got {args.workers}")
    if args.max_pairs < 1:
        raise HeadscopeError(f"--max-pairs must be >= 1; got {args.max_pairs}")
    if (args.address or args.checkpoint) and not args.workers:
        raise HeadscopeError("--address and --checkpoint go with --workers N (a sharded sweep)")
    if args.workers and getattr(args, "remote", None):
        raise HeadscopeError("--workers runs local model copies; drop --remote (or --workers)")
    if args.workers and args.site != "heads":
        raise HeadscopeError("--workers shards head sweeps only; drop it for --site " + args.site)
    model = model_from_args(args)
    batch = task.prepare(model, answer_tokens=args.answer_tokens)
    print(
        f"model {args.model} ({model.n_layers} layers × {model.n_heads} heads, backend {model.backend}); task "
        f"{batch.name}: "
        f"{batch.clean.shape[0]} prompt pairs of {batch.clean.shape[1]} tokens ({task.description})",
        file=sys.stderr,
    )
    if args.workers:
        from headscope.sharding import sharded_patch_heads

        res = sharded_patch_heads(
            args.model,
            batch.clean,
            batch.corrupt,
            batch.metric_fn(),
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            checkpoint=args.checkpoint,
            mode=args.mode,
            per_position=args.per_position,
            max_memory=max_memory,
            fast=not args.no_fast,
        )
        res.info["task"] = batch.name
    elif args.site == "heads":
        res = patch_task(
            model,
            batch,
            mode=args.mode,
            per_position=args.per_position,
            max_memory=max_memory,
            fast=not args.no_fast,
            max_pairs=args.max_pairs,
        )
    else:
        res = patch_task(
            model,
            batch,
            sites=args.site,
            mode=args.mode,
            per_position=True,
            fast=not args.no_fast,
            max_pairs=args.max_pairs,
        )
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

    if args.arch or args.write:
        if not args.check:
            raise HeadscopeError(
                "--arch and --write go with --check (headscope models --check --write docs/models.md)"
            )
    if args.check:
        return _check_models(args)

    present = bundled_models()
    for name, desc in ORGANISMS.items():
        train = f"llama-v3 --seed {name.rsplit('-s', 1)[1]}" if name.startswith("llama-v3-s") else name
        state = "ready" if name in present else f"missing (headscope organism train {train})"
        print(f"{name:<14} {state:<10} {desc}  [{organism_dir(name)}]")
    for folder in sorted((organism_dir("llama").parent).glob("tracr-*")):
        print(
            f"{folder.name:<14} {'ready':<10} RASP program compiled with tracr (TL backend only; see its CARD.md)  "
            f"[{folder}]"
        )
    return 0


def _check_models(args) -> int:
    import tempfile

    from headscope.archcheck import ARCH_NAMES, check_arch, models_table
    from headscope.common.io import atomic_write_text
    from headscope.common.progress import log

    archs = args.arch or list(ARCH_NAMES)
    bad = [a for a in archs if a not in ARCH_NAMES]
    if bad:
        raise HeadscopeError(f"unknown architecture {bad[0]!r}; use one of {', '.join(ARCH_NAMES)}")
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for a in archs:
            log(f"checking {a} ...")
            results[a] = check_arch(a, root)
    table = models_table(results)
    print(table)
    if args.write:
        atomic_write_text(args.write, table)
        log(f"wrote {args.write}")
    cells = [v for r in results.values() for f in r.values() for k, v in f.items() if k != "_seconds"]
    failed = sum(v.startswith("✗") for v in cells)
    return 1 if failed else 0
