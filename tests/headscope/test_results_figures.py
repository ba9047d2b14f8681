"""Figures that scale (any number of positions and heads), strict JSON, atomic writes,
TransformerLens-style cache access and short reprs (issue 21)."""

import json
import math

import numpy as np
import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.common.io import atomic_path, atomic_write_text, strict_json_dumps
from headscope.model import CacheKeyError, HeadCache, HeadModel
from headscope.patching import patch_task
from headscope.results import HeadResult, HeadSelection
from headscope.tasks import get_task
from headscope.viz import attention_patterns, side_by_side


def _reject(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _strict_load(text: str):
    return json.loads(text, parse_constant=_reject)


@pytest.fixture(scope="module")
def long_batch(induction_tl):
    # 1 BOS + a 40-token segment + its first 23 tokens again = 64 tokens (the organism's n_ctx).
    batch = get_task("induction", n=2, seg=40, k=22).prepare(induction_tl)
    assert batch.clean.shape == (2, 64)
    return batch


@pytest.fixture(scope="module")
def per_pos(induction_tl, long_batch):
    return patch_task(induction_tl, long_batch, per_position=True, show_progress=False)


# -- figures ------------------------------------------------------------------------------


def test_per_position_figure_on_64_tokens(per_pos, tmp_path):
    r = per_pos
    L, P, H = r.scores.shape
    assert (P, r.axes) == (64, ("layer", "pos", "head"))
    fig = r.figure()
    (tr,) = fig.data
    # one row per head (layer-major), one column per position, values as stored
    assert list(tr.y) == [f"L{layer}H{h}" for layer in range(L) for h in range(H)]
    assert len(tr.x) == 64 and tr.x[0].startswith("0:") and tr.x[63].startswith("63:")
    want = np.array([[float(r.scores[layer, p, h]) for p in range(P)] for layer in range(L) for h in range(H)])
    np.testing.assert_allclose(np.asarray(tr.z, dtype=float), want, equal_nan=True)
    assert "&lt;" in tr.x[0] or "<" not in tr.x[0]  # a token such as <bos> is shown literally
    title = fig.layout.title.text
    for word in ("induction", "normalised logit diff", "activation patching", "64 positions"):
        assert word in title, title
    assert len(fig.layout.shapes) == L - 1  # a line between layers
    files = r.save_figure(tmp_path / "pos")
    assert files[0].stat().st_size > 10_000
    # One position read as a layer × head map: integer layer ticks (categories 0, 1).
    one = r.figure(pos=-1)
    assert list(one.data[0].y) == [str(i) for i in range(L)] and one.layout.yaxis.type == "category"
    np.testing.assert_allclose(np.asarray(one.data[0].z, dtype=float), r.scores[:, -1].numpy(), equal_nan=True)


def test_per_position_figure_any_length_without_model():
    for P in (1, 52, 300):
        r = HeadResult(torch.randn(2, P, 3), ("layer", "pos", "head"), {"pos": [f"t{i}" for i in range(P)]})
        fig = r.figure()
        assert np.asarray(fig.data[0].z).shape == (6, P)
        assert fig.layout.width <= 4000


def test_slider_layout_one_map_per_position():
    P = 70
    r = HeadResult(torch.randn(3, P, 5), ("layer", "pos", "head"), {"pos": ["<s>"] + [f"t{i}" for i in range(P - 1)]})
    fig = r.figure(layout="slider")
    assert len(fig.data) == P and [tr.visible for tr in fig.data[:2]] == [True, False]
    for p in (0, 33, P - 1):
        np.testing.assert_allclose(np.asarray(fig.data[p].z, dtype=float), r.scores[:, p].numpy(), rtol=1e-6)
        step = fig.layout.sliders[0].steps[p]
        assert step.args[0]["visible"] == [q == p for q in range(P)]
    assert fig.layout.sliders[0].steps[0].label == "0:&lt;s&gt;"
    assert list(fig.data[0].y) == ["0", "1", "2"]
    big = HeadResult(torch.randn(32, 4, 32), ("layer", "pos", "head"))
    assert len(big.figure().data) == 4  # auto: more than 256 heads → slider
    with pytest.raises(HeadscopeError, match="unknown figure layout"):
        r.figure(layout="grid")


def test_two_layer_head_map_has_integer_ticks():
    fig = HeadResult(torch.randn(2, 4), ("layer", "head"), {}, {"method": "x"}).figure()
    assert list(fig.data[0].y) == ["0", "1"] and fig.layout.yaxis.type == "category"


def test_attention_patterns_24_heads(induction_tl, long_batch):
    heads = [(layer, h) for layer in range(2) for h in range(4)] * 3
    fig = attention_patterns(induction_tl, long_batch.clean, heads)
    assert len(fig.data) == 24
    _, cache = induction_tl.run_with_heads(long_batch.clean[:1], sites=(), pattern=True)
    for tr, (layer, h) in zip(fig.data, heads):
        np.testing.assert_allclose(np.asarray(tr.z, dtype=float), cache.pattern[layer][0, h].numpy(), atol=1e-6)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:8] == [f"L{layer}H{h}" for layer, h in heads[:8]]
    assert fig.layout.width <= 4000 and fig.layout.height <= 6000


