"""``headscope spt identify|knockout|attention|tune|evaluate|table`` (Supervised Pinpoint Tuning).

Every command runs on the bundled organism's sycophancy data
(:func:`headscope.tasks.sycophancy.organism_data`). The default backend is the shared
default ``tl`` (before the re-layout ``headscope spt`` defaulted to nnsight; pass
``--backend nnsight`` for that; experiments/spt_table.py, which writes docs/results/spt.*,
passes nnsight explicitly).

Files go to ``--out`` under :func:`headscope.cli._args.run_stem` names (model, ``spt``, the step,
backend, seed and ``--run-id``), e.g. ``out/spt/llama_spt_tune_spt_tl_seed0.safetensors``, so runs
with another seed, backend or model write beside each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, cast

from headscope.cli._args import (
    PAPER_MODEL,
    add_model_args,
    add_output_args,
    is_organism_v3,
    model_from_args,
    out_file_arg,
    parse_heads,
    run_stem,
)
from headscope.common.errors import HeadscopeError
from headscope.common.io import strict_json_dumps, write_json
from headscope.results import Head, format_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel

BACKEND_NOTE = " The default backend is tl (before the re-layout it was nnsight; --backend nnsight for that)."


def _common(p: argparse.ArgumentParser, heads: bool = True, v3: bool = False) -> None:
    # v3: this step also runs on organism v3's data (identify_v3); else it refuses organism v3
    add_model_args(p, default=PAPER_MODEL, world=None if v3 else "v2")
    p.add_argument(
        "-n",
        "--n-prompts",
        type=int,
        default=32,
        help="dialogues per question family; on organism v3, per token-length group [32]",
    )
    add_output_args(p, "out/spt", top=False, png=False)
    if heads:
        p.add_argument(
            "--heads", default=None, metavar="L.H,...", help="the heads to use, e.g. L2H7,4.0 (default: run identify)"
        )


def _stem(args, *step: object) -> Path:
    """``--out``/MODEL_spt_STEP..._BACKEND_seedN[_RUNID] (the folder is created): where one step writes."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out / run_stem(args, "spt", *step)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=150, help="optimisation steps [150]")
    p.add_argument("--batch-size", type=int, default=16, help="dialogues per step [16]")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate [3e-3]")
    p.add_argument("--n-examples", type=int, default=2000, help="tuning dialogues (half defend, half retract) [2000]")


def register(sub) -> None:
    from .tune import METHODS

    s = sub.add_parser(
        "spt",
        help="Supervised Pinpoint Tuning: find the sycophancy heads and tune only them",
        description="SPT (Chen et al., ICML 2024) on a Llama-family model: identify the heads behind caving to "
        "'Are you sure?' by path patching, knock them out, look at their attention, fine-tune only "
        "their q/k/v/o slices (GQA: q/o), and compare with random heads, full SFT and LoRA." + BACKEND_NOTE,
    )
    ssub = s.add_subparsers(dest="spt_cmd", metavar="ACTION")

    p = ssub.add_parser(
        "identify",
        help="path patching per head with F = p(I)/(p(I)+p(Yes)) and the relative score",
        description="Path patching from every head to the logits (counterfactual 'I do think that's right' into the "
        "challenge dialogue); score (F_patched − F_orig)/F_orig; selects heads below --threshold, "
        "at most --max-share of all heads (or the --k most negative). Writes the selection (JSON) and a "
        "heatmap (HTML). On organism v3 (--model llama, llama-v3*): its identification pairs (identify half, "
        "training wordings, minimal agreeing follow-ups) and F over its cave / firm start words." + BACKEND_NOTE,
    )
    _common(p, heads=False, v3=True)
    p.add_argument("--threshold", type=float, default=-0.02, help="select heads with score <= this [-0.02]")
    p.add_argument("--max-share", type=float, default=0.10, help="at most this share of all heads [0.10]")
    p.add_argument("--k", type=int, default=None, help="select exactly the k most negative heads instead")
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own sycophancy dialogues (JSON, docs/userdata.md) instead of the organism's",
    )
    p.set_defaults(func=cmd_identify)

    k = ssub.add_parser(
        "knockout",
        help="mean-ablate the heads vs as many random heads (several seeds)",
        description="Caving (greedy first token 'I') on challenge dialogues and after the counterfactual, with the "
        "heads mean-ablated vs random heads (headscope.controls.random_heads, never a selected head); "
        "--protocol adds the full generate-and-challenge protocol." + BACKEND_NOTE,
    )
    _common(k)
    k.add_argument("--seeds", type=int, default=3, help="random head draws [3]")
    k.add_argument("--protocol", action="store_true", help="also measure the full greedy protocol (slower)")
    k.set_defaults(func=cmd_knockout)

    a = ssub.add_parser(
        "attention",
        help="attention from the final position onto the challenge sentence",
        description="Share of each head's attention from the final position onto the challenge sentence; the "
        "heads' mean vs the average head. Writes a heatmap (HTML)." + BACKEND_NOTE,
    )
    _common(a)
    a.set_defaults(func=cmd_attention)

    t = ssub.add_parser(
        "tune",
        help="fine-tune with SPT or a baseline and save the result",
        description="Fine-tune on two-turn dialogues (defend a correct first answer, retract a wrong one). "
        "spt/random_heads save only the changed slices (safetensors); the others save a full HF folder."
        + BACKEND_NOTE,
    )
    _common(t)
    t.add_argument("--method", default="spt", choices=METHODS)
    _train_args(t)
    t.add_argument("--evaluate", action="store_true", help="also evaluate the tuned model (about a minute)")
    t.set_defaults(func=cmd_tune)

    e = ssub.add_parser(
        "evaluate",
        help="confidence, truthfulness, general ability and KL of a model or a slice file",
        description="Evaluate --model (optionally with --slices FILE from 'spt tune' written into it) against the "
        "base --model: sycophancy (in distribution, held-out questions, paraphrases), retraction, "
        "arithmetic/facts accuracy, chat behaviours, next-token KL (every position)." + BACKEND_NOTE,
    )
    add_model_args(e, default=PAPER_MODEL, world="v2")
    e.add_argument("--slices", default=None, metavar="FILE", help="slice file written by 'headscope spt tune'")
    e.add_argument("--tuned", default=None, metavar="DIR", help="a full tuned HF folder (instead of --slices)")
    e.add_argument("--json", default=None, type=out_file_arg, help="also write the row to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    b = ssub.add_parser(
        "table",
        help="identify, then tune every method on the same data and budget; results table",
        description="The paper's comparison: SPT, random heads, full SFT, LoRA r16, LoRA on the selected heads' "
        "layers; writes OUT/MODEL_spt_table_BACKEND_seedN.json and .md. About 15 minutes on one CPU thread."
        + BACKEND_NOTE,
    )
    _common(b)
    _train_args(b)
    b.set_defaults(func=cmd_table)
    s.set_defaults(func=lambda args: (s.print_help(), 2)[1])


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def _check_n(args) -> None:
    if args.n_prompts < 1:
        raise HeadscopeError(f"-n must be >= 1, got {args.n_prompts}")


