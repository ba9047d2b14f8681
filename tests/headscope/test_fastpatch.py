"""The exact fast path of head-patching sweeps (headscope/fastpatch.py) against TransformerLens.

Per architecture (tiny random models of every architecture in docs/models.md), per-position
and all-position sweeps equal TransformerLens's own ``get_act_patch_attn_head_out_by_pos`` /
``_all_pos`` on the same bridge, for denoising and noising, with a metric on the last
position and one on several answer positions. The prompts' first clean/corrupt difference
differs by row, so the rows the fast path skips (patches that change nothing) and the rows
it computes are both exercised.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching as tlp

from headscope.archcheck import ARCH_NAMES, VOCAB, tiny_model_dir
from headscope.common.errors import HeadscopeError
from headscope.fastpatch import first_difference, metric_columns, metric_positions, parse_memory
from headscope.loading import load_model
from headscope.model import Patch
from headscope.patching import patch_heads

TOL = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fast_archs")


def _prompts(seed: int = 0, batch: int = 3, pos: int = 7):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, VOCAB, (batch, pos), generator=g)
    clean[:, 0] = 2  # BOS
    corrupt = clean.clone()
    for b, first in enumerate((2, 4, 3)[:batch]):  # the first differing position varies by row
        corrupt[b, first:] = torch.randint(4, VOCAB, (pos - first,), generator=g)
    ans = torch.randint(4, VOCAB, (batch,), generator=g)
    wrong = (ans + 3 - 4) % (VOCAB - 4) + 4
    return clean, corrupt, ans, wrong


def _last(ans, wrong):
    def metric(lg):
        idx = torch.arange(lg.shape[0])
        return (lg[:, -1][idx, ans] - lg[:, -1][idx, wrong]).mean()

    return metric


def _several(ans, wrong):
    """Logit difference summed over answer positions 3, 5 and 6 (a multi-token answer)."""

    def metric(lg):
        idx = torch.arange(lg.shape[0])
        return sum((lg[:, p][idx, ans] - lg[:, p][idx, wrong]).mean() for p in (3, 5, 6))

    return metric


def _tl_sweep(model, base, src, metric, per_position: bool) -> torch.Tensor:
    """TransformerLens's own patching of ``src``'s head outputs into the ``base`` run."""
    _, src_cache = model.bridge.run_with_cache(src)
    fn = tlp.get_act_patch_attn_head_out_by_pos if per_position else tlp.get_act_patch_attn_head_out_all_pos
    return fn(model.bridge, base, src_cache, metric).cpu()


# How the fast path gets the source prompts' z: from the plain blocks (one run fewer) where
# block 0 reads the input-embedding module's output (Gemma's module scales it itself),
# else from the backend (GPT-2 and OPT add position embeddings in the model's forward).
SOURCE_RUN = {"llama": "blocks", "gemma": "blocks", "gpt_neox": "blocks", "gpt2": "backend", "opt": "backend"}


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_equals_transformer_lens(arch, root):
    model = load_model(str(tiny_model_dir(arch, root)), "tl")
    clean, corrupt, ans, wrong = _prompts()
    for name, metric in (("last", _last(ans, wrong)), ("several", _several(ans, wrong))):
        for mode in ("denoise", "noise"):
            base, src = (corrupt, clean) if mode == "denoise" else (clean, corrupt)
            for per_position in (True, False):
                ours = patch_heads(
                    model, clean, corrupt, metric, mode=mode, per_position=per_position, normalize=False,
                    show_progress=False,
                )  # fmt: skip
                assert ours.info["engine"] == "prefix"
                # the source's z from the plain blocks where block 0 reads bare embeddings
                assert ours.info["source_run"] == SOURCE_RUN.get(arch, ours.info["source_run"]), arch
                for key, toks in (("metric_clean", clean), ("metric_corrupt", corrupt)):
                    assert abs(ours.info[key] - float(metric(model.logits(toks)))) <= TOL, (arch, key)
                peer = _tl_sweep(model, base, src, metric, per_position)
                err = (peer - ours.scores).abs().max().item()
                assert err <= TOL, (name, mode, per_position, err)
                want = [6] if name == "last" else list(range(7))
                assert ours.info["metric_positions"] == want


def test_both_backends_and_declared_positions_agree(root):
    path = tiny_model_dir("llama", root)
    clean, corrupt, ans, wrong = _prompts(1)
    metric = _several(ans, wrong)
    tl = load_model(str(path), "tl")
    ns = load_model(str(path), "nnsight")
    ref = patch_heads(tl, clean, corrupt, metric, per_position=True, fast=False, show_progress=False)
    for m in (tl, ns):
        declared = patch_heads(
            m, clean, corrupt, metric, per_position=True, positions=[3, -2, -1], show_progress=False
        )
        assert declared.info["engine"] == "prefix" and declared.info["metric_positions"] == [3, 5, 6]
        assert (declared.scores - ref.scores).abs().max().item() <= TOL
    # a small memory budget only changes the chunking
    small = patch_heads(ns, clean, corrupt, metric, per_position=True, max_memory="20KB", show_progress=False)
    assert (small.scores - ref.scores).abs().max().item() <= TOL


def test_sdpa_attention_matches_eager(root):
    """HF's sdpa path passes no mask for a causal batch; the fast path then builds its own."""
    from transformers import AutoModelForCausalLM

    from headscope.loading import wrap
    from headscope.organisms.train import build_index_tokenizer

    path = tiny_model_dir("qwen2", root)
    clean, corrupt, ans, wrong = _prompts(2)
    metric = _last(ans, wrong)
    out = []
    for impl in ("eager", "sdpa"):
        hf = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=impl).eval()
        m = wrap(hf, build_index_tokenizer(VOCAB), "nnsight", name=impl)
        out.append(patch_heads(m, clean, corrupt, metric, per_position=True, show_progress=False).scores)
    assert (out[0] - out[1]).abs().max().item() <= TOL


