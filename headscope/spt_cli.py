"""CLI for Supervised Pinpoint Tuning: ``headscope spt identify|knockout|attention|tune|evaluate|table``."""

from __future__ import annotations

import json
from pathlib import Path

from headscope.common.errors import HeadscopeError


def _parse_heads(s: str | None) -> list[tuple[int, int]] | None:
    """``"2.7,4.0"`` or ``"L2H7,L4H0"`` → [(2, 7), (4, 0)]."""
    if s is None:
        return None
    out = []
    for part in s.split(","):
        p = part.strip().upper().replace("L", "").replace("H", ".")
        try:
            L, h = p.split(".")
            out.append((int(L), int(h)))
        except ValueError as e:
            raise HeadscopeError(f"bad head {part!r}; write LAYER.HEAD or LxHy, comma-separated, e.g. 2.7,4.0") from e
    if not out:
        raise HeadscopeError("--heads is empty; give e.g. 2.7,4.0")
    return out


def _common(p, heads: bool = True) -> None:
    p.add_argument("--model", default="llama", help="bundled organism, local HF folder or hub id [llama]")
    p.add_argument(
        "--backend", default="nnsight", choices=("tl", "nnsight"), help="backend for the analyses [nnsight]"
    )
    p.add_argument("-n", "--n-prompts", type=int, default=32, help="dialogues per question family [32]")
    p.add_argument("--out", default="out/spt", help="output folder [out/spt]")
    if heads:
        p.add_argument(
            "--heads", default=None, metavar="L.H,...", help="the heads to use (default: run identify first)"
        )
    p.add_argument("--seed", type=int, default=0)


def _train_args(p) -> None:
    p.add_argument("--steps", type=int, default=150, help="optimisation steps [150]")
    p.add_argument("--batch-size", type=int, default=16, help="dialogues per step [16]")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate [3e-3]")
    p.add_argument("--n-examples", type=int, default=2000, help="tuning dialogues (half defend, half retract) [2000]")


