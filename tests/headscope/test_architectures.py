"""Every supported architecture on both backends, from a user's `save_pretrained` folder.

Tiny random models (headscope.archcheck.tiny_model_dir) of GPT-2, GPT-NeoX, OPT, GPT-J,
Llama, Mistral, Qwen2, Gemma, Gemma2 and Phi-3. Per architecture: per-head patching on
both backends equals a hand-written torch hook on the raw HF model and TransformerLens's
own ``get_act_patch_attn_head_out_all_pos``; path patching into a receiver's q, k and v
agrees across backends; DLA sums to the logit difference. The remaining analyses
(per-position patching, ablation, attribution, steering, head-selective tuning) run on
one architecture of each non-Llama module layout (fused Conv1D q/k/v, per-head fused
q/k/v with parallel attention, flattened MLP, post-attention norms).
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching as tl_patching

from headscope.archcheck import (
    ARCH_NAMES,
    BACKENDS,
    FEATURES,
    TOL,
    _hf,
    _inputs,
    _ld,
    _reference_patching,
    check_arch,
    models_table,
    tiny_model_dir,
)
from headscope.loading import load_model
from headscope.patching import patch_heads

CORE = ("patching", "path_qkv", "dla")
# The Llama layout's other analyses are tested on the llama organism in test_patching,
# test_attribution, test_steering and test_tuning.
LAYOUTS = ("gpt2", "gpt_neox", "opt", "gemma2")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("archs")


def _all_pass(res: dict) -> None:
    bad = {f: {b: v for b, v in d.items() if b in BACKENDS and not v.startswith("✓")} for f, d in res.items()}
    bad = {f: d for f, d in bad.items() if d}
    assert not bad, bad
    for f, d in res.items():
        assert set(BACKENDS) <= set(d), f


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_core_analyses(arch, root):
    _all_pass(check_arch(arch, root, CORE))


@pytest.mark.parametrize("arch", LAYOUTS)
def test_every_analysis_on_each_layout(arch, root):
    _all_pass(check_arch(arch, root, tuple(f for f in FEATURES if f not in CORE)))


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_matches_transformer_lens_patching(arch, root):
    path = tiny_model_dir(arch, root)
    clean, corrupt, ans, wrong = _inputs()
    ref = _reference_patching(_hf(path), clean, corrupt, ans, wrong, per_pos=False)
    tl = load_model(str(path), "tl")

    def metric(logits):
        return _ld(logits, ans, wrong)

    ours = patch_heads(tl, clean, corrupt, metric, show_progress=False)
    mc, mo = ours.info["metric_clean"], ours.info["metric_corrupt"]
    _, clean_cache = tl.bridge.run_with_cache(clean)
    peer = tl_patching.get_act_patch_attn_head_out_all_pos(
        tl.bridge, corrupt, clean_cache, lambda lg: (metric(lg) - mo) / (mc - mo)
    )
    assert (peer - ours.scores).abs().max().item() <= TOL
    assert (peer - ref).abs().max().item() <= TOL


def test_a_broken_reference_is_caught(root, monkeypatch):
    # The check must be able to fail: a hook that patches the wrong head is reported as ✗.
    import headscope.archcheck as ac

    real = ac._reference_patching

    def shifted(*a, **k):
        return torch.roll(real(*a, **k), 1, dims=-1)

    monkeypatch.setattr(ac, "_reference_patching", shifted)
    res = check_arch("llama", root, ("patching",))
    assert all(res["patching"][b].startswith("✗") for b in BACKENDS)
    table = models_table({"llama": res | {f: {} for f in FEATURES if f != "patching"}})
    row = next(ln for ln in table.splitlines() if ln.startswith("| llama | tl |"))
    assert row.split(" | ")[3].startswith("✗ off by")  # the patching column
