"""Attribution patching, DLA, ablations, head scores and path patching against independent computations."""

import copy

import pytest
import torch
from transformer_lens import head_detector

from headscope.attribution import ablate, attribution_patching, direct_logit_attribution, knockout_curve
from headscope.common.metrics import accuracy
from headscope.head_scores import attention_to_positions, head_scores, repeated_tokens
from headscope.loading import wrap
from headscope.model import Patch
from headscope.patching import patch_heads, path_patch_heads, path_patch_task
from headscope.tasks import get_task


@pytest.fixture(scope="module")
def arith(llama_tl):
    return get_task("arithmetic", n=12).prepare(llama_tl)


def _linear_model():
    """A random Llama whose logits are linear in the last layer's z.

    The last MLP is zeroed and the final RMSNorm has eps = 1e12, so x / sqrt(mean x² + eps)
    is x·1e-6 to float precision; the final norm's weight 1e6 restores the scale. The
    blocks keep ordinary norms, so earlier layers act through non-linear attention.
    """
    from transformers import LlamaForCausalLM

    from headscope.organisms.train import build_index_tokenizer, llama_config

    torch.manual_seed(3)
    cfg = llama_config(48, d_model=32, n_layers=2, n_heads=4, d_mlp=64, max_pos=32)
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        hf.model.layers[1].mlp.down_proj.weight.zero_()
        hf.model.norm.weight.fill_(1e6)
        hf.model.norm.variance_epsilon = 1e12
    return hf, build_index_tokenizer(48)


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
def test_attribution_exact_when_metric_is_linear(backend):
    hf, tok = _linear_model()
    model = wrap(copy.deepcopy(hf), tok, backend)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(4, 48, (3, 6), generator=g)
    corrupt = torch.randint(4, 48, (3, 6), generator=g)
    ans, wrong = torch.tensor([5, 6, 7]), torch.tensor([9, 10, 11])

    def metric(lg):
        return (lg[:, -1].gather(-1, ans[:, None]) - lg[:, -1].gather(-1, wrong[:, None])).mean()

    approx = attribution_patching(model, clean, corrupt, metric, per_position=True)
    exact = patch_heads(model, clean, corrupt, metric, per_position=True, show_progress=False)
    last = model.n_layers - 1
    torch.testing.assert_close(approx.scores[last], exact.scores[last], rtol=1e-3, atol=1e-6)
    assert exact.scores[last].abs().max() > 1e-3  # the comparison is not between zeros
    # Layer 0 reaches the logits through attention (non-linear): there the approximation differs.
    assert not torch.allclose(approx.scores[0], exact.scores[0], rtol=1e-3, atol=1e-6)


def test_attribution_correlates_with_exact_on_llama(llama_tl, arith):
    approx = attribution_patching(llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), per_position=False)
    exact = patch_heads(llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), show_progress=False)
    r = torch.corrcoef(torch.stack([approx.scores.flatten(), exact.scores.flatten()]))[0, 1].item()
    print(f"Pearson(attribution patching, exact head patching) on llama arithmetic = {r:.4f}")
    assert r >= 0.8


def test_attribution_backends_agree(llama_tl, llama_nn, arith):
    a = attribution_patching(llama_tl, arith.clean, arith.corrupt, arith.metric_fn())
    b = attribution_patching(llama_nn, arith.clean, arith.corrupt, arith.metric_fn())
    assert (a.scores - b.scores).abs().max() <= 1e-4


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
def test_dla_sums_to_logit_diff(backend, llama_tl, llama_nn, arith):
    model = llama_tl if backend == "tl" else llama_nn
    d = direct_logit_attribution(model, arith.clean, arith.answer, arith.wrong)
    total = d.scores.sum().item() + sum(d.info["components"].values()) + d.info["bias_term"]
    ref = arith.metric(model.logits(arith.clean)).item()
    assert total == pytest.approx(ref, abs=1e-4)
    assert d.info["logit_diff"] == pytest.approx(ref, abs=1e-4)


def test_mean_and_resample_ablation_by_hand(llama_tl, arith):
    L, h = 0, 3
    _, ref_cache = llama_tl.run_with_heads(arith.corrupt, sites=("z",))
    mean_z = ref_cache.z[L][:, :, h].mean(0)
    ours = ablate(llama_tl, arith.clean, [(L, h)], "mean", arith.corrupt)
    by_hand = llama_tl.run_patched(arith.clean, [Patch(layer=L, head=h, value=mean_z)])
    assert torch.allclose(ours, by_hand, atol=1e-5)
    zero = ablate(llama_tl, arith.clean, [(L, h)], "zero")
    assert not torch.allclose(zero, ours)
    res = ablate(llama_tl, arith.clean, [(L, h)], "resample", arith.corrupt, seed=1)
    assert res.shape == ours.shape and not torch.allclose(res, llama_tl.logits(arith.clean))


def test_knockout_curve_shapes_and_k0(llama_tl, arith):
    score = lambda lg: accuracy(lg, arith.answer)  # noqa: E731
    ranking = patch_heads(llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), show_progress=False).top(8)
    curve = knockout_curve(
        llama_tl,
        arith.clean,
        score,
        [(L, h) for L, h, _ in ranking],
        ks=(0, 2, 4),
        n_random=2,
        reference=arith.corrupt,
    )
    assert curve["k"] == [0, 2, 4] and len(curve["random"][0]) == 2
    base = score(llama_tl.logits(arith.clean))
    assert curve["top"][0] == pytest.approx(base) and curve["random_mean"][0] == pytest.approx(base)