def test_unchanged_prefix_scores_exactly_zero(root):
    model = load_model(str(tiny_model_dir("gpt2", root)), "nnsight")
    clean, corrupt, ans, wrong = _prompts(3)
    res = patch_heads(model, clean, corrupt, _last(ans, wrong), per_position=True, show_progress=False)
    first = int(first_difference(clean, corrupt).min())
    assert first == 2
    # patching before every row's first difference is the identity: exactly "no effect"
    assert torch.all(res.scores[:, :first] == 0)
    assert torch.all(torch.isfinite(res.scores))


def test_metric_positions_probe_and_declaration():
    logits = torch.randn(2, 5, 11)
    assert metric_positions(lambda lg: lg[:, -1, 3].mean(), logits)[0] == [4]
    assert metric_positions(lambda lg: lg[:, 1, 3].mean(), logits)[0] == [0, 1, 2, 3, 4]
    assert metric_positions(lambda lg: lg[:, [1, 4], 3].sum(), logits, declared=[1, -1]) == ([1, 4], "declared")
    with pytest.raises(HeadscopeError, match="outside its declared positions"):
        metric_positions(lambda lg: lg[:, 2, 3].mean(), logits, declared=[-1])


def test_metric_columns_probe():
    """The vocabulary columns a metric reads: its gradient's support, accepted only if the
    metric on logits with every other entry NaN is unchanged."""
    lg = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(0))
    ans, wrong = torch.tensor([4, 7, 9]), torch.tensor([5, 8, 30])

    def diff(x):
        return (x[:, -1].gather(-1, ans[:, None]) - x[:, -1].gather(-1, wrong[:, None])).mean()

    assert metric_columns(diff, lg, [4]).tolist() == [4, 5, 7, 8, 9, 30]
    assert metric_columns(lambda x: x[:, -1].log_softmax(-1).gather(-1, ans[:, None]).mean(), lg, [4]) is None
    assert metric_columns(lambda x: (x[:, -1].argmax(-1) == ans).float().mean(), lg, [4]) is None  # no gradient
    lg[:, -1, 3] = -1.0  # a column the metric reads where its gradient vanishes: the NaN test catches it
    assert metric_columns(lambda x: torch.relu(x[:, -1, 3]).mean() + x[:, -1, 6].mean(), lg, [4]) is None


def test_metric_reading_every_column_takes_the_full_unembedding(root):
    model = load_model(str(tiny_model_dir("llama", root)), "tl")
    clean, corrupt, ans, _ = _prompts(2)

    def logprob(lg):
        return lg[:, -1].log_softmax(-1)[torch.arange(lg.shape[0]), ans].mean()

    kw = {"per_position": True, "normalize": False, "show_progress": False}
    ours = patch_heads(model, clean, corrupt, logprob, **kw)
    ref = patch_heads(model, clean, corrupt, logprob, fast=False, **kw)
    assert ours.info["metric_columns"] == "all" and ours.info["engine"] == "prefix"
    assert (ours.scores - ref.scores).abs().max().item() <= TOL
    narrow = patch_heads(model, clean, corrupt, _last(ans, (ans + 1) % VOCAB), per_position=True, show_progress=False)
    assert isinstance(narrow.info["metric_columns"], int) and narrow.info["metric_columns"] <= 2 * clean.shape[0]


