"""CLI for the analyses after a first sweep: ``attribute``, ``path-patch``, ``heads``."""

from __future__ import annotations

import sys
from pathlib import Path

from headscope.cli._args import (
    add_model_args,
    add_output_args,
    add_task_args,
    ints,
    model_from_args,
    parse_heads,
    run_stem,
    task_from_args,
)


def _common(p, default_task: bool = True) -> None:
    add_model_args(p)
    if default_task:
        add_task_args(p, 24)
    add_output_args(p, "out/analysis")


def register(sub) -> None:
    a = sub.add_parser(
        "attribute",
        help="head attribution: attribution patching, DLA or ablation knockout",
        description="Per-head attribution on a task: attribution patching (gradient approximation of "
        "denoising patching), direct logit attribution, or a mean-ablation knockout curve of the "
        "top patching heads against random heads.",
    )
    _common(a)
    a.add_argument("--method", default="attribution", choices=("attribution", "dla", "ablation"))
    a.add_argument("--ks", default="0,1,2,4,8", help="k values of the knockout curve [0,1,2,4,8]")
    a.add_argument("--random-seeds", type=int, default=3, help="random head draws per k [3]")
    a.set_defaults(func=cmd_attribute)

    p = sub.add_parser(
        "path-patch",
        help="path patching from every head to the logits or to a receiver head",
        description="Path patching (Wang et al.): each sender head's corrupt output reaches the logits (or the "
        "receiver's q/k/v) with every other head frozen at its clean value.",
    )
    _common(p)
    p.add_argument("--receiver", default=None, metavar="L.H", help="receiver head, e.g. 3.2 (default: the logits)")
    p.add_argument("--via", default="q", choices=("q", "k", "v"), help="receiver input [q]")
    p.set_defaults(func=cmd_path_patch)

    h = sub.add_parser(
        "heads",
        help="head scores: induction, previous-token, duplicate-token",
        description="TransformerLens head_detector scores of every head on repeated random tokens.",
    )
    _common(h, default_task=False)
    h.add_argument("--score", default="induction", choices=("induction", "previous", "duplicate"))
    h.add_argument("--show", default=None, metavar="L.H,...", help="also draw these heads' attention patterns")
    h.set_defaults(func=cmd_heads)


def _load(args):

    task = task_from_args(args) if hasattr(args, "task") else None
    model = model_from_args(args)
    batch = task.prepare(model, answer_tokens=getattr(args, "answer_tokens", "single")) if task is not None else None
    return model, batch


def _write(res, args, stem: str) -> None:
    out = Path(args.out)
    files = res.save(out / stem) + res.save_figure(out / stem, png=args.png)
    print(res.table(args.top) if "head" in res.axes else "")
    for f in files:
        print(f"wrote {f}")


def cmd_attribute(args) -> int:
    from headscope import attribution as attr
    from headscope.common.metrics import accuracy
    from headscope.common.plotting import save_figure
    from headscope.patching import patch_heads
    from headscope.viz import knockout_plot

    model, b = _load(args)
    if args.method == "attribution":
        res = attr.attribution_patching(model, b.clean, b.corrupt, b.metric_fn(), per_position=False)
        print(
            f"attribution patching on {b.name}: clean {res.info['metric_clean']:.3f}, corrupt "
            f"{res.info['metric_corrupt']:.3f}"
        )
        _write(res, args, run_stem(args, b.name, "attribution"))
    elif args.method == "dla":
        res = attr.direct_logit_attribution(model, b.clean, b.answer, b.wrong)
        print(f"direct logit attribution on {b.name} (mean logit diff {res.info['logit_diff']:.3f})")
        _write(res, args, run_stem(args, b.name, "dla"))
    else:
        ks = ints(args.ks, "--ks")
        ranking = patch_heads(model, b.clean, b.corrupt, b.metric_fn()).top(max(ks))
        curve = attr.knockout_curve(
            model,
            b.clean,
            lambda lg: accuracy(lg, b.answer),
            [(L, h) for L, h, _ in ranking],
            ks=ks,
            how="mean",
            reference=b.corrupt,
            n_random=args.random_seeds,
            seed=args.seed,
        )
        print("k  top-k heads  random heads (mean ± std)")
        for k, t, m, s in zip(curve["k"], curve["top"], curve["random_mean"], curve["random_std"]):
            print(f"{k:<2} {t:>11.3f}  {m:.3f} ± {s:.3f}")
        from headscope.common.io import write_json

        stem = Path(args.out) / run_stem(args, b.name, "knockout")
        files = [write_json(stem.with_name(stem.name + ".json"), curve)]
        files += save_figure(knockout_plot(curve, y_title="accuracy"), stem, png=args.png)
        for f in files:
            print(f"wrote {f}")
    return 0


def cmd_path_patch(args) -> int:
    from headscope.patching import path_patch_heads
    from headscope.results import parse_head

    receiver = parse_head(args.receiver, "--receiver") if args.receiver else None
    model, b = _load(args)
    res = path_patch_heads(model, b.clean, b.corrupt, b.metric_fn(), receiver=receiver, via=args.via)
    target = "logits" if receiver is None else f"L{receiver[0]}H{receiver[1]} via {args.via}"
    print(
        f"path patching to {target} on {b.name}: clean {res.info['metric_clean']:.3f}, corrupt "
        f"{res.info['metric_corrupt']:.3f}",
        file=sys.stderr,
    )
    target_stem = "logits" if receiver is None else f"L{receiver[0]}H{receiver[1]}{args.via}"
    _write(res, args, run_stem(args, b.name, "path", target_stem))
    return 0


def cmd_heads(args) -> int:
    from headscope.common.plotting import save_figure
    from headscope.head_scores import head_scores, repeated_tokens
    from headscope.viz import attention_patterns

    heads = parse_heads(args.show, "--show") if args.show else None  # validated before the model loads
    model, _ = _load(args)
    kind = {"induction": "induction", "previous": "previous_token", "duplicate": "duplicate_token"}[args.score]
    toks = repeated_tokens(model, seed=args.seed)
    res = head_scores(model, toks, kind)
    print(f"{kind} scores on {toks.shape[0]} repeated random sequences of {toks.shape[1]} tokens")
    _write(res, args, run_stem(args, kind))
    if heads:
        for f in save_figure(
            attention_patterns(model, toks, heads), Path(args.out) / run_stem(args, "patterns"), png=args.png
        ):
            print(f"wrote {f}")
    return 0
