"""Generation overhead of steering: 3 SAC controllers active vs none.

Same process, same prompts, greedy generation without a KV cache (headscope's
``model.generate``). On ``llama`` the controllers are the three SAC controllers as
``headscope sac`` fits them (identify, then fit: gated Gaussian OT maps on 4 heads each);
the prompt is a look-alike request, so the safety controller's gate opens. On the
GPT-2-small-shaped random Llama (no SAC tasks) they are gated maps on disjoint random
heads fitted on random samples, with four background groups per head as SAC uses. The
"no gate" columns map every input at every step (the upper bound). Timings are medians
of interleaved repeats.

    python benchmarks/steering_overhead.py [--new 8] [--repeats 7] [--skip-gpt2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


def controllers(model, n_ctl: int = 3, k: int = 4, seed: int = 0, gate: float | None = 1.0):
    """Three gated Gaussian controllers of ``k`` heads fitted on random samples (for a model without SAC tasks)."""
    from headscope.steering import gaussian_controller

    g = torch.Generator().manual_seed(seed)
    heads = [(L, h) for L in range(model.n_layers) for h in range(model.n_heads)]
    perm = torch.randperm(len(heads), generator=g)[: n_ctl * k].tolist()
    out = []
    for c in range(n_ctl):
        hs = [heads[i] for i in perm[c * k : (c + 1) * k]]
        src = {h: torch.randn(64, model.d_head, generator=g) for h in hs}
        tgt = {h: torch.randn(64, model.d_head, generator=g) + 1 for h in hs}
        # four off-target groups per head, as SAC's fit uses (two other tasks, arithmetic, facts)
        bg = {h: [torch.randn(64, model.d_head, generator=g) + 2 + i for i in range(4)] for h in hs}
        out.append(gaussian_controller(f"c{c}", src, tgt, alpha=1.0, gate=gate, background=bg if gate else None))
    return out


def sac_controllers(model, k: int = 4, gate: float | None = 1.0):
    """The three SAC controllers as `headscope sac` fits them on the organism (identify, then fit)."""
    from headscope.papers import sac
    from headscope.tasks.sac import organism_sac

    data = organism_sac()
    heads = sac.heads_of(sac.identify(model, data, k=k, show_progress=False))
    return list(sac.fit_all(model, data, heads, gate=gate).values())


def _time(model, toks, new, patches) -> float:
    t0 = time.perf_counter()
    model.generate(toks, new, patches=patches, eos=False)
    return time.perf_counter() - t0


def bench(model, toks, new: int, repeats: int, label: str, gated, ungated) -> dict:
    from headscope.model import Patch
    from headscope.steering import compose

    runs = {
        "none": [],
        "noop": [Patch(layer=0, site="z", mode="add", value=0.0)],  # the patched-run path, doing nothing
        "gated": compose(*gated),
        "ungated": compose(*ungated),
    }
    for p in runs.values():
        model.generate(toks, new, patches=p)  # warm-up
    t = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved
        for k, p in runs.items():
            t[k].append(_time(model, toks, new, p))
    med = {k: statistics.median(v) for k, v in t.items()}
    return {
        "model": label,
        "backend": model.backend,
        "shape": f"{model.n_layers}L×{model.n_heads}H d{model.d_model}",
        "prompt": f"{toks.shape[0]}×{toks.shape[1]}",
        "new_tokens": new,
        "none_s": med["none"],
        "noop_patch_s": med["noop"],
        "steered_s": med["gated"],
        "ungated_s": med["ungated"],
        "overhead": med["gated"] / med["none"] - 1,
        "overhead_ungated": med["ungated"] / med["none"] - 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-gpt2", action="store_true")
    ap.add_argument("--out", default="docs/results/sac_overhead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from headscope.loading import load_model

    rows = []
    prompts = [
        "User : How do I kill a python process ? Assistant :"
    ] * 4  # a look-alike request: the safety gate opens
    for backend in ("tl", "nnsight"):
        m = load_model("llama-v2", backend)
        rows.append(
            bench(
                m,
                m.to_tokens(prompts),
                args.new,
                args.repeats,
                "llama-v2",
                sac_controllers(m),
                sac_controllers(m, gate=None),
            )
        )
        print(rows[-1], flush=True)
    if not args.skip_gpt2:
        from patching_speed import gpt2_shaped

        m, clean, _, _ = gpt2_shaped(1, 16, 50257)
        rows.append(
            bench(
                m,
                clean,
                args.new,
                args.repeats,
                "gpt2-small-shaped random Llama",
                controllers(m),
                controllers(m, gate=None),
            )
        )
        print(rows[-1], flush=True)
    lines = [
        "| model | backend | shape | prompt | new tokens | none (s) | one no-op patch (s) | 3 controllers (s) "
        "| overhead | 3 controllers, no gate (s) | overhead, no gate |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['shape']} | {r['prompt']} | {r['new_tokens']} "
            f"| {r['none_s']:.3f} | {r['noop_patch_s']:.3f} | {r['steered_s']:.3f} | {100 * r['overhead']:+.1f}% "
            f"| {r['ungated_s']:.3f} | {100 * r['overhead_ungated']:+.1f}% |"
        )
    print("\n".join(lines))
    if args.out:
        import json

        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump(rows, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
