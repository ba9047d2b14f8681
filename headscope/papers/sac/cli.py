"""CLI: ``headscope sac identify|fit|apply|evaluate`` and ``headscope steer generate``.

The commands run on the bundled organism's SAC data, chosen by ``--model``: organism v2's
(:func:`headscope.tasks.sac.organism_sac`) or, for ``llama`` / ``llama-v3*``, organism v3's
(:func:`headscope.tasks.sac_v3.organism_v3_sac`: identification and fitting on training
items, every score on held-out items in held-out wordings).
Outputs are named by :func:`headscope.cli._args.run_stem` (model, ``sac``, the step, backend and
``--run-id``): ``identify`` writes the folder ``out/sac/llama_sac_identify_tl/`` and ``fit`` reads
its ``identify.json`` by default when given the same ``--model``/``--backend``/``--run-id``, and
writes ``out/sac/llama_sac_fit_TASK_tl.{safetensors,json}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from headscope.cli._args import (
    PAPER_MODEL,
    add_model_args,
    csv,
    is_organism_v3,
    out_dir_arg,
    out_file_arg,
    parse_heads,
    run_stem,
)
from headscope.common.errors import HeadscopeError
from headscope.common.io import atomic_write_text, write_json

OUT = "out/sac"


def register(sub) -> None:
    s = sub.add_parser(
        "sac",
        help="Sparse Activation Control: identify, fit, apply and evaluate head controllers",
        description="SAC (Xiao et al., NeurIPS 2024) on the organism world's safety, advfact and preference tasks "
        "(organism v2's, or organism v3's for --model llama / llama-v3*), or on your own behaviour sets "
        "(--data FILE, docs/userdata.md).",
    )
    ss = s.add_subparsers(dest="sac_command", metavar="STEP")
    s.set_defaults(func=lambda args: _usage(s))

    i = ss.add_parser("identify", help="path patching per task, top heads, Jaccard overlap, side-by-side heatmaps")
    add_model_args(i, default=PAPER_MODEL, world=None)
    _data_arg(i)
    i.add_argument(
        "--tasks", default=None, help="behaviours to identify [all of the data's; organism: safety,advfact,preference]"
    )
    i.add_argument("-k", "--k", type=int, default=4, help="heads per task [4]")
    i.add_argument("-n", "--n-prompts", type=int, default=24, help="stimulus pairs per task [24]")
    i.add_argument(
        "--out", default=OUT, type=out_dir_arg, help=f"writes into OUT/MODEL_sac_identify_BACKEND[_RUNID]/ [{OUT}]"
    )
    _run_id(i)
    i.set_defaults(func=cmd_identify)

    f = ss.add_parser("fit", help="fit one task's controller on its heads (safetensors + JSON)")
    add_model_args(f, default=PAPER_MODEL, world=None)
    _data_arg(f)
    f.add_argument("--task", required=True, help="the behaviour (organism: safety, advfact or preference)")
    f.add_argument("--heads", default=None, metavar="L.H,...", help="heads, e.g. 0.2,L3H6 (default: from --identify)")
    f.add_argument(
        "--identify",
        default=None,
        metavar="FILE",
        help=f"identify.json to take the heads from [{OUT}/MODEL_sac_identify_BACKEND[_RUNID]/identify.json, "
        "written by `sac identify` with the same --model, --backend and --run-id]",
    )
    f.add_argument(
        "--kind",
        default="gaussian",
        choices=("gaussian", "add"),
        help="Gaussian OT map (SAC) or ITI mean shift [gaussian]",
    )
    f.add_argument("--alpha", type=float, default=1.0, help="strength [1.0]")
    f.add_argument(
        "--policy", default="last", choices=("last", "all"), help="steer the newest token only, or every token [last]"
    )
    f.add_argument("--gate", type=float, default=1.0, help="in-distribution gate slack; 0 = no gate [1.0]")
    f.add_argument(
        "--no-background",
        action="store_true",
        help="gate on the source radius only (skip the source-vs-off-target-prompts test)",
    )
    f.add_argument(
        "--out",
        default=None,
        type=out_file_arg,
        help=f"controller path without suffix [{OUT}/MODEL_sac_fit_TASK_BACKEND[_RUNID]]",
    )
    _run_id(f)
    f.set_defaults(func=cmd_fit)

    _apply_args(ss.add_parser("apply", help="generate with one or more controllers active"))

    e = ss.add_parser("evaluate", help="task metrics and general ability: no control, each controller, all at once")
    add_model_args(e, default=PAPER_MODEL, world=None)
    _data_arg(e)
    e.add_argument("--controller", action="append", required=True, metavar="PATH", help="controller (repeatable)")
    e.add_argument(
        "--out",
        default=None,
        type=out_file_arg,
        help=f"writes OUT.json and OUT.md [{OUT}/MODEL_sac_evaluate_BACKEND[_RUNID]]",
    )
    _run_id(e)
    e.set_defaults(func=cmd_evaluate)

    st = sub.add_parser("steer", help="generate with steering controllers active (same as `sac apply`)")
    sts = st.add_subparsers(dest="steer_command", metavar="STEP")
    st.set_defaults(func=lambda args: _usage(st))
    _apply_args(sts.add_parser("generate", help="generate with controllers"))


def _run_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-id", default=None, help="label added to the output names (e.g. an experiment name)")


def identify_dir(args, out: str | Path | None = None) -> Path:
    """The folder ``sac identify`` writes for these arguments (``--out`` or ``OUT``)/MODEL_sac_identify_BACKEND..."""
    return Path(out if out is not None else OUT) / run_stem(args, "sac", "identify")


def _identify_file(args) -> Path:
    """``--identify``, else this run's ``identify.json``; a missing default names the command that writes it."""
    if args.identify is not None:
        return Path(args.identify)
    p = identify_dir(args) / "identify.json"
    if not p.exists():
        rid = f" --run-id {args.run_id}" if args.run_id else ""
        raise HeadscopeError(
            f"{p} not found; it is written by `headscope sac identify --model {args.model} --backend {args.backend}"
            f"{rid}` (or pass --identify FILE or --heads L.H,...)"
        )
    return p


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _apply_args(a: argparse.ArgumentParser) -> None:
    add_model_args(a, default=PAPER_MODEL, world=None)
    a.add_argument(
        "--controller", action="append", required=True, metavar="PATH", help="controller (repeatable; they compose)"
    )
    a.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable)")
    a.add_argument("--max-new", type=int, default=8)
    a.add_argument("--alpha", type=float, default=None, help="override every controller's strength")
    a.set_defaults(func=cmd_apply)


