"""Per-head maps three ways: attribution patching, exact patching (headscope), TransformerLens.

Same process, same bridge, same prompts: per-(layer, position, head) maps from
``headscope.attribution.attribution_patching`` (2 forward + 1 backward),
``headscope.patching.patch_heads(per_position=True)`` and
``transformer_lens.patching.get_act_patch_attn_head_out_by_pos``. Prints time, speed-up
over TransformerLens and the Pearson correlation of each map with the exact one.

    python benchmarks/attribution_speed.py [--gpt2-batch 2 --gpt2-pos 6] [--skip-gpt2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(model, clean, corrupt, metric, label: str, max_rows: int) -> list[dict]:
    from transformer_lens import patching as tlp

    from headscope.attribution import attribution_patching
    from headscope.patching import patch_heads

    t = time.perf_counter()
    exact = patch_heads(model, clean, corrupt, metric, per_position=True, max_rows=max_rows, show_progress=False)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    approx = attribution_patching(model, clean, corrupt, metric, per_position=True)
    t_attr = time.perf_counter() - t
    mc, mo = exact.info["metric_clean"], exact.info["metric_corrupt"]
    _, cache = model.bridge.run_with_cache(clean)
    t = time.perf_counter()
    ref = tlp.get_act_patch_attn_head_out_by_pos(
        model.bridge, corrupt, cache, lambda lg: (metric(lg) - mo) / (mc - mo)
    ).cpu()
    t_tl = time.perf_counter() - t

    def r(x):
        return torch.corrcoef(torch.stack([x.flatten().float(), exact.scores.flatten()]))[0, 1].item()

    shape = f"{model.n_layers}L×{model.n_heads}H, {clean.shape[0]}×{clean.shape[1]} tokens"
    return [
        {
            "model": label,
            "shape": shape,
            "method": "TransformerLens get_act_patch_attn_head_out_by_pos",
            "s": t_tl,
            "speedup": 1.0,
            "r": r(ref),
        },
        {
            "model": label,
            "shape": shape,
            "method": "headscope exact (patch_heads)",
            "s": t_exact,
            "speedup": t_tl / t_exact,
            "r": 1.0,
        },
        {
            "model": label,
            "shape": shape,
            "method": "headscope attribution patching",
            "s": t_attr,
            "speedup": t_tl / t_attr,
            "r": r(approx.scores),
        },
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-prompts", type=int, default=8)
    ap.add_argument("--gpt2-batch", type=int, default=2)
    ap.add_argument("--gpt2-pos", type=int, default=6)
    ap.add_argument("--skip-gpt2", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from patching_speed import gpt2_shaped

    from headscope.loading import load_model
    from headscope.tasks import get_task

    llama = load_model("llama-v2", "tl")
    b = get_task("arithmetic", n=args.llama_prompts).prepare(llama)
    rows = run(llama, b.clean, b.corrupt, b.metric_fn(), "llama-v2 organism", 512)
    if not args.skip_gpt2:
        m, clean, corrupt, metric = gpt2_shaped(args.gpt2_batch, args.gpt2_pos, 50257)
        rows += run(m, clean, corrupt, metric, "GPT-2-small-shaped random Llama", 64)
    print("| model | shape | method | time (s) | speed-up vs TL | Pearson r with exact |")
    print("|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['model']} | {x['shape']} | {x['method']} | {x['s']:.2f} | {x['speedup']:.1f}× | {x['r']:.4f} |")


if __name__ == "__main__":
    main()