def register(sub) -> None:
    s = sub.add_parser(
        "spt",
        help="Supervised Pinpoint Tuning: find the sycophancy heads and tune only them",
        description="SPT (Chen et al., ICML 2024) on a Llama-family model: identify the heads behind caving to "
        "'Are you sure?' by path patching, knock them out, look at their attention, fine-tune only "
        "their q/k/v/o slices (GQA: q/o), and compare with random heads, full SFT and LoRA.",
    )
    ssub = s.add_subparsers(dest="spt_cmd", metavar="ACTION")

    p = ssub.add_parser(
        "identify",
        help="path patching per head with F = p(I)/(p(I)+p(Yes)) and the relative score",
        description="Path patching from every head to the logits (counterfactual 'I do think that's right' into the "
        "challenge dialogue); score (F_patched − F_orig)/F_orig; selects heads below --threshold, "
        "at most --max-share of all heads (or the --k most negative). Writes scores (JSON) and a heatmap (HTML).",
    )
    _common(p, heads=False)
    p.add_argument("--threshold", type=float, default=-0.02, help="select heads with score <= this [-0.02]")
    p.add_argument("--max-share", type=float, default=0.10, help="at most this share of all heads [0.10]")
    p.add_argument("--k", type=int, default=None, help="select exactly the k most negative heads instead")
    p.set_defaults(func=cmd_identify)

    k = ssub.add_parser(
        "knockout",
        help="mean-ablate the heads vs as many random heads (several seeds)",
        description="Caving (greedy first token 'I') on challenge dialogues and after the counterfactual, with the "
        "heads mean-ablated vs random heads; --protocol adds the full generate-and-challenge protocol.",
    )
    _common(k)
    k.add_argument("--seeds", type=int, default=3, help="random head draws [3]")
    k.add_argument("--protocol", action="store_true", help="also measure the full greedy protocol (slower)")
    k.set_defaults(func=cmd_knockout)

    a = ssub.add_parser(
        "attention",
        help="attention from the final position onto the challenge sentence",
        description="Share of each head's attention from the final position onto the challenge sentence; the "
        "heads' mean vs the average head. Writes a heatmap (HTML).",
    )
    _common(a)
    a.set_defaults(func=cmd_attention)

    t = ssub.add_parser(
        "tune",
        help="fine-tune with SPT or a baseline and save the result",
        description="Fine-tune on two-turn dialogues (defend a correct first answer, retract a wrong one). "
        "spt/random_heads save only the changed slices (safetensors); the others save a full HF folder.",
    )
    _common(t)
    t.add_argument("--method", default="spt", choices=("spt", "random_heads", "full_sft", "lora", "lora_layers"))
    _train_args(t)
    t.add_argument("--evaluate", action="store_true", help="also evaluate the tuned model (about a minute)")
    t.set_defaults(func=cmd_tune)

    e = ssub.add_parser(
        "evaluate",
        help="confidence, truthfulness, general ability and KL of a model or a slice file",
        description="Evaluate --model (optionally with --slices FILE from 'spt tune' written into it) against the "
        "base --model: sycophancy (in distribution, held-out questions, paraphrases), retraction, "
        "arithmetic/facts accuracy, chat behaviours, next-token KL.",
    )
    e.add_argument("--model", default="llama")
    e.add_argument("--slices", default=None, metavar="FILE", help="slice file written by 'headscope spt tune'")
    e.add_argument("--tuned", default=None, metavar="DIR", help="a full tuned HF folder (instead of --slices)")
    e.add_argument("--json", default=None, help="also write the row to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    b = ssub.add_parser(
        "table",
        help="identify, then tune every method on the same data and budget; results table",
        description="The paper's comparison: SPT, random heads, full SFT, LoRA r16, LoRA on the selected heads' "
        "layers; writes OUT/spt_table.json and OUT/spt_table.md. About 15 minutes on one CPU thread.",
    )
    _common(b)
    _train_args(b)
    b.set_defaults(func=cmd_table)
    s.set_defaults(func=lambda args: (s.print_help(), 2)[1])


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def _heads_or_identify(args, model) -> list[tuple[int, int]]:
    heads = _parse_heads(getattr(args, "heads", None))
    if heads is not None:
        for L, h in heads:
            if not (0 <= L < model.n_layers and 0 <= h < model.n_heads):
                raise HeadscopeError(
                    f"head L{L}H{h} is not in this model (layers 0..{model.n_layers - 1}, heads 0..{model.n_heads - 1})"
                )
        return heads
    from headscope.spt import identify

    res = identify(model, n=args.n_prompts, seed=args.seed)
    print(f"selected by identify: {', '.join(f'L{L}H{h}' for L, h in res.selected)} ({100 * res.share:.1f}% of heads)")
    return res.selected


def _check_n(args) -> None:
    if args.n_prompts < 1:
        raise HeadscopeError(f"-n must be >= 1, got {args.n_prompts}")