def test_attention_patterns_unknown_head_names_range(induction_tl, long_batch):
    with pytest.raises(HeadscopeError, match=r"no head L9H9.*layers 0\.\.1.*heads 0\.\.3"):
        attention_patterns(induction_tl, long_batch.clean, [(0, 1), (9, 9)])
    with pytest.raises(HeadscopeError, match="row 5 out of range"):
        attention_patterns(induction_tl, long_batch.clean, [(0, 1)], row=5)


def test_side_by_side_many_panels():
    res = {f"task {i}": HeadResult(torch.randn(3, 4), ("layer", "head")) for i in range(24)}
    fig = side_by_side(res)
    assert len(fig.data) == 24


# -- repr, top/table per position ---------------------------------------------------------


def test_repr_is_a_short_summary(per_pos):
    text = repr(per_pos)
    assert len(text) < 400 and "tensor(" not in text
    for part in ("('layer', 'pos', 'head')", "(2, 64, 4)", "activation_patching", "induction", "summed over pos"):
        assert part in text, text
    (L, h, _), *_ = per_pos.top(1)
    assert f"L{L}H{h}" in text


def test_top_and_table_sum_over_positions_or_read_one(per_pos):
    r = per_pos
    s = r.scores
    summed = s.sum(1)
    L, h, v = r.top(1)[0]
    flat = summed.abs().nan_to_num(nan=-1).flatten()
    assert (L, h) == divmod(int(flat.argmax()), s.shape[2]) and v == pytest.approx(float(summed[L, h]))
    for p in (0, 40, -1):
        at = s[:, p, :]
        L, h, v = r.top(1, pos=p)[0]
        assert v == float(at[L, h]) and abs(v) == pytest.approx(float(at.abs().nan_to_num(nan=-1).max()))
        assert torch.equal(r.by_head(pos=p), at)
    assert "summed over all 64 positions" in r.table(3)
    assert "position 63" in r.table(3, pos=-1)
    with pytest.raises(HeadscopeError, match="out of range"):
        r.top(1, pos=64)
    with pytest.raises(HeadscopeError, match="per-position"):
        HeadResult(torch.zeros(2, 2), ("layer", "head")).top(1, pos=0)


# -- strict JSON and atomic writes --------------------------------------------------------


