"""``headscope arith prompts|identify|knockout|inspect|transfer|tune`` (arithmetic heads, ICML 2024).

Each command builds the organism's prompt rows (organism v2:
:func:`headscope.tasks.arithmetic.arith_prompts`, every template of the chosen operators and
styles; organism v3, ``--model llama`` / ``llama-v3*``:
:func:`headscope.tasks.arithmetic_v3.arith_v3_rows`, held-out + / − items in training or
held-out frames; ``inspect`` and ``tune`` are organism v2's only), kept only where the model
answers correctly, runs one step of the paper and writes JSON (and figures/Markdown where they
exist) to ``--out``, named by :func:`headscope.cli._args.run_stem` (model, ``arith``, the step,
backend, seed and ``--run-id``), e.g. ``out/arith/llama_arith_knockout_tl_seed0.json``, so runs
with another seed, backend or model write beside each other.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from headscope.cli._args import (
    PAPER_MODEL,
    add_model_args,
    add_output_args,
    csv,
    ints,
    is_organism_v3,
    out_dir_arg,
    parse_heads,
    run_stem,
)
from headscope.common.errors import HeadscopeError
from headscope.common.io import atomic_write_text, strict_json_dumps, write_json
from headscope.common.progress import log
from headscope.results import format_head


def _common(p: argparse.ArgumentParser, out: str, v3: bool = True) -> None:
    # v3: this step also runs on organism v3's prompt sets (arith_v3_rows); else it refuses v3
    add_model_args(p, default=PAPER_MODEL, world=None if v3 else "v2")
    p.add_argument("--ops", default=None, help="operators [add,sub,mul,div; organism v3 (llama, llama-v3*): add,sub]")
    p.add_argument(
        "--styles",
        default=None,
        help="template styles [equation,statement,qa]; not on organism v3, whose --split picks frames",
    )
    p.add_argument(
        "--split",
        default="all",
        choices=("all", "train", "heldout"),
        help="world split of the prompts; on organism v3: train = identify half in training frames, "
        "heldout = evaluate half in held-out frames [all]",
    )
    p.add_argument(
        "--all-prompts", action="store_true", help="keep prompts the model gets wrong (default: correct ones only)"
    )
    p.add_argument("--per-group", type=int, default=32, help="prompts per equal-length group for path patching [32]")
    p.add_argument(
        "--rows",
        default=None,
        metavar="FILE",
        help="your own arithmetic rows (prompt, answer, counterfactual; JSON Lines, CSV or a datasets folder; "
        "docs/userdata.md) instead of the organism's templates (--ops/--styles/--split then do not apply)",
    )
    add_output_args(p, out, top=False, png=False)


def register(sub) -> None:
    a = sub.add_parser(
        "arith",
        help="arithmetic heads: identify, knock out, inspect, transfer, tune (ICML 2024 paper)",
        description="The arithmetic-heads workflow with null-operator counterfactuals: on organism v2 "
        "(llama-v2, the default) all templates of + - * / in three styles; on organism v3 (--model llama, "
        "llama-v3*) its held-out + and - items in training or held-out frames (prompts, identify, knockout, "
        "transfer).",
    )
    asub = a.add_subparsers(dest="arith_cmd", metavar="ACTION")

    p = asub.add_parser(
        "prompts",
        help="write the prompt set (JSON Lines) and print counts",
        description="Every template × operator × operand prompt with its counterfactual; "
        "optionally only those the model answers.",
    )
    _common(p, "out/arith")
    p.set_defaults(func=cmd_prompts)

    i = asub.add_parser(
        "identify",
        help="path patching to logits: relative answer-logit score, -5%% rule, heatmap",
        description="Path patching from every head (and MLP) to the logits; key heads lie at or below the threshold.",
    )
    _common(i, "out/arith")
    i.add_argument("--threshold", type=float, default=-0.05, help="key-head rule on the relative score [-0.05]")
    i.add_argument("--top", type=int, default=10)
    i.set_defaults(func=cmd_identify)

    k = asub.add_parser(
        "knockout",
        help="mean-ablate the top-k heads vs k random heads (accuracy curve)",
        description="Accuracy (overall, per operator and style) with the top-k key heads mean-ablated vs k random "
        "heads (headscope.controls.random_heads, never one of the ranked heads).",
    )
    _common(k, "out/arith")
    k.add_argument("--heads", default=None, help="ranking to knock out (e.g. 0.3,L0H0); default: identify's ranking")
    k.add_argument("--ks", default="0,1,2,4,8", help="k values [0,1,2,4,8]")
    k.add_argument("--seeds", type=int, default=3, help="random draws per k [3]")
    k.set_defaults(func=cmd_knockout)

    s = asub.add_parser(
        "inspect",
        help="key heads' attention onto operands/operators; MLP logit lens and cosine with W_U",
        description="Attention from the last position onto operand and operator tokens, and what each MLP writes.",
    )
    _common(s, "out/arith", v3=False)
    s.add_argument("--heads", default=None, help="heads to inspect; default: the key heads from identify")
    s.set_defaults(func=cmd_inspect)

    t = asub.add_parser(
        "transfer",
        help="heads of one style/operator knocked out on the others",
        description="Identify the top-k heads per style (or operator) and measure accuracy when they are ablated "
        "on every other.",
    )
    _common(t, "out/arith")
    t.add_argument("--by", default="style", choices=("style", "op"))
    t.add_argument("-k", type=int, default=2)
    t.set_defaults(func=cmd_transfer)

    u = asub.add_parser(
        "tune",
        help="precise SFT of the key heads vs full SFT vs LoRA; writes the results table",
        description="Train on the chosen operators' training prompts with each method (same data and budget); "
        "report arithmetic and general ability before/after, trainable parameters, time per step. "
        "Training runs on the CPU; --backend is the one used to identify the heads.",
    )
    add_model_args(u, device=False, default=PAPER_MODEL, world="v2")
    u.add_argument("--heads", default=None, help="heads for precise SFT; default: identify's top-k")
    u.add_argument("-k", type=int, default=4, help="top-k heads when --heads is not given [4]")
    u.add_argument("--methods", default="heads,full,lora", help="heads (precise SFT), full, lora [all three]")
    u.add_argument("--train-ops", default="div,mul", help="operators of the training data [div,mul]")
    u.add_argument("--steps", type=int, default=200)
    u.add_argument("--batch-size", type=int, default=32)
    u.add_argument("--lr", type=float, default=1e-3)
    u.add_argument("--lora-r", type=int, default=4)
    u.add_argument("--no-chat", action="store_true", help="skip the chat-rate evaluation")
    u.add_argument(
        "--out",
        default="out/arith",
        type=out_dir_arg,
        help="folder for MODEL_arith_tune_BACKEND.json and .md [out/arith]",
    )
    u.add_argument("--run-id", default=None, help="label added to the output file names")
    u.set_defaults(func=cmd_tune)
    a.set_defaults(func=lambda args: (a.print_help(), 2)[1])


def _prompts(args, model=None) -> list:
    from headscope.papers import arithmetic as ar
    from headscope.tasks.arithmetic import arith_prompts

    rows: list
    if getattr(args, "rows", None):
        from headscope.tasks.userdata import load_arith_rows

        rows = load_arith_rows(args.rows)["operator"]
    elif is_organism_v3(args):
        from headscope.tasks.arithmetic_v3 import V3_ARITH_OPS, arith_v3_rows

        if args.styles is not None:
            raise HeadscopeError(
                f"--styles does not apply to organism v3 ({args.model}); its prompt sets are picked by --split "
                "(train: training frames, heldout: held-out frames)"
            )
        rows = arith_v3_rows(ops=csv(args.ops) if args.ops else V3_ARITH_OPS, split=args.split, organism=args.model)
    else:
        rows = arith_prompts(
            ops=csv(args.ops or "add,sub,mul,div"),
            styles=csv(args.styles or "equation,statement,qa"),
            split=args.split,
        )
    if model is not None and not args.all_prompts:
        rows = ar.filter_correct(model, rows)
        if not rows:
            raise HeadscopeError(
                "the model answers none of these prompts correctly; pass --all-prompts or other --ops/--styles"
            )
    return rows


def _load(args):
    from headscope.cli._args import model_from_args

    n = len(_prompts(args))  # validate the selection before loading the model
    if args.per_group < 1:
        raise HeadscopeError(f"--per-group must be >= 1, got {args.per_group}")
    model = model_from_args(args)
    if not args.all_prompts:
        log(f"model {args.model}: finding which of the {n} prompts it answers correctly")
    rows = _prompts(args, model)
    if getattr(args, "rows", None):
        src = args.rows
    elif is_organism_v3(args):
        src = f"organism v3, {args.ops or 'add,sub'}, split {args.split}"
    else:
        src = f"{args.ops or 'add,sub,mul,div'}; {args.styles or 'equation,statement,qa'}"
    print(f"model {args.model}: {len(rows)} prompts ({src})", file=sys.stderr)
    return model, rows


def _stem(args, *step: object) -> Path:
    """``--out``/MODEL_arith_STEP..._BACKEND_seedN[_RUNID]: where one step of this run writes."""
    return Path(args.out) / run_stem(args, "arith", *step)


def _write(args, step: str, data: dict, *more: object) -> Path:
    p = write_json(_stem(args, step, *more).with_suffix(".json"), data)
    print(f"wrote {p}")
    return p


def _identify(args, model, rows):
    from headscope.papers import arithmetic as ar

    return ar.identify(
        model, rows, threshold=getattr(args, "threshold", -0.05), max_per_group=args.per_group, seed=args.seed
    )


def cmd_prompts(args) -> int:
    from headscope.tasks.arithmetic import arith_dataset

    if args.all_prompts:
        rows = _prompts(args)
    else:
        _, rows = _load(args)
    p = atomic_write_text(
        _stem(args, "prompts").with_suffix(".jsonl"),
        "".join(strict_json_dumps(dict(r), indent=None) + "\n" for r in rows),
    )
    ds = arith_dataset(rows)
    print(
        f"{ds.num_rows} prompts; per operator: "
        + ", ".join(f"{o} {n}" for o, n in Counter(r["op"] for r in rows).items())
    )
    print(f"wrote {p}")
    return 0


def cmd_identify(args) -> int:
    from headscope.papers import arithmetic as ar

    model, rows = _load(args)
    sel = _identify(args, model, rows)
    files = sel.save(_stem(args, "identify"))
    print(
        f"{len(sel.heads)} of {sel.scores.scores.numel()} heads at or below {100 * args.threshold:.0f}% "
        f"(share {100 * sel.share:.1f}%): {', '.join(format_head(h) for h in sel.heads) or 'none'}"
    )
    print(sel.scores.table(args.top, by="neg"))
    print("MLPs: " + ", ".join(f"L{L} {v:+.3f}" for L, v in enumerate(ar.mlp_scores(sel).tolist())))
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_knockout(args) -> int:
    from headscope.common.plotting import save_figure
    from headscope.papers import arithmetic as ar
    from headscope.viz import knockout_plot

    ks = ints(args.ks, "--ks")
    if not ks or min(ks) < 0:
        raise HeadscopeError(f"--ks must be non-negative integers, got {args.ks!r}")
    if args.seeds < 1:
        raise HeadscopeError(f"--seeds must be >= 1, got {args.seeds}")
    heads = parse_heads(args.heads)
    model, rows = _load(args)
    ranking = heads or _identify(args, model, rows).top(max(ks))
    ko = ar.knockout(model, rows, ranking, ks=ks, seeds=range(args.seed, args.seed + args.seeds))
    print(f"{'k':>3} {'top-k':>7} {'random':>15}")
    for k, t, m, s in zip(ko["k"], ko["top"], ko["random_mean"], ko["random_std"]):
        print(f"{k:>3} {t:>7.3f} {m:>8.3f} ± {s:.3f}")
    _write(args, "knockout", ko)
    for f in save_figure(
        knockout_plot(ko, f"{args.model}: knockout of arithmetic heads", "accuracy"), _stem(args, "knockout")
    ):
        print(f"wrote {f}")
    return 0


def cmd_inspect(args) -> int:
    from headscope.papers import arithmetic as ar

    heads = parse_heads(args.heads)
    model, rows = _load(args)
    heads = heads or _identify(args, model, rows).heads
    if not heads:
        raise HeadscopeError("no key heads passed the threshold; name heads with --heads")
    ins = ar.inspect(model, rows, heads)
    for h, d in ins["key"].items():
        print(f"{h}: attention onto operands {d['operands']:.3f}, onto operator {d['operators']:.3f}")
    print(
        f"key heads {ins['key_mean_attention']:.3f} vs average head {ins['average_head_attention']:.3f} "
        "(operands + operator)"
    )
    print("MLP logit lens, rank of C per layer: " + ", ".join(f"{v:.1f}" for v in ins["mlp_logit_lens"]["rank_of_C"]))
    _write(args, "inspect", ins)
    return 0


def cmd_transfer(args) -> int:
    from headscope.papers import arithmetic as ar

    if args.k < 1:
        raise HeadscopeError(f"-k must be >= 1, got {args.k}")
    model, rows = _load(args)
    tr = ar.transfer(model, rows, by=args.by, k=args.k, max_per_group=args.per_group, seed=args.seed)
    src = tr["sources"]
    print("source\\target " + " ".join(f"{t:>10}" for t in src))
    print(f"{'(none)':<13} " + " ".join(f"{tr['baseline'][t]:>10.3f}" for t in src))
    for s in src:
        print(f"{s:<13} " + " ".join(f"{tr['accuracy'][s][t]:>10.3f}" for t in src))
    _write(args, "transfer", tr, args.by)
    return 0


def cmd_tune(args) -> int:
    from headscope.loading import load_hf, load_model
    from headscope.papers import arithmetic as ar
    from headscope.tasks.arithmetic import arith_prompts, organism_tune_suite
    from headscope.tuning import METHODS, TuneConfig

    methods = csv(args.methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise HeadscopeError(f"unknown method(s) {bad or methods}; use heads, full, lora")
    ops = csv(args.train_ops)
    arith_prompts(ops=ops)  # validate
    if args.lora_r < 1 or args.k < 1:
        raise HeadscopeError("--lora-r and -k must be >= 1")
    cfg = TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    heads = parse_heads(args.heads)
    if heads is None and "heads" in methods:
        hm = load_model(args.model, args.backend)
        rows = ar.filter_correct(hm, arith_prompts())
        heads = ar.identify(hm, rows, max_per_group=32).top(args.k)
    base, tok, _ = load_hf(args.model, "cpu")
    out = _stem(args, "tune")
    res = ar.tune(
        base,
        tok,
        organism_tune_suite(ops, chat=not args.no_chat),
        heads or [],
        methods=methods,
        cfg=cfg,
        lora_r=args.lora_r,
        out=out,
        name=args.model,
    )
    print(ar.tune_table(res))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0
