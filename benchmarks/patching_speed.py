"""Head-patching sweep speed and memory: headscope vs TransformerLens's own patching.py.

Both libraries run in this process, on the same TransformerBridge, the same prompts and
one torch thread (on a shared 2-core machine two threads slow small forwards far more than
large ones, which would inflate the ratios), and are timed in CPU seconds
(``time.process_time``):

* ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` (one full forward
  pass per layer × position × head) against ``patch_heads(per_position=True)``;
* ``get_act_patch_attn_head_out_all_pos`` against ``patch_heads()``.

headscope runs its exact fast path (headscope/fastpatch.py: re-entry at ``z``, reuse of
the unpatched prefix, patches that change nothing skipped, only the metric's position
unembedded). Each row prints both times, the ratio, the largest difference between the
two normalised score maps (in brackets: in raw metric units; the normalisation divides by
the clean-vs-corrupt gap, which is small on these random models), each sweep's CPU
time over that of the plain forwards it replaces (one plain HF forward of the batch per
patched component: TransformerLens's own work), and the peak RSS each sweep adds
(sampled every 2 ms).

Models: a random GPT-2-small-shaped Llama (12 layers × 12 heads, d 768, vocab 50,257), a
random GPT-2-small ``GPT2LMHeadModel`` and, for the prompt-length series, the Llama shape
with vocab 2,000 at B = 1. Clean and corrupt prompts differ at one position, ``T // 2``
(as in IOI- or arithmetic-style counterfactuals, which change a name or an operand mid
prompt); ``--corrupt-at 1`` puts the difference right after BOS, where no prefix can be
skipped (the worst case for headscope).

    python benchmarks/patching_speed.py                         # the tables of docs/headscope.md
    python benchmarks/patching_speed.py --only llama --batch 2  # a quicker look
    python benchmarks/patching_speed.py --corrupt-at 1          # the worst case
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class PeakRSS:
    """Peak resident memory added while the block runs (a sampling thread, /proc/self/statm)."""

    def __init__(self, every: float = 0.002) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self.base = self.rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())

    @property
    def added_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    import gc

    gc.collect()
    with PeakRSS() as mem:
        t0 = time.process_time()
        out = fn()
        dt = time.process_time() - t0
    return out, dt, mem.added_mb


def plain_forward_s(hf, tokens: torch.Tensor, repeats: int = 5) -> float:
    """Median CPU seconds of one plain HF forward of ``tokens`` (no hooks, no cache)."""
    ts = []
    with torch.no_grad():
        hf(tokens, use_cache=False)
        for _ in range(repeats):
            t0 = time.process_time()
            hf(tokens, use_cache=False)
            ts.append(time.process_time() - t0)
    return statistics.median(ts)


def build(kind: str, vocab: int, batch: int, pos: int, corrupt_at: int | None, seed: int = 0):
    """A random GPT-2-small-shaped model on the TL backend, prompts and a logit-diff metric."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

    from headscope.loading import wrap
    from headscope.organisms.train import build_index_tokenizer, llama_config

    torch.manual_seed(seed)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
        cfg._attn_implementation = "eager"
        hf = GPT2LMHeadModel(cfg).eval()
    else:
        cfg = llama_config(vocab, d_model=768, n_layers=12, n_heads=12, d_mlp=3072, max_pos=1024)
        hf = LlamaForCausalLM(cfg).eval()
    plain = type(hf)(cfg).eval()
    plain.load_state_dict(hf.state_dict())
    model = wrap(hf, build_index_tokenizer(vocab), "tl", name=f"random {kind}")
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, vocab, (batch, pos), generator=g)
    corrupt = clean.clone()
    at = pos // 2 if corrupt_at is None else corrupt_at
    corrupt[:, at] = (clean[:, at] + 1 + torch.randint(0, vocab - 5, (batch,), generator=g)) % vocab
    ans = torch.randint(4, vocab, (batch,), generator=g)
    wrong = (ans + 1) % vocab

    def metric(lg):
        return (lg[:, -1].gather(-1, ans[:, None]) - lg[:, -1].gather(-1, wrong[:, None])).mean()

    return model, plain, clean, corrupt, metric, at


def gpt2_shaped(batch: int, pos: int, vocab: int, seed: int = 0):
    """The random GPT-2-small-shaped Llama on the TL backend: ``(model, clean, corrupt, metric)``
    (used by benchmarks/attribution_speed.py and steering_overhead.py)."""
    model, _, clean, corrupt, metric, _ = build("llama", vocab, batch, pos, None, seed)
    return model, clean, corrupt, metric


