"""Both backends agree; ablations equal a hand-written torch hook; patches never leak."""

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.model import Patch
from headscope.patching import patch_heads
from headscope.tasks import get_task

PROMPTS = ["3 + 5 =", "7 - 2 =", "4 + 4 =", "9 - 6 ="]


def test_logits_agree_on_llama(llama_tl, llama_nn):
    toks = llama_tl.to_tokens(PROMPTS)
    assert torch.equal(toks, llama_nn.to_tokens(PROMPTS))
    diff = (llama_tl.logits(toks) - llama_nn.logits(toks)).abs().max().item()
    assert diff <= 1e-4


def test_caches_agree_on_llama(llama_tl, llama_nn):
    toks = llama_tl.to_tokens(PROMPTS)
    sites = ("z", "resid_pre", "attn_out", "mlp_out")
    _, a = llama_tl.run_with_heads(toks, sites=sites, pattern=True)
    _, b = llama_nn.run_with_heads(toks, sites=sites, pattern=True)
    for s in sites + ("pattern",):
        for L in range(llama_tl.n_layers):
            assert torch.allclose(a.site(s)[L], b.site(s)[L], atol=1e-5), (s, L)
    assert a.z[0].shape == (4, toks.shape[1], llama_tl.n_heads, llama_tl.d_head)


def test_head_patching_agrees_on_llama(llama_tl, llama_nn):
    b = get_task("arithmetic", n=8).prepare(llama_tl)
    r_tl = patch_heads(llama_tl, b.clean, b.corrupt, b.metric_fn(), show_progress=False)
    r_nn = patch_heads(llama_nn, b.clean, b.corrupt, b.metric_fn(), show_progress=False)
    assert (r_tl.scores - r_nn.scores).abs().max().item() <= 1e-4
    assert r_tl.scores.abs().max() > 0.1  # the sweep found real effects


def test_gqa_backends_agree(gqa_pair):
    tl, nn_, hf = gqa_pair
    assert (tl.n_heads, tl.n_kv_heads) == (8, 2)
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(4, 64, (3, 9), generator=g)
    corrupt = torch.randint(4, 64, (3, 9), generator=g)
    ref = hf(clean).logits
    assert (tl.logits(clean) - ref).abs().max() <= 1e-4
    assert (nn_.logits(clean) - ref).abs().max() <= 1e-4
    ans, wrong = torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10])

    def metric(lg):
        return (lg[:, -1].gather(-1, ans[:, None]) - lg[:, -1].gather(-1, wrong[:, None])).mean()

    a = patch_heads(tl, clean, corrupt, metric, show_progress=False, per_position=True)
    b = patch_heads(nn_, clean, corrupt, metric, show_progress=False, per_position=True)
    assert a.scores.shape == (3, 9, 8)
    assert (a.scores - b.scores).abs().max() <= 1e-4


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
def test_ablation_equals_forward_pre_hook(backend, llama_tl, llama_nn):
    model = llama_tl if backend == "tl" else llama_nn
    toks = model.to_tokens(PROMPTS)
    L, h, dh = 2, 5, model.d_head
    ours = model.run_patched(toks, [Patch(layer=L, head=h, mode="zero")])

    # Independent computation: a plain torch hook on a fresh HF copy of the organism.
    from headscope.loading import load_hf

    hf, _, _ = load_hf("llama-v2")

    def pre(mod, args):
        x = args[0].clone()
        x[..., h * dh : (h + 1) * dh] = 0
        return (x,)

    handle = hf.model.layers[L].self_attn.o_proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            ref = hf(toks).logits
    finally:
        handle.remove()
    assert (ours - ref).abs().max().item() <= 1e-4
    assert (ours - model.logits(toks)).abs().max().item() > 1e-3  # the ablation did something


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
def test_patches_removed_when_analysis_raises(backend, llama_tl, llama_nn):
    model = llama_tl if backend == "tl" else llama_nn
    toks = model.to_tokens(PROMPTS)
    before = model.logits(toks)
    # 1) an exception raised by the user's code inside a hooked block
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooked([Patch(layer=1, head=0, mode="zero")]):
            assert (model.logits(toks) - before).abs().max() > 0
            raise RuntimeError("boom")
    assert torch.equal(model.logits(toks), before)
    # 2) a patch that fails inside the forward pass (value of the wrong shape)
    bad = Patch(layer=3, head=1, mode="replace", value=torch.ones(7))
    with pytest.raises(HeadscopeError, match="broadcast"):
        model.run_patched(toks, [Patch(layer=0, head=0, mode="zero"), bad])
    assert torch.equal(model.logits(toks), before)
    # 3) a re-entry run that fails restores the skipped blocks
    _, cache = model.run_with_heads(toks)
    with pytest.raises(HeadscopeError):
        model.run_from_layer(toks, cache.resid_pre[3], 3, [bad])
    assert torch.equal(model.logits(toks), before)


def test_reentry_equals_full_run(llama_tl, llama_nn):
    toks = llama_tl.to_tokens(PROMPTS)
    _, cache = llama_tl.run_with_heads(toks)
    p = [Patch(layer=4, head=2, mode="zero"), Patch(layer=5, site="mlp_out", mode="scale", value=0.5)]
    full = llama_tl.run_patched(toks, p)
    for m in (llama_tl, llama_nn):
        assert (m.run_from_layer(toks, cache.resid_pre[4], 4, p) - full).abs().max() <= 1e-4
    with pytest.raises(HeadscopeError, match="below the re-entry"):
        llama_tl.run_from_layer(toks, cache.resid_pre[4], 4, [Patch(layer=1, head=0, mode="zero")])


def test_generation_agrees_and_restores(llama_tl, llama_nn):
    toks = llama_tl.to_tokens(["User : What is 3 plus 4 ? Assistant :"])
    a = llama_tl.generate(toks, 6)
    assert torch.equal(a, llama_nn.generate(toks, 6))
    p = [Patch(layer=L, head=h, mode="zero") for L in range(3) for h in range(8)]
    assert torch.equal(llama_tl.generate(toks, 6, patches=p), llama_nn.generate(toks, 6, patches=p))
    assert torch.equal(llama_tl.generate(toks, 6), a)


def test_bad_patch_inputs(llama_tl):
    toks = llama_tl.to_tokens(PROMPTS)
    with pytest.raises(HeadscopeError, match="layer 9 out of range"):
        llama_tl.run_patched(toks, [Patch(layer=9, head=0, mode="zero")])
    with pytest.raises(HeadscopeError, match="head 8 out of range"):
        llama_tl.run_patched(toks, [Patch(layer=0, head=8, mode="zero")])
    with pytest.raises(HeadscopeError, match="needs a value"):
        Patch(layer=0, head=0, mode="replace")
    with pytest.raises(HeadscopeError, match="different lengths"):
        llama_tl.to_tokens(["3 + 5 =", "Q : What is 3 plus 5 ? A :"])
    with pytest.raises(HeadscopeError, match="empty"):
        llama_tl.to_tokens([])
