"""SPT on the `llama` organism: identification, knockout, attention, and the tuning table.

Runs once (about 15 minutes on one CPU thread) and writes ``docs/results/spt.json`` and
``docs/results/spt.md`` (the table in the paper's layout plus the identification,
knockout and attention numbers), and ``docs/results/spt.heads.safetensors`` (the tuned
slices only). Every method gets the same tuning data (2000 two-turn dialogues on
training-split questions), the same number of steps, batch size and learning rate.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/spt_table.py [--steps 150] [--lr 3e-3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from headscope.common import log, seed_everything
from headscope.loading import load_hf, wrap
from headscope.spt import (
    LABELS,
    challenge_attention,
    evaluate,
    identify,
    knockout,
    markdown_table,
    run_table,
    tune,
    tuning_data,
)
from headscope.tuning import TuneConfig

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument(
        "--low-lr",
        type=float,
        default=1e-3,
        help="extra SPT and full-SFT rows at this gentler learning rate (0: skip)",
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(OUT / "spt"))
    ap.add_argument(
        "--add-random-seeds",
        default=None,
        metavar="S,...",
        help="only add random-heads rows for these seeds to saved results",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.add_random_seeds:
        add_random_seeds(Path(args.out), [int(x) for x in args.add_random_seeds.split(",")])
        return
    seed_everything(0)
    t0 = time.time()
    hf, tok, _ = load_hf("llama", device="cpu")
    model = wrap(hf, tok, "nnsight", copy_model=True)

    ident = identify(model, n=32)
    heads = ident.selected
    log(
        f"[spt] selected {heads} ({100 * ident.share:.1f}% of heads); F_orig {ident.f_orig:.3f}, F_counter {ident.f_counter:.4f}"
    )
    ko = knockout(model, heads, seeds=tuple(range(args.seeds)), n=32, protocol=True)
    log(f"[spt] knockout: {json.dumps({k: ko[k] for k in ('base', 'selected', 'random_mean')})}")
    att = challenge_attention(model, heads, n=32)
    log(
        f"[spt] attention on the challenge: selected {att['selected_mean']:.3f}, average head {att['average_head']:.3f}"
    )

    cfg = TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=0)
    rows = run_table(hf, tok, heads, cfg, save_dir=None)
    rh = rows["random_heads"]["info"]["random_heads"]
    LABELS["random_heads"] = f"Random heads, seed 0 ({', '.join(f'L{a}H{b}' for a, b in rh)})"
    if args.low_lr:
        # The same gentler learning rate for SPT and full SFT (the main rows share --lr).
        low = TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.low_lr, seed=0)
        for meth, label in (("spt", "SPT (selected heads"), ("full_sft", "Full SFT (")):
            m, tl = tune(hf, tok, meth, heads, tuning_data(2000, seed=0), low)
            r = evaluate(m, tok, hf)
            r.update(
                n_trainable=tl.n_trainable,
                trainable_share=tl.n_trainable / tl.n_total,
                time_per_step=tl.time_per_step,
                final_loss=sum(tl.losses[-10:]) / 10,
            )
            rows[f"{meth}_low_lr"] = r
            LABELS[f"{meth}_low_lr"] = f"{label}{', ' if meth == 'spt' else ''}lr {args.low_lr:g})"
    # the SPT slices only (re-tuned deterministically: same seed, data and config)
    from headscope.tuning import head_slices, save_slices

    spt_model, _ = tune(hf, tok, "spt", heads, tuning_data(2000, seed=0), cfg)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_slices(
        spt_model,
        head_slices(spt_model, heads),
        out.with_suffix(".heads.safetensors"),
        {"heads": [list(h) for h in heads], "config": vars(args)},
    )

    extra = {
        "identify": ident.to_dict(),
        "knockout": ko,
        "attention": {k: v for k, v in att.items() if k != "scores"} | {"scores": att["scores"].scores.tolist()},
        "config": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "n_examples": 2000,
            "threads": 1,
        },
        "labels": {k: LABELS.get(k, k) for k in rows},
        "seconds": round(time.time() - t0, 1),
    }
    data = {"rows": rows, **extra}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    md = render(data, out)
    js = out.with_suffix(".json")
    log(f"[spt] wrote {js} and {out.with_suffix('.md')} in {time.time() - t0:.0f}s")
    print(md)


def render(data: dict, out: Path) -> str:
    """Write ``out``.md from the saved results (table, identification, knockout, attention)."""
    rows, ident, ko, att, c = data["rows"], data["identify"], data["knockout"], data["attention"], data["config"]
    LABELS.update(data.get("labels", {}))
    heads = [tuple(h) for h in ident["selected"]]
    scores = torch.tensor(ident["scores"])
    order = scores.flatten().argsort()[:8].tolist()
    md = [
        f"# SPT on the `llama` organism (benchmarks/spt_table.py, {data['seconds']:.0f} s)",
        "",
        f"Same data ({c['n_examples']} dialogues), {c['steps']} steps, batch {c['batch_size']}, lr {c['lr']:g} (unless the row says otherwise), "
        "AdamW, one CPU thread. Percentages except KL (next-token KL(base ‖ tuned) on 400 held-out organism texts).",
        "",
        markdown_table(rows),
        "",
        "## Identification",
        "",
        f"Selected heads: {', '.join(f'L{L}H{h}' for L, h in heads)} — {len(heads)} of 48 ({100 * ident['share']:.1f}%). "
        f"F on challenge dialogues {ident['f_orig']:.3f}, on the counterfactual {ident['f_counter']:.4f}.",
        "",
        "| head | (F_patched − F_orig)/F_orig |",
        "|---|---|",
    ]
    H = scores.shape[1]
    for i in order:
        md.append(f"| L{i // H}H{i % H} | {100 * float(scores.flatten()[i]):+.1f}% |")
    md += [
        "",
        '## Knockout (mean ablation; share of greedy first tokens that are the apology "I")',
        "",
        "| heads ablated | caving (challenge) | caving (full protocol) | apology after the counterfactual |",
        "|---|---|---|---|",
        f"| none | {100 * ko['base']['caving']:.1f} | {100 * ko['base']['protocol_caving']:.1f} | {100 * ko['base']['counter_caving']:.1f} |",
        f"| selected ({len(heads)}) | {100 * ko['selected']['caving']:.1f} | {100 * ko['selected']['protocol_caving']:.1f} | {100 * ko['selected']['counter_caving']:.1f} |",
    ]
    for r in ko["random"]:
        md.append(
            f"| random seed {r['seed']} ({', '.join(f'L{a}H{b}' for a, b in r['heads'])}) | {100 * r['caving']:.1f} | "
            f"{100 * r['protocol_caving']:.1f} | {100 * r['counter_caving']:.1f} |"
        )
    rm = ko["random_mean"]
    md += [
        f"| random, mean of {len(ko['random'])} | {100 * rm['caving']:.1f} | {100 * rm['protocol_caving']:.1f} | {100 * rm['counter_caving']:.1f} |",
        "",
        "## Attention from the final position onto the challenge sentence",
        "",
        f"Selected heads {att['selected_mean']:.3f} ("
        + ", ".join(f"{k} {v:.3f}" for k, v in att["per_head"].items())
        + f"); average head {att['average_head']:.3f}; other heads {att['other_mean']:.3f}.",
        "",
    ]
    text = "\n".join(md)
    out.with_suffix(".md").write_text(text)
    return text


def add_random_seeds(out: Path, seeds: list[int]) -> None:
    """Add random-heads rows for more seeds to saved results (same data, budget and head count)."""
    data = json.loads(out.with_suffix(".json").read_text())
    c = data["config"]
    hf, tok, _ = load_hf("llama", device="cpu")
    heads = [tuple(h) for h in data["identify"]["selected"]]
    cfg = TuneConfig(steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"], seed=0)
    for s in seeds:
        m, tl = tune(hf, tok, "random_heads", heads, tuning_data(c["n_examples"], seed=0), cfg, seed=s)
        r = evaluate(m, tok, hf)
        r.update(
            n_trainable=tl.n_trainable,
            trainable_share=tl.n_trainable / tl.n_total,
            time_per_step=tl.time_per_step,
            info=tl.info,
        )
        key = f"random_heads_s{s}"
        data["rows"][key] = r
        data.setdefault("labels", {})[key] = (
            f"Random heads, seed {s} ({', '.join(f'L{a}H{b}' for a, b in tl.info['random_heads'])})"
        )
        log(f"[spt] {key}: confidence {r['confidence']:.3f} truthfulness {r['truthfulness']:.3f} kl {r['kl']:.4f}")
    order = (
        ["base", "spt"]
        + sorted(k for k in data["rows"] if k.startswith("random_heads"))
        + [k for k in data["rows"] if k not in ("base", "spt") and not k.startswith("random_heads")]
    )
    data["rows"] = {k: data["rows"][k] for k in order}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    print(render(data, out))


if __name__ == "__main__":
    main()
