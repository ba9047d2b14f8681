"""CLI for steering and SAC: ``headscope sac identify|fit|apply|evaluate`` and ``headscope steer generate``."""

from __future__ import annotations

import json
from pathlib import Path

from headscope.common.errors import HeadscopeError


def _model_args(p) -> None:
    p.add_argument("--model", default="llama", help="bundled organism, local HF folder or hub id [llama]")
    p.add_argument("--backend", default="tl", choices=("tl", "nnsight"))
    p.add_argument("--device", default="auto")


def register(sub) -> None:
    s = sub.add_parser(
        "sac",
        help="Sparse Activation Control: identify, fit, apply and evaluate head controllers",
        description="SAC (Xiao et al., NeurIPS 2024) on the organism world's safety, advfact and preference tasks.",
    )
    ss = s.add_subparsers(dest="sac_command", metavar="STEP")
    s.set_defaults(func=lambda args: _usage(s))

    i = ss.add_parser("identify", help="path patching per task, top heads, Jaccard overlap, side-by-side heatmaps")
    _model_args(i)
    i.add_argument("--tasks", default="safety,advfact,preference")
    i.add_argument("-k", "--k", type=int, default=4, help="heads per task [4]")
    i.add_argument("-n", "--n-prompts", type=int, default=24, help="stimulus pairs per task [24]")
    i.add_argument("--out", default="out/sac", help="output folder [out/sac]")
    i.set_defaults(func=cmd_identify)

    f = ss.add_parser("fit", help="fit one task's controller on its heads (safetensors + JSON)")
    _model_args(f)
    f.add_argument("--task", required=True, help="safety, advfact or preference")
    f.add_argument("--heads", default=None, metavar="L.H,...", help="heads, e.g. 0.2,3.6 (default: from --identify)")
    f.add_argument(
        "--identify",
        default="out/sac/identify.json",
        help="identify.json to take the heads from [out/sac/identify.json]",
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
    f.add_argument("--out", default=None, help="controller path without suffix [out/sac/<task>]")
    f.set_defaults(func=cmd_fit)

    for name, helptext in (("apply", "generate with one or more controllers active"),):
        a = ss.add_parser(name, help=helptext)
        _apply_args(a)

    e = ss.add_parser("evaluate", help="task metrics and general ability: no control, each controller, all at once")
    _model_args(e)
    e.add_argument("--controller", action="append", required=True, metavar="PATH", help="controller (repeatable)")
    e.add_argument("--out", default="out/sac/evaluate", help="writes OUT.json and OUT.md [out/sac/evaluate]")
    e.set_defaults(func=cmd_evaluate)

    st = sub.add_parser("steer", help="generate with steering controllers active (same as `sac apply`)")
    sts = st.add_subparsers(dest="steer_command", metavar="STEP")
    st.set_defaults(func=lambda args: _usage(st))
    _apply_args(sts.add_parser("generate", help="generate with controllers"))


def _usage(parser) -> int:
    parser.print_help()
    return 2


def _apply_args(a) -> None:
    _model_args(a)
    a.add_argument(
        "--controller", action="append", required=True, metavar="PATH", help="controller (repeatable; they compose)"
    )
    a.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable)")
    a.add_argument("--max-new", type=int, default=8)
    a.add_argument("--alpha", type=float, default=None, help="override every controller's strength")
    a.set_defaults(func=cmd_apply)


def _heads(spec: str) -> list[tuple[int, int]]:
    out = []
    for s in spec.split(","):
        try:
            L, h = s.strip().upper().replace("L", "").replace("H", ".").split(".")
            out.append((int(L), int(h)))
        except ValueError as e:
            raise HeadscopeError(f"bad head {s!r} in --heads; write LAYER.HEAD, e.g. 0.2,3.6") from e
    return out


def _load(args):
    from headscope.loading import load_model

    return load_model(args.model, backend=args.backend, device=args.device)


def cmd_identify(args) -> int:
    from headscope import sac

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sac._task_names(tasks)
    if args.n_prompts < 2:
        raise HeadscopeError(f"--n-prompts must be >= 2, got {args.n_prompts}")
    res = sac.identify(_load(args), tasks, k=args.k, n=args.n_prompts)
    d = res.save(args.out)
    for t, hs in res.heads.items():
        print(f"{t:<11} " + " ".join(f"L{L}H{h}" for L, h in hs))
    for k, v in res.jaccard.items():
        print(f"jaccard {k}: {v:.2f}")
    print(f"wrote {d / 'identify.json'} and {d / 'identify_heads.html'}")
    return 0


def cmd_fit(args) -> int:
    from headscope import sac

    sac._task_names([args.task])
    if args.heads:
        heads = _heads(args.heads)
    else:
        p = Path(args.identify)
        if not p.exists():
            raise HeadscopeError(f"{p} not found; run `headscope sac identify` first or pass --heads L.H,...")
        hs = json.loads(p.read_text())["heads"]
        if args.task not in hs:
            raise HeadscopeError(f"{p} has no heads for task {args.task!r}; rerun identify with it in --tasks")
        heads = [tuple(h) for h in hs[args.task]]
    model = _load(args)
    bad = [h for h in heads if not (0 <= h[0] < model.n_layers and 0 <= h[1] < model.n_heads)]
    if bad:
        raise HeadscopeError(
            f"heads {bad} do not exist: the model has {model.n_layers} layers x {model.n_heads} heads"
        )
    c = sac.fit(
        model,
        args.task,
        heads,
        kind=args.kind,
        alpha=args.alpha,
        policy=args.policy,
        gate=args.gate or None,
        background=not args.no_background,
    )
    st, js = c.save(args.out or f"out/sac/{args.task}")
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
    from headscope.organisms.evaluate import greedy
    from headscope.steering import compose

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
    from headscope import sac
    from headscope.steering import compose

    cs = _controllers(args.controller)
    model = _load(args)
    cond = {"none": []}
    for c in cs:
        cond[c.name] = c.patches()
    if len(cs) > 1:
        cond["all"] = compose(*cs)
    rows = sac.evaluate_all(model, cond)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    md = sac.markdown_table(rows)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0
