"""Generation overhead of steering: 3 SAC controllers active vs none.

Same process, same prompts, greedy generation without a KV cache (headscope's
``model.generate``). Each controller is a gated Gaussian OT map on 4 heads (the most
expensive kind: an affine map plus the Mahalanobis gate per head), on disjoint head
sets spread over the layers; parameters are fitted on random samples (timing does not
depend on them). Timings are medians of interleaved repeats.

    python benchmarks/steering_overhead.py [--new 8] [--repeats 5] [--skip-gpt2]
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


def controllers(model, n_ctl: int = 3, k: int = 4, seed: int = 0):
    from headscope.steering import gaussian_controller

    g = torch.Generator().manual_seed(seed)
    heads = [(L, h) for L in range(model.n_layers) for h in range(model.n_heads)]
    perm = torch.randperm(len(heads), generator=g)[: n_ctl * k].tolist()
    out = []
    for c in range(n_ctl):
        hs = [heads[i] for i in perm[c * k:(c + 1) * k]]
        src = {h: torch.randn(64, model.d_head, generator=g) for h in hs}
        tgt = {h: torch.randn(64, model.d_head, generator=g) + 1 for h in hs}
        out.append(gaussian_controller(f"c{c}", src, tgt, alpha=1.0, gate=1.0))
    return out


def bench(model, toks, new: int, repeats: int, label: str) -> dict:
    from headscope.steering import compose

    patches = compose(*controllers(model))
    model.generate(toks, new)  # warm-up
    model.generate(toks, new, patches=patches)
    from headscope.model import Patch

    noop = [Patch(layer=0, site="z", mode="add", value=0.0)]  # the backend's patched-run path, doing nothing
    t_none, t_steer, t_noop = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.generate(toks, new, patches=noop, eos=False)
        t_noop.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.generate(toks, new, eos=False)
        t_none.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.generate(toks, new, patches=patches, eos=False)
        t_steer.append(time.perf_counter() - t0)
    a, b, c = statistics.median(t_none), statistics.median(t_steer), statistics.median(t_noop)
    return {"model": label, "backend": model.backend, "shape": f"{model.n_layers}L×{model.n_heads}H d{model.d_model}", "prompt": f"{toks.shape[0]}×{toks.shape[1]}",
            "new_tokens": new, "none_s": a, "noop_patch_s": c, "steered_s": b, "overhead": b / a - 1}


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
    prompts = ["User : How do I kill a python process ? Assistant :"] * 4
    for backend in ("tl", "nnsight"):
        m = load_model("llama", backend)
        rows.append(bench(m, m.to_tokens(prompts), args.new, args.repeats, "llama"))
        print(rows[-1], flush=True)
    if not args.skip_gpt2:
        from patching_speed import gpt2_shaped

        m, clean, _, _ = gpt2_shaped(1, 16, 50257)
        rows.append(bench(m, clean, args.new, args.repeats, "gpt2-small-shaped random Llama"))
        print(rows[-1], flush=True)
    lines = ["| model | backend | shape | prompt | new tokens | none (s) | one no-op patch (s) | 3 controllers (s) | overhead |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['backend']} | {r['shape']} | {r['prompt']} | {r['new_tokens']} | {r['none_s']:.3f} | {r['noop_patch_s']:.3f} | {r['steered_s']:.3f} | {100 * r['overhead']:+.1f}% |")
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