def test_parse_memory():
    assert parse_memory("256MB") == 256 * 2**20
    assert parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert parse_memory(4096) == 4096
    for bad in ("lots", "-3MB", 0):
        with pytest.raises(HeadscopeError):
            parse_memory(bad)


def test_bridges_restored_even_when_the_metric_raises(root):
    model = load_model(str(tiny_model_dir("llama", root)), "tl")
    clean, corrupt, ans, wrong = _prompts(4)
    metric = _last(ans, wrong)
    attn = model.hf_model.model.layers[1]._original_component.self_attn
    before = model.logits(clean)
    calls = {"n": 0}

    def flaky(lg):
        calls["n"] += 1
        if calls["n"] > 4:  # after the clean/corrupt runs and the probe: inside the sweep
            raise RuntimeError("metric failed")
        return metric(lg)

    with pytest.raises(RuntimeError, match="metric failed"):
        patch_heads(model, clean, corrupt, flaky, per_position=True, show_progress=False)
    assert model.hf_model.model.layers[1]._original_component.self_attn is attn
    assert "forward" not in attn._original_component.__dict__
    assert torch.equal(model.logits(clean), before)
    _, cache = model.bridge.run_with_cache(clean)  # the bridge's hook points still fire
    assert "blocks.1.attn.hook_z" in cache


def test_nnsight_traces_still_work_after_a_sweep(root):
    """The sweep swaps the patched layer's attention forward for a moment; nnsight keeps its
    own wrapper in that same instance slot, which must come back."""
    model = load_model(str(tiny_model_dir("llama", root)), "nnsight")
    clean, corrupt, ans, wrong = _prompts(7)
    attn = model.hf_model.model.layers[1].self_attn
    wrapper = attn.__dict__.get("forward")
    _, before = model.run_with_cache(clean)
    patch_heads(model, clean, corrupt, _last(ans, wrong), per_position=True, show_progress=False)
    assert attn.__dict__.get("forward") is wrapper
    _, after = model.run_with_cache(clean)  # reads attention outputs (patterns) through nnsight
    for key in before.keys():
        assert torch.equal(before[key], after[key]), key


def test_active_hooked_patches_use_the_general_path(root):
    model = load_model(str(tiny_model_dir("llama", root)), "nnsight")
    clean, corrupt, ans, wrong = _prompts(5)
    steer = Patch(layer=0, head=1, mode="zero")
    metric = _last(ans, wrong)
    with model.hooked([steer]):
        res = patch_heads(model, clean, corrupt, metric, show_progress=False, normalize=False)
    assert res.info["engine"] == "full"
    # the reference: the steering patch and each sweep patch applied together, by hand
    L, h = 1, 2
    cl_logits, cl_cache = model.run_with_heads(clean, sites=("z",))
    with model.hooked([steer]):
        _, cl_cache = model.run_with_heads(clean, sites=("z",))
    value = cl_cache.z[L]
    mask = torch.zeros_like(value, dtype=torch.bool)
    mask[:, :, h] = True
    by_hand = model.run_patched(corrupt, [steer, Patch(layer=L, site="z", value=value, mask=mask)])
    assert abs(float(metric(by_hand)) - float(res.scores[L, h])) <= TOL


def test_bfloat16_sweep_reports_its_error(root):
    model = load_model(str(tiny_model_dir("gpt2", root)), "tl")
    clean, corrupt, ans, wrong = _prompts(6)
    metric = _last(ans, wrong)
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    low = patch_heads(model, clean, corrupt, metric, per_position=True, dtype="bfloat16", normalize=False,
                      show_progress=False)  # fmt: skip
    full = patch_heads(model, clean, corrupt, metric, per_position=True, normalize=False, show_progress=False)
    rep = low.info["dtype_error"]
    assert low.info["dtype"] == "bfloat16" and rep["layers_checked"] == [0, 1]
    err = (low.scores[rep["layers_checked"]] - full.scores[rep["layers_checked"]]).abs().max().item()
    assert abs(rep["max_abs_vs_float32"] - err) <= 1e-7
    assert 0 < err < 0.05 * full.scores.abs().max().item()  # bf16 rounds (8 bits of mantissa), but stays close
    after = model.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)
    with pytest.raises(HeadscopeError, match="unknown sweep dtype"):
        patch_heads(model, clean, corrupt, metric, dtype="int8", show_progress=False)
