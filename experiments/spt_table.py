"""Paper table: SPT on the `llama` organism — identification, knockout, attention, and the tuning table.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/spt_table.py [--steps 150] [--lr 3e-3] [--out docs/results/spt]

Runs once (about 15 minutes on one CPU thread) and writes ``docs/results/spt.json`` and
``docs/results/spt.md`` (the table in the paper's layout plus the identification,
knockout and attention numbers), and ``docs/results/spt.heads.safetensors`` (the tuned
slices only); docs/spt.md quotes them. Every method gets the same tuning data (2000
two-turn dialogues on training-split questions), the same number of steps, batch size and
learning rate. The organism's strings, generators and measures come from
:func:`headscope.tasks.sycophancy.organism_data`. The analyses run on the nnsight backend
(``--backend``), as the committed results were measured; ``headscope spt`` defaults to tl.
KL is :func:`headscope.controls.next_token_kl` with ``positions="all"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python experiments/...` from anywhere

import torch

from headscope.common import log, seed_everything
from headscope.loading import load_hf, wrap
from headscope.papers import spt
from headscope.results import format_head
from headscope.tuning import TuneConfig, head_slices, save_slices

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
    ap.add_argument("--backend", default="nnsight", choices=("tl", "nnsight"), help="analysis backend [nnsight]")
    ap.add_argument("--out", default=str(OUT / "spt"))
    ap.add_argument(
        "--add-random-seeds",
        default=None,
        metavar="S,...",
        help="only add random-heads rows for these seeds to saved results",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = spt.organism_data()
    if args.add_random_seeds:
        add_random_seeds(Path(args.out), [int(x) for x in args.add_random_seeds.split(",")], data, args.backend)
        return
    seed_everything(0)
    t0 = time.time()
    hf, tok, _ = load_hf("llama", device="cpu")
    model = wrap(hf, tok, args.backend, copy_model=True)

    ident = spt.identify(model, data, n=32)
    heads = ident.heads
    log(
        f"[spt] selected {heads} ({100 * ident.share:.1f}% of heads); "
        f"F_orig {ident.extra['f_orig']:.3f}, F_counter {ident.extra['f_counter']:.4f}"
    )
    ko = spt.knockout(model, heads, data, seeds=tuple(range(args.seeds)), n=32, protocol=True)
    log(f"[spt] knockout: {json.dumps({k: ko[k] for k in ('base', 'selected', 'random_mean')})}")
    att = spt.challenge_attention(model, heads, data, n=32)
    log(
        f"[spt] attention on the challenge: selected {att['selected_mean']:.3f}, "
        f"average head {att['average_head']:.3f}"
    )

    cfg = TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=0)
    rows = spt.run_table(hf, tok, heads, data, cfg, save_dir=None, backend=args.backend)
    labels = dict(spt.LABELS)
    rh = rows["random_heads"]["info"]["random_heads"]
    labels["random_heads"] = f"Random heads, seed 0 ({', '.join(format_head(h) for h in rh)})"
    examples = spt.tuning_data(data, 2000, seed=0)
    if args.low_lr:
        # The same gentler learning rate for SPT and full SFT (the main rows share --lr).
        low = TuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.low_lr, seed=0)
        for meth, label in (("spt", "SPT (selected heads"), ("full_sft", "Full SFT (")):
            m, tl = spt.tune(hf, tok, meth, heads, examples, low)
            r = spt.evaluate(m, tok, data, hf, backend=args.backend)
            r.update(
                n_trainable=tl.n_trainable,
                trainable_share=tl.n_trainable / tl.n_total,
                time_per_step=tl.time_per_step,
                final_loss=sum(tl.losses[-10:]) / 10,
            )
            rows[f"{meth}_low_lr"] = r
            labels[f"{meth}_low_lr"] = f"{label}{', ' if meth == 'spt' else ''}lr {args.low_lr:g})"
    # the SPT slices only (re-tuned deterministically: same seed, data and config)
    spt_model, _ = spt.tune(hf, tok, "spt", heads, examples, cfg)
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
            "backend": args.backend,
            "kl": "controls.next_token_kl, positions=all",
        },
        "labels": {k: labels.get(k, k) for k in rows},
        "seconds": round(time.time() - t0, 1),
    }
    data_out = {"rows": rows, **extra}
    out.with_suffix(".json").write_text(json.dumps(data_out, indent=1, default=float) + "\n")
    md = render(data_out, out)
    log(f"[spt] wrote {out.with_suffix('.json')} and {out.with_suffix('.md')} in {time.time() - t0:.0f}s")
    print(md)


def render(data: dict, out: Path) -> str:
    """Write ``out``.md from the saved results (table, identification, knockout, attention)."""
    rows, ident, ko, att, c = data["rows"], data["identify"], data["knockout"], data["attention"], data["config"]
    heads = [tuple(h) for h in ident["heads"]]
    scores = torch.tensor(ident["scores"])
    order = scores.flatten().argsort()[:8].tolist()
    n_heads = scores.numel()
    md = [
        f"# SPT on the `llama` organism (experiments/spt_table.py, {data['seconds']:.0f} s)",
        "",
        f"Same data ({c['n_examples']} dialogues), {c['steps']} steps, batch {c['batch_size']}, lr {c['lr']:g} "
        "(unless the row says otherwise), AdamW, one CPU thread. Percentages except KL (next-token "
        "KL(base ‖ tuned) at every position of 400 held-out organism texts).",
        "",
        spt.markdown_table(rows, data.get("labels", {})),
        "",
        "## Identification",
        "",
        f"Selected heads: {', '.join(format_head(h) for h in heads)} — {len(heads)} of {n_heads} "
        f"({100 * ident['share']:.1f}%). "
        f"F on challenge dialogues {ident['f_orig']:.3f}, on the counterfactual {ident['f_counter']:.4f}.",
        "",
        "| head | (F_patched − F_orig)/F_orig |",
        "|---|---|",
    ]
    H = scores.shape[1]
    for i in order:
        md.append(f"| L{i // H}H{i % H} | {100 * float(scores.flatten()[i]):+.1f}% |")

    def cells(r: dict) -> str:
        return f"{100 * r['caving']:.1f} | {100 * r['protocol_caving']:.1f} | {100 * r['counter_caving']:.1f}"

    md += [
        "",
        '## Knockout (mean ablation; share of greedy first tokens that are the apology "I")',
        "",
        "| heads ablated | caving (challenge) | caving (full protocol) | apology after the counterfactual |",
        "|---|---|---|---|",
        f"| none | {cells(ko['base'])} |",
        f"| selected ({len(heads)}) | {cells(ko['selected'])} |",
    ]
    for r in ko["random"]:
        md.append(f"| random seed {r['seed']} ({', '.join(format_head(h) for h in r['heads'])}) | {cells(r)} |")
    md += [
        f"| random, mean of {len(ko['random'])} | {cells(ko['random_mean'])} |",
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


def add_random_seeds(out: Path, seeds: list[int], data: spt.SycophancyData, backend: str) -> None:
    """Add random-heads rows for more seeds to saved results (same data, budget and head count)."""
    saved = json.loads(out.with_suffix(".json").read_text())
    c = saved["config"]
    hf, tok, _ = load_hf("llama", device="cpu")
    heads = [tuple(h) for h in saved["identify"]["heads"]]
    cfg = TuneConfig(steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"], seed=0)
    examples = spt.tuning_data(data, c["n_examples"], seed=0)
    for s in seeds:
        m, tl = spt.tune(hf, tok, "random_heads", heads, examples, cfg, seed=s)
        r = spt.tuned_row(m, tok, tl, data, hf, backend)
        key = f"random_heads_s{s}"
        saved["rows"][key] = r
        saved.setdefault("labels", {})[key] = (
            f"Random heads, seed {s} ({', '.join(format_head(h) for h in tl.info['random_heads'])})"
        )
        log(f"[spt] {key}: confidence {r['confidence']:.3f} truthfulness {r['truthfulness']:.3f} kl {r['kl']:.4f}")
    order = (
        ["base", "spt"]
        + sorted(k for k in saved["rows"] if k.startswith("random_heads"))
        + [k for k in saved["rows"] if k not in ("base", "spt") and not k.startswith("random_heads")]
    )
    saved["rows"] = {k: saved["rows"][k] for k in order}
    out.with_suffix(".json").write_text(json.dumps(saved, indent=1, default=float) + "\n")
    print(render(saved, out))


if __name__ == "__main__":
    main()