@pytest.mark.parametrize(
    "kind,tl_name",
    [
        ("previous_token", "previous_token_head"),
        ("duplicate_token", "duplicate_token_head"),
        ("induction", "induction_head"),
    ],
)
def test_head_scores_match_transformer_lens(kind, tl_name, induction_tl):
    toks = repeated_tokens(induction_tl, n=3, seq=8, seed=2)
    ours = head_scores(induction_tl, toks, kind)
    ref = torch.stack(
        [head_detector.detect_head(induction_tl.bridge, induction_tl.tokenizer.decode(t[1:]), tl_name) for t in toks]
    ).mean(0)
    assert torch.allclose(ours.scores, ref.cpu().float(), atol=1e-4), (ours.scores, ref)


def test_attention_to_positions_is_a_share(llama_tl, arith):
    P = arith.clean.shape[1]
    everything = attention_to_positions(llama_tl, arith.clean, list(range(P)))
    assert torch.allclose(everything.scores, torch.ones_like(everything.scores), atol=1e-5)
    ops = attention_to_positions(llama_tl, arith.clean, [1, 2, 3])
    assert (ops.scores >= 0).all() and (ops.scores <= 1 + 1e-6).all()


def test_path_patching_last_layer_equals_activation_patching(llama_tl, llama_nn, arith):
    pp = path_patch_heads(llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), show_progress=False)
    act = patch_heads(llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), mode="noise", show_progress=False)
    last = llama_tl.n_layers - 1
    assert torch.allclose(pp.scores[last], act.scores[last], atol=1e-4)
    pn = path_patch_heads(llama_nn, arith.clean, arith.corrupt, arith.metric_fn(), show_progress=False)
    assert (pp.scores - pn.scores).abs().max() <= 1e-4


def test_path_patching_single_sender_by_hand(llama_tl, arith):
    """Sender L1H2 → logits, computed with explicit patches on a full forward pass."""
    L, h = 1, 2
    _, cl = llama_tl.run_with_heads(arith.clean, sites=("z",))
    _, co = llama_tl.run_with_heads(arith.corrupt, sites=("z",))
    patches = [Patch(layer=L, head=h, value=co.z[L][:, :, h])]
    patches += [
        Patch(layer=ell, head=hh, value=cl.z[ell][:, :, hh])
        for ell in range(L + 1, llama_tl.n_layers)
        for hh in range(llama_tl.n_heads)
    ]
    m = arith.metric(llama_tl.run_patched(arith.clean, patches)).item()
    mc, mo = arith.metric(llama_tl.logits(arith.clean)).item(), arith.metric(llama_tl.logits(arith.corrupt)).item()
    pp = path_patch_heads(llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), show_progress=False)
    assert pp.scores[L, h].item() == pytest.approx((m - mc) / (mc - mo), abs=1e-4)


@pytest.mark.parametrize("via", ["q", "k", "v"])
def test_path_to_receiver_agrees_between_backends(via, llama_tl, llama_nn, arith):
    a = path_patch_heads(
        llama_tl, arith.clean, arith.corrupt, arith.metric_fn(), receiver=(2, 1), via=via, show_progress=False
    )
    b = path_patch_heads(
        llama_nn, arith.clean, arith.corrupt, arith.metric_fn(), receiver=(2, 1), via=via, show_progress=False
    )
    assert torch.isnan(a.scores[2:]).all() and torch.isfinite(a.scores[:2]).all()
    assert (a.scores[:2] - b.scores[:2]).abs().max() <= 1e-4


def test_path_to_receiver_by_hand(llama_tl, arith):
    """Sender L0H3 → receiver L1H5 via q, as two explicit runs."""
    (L, h), (R, hr) = (0, 3), (1, 5)
    _, cl = llama_tl.run_with_heads(arith.clean, sites=("z", "q"))
    _, co = llama_tl.run_with_heads(arith.corrupt, sites=("z",))
    # run 1: sender from corrupt, others frozen at clean up to the receiver's layer
    run1 = [Patch(layer=L, head=h, value=co.z[L][:, :, h])]
    run1 += [Patch(layer=L, head=hh, value=cl.z[L][:, :, hh]) for hh in range(llama_tl.n_heads) if hh != h]
    with llama_tl.hooked(run1):
        _, c1 = llama_tl.run_with_heads(arith.clean, sites=("q",))
    q_new = c1.q[R][:, :, hr]
    m = arith.metric(llama_tl.run_patched(arith.clean, [Patch(layer=R, site="q", head=hr, value=q_new)])).item()
    mc, mo = arith.metric(llama_tl.logits(arith.clean)).item(), arith.metric(llama_tl.logits(arith.corrupt)).item()
    pp = path_patch_task(llama_tl, arith, receiver=(R, hr), via="q", show_progress=False)
    assert pp.scores[L, h].item() == pytest.approx((m - mc) / (mc - mo), abs=1e-4)
