"""Head-patching sweep speed: headscope vs TransformerLens's own patching.py.

Both run in this process, on the same TransformerBridge and the same prompts:
``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` (one forward pass per
layer × position × head) against ``headscope.patching.patch_heads(per_position=True)``
(patched copies stacked along the batch axis, restarted from the cached residual).
Prints both times, the ratio and the largest difference between the two score maps.

    python benchmarks/patching_speed.py            # llama organism + GPT-2-small-shaped random Llama
    python benchmarks/patching_speed.py --gpt2-batch 4 --gpt2-pos 16   # the full-size case (~6 min for TL)
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench(model, clean, corrupt, metric, label: str, max_rows: int) -> dict:
    from transformer_lens import patching as tlp

    from headscope.patching import patch_heads

    t0 = time.perf_counter()
    ours = patch_heads(model, clean, corrupt, metric, per_position=True, max_rows=max_rows, show_progress=False)
    t_ours = time.perf_counter() - t0
    mc, mo = ours.info["metric_clean"], ours.info["metric_corrupt"]
    _, clean_cache = model.bridge.run_with_cache(clean)
    t0 = time.perf_counter()
    ref = tlp.get_act_patch_attn_head_out_by_pos(
        model.bridge, corrupt, clean_cache, lambda lg: (metric(lg) - mo) / (mc - mo)
    )
    t_tl = time.perf_counter() - t0
    return {
        "model": label,
        "shape": f"{model.n_layers}L×{model.n_heads}H d{model.d_model}",
        "prompts": f"{clean.shape[0]}×{clean.shape[1]}",
        "tl_s": t_tl,
        "headscope_s": t_ours,
        "speedup": t_tl / t_ours,
        "max_abs_diff": float((ref.cpu() - ours.scores).abs().max()),
    }


def gpt2_shaped(batch: int, pos: int, vocab: int, seed: int = 0):
    from transformers import LlamaForCausalLM

    from headscope.loading import wrap
    from headscope.organisms.train import build_index_tokenizer, llama_config

    torch.manual_seed(seed)
    cfg = llama_config(vocab, d_model=768, n_layers=12, n_heads=12, d_mlp=3072, max_pos=1024)
    hf = LlamaForCausalLM(cfg).eval()
    model = wrap(hf, build_index_tokenizer(vocab), "tl", name="gpt2-small-shaped")
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, vocab, (batch, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, pos // 2] = torch.randint(4, vocab, (batch,), generator=g)
    ans = torch.randint(4, vocab, (batch,), generator=g)
    wrong = (ans + 1) % vocab

    def metric(lg):
        return (lg[:, -1].gather(-1, ans[:, None]) - lg[:, -1].gather(-1, wrong[:, None])).mean()

    return model, clean, corrupt, metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-prompts", type=int, default=8)
    ap.add_argument("--gpt2-batch", type=int, default=2)
    ap.add_argument("--gpt2-pos", type=int, default=8)
    ap.add_argument("--gpt2-vocab", type=int, default=50257)
    ap.add_argument("--skip-gpt2", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from headscope.loading import load_model
    from headscope.tasks import get_task

    rows = []
    llama = load_model("llama", "tl")
    b = get_task("arithmetic", n=args.llama_prompts).prepare(llama)
    rows.append(bench(llama, b.clean, b.corrupt, b.metric_fn(), "llama organism (arithmetic)", 512))
    if not args.skip_gpt2:
        m, clean, corrupt, metric = gpt2_shaped(args.gpt2_batch, args.gpt2_pos, args.gpt2_vocab)
        rows.append(bench(m, clean, corrupt, metric, "random Llama, GPT-2-small shape", 64))
    print("| model | shape | prompts | TransformerLens by_pos (s) | headscope (s) | speed-up | max |diff| |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['shape']} | {r['prompts']} | {r['tl_s']:.2f} | {r['headscope_s']:.2f} | "
            f"{r['speedup']:.1f}× | {r['max_abs_diff']:.2e} |"
        )


if __name__ == "__main__":
    main()