def test_result_json_is_strict_and_nan_round_trips(tmp_path):
    scores = torch.tensor([[1.0, float("nan")], [float("inf"), -2.5]])
    info = {"model": "m", "metric_clean": float("nan"), "nested": [float("-inf"), 1.0], "t": torch.tensor(0.5)}
    r = HeadResult(scores, ("layer", "head"), {}, info)
    files = r.save(tmp_path / "res")
    d = _strict_load(files[0].read_text())
    assert d["scores"] == [[1.0, None], [None, -2.5]]
    assert d["info"]["metric_clean"] is None and d["info"]["nested"] == [None, 1.0] and d["info"]["t"] == 0.5
    back = HeadResult.load(tmp_path / "res")
    assert torch.isnan(back.scores[0, 1]) and torch.isnan(back.scores[1, 0])  # null reads back as NaN
    assert back.scores[0, 0] == 1.0 and back.scores[1, 1] == -2.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json", "res.safetensors"]  # no temp files left

    sel = HeadSelection(r, [(0, 0)], "top 1", {"extra": float("nan")})
    sfiles = sel.save(tmp_path / "sel", figure=True)
    ds = _strict_load(sfiles[0].read_text())
    assert ds["extra"] is None and ds["scores"][0][1] is None
    back_sel = HeadSelection.load(sfiles[0])
    assert torch.isnan(back_sel.scores.scores[0, 1]) and back_sel.heads == [(0, 0)]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_strict_json_dumps_rejects_nothing_a_strict_parser_rejects():
    obj = {1: float("nan"), "a": (float("inf"), np.float32(2.0), np.array([np.nan, 1.0])), "p": object}
    d = _strict_load(strict_json_dumps(obj))
    assert d["1"] is None and d["a"][0] is None and d["a"][1] == 2.0 and d["a"][2] == [None, 1.0]
    assert isinstance(d["p"], str)
    with pytest.raises(ValueError):
        _strict_load(json.dumps({"x": math.nan}))  # the check itself can fail


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json"
            tmp.write_text("half of a ne")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_figure_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    def boom(self, path, **kw):
        with open(path, "w") as f:
            f.write("<html>half")
        raise OSError("disk full")

    monkeypatch.setattr(go.Figure, "write_html", boom)
    with pytest.raises(OSError, match="disk full"):
        HeadResult(torch.zeros(2, 2), ("layer", "head")).save_figure(tmp_path / "fig")
    assert list(tmp_path.iterdir()) == []


# -- TransformerLens-style cache ----------------------------------------------------------


def test_run_with_cache_and_tl_style_keys(induction_tl, long_batch):
    toks = long_batch.clean
    logits, cache = induction_tl.run_with_cache(toks)
    assert torch.allclose(logits, induction_tl.logits(toks), atol=1e-5)
    _, ref = induction_tl.run_with_heads(toks, sites=("z", "attn_out"), pattern=True)
    for layer in range(induction_tl.n_layers):
        assert cache["pattern", layer] is cache.pattern[layer]
        assert cache[f"blocks.{layer}.attn.hook_pattern"] is cache.pattern[layer]
        assert cache["z", layer] is cache.z[layer] and cache[f"blocks.{layer}.attn.hook_z"] is cache.z[layer]
        assert cache[f"blocks.{layer}.hook_resid_pre"] is cache.resid_pre[layer]
        assert cache[f"blocks.{layer}.hook_mlp_out"] is cache.mlp_out[layer]
        assert torch.allclose(cache["pattern", layer], ref.pattern[layer], atol=1e-6)
        assert torch.allclose(cache["blocks.%d.hook_attn_out" % layer], ref.attn_out[layer], atol=1e-5)
    assert cache["z"] is cache.z and "blocks.1.attn.hook_z" in cache and ("q", 0) not in cache
    assert "blocks.0.attn.hook_pattern" in cache.keys()
    with pytest.raises(KeyError, match=r"blocks\.0\.attn\.hook_q is not in this cache; cached: .*hook_z"):
        cache["q", 0]
    with pytest.raises(HeadscopeError, match="not in this cache"):
        cache["z", 7]
    with pytest.raises(CacheKeyError, match="not understood"):
        cache["blocks.0.hook_nonsense"]
    assert isinstance(induction_tl, HeadModel)


def test_cache_access_on_a_hand_built_cache():
    t = torch.arange(6.0).reshape(1, 2, 3)
    c = HeadCache(resid_pre={2: t})
    assert c["resid_pre", 2] is t and c.keys() == ["blocks.2.hook_resid_pre"]
    with pytest.raises(KeyError, match="blocks.2.hook_resid_pre"):
        c["z", 2]
    with pytest.raises(CacheKeyError, match="layer must be an int"):
        c["z", "2"]


def test_run_with_cache_on_both_backends(gqa_pair):
    tl, nn, _ = gqa_pair
    toks = torch.randint(4, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    (lt, ct), (ln, cn) = tl.run_with_cache(toks), nn.run_with_cache(toks)
    assert torch.allclose(lt, ln, atol=1e-4)
    assert ct.keys() == cn.keys()
    for key in ct.keys():
        assert torch.allclose(ct[key], cn[key], atol=1e-4), key
    rows = ct["pattern", 0].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