def compare(
    model, plain, clean, corrupt, metric, per_position: bool, skip_tl: bool = False, dtype: str | None = None
) -> dict:
    from transformer_lens import patching as tlp

    from headscope.patching import patch_heads

    ours, t_ours, mem_ours = timed(
        lambda: patch_heads(model, clean, corrupt, metric, per_position=per_position, dtype=dtype, show_progress=False)
    )
    mc, mo = ours.info["metric_clean"], ours.info["metric_corrupt"]
    n_jobs = model.n_layers * model.n_heads * (clean.shape[1] if per_position else 1)
    t_plain = plain_forward_s(plain, corrupt) * n_jobs
    row = {
        "sweep": "per position (_by_pos)" if per_position else "all positions (_all_pos)",
        "prompts": f"{clean.shape[0]}×{clean.shape[1]}",
        "headscope_cpu_s": t_ours,
        "headscope_rss_mb": mem_ours,
        "metric_gap": mc - mo,
        "headscope_over_plain": t_ours / t_plain,
        "engine": ours.info.get("engine"),
        "metric_positions": ours.info.get("metric_positions"),
        "dtype": ours.info.get("dtype", "float32"),
        "dtype_error": ours.info.get("dtype_error"),
    }
    if skip_tl:
        return row
    _, clean_cache = model.bridge.run_with_cache(clean)
    fn = tlp.get_act_patch_attn_head_out_by_pos if per_position else tlp.get_act_patch_attn_head_out_all_pos
    ref, t_tl, mem_tl = timed(lambda: fn(model.bridge, corrupt, clean_cache, lambda lg: (metric(lg) - mo) / (mc - mo)))
    row.update(
        {
            "tl_cpu_s": t_tl,
            "tl_rss_mb": mem_tl,
            "tl_over_plain": t_tl / t_plain,
            "speedup": t_tl / t_ours,
            "max_abs_diff": float((ref.cpu() - ours.scores).abs().max()),
            "max_abs_diff_raw": float((ref.cpu() - ours.scores).abs().max()) * abs(mc - mo),
        }
    )
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| model | sweep | prompts | TransformerLens CPU s | headscope CPU s | speed-up | max |diff| (raw) | "
        "TL / plain fwd | headscope / plain fwd | TL peak +RSS MB | headscope peak +RSS MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['sweep']} | {r['prompts']} | {r.get('tl_cpu_s', float('nan')):.1f} | "
            f"{r['headscope_cpu_s']:.1f} | {r.get('speedup', float('nan')):.1f}× | "
            f"{r.get('max_abs_diff', float('nan')):.1e} ({r.get('max_abs_diff_raw', float('nan')):.0e}) | "
            f"{r.get('tl_over_plain', float('nan')):.2f} | "
            f"{r['headscope_over_plain']:.3f} | {r.get('tl_rss_mb', float('nan')):.0f} | "
            f"{r['headscope_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pos", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--lengths", default="8,16,32", help="prompt lengths of the B = 1 series (vocab 2000)")
    ap.add_argument("--corrupt-at", type=int, default=None, help="position that differs (default: pos // 2)")
    ap.add_argument("--only", default="llama,gpt2,lengths", help="subset of llama,gpt2,lengths")
    ap.add_argument("--sweeps", default="per,all", help="the Llama rows: per (by_pos) and/or all (all_pos)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--skip-tl", action="store_true", help="time headscope only")
    ap.add_argument("--dtype", default=None, help="headscope sweep dtype (bfloat16: its error vs float32 is printed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = set(args.only.split(","))
    rows: list[dict] = []

    def run(kind: str, vocab: int, batch: int, pos: int, sweeps: tuple[bool, ...]) -> None:
        model, plain, clean, corrupt, metric, at = build(kind, vocab, batch, pos, args.corrupt_at)
        label = f"random {'GPT2LMHeadModel' if kind == 'gpt2' else 'Llama'}, GPT-2-small shape, vocab {vocab}"
        for per_pos in sweeps:
            r = compare(model, plain, clean, corrupt, metric, per_pos, skip_tl=args.skip_tl, dtype=args.dtype)
            r.update({"model": label, "corrupt_at": at})
            rows.append(r)
            print(table(rows[-1:]), flush=True)
            if r["dtype_error"]:
                print(f"  {r['dtype']} sweep, error vs float32: {r['dtype_error']}", flush=True)

    if "llama" in only:
        run("llama", args.vocab, args.batch, args.pos, tuple(w == "per" for w in args.sweeps.split(",")))
    if "gpt2" in only:
        run("gpt2", args.vocab, args.batch, args.pos, (True,))
    if "lengths" in only:
        for T in [int(t) for t in args.lengths.split(",")]:
            run("llama", 2000, 1, T, (True,))
    print()
    print("1 torch thread, CPU seconds (time.process_time), both libraries in one process on the same bridge.")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