def _load(args):
    from headscope.cli._args import model_from_args

    return model_from_args(args)


def _data_arg(p) -> None:
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own SAC behaviour sets (JSON, docs/userdata.md) instead of the organism's",
    )


def _data(args, model, tasks=None):
    """The SAC data of ``--data FILE``, or the organism's (restricted to ``tasks``): organism
    v3's when ``--model`` is an organism-v3 alias or folder (built with ``model``'s
    tokenizer), else organism v2's."""
    if getattr(args, "data", None):
        from headscope.tasks.userdata import load_sac_data

        data = load_sac_data(args.data)
        return data.select(tasks) if tasks else data
    if is_organism_v3(args):
        from headscope.tasks.sac_v3 import SAC_V3_TASKS, organism_v3_sac

        return organism_v3_sac(model.tokenizer, tasks or SAC_V3_TASKS)
    from headscope.tasks.sac import SAC_TASK_NAMES, organism_sac

    return organism_sac(tasks or SAC_TASK_NAMES)


def cmd_identify(args) -> int:
    from headscope.papers.sac.identify import identify, overlap, save

    if args.n_prompts < 2:
        raise HeadscopeError(f"--n-prompts must be >= 2, got {args.n_prompts}")
    model = _load(args)
    data = _data(args, model, csv(args.tasks) if args.tasks else None)
    sel = identify(model, data, k=args.k, n=args.n_prompts)
    d = save(sel, identify_dir(args, args.out))
    for t, s in sel.items():
        print(f"{t:<11} " + " ".join(f"L{L}H{h}" for L, h in s.heads))
    for k, v in overlap(sel).items():
        print(f"jaccard {k}: {v:.2f}")
    print(f"wrote {d / 'identify.json'} and {d / 'identify_heads.html'}")
    return 0


def cmd_fit(args) -> int:
    from headscope.papers.sac.fit import background_groups, fit
    from headscope.papers.sac.identify import load_heads

    # organism v3's data is built with the model's tokenizer; other data is checked first
    model = _load(args) if is_organism_v3(args) and not getattr(args, "data", None) else None
    data = _data(args, model)
    task = data.task(args.task)
    heads = parse_heads(args.heads) or load_heads(_identify_file(args), args.task)
    model = model if model is not None else _load(args)
    bad = [h for h in heads if not (0 <= h[0] < model.n_layers and 0 <= h[1] < model.n_heads)]
    if bad:
        raise HeadscopeError(
            f"heads {bad} do not exist: the model has {model.n_layers} layers x {model.n_heads} heads"
        )
    gate = args.gate or None
    bg = background_groups(data, args.task) if gate is not None and not args.no_background else None
    c = fit(model, task, heads, kind=args.kind, alpha=args.alpha, policy=args.policy, gate=gate, background=bg)
    st, js = c.save(args.out or Path(OUT) / run_stem(args, "sac", "fit", args.task))
    print(
        f"{args.task}: {c.kind} controller on "
        + " ".join(f"L{L}H{h}" for L, h in c.heads())
        + f" ({c.meta['n_desired']} desired / {c.meta['n_undesired']} undesired stimuli)"
    )
    print(f"wrote {st} and {js}")
    return 0


def _controllers(paths, alpha=None):
    from headscope.steering import Controller

    cs = [Controller.load(p) for p in paths]
    return [c.with_alpha(alpha) if alpha is not None else c for c in cs]


def cmd_apply(args) -> int:
    from headscope.steering import compose
    from headscope.tasks.suite import greedy

    if args.max_new < 1:
        raise HeadscopeError(f"--max-new must be >= 1, got {args.max_new}")
    cs = _controllers(args.controller, args.alpha)
    model = _load(args)
    base = greedy(model, args.prompt, args.max_new)
    steered = greedy(model, args.prompt, args.max_new, compose(*cs))
    for p, b, s in zip(args.prompt, base, steered):
        print(f"prompt : {p}\n  none  : {b}\n  steer : {s}")
    return 0


def cmd_evaluate(args) -> int:
    from headscope.papers.sac.evaluate import evaluate_all, markdown_table
    from headscope.steering import compose

    cs = _controllers(args.controller)
    model = _load(args)
    data = _data(args, model)
    cond: dict[str, list] = {"none": []}
    for c in cs:
        cond[c.name] = c.patches()
    if len(cs) > 1:
        cond["all"] = compose(*cs)
    rows = evaluate_all(model, data, cond)
    out = Path(args.out or Path(OUT) / run_stem(args, "sac", "evaluate"))
    write_json(out.with_suffix(".json"), rows)
    md = markdown_table(rows, data.columns)
    atomic_write_text(out.with_suffix(".md"), md + "\n")
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0
