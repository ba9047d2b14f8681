"""Shared controls, head selections, the head syntax and the model contract, against independent computations."""

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.controls import (
    PromptGroup,
    by_length,
    next_token_kl,
    path_patch_groups,
    pooled,
    random_heads,
    token_groups,
)
from headscope.model import FEATURES, HeadModel, require
from headscope.patching import path_patch_heads
from headscope.results import HeadResult, HeadSelection, format_head, parse_head, select_heads
from headscope.tasks import get_task

# -- random heads ------------------------------------------------------------------------


def test_random_heads_is_the_documented_draw():
    ex = [(0, 1), (2, 3)]
    pool = [(L, h) for L in range(4) for h in range(5) if (L, h) not in ex]
    g = torch.Generator().manual_seed(7)
    expected = sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:6].tolist())
    assert random_heads(4, 5, 6, seed=7, exclude=ex) == expected


def test_random_heads_never_draws_an_excluded_head_and_repeats_per_seed():
    sel = [(0, 0), (1, 3), (5, 7)]
    for seed in range(20):
        a = random_heads(6, 8, 10, seed, exclude=sel)
        assert a == random_heads(6, 8, 10, seed, exclude=sel)
        assert not set(a) & set(sel) and len(set(a)) == 10
    assert len({tuple(random_heads(6, 8, 3, s)) for s in range(20)}) > 1  # seeds differ


def test_random_heads_refuses_impossible_draws():
    with pytest.raises(HeadscopeError, match="cannot draw 4 random heads"):
        random_heads(1, 4, 4, 0, exclude=[(0, 0)])


# -- grouping, pooling, KL ---------------------------------------------------------------


class _WordTok:
    def __call__(self, text):
        return {"input_ids": [0] + [len(w) for w in text.split()]}


def test_by_length_groups_indices():
    texts = ["a b c", "a", "d e f", "g h"]
    assert by_length(texts, _WordTok()) == {4: [0, 2], 2: [1], 3: [3]}
    assert list(by_length(texts, _WordTok(), sort=True)) == [2, 3, 4]


def test_pooled_is_the_size_weighted_mean():
    v = [torch.tensor([1.0, 2.0]), torch.tensor([4.0, 8.0])]
    assert torch.allclose(pooled(v, [1, 3]), (v[0] * 1 + v[1] * 3) / 4)
    with pytest.raises(HeadscopeError):
        pooled(v, [1])


def test_next_token_kl_matches_torch_kl_div():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 11, generator=g), torch.randn(3, 5, 11, generator=g)
    toks = [torch.zeros(3, 5, dtype=torch.long)]
    lp, lq = a.log_softmax(-1), b.log_softmax(-1)
    ref_all = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1).mean()
    ref_last = torch.nn.functional.kl_div(lq[:, -1], lp[:, -1], log_target=True, reduction="none").sum(-1).mean()
    assert next_token_kl(lambda t: a, lambda t: b, toks, "all") == pytest.approx(float(ref_all), rel=1e-5)
    assert next_token_kl(lambda t: a, lambda t: b, toks, "last") == pytest.approx(float(ref_last), rel=1e-5)
    assert next_token_kl(lambda t: a, lambda t: a, toks) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(HeadscopeError, match="positions"):
        next_token_kl(lambda t: a, lambda t: b, toks, "first")  # type: ignore[arg-type]


def test_token_groups_batches_equal_lengths():
    groups = token_groups(["a b", "c d", "e", "f g"], _WordTok(), batch_size=2)
    assert [tuple(g.shape) for g in groups] == [(2, 3), (1, 3), (1, 2)]


def test_pooled_path_patching_of_one_group_is_path_patching(llama_tl):
    b = get_task("arithmetic", n=8).prepare(llama_tl)
    metric = b.metric_fn()
    ref = path_patch_heads(llama_tl, b.clean, b.corrupt, metric, show_progress=False)
    (got,) = path_patch_groups(llama_tl, [PromptGroup(b.clean, b.corrupt, metric)], normalize=True)
    assert torch.equal(torch.nan_to_num(got.scores), torch.nan_to_num(ref.scores))


# -- selections and the head syntax ------------------------------------------------------


@pytest.mark.parametrize("text", ["L9H6", "l9h6", "9.6", "9:6", [9, 6]])
def test_parse_head_forms(text):
    assert parse_head(text) == (9, 6)
    assert format_head((9, 6)) == "L9H6"


@pytest.mark.parametrize("text", ["9", "L9", "9.6.1", "x", [9], [True, 1]])
def test_parse_head_rejects(text):
    with pytest.raises(HeadscopeError, match="unknown head format"):
        parse_head(text)


def test_select_heads_orders_and_thresholds():
    s = torch.tensor([[0.5, -0.3, float("nan")], [-0.9, 0.1, -0.02]])
    assert select_heads(s, by="neg", k=2) == [(1, 0), (0, 1)]
    assert select_heads(s, by="abs", k=2) == [(1, 0), (0, 0)]
    assert select_heads(s, by="value", k=1) == [(0, 0)]
    assert select_heads(s, by="neg", threshold=-0.05) == [(1, 0), (0, 1)]
    assert select_heads(s, by="neg", threshold=-0.05, max_share=0.2) == [(1, 0)]
    assert (0, 2) not in select_heads(s, by="abs", k=5)  # NaN is never chosen


def test_head_selection_round_trip(tmp_path):
    res = HeadResult(torch.tensor([[0.5, -0.3], [-0.9, 0.1]]), ("layer", "head"), {}, {"method": "x"})
    sel = HeadSelection(res, [(1, 0)], "score <= -0.5", {"mlps": [0.1, 0.2]})
    assert sel.share == 0.25 and sel.top(2) == [(1, 0), (0, 1)]
    files = sel.save(tmp_path / "sel")
    back = HeadSelection.load(files[0])
    assert back.heads == [(1, 0)] and back.rule == "score <= -0.5" and back.extra == {"mlps": [0.1, 0.2]}
    assert torch.equal(back.scores.scores, res.scores)


# -- the model contract ------------------------------------------------------------------


def test_backends_implement_the_contract(llama_tl, llama_nn):
    for m in (llama_tl, llama_nn):
        assert isinstance(m, HeadModel)
        assert m.supports("fast_reentry") and m.supports("hf_weights") and not m.supports("teleport")
        assert m.final_norm() is not None and m.unembed_matrix().shape == (m.d_model, m.d_vocab_out)
        assert m.n_ctx is not None and m.n_ctx > 0


def test_require_names_the_missing_feature(llama_tl):
    require(llama_tl, "fast_reentry", "fast sweeps")
    with pytest.raises(HeadscopeError, match="unknown model feature"):
        require(llama_tl, "teleport", "x")
    assert set(FEATURES) >= {"fast_reentry", "generate", "hf_weights"}


def test_tracr_models_say_what_they_lack():
    from headscope.loading import load_model

    m = load_model("tracr:reverse")
    assert isinstance(m, HeadModel)
    assert not m.supports("fast_reentry") and not m.supports("generate") and not m.supports("hf_weights")
    assert m.final_norm() is None
    with pytest.raises(HeadscopeError, match="continues text"):
        require(m, "generate", "sycophancy evaluation")