def cmd_identify(args) -> int:
    from headscope.loading import load_model
    from headscope.spt import identify

    _threads()
    _check_n(args)
    model = load_model(args.model, args.backend)
    res = identify(
        model, n=args.n_prompts, threshold=args.threshold, max_share=args.max_share, k=args.k, seed=args.seed
    )
    print(res.scores.table(10, by="neg"))
    print(f"F on challenge dialogues {res.f_orig:.3f}, on the counterfactual {res.f_counter:.4f}")
    print(
        f"selected: {', '.join(f'L{L}H{h}' for L, h in res.selected)} — {len(res.selected)} of {model.n_layers * model.n_heads} heads ({100 * res.share:.1f}%)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "identify.json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
    res.scores.save_figure(out / "identify.html")
    print(f"wrote {out / 'identify.json'} and {out / 'identify.html'}")
    return 0


def cmd_knockout(args) -> int:
    from headscope.loading import load_model
    from headscope.spt import knockout

    _threads()
    _check_n(args)
    if args.seeds < 1:
        raise HeadscopeError(f"--seeds must be >= 1, got {args.seeds}")
    model = load_model(args.model, args.backend)
    heads = _heads_or_identify(args, model)
    ko = knockout(
        model, heads, seeds=tuple(range(args.seed, args.seed + args.seeds)), n=args.n_prompts, protocol=args.protocol
    )
    keys = list(ko["base"])
    print(f"{'ablated':<40} " + " ".join(f"{k:>16}" for k in keys))
    print(f"{'none':<40} " + " ".join(f"{ko['base'][k]:>16.3f}" for k in keys))
    print(
        f"{'selected ' + ','.join(f'L{a}H{b}' for a, b in heads):<40} "
        + " ".join(f"{ko['selected'][k]:>16.3f}" for k in keys)
    )
    for r in ko["random"]:
        print(
            f"{'random ' + ','.join(f'L{a}H{b}' for a, b in r['heads']):<40} "
            + " ".join(f"{r[k]:>16.3f}" for k in keys)
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "knockout.json").write_text(json.dumps(ko, indent=1) + "\n")
    return 0


def cmd_attention(args) -> int:
    from headscope.loading import load_model
    from headscope.spt import challenge_attention

    _threads()
    _check_n(args)
    model = load_model(args.model, args.backend)
    heads = _heads_or_identify(args, model)
    att = challenge_attention(model, heads, n=args.n_prompts)
    for name, v in att["per_head"].items():
        print(f"{name:<8} {v:.3f}")
    print(
        f"selected mean {att['selected_mean']:.3f}; average head {att['average_head']:.3f}; other heads {att['other_mean']:.3f}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    att["scores"].save_figure(out / "attention.html")
    return 0


def _cfg(args):
    from headscope.tuning import TuneConfig

    if args.n_examples < 1:
        raise HeadscopeError(f"--n-examples must be >= 1, got {args.n_examples}")
    return TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)


def cmd_tune(args) -> int:
    from headscope.loading import load_hf, wrap
    from headscope.spt import evaluate, tune, tuning_data
    from headscope.tuning import head_slices, save_slices

    _threads()
    _check_n(args)
    cfg = _cfg(args)
    hf, tok, _ = load_hf(args.model, device="cpu")
    heads: list = []
    if args.method in ("spt", "random_heads", "lora_layers"):
        heads = _heads_or_identify(args, wrap(hf, tok, args.backend, copy_model=True))
    model, log = tune(hf, tok, args.method, heads, tuning_data(args.n_examples, seed=args.seed), cfg, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.method in ("spt", "random_heads"):
        used = [tuple(h) for h in log.info.get("random_heads", heads)] if args.method == "random_heads" else heads
        path = save_slices(
            model,
            head_slices(model, used),
            out / f"{args.method}.safetensors",
            {"method": args.method, "heads": [list(h) for h in used], "base": args.model},
        )
    else:
        path = out / args.method
        model.save_pretrained(path, safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(path)
    (out / f"{args.method}.log.json").write_text(json.dumps(log.to_dict(), indent=1) + "\n")
    print(
        f"{args.method}: {log.n_trainable:,} of {log.n_total:,} parameters trained ({100 * log.n_trainable / log.n_total:.2f}%), "
        f"{log.time_per_step:.3f} s/step, final loss {sum(log.losses[-10:]) / len(log.losses[-10:]):.4f}; saved {path}"
    )
    if args.evaluate:
        row = evaluate(model, tok, hf, backend=args.backend)
        print(json.dumps({k: round(v, 4) for k, v in row.items()}, indent=1))
    return 0


def cmd_evaluate(args) -> int:
    import copy

    from headscope.loading import load_hf
    from headscope.spt import evaluate
    from headscope.tuning import load_slices

    _threads()
    base, tok, _ = load_hf(args.model, device="cpu")
    if args.slices and args.tuned:
        raise HeadscopeError("give either --slices or --tuned, not both")
    if args.slices:
        model = copy.deepcopy(base)
        load_slices(model, args.slices)
    elif args.tuned:
        model, _, _ = load_hf(args.tuned, device="cpu")
    else:
        model = base
    row = evaluate(model, tok, base)
    for k, v in row.items():
        print(f"{k:<24} {v:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


def cmd_table(args) -> int:
    from headscope.loading import load_hf, wrap
    from headscope.spt import run_table, write_results

    _threads()
    _check_n(args)
    cfg = _cfg(args)
    hf, tok, _ = load_hf(args.model, device="cpu")
    heads = _heads_or_identify(args, wrap(hf, tok, args.backend, copy_model=True))
    rows = run_table(
        hf, tok, heads, cfg, n_examples=args.n_examples, seed=args.seed, save_dir=args.out, backend=args.backend
    )
    js, md = write_results(
        rows, {"heads": [list(h) for h in heads], "config": vars(args) | {"func": None}}, Path(args.out) / "spt_table"
    )
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0