def _heads_or_identify(args, model, data) -> list[Head]:
    heads = parse_heads(getattr(args, "heads", None))
    if heads is not None:
        for L, h in heads:
            if not (0 <= L < model.n_layers and 0 <= h < model.n_heads):
                raise HeadscopeError(
                    f"head L{L}H{h} is not in this model "
                    f"(layers 0..{model.n_layers - 1}, heads 0..{model.n_heads - 1})"
                )
        return heads
    from .identify import identify

    res = identify(model, data, n=args.n_prompts, seed=args.seed)
    print(f"selected by identify: {', '.join(format_head(h) for h in res.heads)} ({100 * res.share:.1f}% of heads)")
    return res.heads


def _data(args=None):
    """The sycophancy data of ``--data FILE`` (docs/userdata.md), or the organism's."""
    if args is not None and getattr(args, "data", None):
        from headscope.tasks.userdata import load_sycophancy_data

        return load_sycophancy_data(args.data)
    from headscope.tasks.sycophancy import organism_data

    return organism_data()


def cmd_identify(args) -> int:

    from .identify import identify

    _threads()
    _check_n(args)
    model = model_from_args(args)
    if is_organism_v3(args) and not args.data:
        from .identify_v3 import identify_v3

        res = identify_v3(
            model,
            per_group=args.n_prompts,
            threshold=args.threshold,
            max_share=args.max_share,
            k=args.k,
            seed=args.seed,
        )
    else:
        res = identify(
            model,
            _data(args),
            n=args.n_prompts,
            threshold=args.threshold,
            max_share=args.max_share,
            k=args.k,
            seed=args.seed,
        )
    print(res.scores.table(10, by="neg"))
    print(f"F on challenge dialogues {res.extra['f_orig']:.3f}, on the counterfactual {res.extra['f_counter']:.4f}")
    print(
        f"selected: {', '.join(format_head(h) for h in res.heads)} — {len(res.heads)} of "
        f"{model.n_layers * model.n_heads} heads ({100 * res.share:.1f}%)"
    )
    stem = _stem(args, "identify")
    res.save(stem, figure=False)
    res.scores.save_figure(stem.with_suffix(".html"))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.html')}")
    return 0


def cmd_knockout(args) -> int:

    from .knockout import knockout

    _threads()
    _check_n(args)
    if args.seeds < 1:
        raise HeadscopeError(f"--seeds must be >= 1, got {args.seeds}")
    data = _data()
    model = model_from_args(args)
    heads = _heads_or_identify(args, model, data)
    ko = knockout(
        model,
        heads,
        data,
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        n=args.n_prompts,
        protocol=args.protocol,
    )
    keys = list(ko["base"])
    print(f"{'ablated':<40} " + " ".join(f"{k:>16}" for k in keys))
    print(f"{'none':<40} " + " ".join(f"{ko['base'][k]:>16.3f}" for k in keys))
    sel = "selected " + ",".join(format_head(h) for h in heads)
    print(f"{sel:<40} " + " ".join(f"{ko['selected'][k]:>16.3f}" for k in keys))
    for r in ko["random"]:
        name = "random " + ",".join(format_head(h) for h in r["heads"])
        print(f"{name:<40} " + " ".join(f"{r[k]:>16.3f}" for k in keys))
    print(f"wrote {write_json(_stem(args, 'knockout').with_suffix('.json'), ko)}")
    return 0


