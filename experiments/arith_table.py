"""Paper table: arithmetic heads on the `llama` organism, the paper's experiments end to end.

Regenerates the numbers quoted in docs/arithmetic.md (``headscope.papers.arithmetic``):

    python experiments/arith_table.py [--steps 200] [--out docs/results/arith]   # main run (CPU, ~15 min)
    python experiments/arith_table.py --sweep [--out docs/results/arith]         # tuning sweep (needs the main run)

The main run writes ``arith.json`` (everything), ``arith.md`` (the tables),
``arith_identify.json`` + ``arith_identify_heatmap.html`` (the head selection),
``arith_knockout.html`` and ``arith_tune.json`` / ``arith_tune.md``; ``--sweep`` writes
``arith_sweep.json`` / ``arith_sweep.md``. One thread.

1. identify: path patching to logits, relative answer-logit score, −5 % rule (paper §3.2);
2. knockout: top-k vs k random heads, 3 seeds, per operator and style (§3.3);
3. inspect: key-head attention onto operands/operators; MLP logit lens and cosine (§3.4);
4. transfer: heads of one style/operator knocked out on the others (§3.5);
5. tune: precise SFT (top-k heads) vs full SFT vs LoRA on ÷/× training data, same budget (§5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headscope.common.plotting import save_figure  # noqa: E402
from headscope.controls import random_heads  # noqa: E402
from headscope.loading import load_hf, load_model  # noqa: E402
from headscope.papers import arithmetic as ar  # noqa: E402
from headscope.results import HeadSelection, format_head  # noqa: E402
from headscope.tasks import arithmetic as tasks  # noqa: E402
from headscope.tuning import TuneConfig  # noqa: E402
from headscope.viz import knockout_plot  # noqa: E402


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/arith")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--k", type=int, default=4, help="heads tuned by precise SFT [4]")
    ap.add_argument("--per-group", type=int, default=32)
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="only the tuning sensitivity sweep (k, lr; same grid for precise SFT and LoRA)",
    )
    ap.add_argument("--every", type=int, default=1, help="use every n-th correct prompt (smoke runs) [1]")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("HEADSCOPE_HTML_CDN", "1")  # small HTML figures (plotly.js from the CDN)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        return sweep(out, args.steps)
    t0 = time.time()
    model = load_model("llama", "tl")
    rows = tasks.arith_prompts()
    base_acc = ar.accuracy_table(model, rows)
    correct = ar.filter_correct(model, rows)[:: args.every]
    res: dict = {"n_prompts": len(rows), "n_correct": len(correct), "base_accuracy": base_acc}

    idn = ar.identify(model, correct, max_per_group=args.per_group)
    idn.save(out.with_name(out.name + "_identify"))
    res["identify"] = {
        "share": idn.share,
        "key_heads": [format_head(h) for h in idn.heads],
        "top10": [(f"L{L}H{h}", v) for L, h, v in idn.scores.top(10, by="neg")],
        "mlps": idn.extra["mlps"],
        "groups": idn.extra["groups"],
        "seconds": time.time() - t0,
    }
    print(
        f"identify: {len(idn.heads)} of {idn.scores.scores.numel()} heads below -5% ({_pct(idn.share)}%): "
        f"{res['identify']['key_heads']}",
        flush=True,
    )

    ranking = idn.top(8)
    ko = ar.knockout(model, correct, ranking, ks=(0, 1, 2, 4, 8), seeds=(0, 1, 2))
    res["knockout"] = ko
    save_figure(
        knockout_plot(ko, "llama: mean-ablating the top-k arithmetic heads vs k random heads", "accuracy"),
        out.with_name(out.name + "_knockout"),
    )
    print("knockout top:", ko["top"], "random:", ko["random_mean"], flush=True)

    res["inspect"] = ar.inspect(model, correct, ranking[:4])
    res["transfer_style"] = ar.transfer(
        model, correct, by="style", k=len(idn.heads) or 2, max_per_group=16, show_progress=False
    )
    res["transfer_op"] = ar.transfer(
        model, correct, by="op", k=len(idn.heads) or 2, max_per_group=16, show_progress=False
    )
    print("inspect/transfer done", flush=True)

    if not args.skip_tune:
        cfg = TuneConfig(steps=args.steps, batch_size=32, lr=1e-3, warmup=10, log_every=50)
        base, tok, _ = load_hf("llama", "cpu")
        res["tune"] = ar.tune(
            base,
            tok,
            tasks.organism_tune_suite(("div", "mul")),
            heads=idn.top(args.k),
            cfg=cfg,
            lora_r=4,
            out=out.with_name(out.name + "_tune"),
            name="llama",
        )
    res["seconds"] = time.time() - t0
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(res) + "\n")
    print(markdown(res))
    return 0


def sweep(out: Path, steps: int) -> int:
    """Precise SFT (k = 2, 4, 8 key heads; 4 random heads as a control) and LoRA (r = 4, 8) at lr 1e-3 and 3e-3.

    Chat rates skipped.

    Heads: the ranking of ``arith_identify.json`` (written by the main run). The random
    control is ``controls.random_heads(..., 4, seed=0, exclude=top-4)``: never a head that
    precise SFT k=4 tunes."""
    ranking = HeadSelection.load(out.with_name(out.name + "_identify")).top(8)
    base, tok, _ = load_hf("llama", "cpu")
    suite = tasks.organism_tune_suite(("div", "mul"), chat=False)
    rows = []
    for lr in (1e-3, 3e-3):
        cfg = TuneConfig(steps=steps, batch_size=32, lr=lr, warmup=10, log_every=100)
        rnd = random_heads(
            base.config.num_hidden_layers, base.config.num_attention_heads, 4, seed=0, exclude=ranking[:4]
        )
        runs = [("heads", f"precise SFT k={k}", dict(heads=ranking[:k])) for k in (2, 4, 8)]
        runs += [
            ("heads", "precise SFT, 4 random heads (" + " ".join(f"L{L}H{h}" for L, h in rnd) + ")", dict(heads=rnd))
        ]
        runs += [("lora", f"LoRA r={r}", dict(lora_r=r)) for r in (4, 8)]
        for method, label, kw in runs:
            tuned, log = ar.tune_one(base, tok, method, suite.examples, cfg, **kw)
            ev = ar.evaluate_tuned(tuned, tok, suite, base)
            rows.append({"label": label, "lr": lr, "log": log, "eval": ev})
            print(label, lr, {k: round(v, 3) for k, v in ev.items()}, flush=True)
    out.with_name(out.name + "_sweep.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    keys = [
        "arith_div_heldout",
        "arith_mul_heldout",
        "unseen_div",
        "arith_add_heldout",
        "arith_sub_heldout",
        "facts_qa_heldout",
        "kl_vs_base",
    ]
    lines = [
        f"Tuning sensitivity ({steps} steps x batch 32 on ÷/× training prompts; same grid for both methods)",
        "",
        "| run | lr | trainable | " + " | ".join(keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['lr']:g} | {r['log']['n_trainable']:,} | "
            + " | ".join(f"{r['eval'][k]:.3f}" for k in keys)
            + " |"
        )
    out.with_name(out.name + "_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def markdown(res: dict) -> str:
    idn, ko, ins = res["identify"], res["knockout"], res["inspect"]
    lines = [
        "## Identification (path patching to logits, relative answer-logit change)",
        "",
        f"{res['n_correct']} of {res['n_prompts']} prompts answered correctly "
        f"(accuracy {_pct(res['base_accuracy']['all'])}%; ÷ {_pct(res['base_accuracy']['op:div'])}%).",
        "",
        f"Heads below −5 %: **{len(idn['key_heads'])} of 48 ({_pct(idn['share'])} %)** — "
        f"{', '.join(idn['key_heads'])}.",
        "",
        "| rank | head | relative score |",
        "|---:|---|---:|",
    ]
    lines += [f"| {i} | {h} | {v:+.4f} |" for i, (h, v) in enumerate(idn["top10"], 1)]
    lines += [
        "",
        "MLP path scores per layer: " + ", ".join(f"L{i} {v:+.3f}" for i, v in enumerate(idn["mlps"])),
        "",
        "## Knockout (mean ablation; accuracy on correctly answered prompts; random: 3 seeds)",
        "",
        "| k | top-k heads | k random heads (mean ± std) | gap (points) |",
        "|---:|---:|---:|---:|",
    ]
    for k, t, m, s in zip(ko["k"], ko["top"], ko["random_mean"], ko["random_std"]):
        lines.append(f"| {k} | {_pct(t)} | {_pct(m)} ± {_pct(s)} | {_pct(m - t)} |")
    keys = [k for k in ko["top_by"][0] if k != "all"]
    lines += [
        "",
        "Per operator / style at each k (top-k heads | random):",
        "",
        "| k | " + " | ".join(keys) + " |",
        "|---:|" + "---:|" * len(keys),
    ]
    for i, k in enumerate(ko["k"]):
        lines.append(
            f"| {k} | "
            + " | ".join(f"{_pct(ko['top_by'][i][c])} \\| {_pct(ko['random_by'][i][c])}" for c in keys)
            + " |"
        )
    lines += [
        "",
        "## Inspection",
        "",
        f"Attention from the last position onto operand + operator tokens: key heads (top 4) "
        f"**{ins['key_mean_attention']:.3f}** vs the average head **{ins['average_head_attention']:.3f}**.",
        "",
        "| head | onto operands | onto operator |",
        "|---|---:|---:|",
    ]
    lines += [f"| {h} | {d['operands']:.3f} | {d['operators']:.3f} |" for h, d in ins["key"].items()]
    lens = ins["mlp_logit_lens"]
    lines += [
        "",
        "| layer | MLP logit lens: rank of C | p(C) | cos(mlp, W_U[A]) | cos(·, W_U[B]) | cos(·, W_U[C]) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for L in range(len(lens["rank_of_C"])):
        c = ins["mlp_cosine"]
        lines.append(
            f"| {L} | {lens['rank_of_C'][L]:.1f} | {lens['prob_of_C'][L]:.3f} | "
            f"{c['A'][L]:.3f} | {c['B'][L]:.3f} | {c['C'][L]:.3f} |"
        )
    for name in ("transfer_style", "transfer_op"):
        tr = res[name]
        src = tr["sources"]
        lines += [
            "",
            f"## Transfer by {tr['by']} (accuracy with the source's top-{tr['k']} heads ablated; baseline first row)",
            "",
            "| source \\ target | " + " | ".join(src) + " | heads |",
            "|---|" + "---:|" * (len(src) + 1),
            "| (none) | " + " | ".join(_pct(tr["baseline"][t]) for t in src) + " | |",
        ]
        for s in src:
            heads = ", ".join(f"L{L}H{h}" for L, h in tr["heads"][s])
            lines.append(f"| {s} | " + " | ".join(_pct(tr["accuracy"][s][t]) for t in src) + f" | {heads} |")
    if "tune" in res:
        tn = res["tune"]
        lines += [
            "",
            f"## Tuning on ÷ and × training prompts ({tn['n_examples']} examples; "
            f"{tn['config']['steps']} steps × batch {tn['config']['batch_size']}, AdamW lr {tn['config']['lr']}; "
            f"precise SFT heads {', '.join(f'L{L}H{h}' for L, h in tn['heads'])}; LoRA r={tn['lora_r']})",
            "",
            ar.tune_table(tn),
        ]
    lines += ["", f"Total run time {res.get('seconds', 0):.0f} s (CPU, 1 thread)."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