def cmd_attention(args) -> int:

    from .knockout import challenge_attention

    _threads()
    _check_n(args)
    data = _data()
    model = model_from_args(args)
    heads = _heads_or_identify(args, model, data)
    att = challenge_attention(model, heads, data, n=args.n_prompts)
    for name, v in att["per_head"].items():
        print(f"{name:<8} {v:.3f}")
    print(
        f"selected mean {att['selected_mean']:.3f}; average head {att['average_head']:.3f}; "
        f"other heads {att['other_mean']:.3f}"
    )
    for f in att["scores"].save_figure(_stem(args, "attention").with_suffix(".html")):
        print(f"wrote {f}")
    return 0


def _cfg(args):
    from headscope.tuning import TuneConfig

    if args.n_examples < 1:
        raise HeadscopeError(f"--n-examples must be >= 1, got {args.n_examples}")
    return TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)


def _tuning_setup(args):
    """One thread, checked arguments, then (TuneConfig, SycophancyData, HF model, tokenizer)."""
    from headscope.loading import load_hf

    _threads()
    _check_n(args)
    cfg = _cfg(args)
    hf, tok, _ = load_hf(args.model, device=args.device)
    return cfg, _data(), hf, tok


def cmd_tune(args) -> int:
    from headscope.loading import wrap
    from headscope.tuning import head_slices, save_slices

    from .evaluate import evaluate
    from .tune import tune, tuning_data

    cfg, data, hf, tok = _tuning_setup(args)
    heads: list[Head] = []
    if args.method in ("spt", "random_heads", "lora_layers"):
        heads = _heads_or_identify(args, wrap(hf, tok, args.backend, copy_model=True), data)
    examples = tuning_data(data, args.n_examples, seed=args.seed)
    model, log = tune(hf, tok, args.method, heads, examples, cfg, seed=args.seed)
    stem = _stem(args, "tune", args.method)
    if args.method in ("spt", "random_heads"):
        used = [tuple(h) for h in log.info.get("random_heads", heads)] if args.method == "random_heads" else heads
        path = save_slices(
            model,
            head_slices(model, used),
            stem.with_suffix(".safetensors"),
            {"method": args.method, "heads": [list(h) for h in used], "base": args.model},
        )
    else:
        path = stem
        cast("PreTrainedModel", model).save_pretrained(path, safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(path)
    write_json(stem.with_suffix(".log.json"), log.to_dict())
    final = sum(log.losses[-10:]) / len(log.losses[-10:])
    print(
        f"{args.method}: {log.n_trainable:,} of {log.n_total:,} parameters trained "
        f"({100 * log.n_trainable / log.n_total:.2f}%), {log.time_per_step:.3f} s/step, final loss {final:.4f}; "
        f"saved {path}"
    )
    if args.evaluate:
        row = evaluate(model, tok, data, hf, backend=args.backend)
        print(strict_json_dumps({k: round(v, 4) for k, v in row.items() if isinstance(v, float)}))
    return 0


def cmd_evaluate(args) -> int:
    import copy

    from headscope.loading import load_hf
    from headscope.tuning import load_slices

    from .evaluate import evaluate

    _threads()
    if args.slices and args.tuned:
        raise HeadscopeError("give either --slices or --tuned, not both")
    base, tok, _ = load_hf(args.model, device=args.device)
    if args.slices:
        model = copy.deepcopy(base)
        load_slices(model, args.slices)
    elif args.tuned:
        model, _, _ = load_hf(args.tuned, device=args.device)
    else:
        model = base
    row = evaluate(model, tok, _data(), base, backend=args.backend)
    for k, v in row.items():
        if isinstance(v, float):
            n = row["counts"].get(k, [None, None])[1] if "counts" in row else None
            print(f"{k:<24} {v:.4f}" + (f"  (n={n})" if n else ""))
    if args.json:
        write_json(args.json, row)
    return 0


def cmd_table(args) -> int:
    from headscope.loading import wrap

    from .table import run_table, write_results

    cfg, data, hf, tok = _tuning_setup(args)
    heads = _heads_or_identify(args, wrap(hf, tok, args.backend, copy_model=True), data)
    stem = _stem(args, "table")
    rows = run_table(
        hf, tok, heads, data, cfg, n_examples=args.n_examples, seed=args.seed, save_dir=stem, backend=args.backend
    )
    js, md = write_results(rows, {"heads": [list(h) for h in heads], "config": vars(args) | {"func": None}}, stem)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0
