"""Bounded memory for large prompt sets: task sweeps in chunks of prompt pairs equal the
one-batch sweep, and activation caches that spill to safetensors shards equal the
in-memory cache of one ``run_with_heads``."""

from __future__ import annotations

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.loading import load_model
from headscope.patching import patch_task
from headscope.spill import cache_activations
from headscope.tasks import get_task


@pytest.fixture(scope="module")
def llama():
    return load_model("llama-v2", "tl")


@pytest.mark.parametrize(
    "kw", [{"mode": "denoise"}, {"mode": "noise", "per_position": True}, {"sites": "resid_pre"}], ids=str
)
def test_chunked_task_sweep_equals_one_batch(llama, kw):
    batch = get_task("arithmetic", n=40, seed=3).prepare(llama)
    one = patch_task(llama, batch, max_pairs=None, show_progress=False, **kw)
    chunked = patch_task(llama, batch, max_pairs=16, show_progress=False, **kw)
    assert chunked.info["n_chunks"] == 3 and chunked.info["n_pairs"] == 40
    assert abs(chunked.info["metric_clean"] - one.info["metric_clean"]) <= 1e-5
    assert float((chunked.scores - one.scores).nan_to_num().abs().max()) <= 1e-5
    assert float(one.scores.nan_to_num().abs().max()) > 0.1
    with pytest.raises(HeadscopeError, match="max_pairs"):
        patch_task(llama, batch, max_pairs=0, show_progress=False, **kw)


def test_spilled_cache_equals_one_run(llama, tmp_path):
    tokens = get_task("arithmetic", n=13, seed=1).prepare(llama).clean
    _, ref = llama.run_with_heads(tokens, layers=[1, 4], sites=("z", "resid_pre"))
    per_chunk = 4 * tokens.shape[1] * llama.n_heads * llama.d_head * 4  # bytes of one chunk's z at one layer
    spilled = cache_activations(
        llama, tokens, ("z", "resid_pre"), [1, 4], max_pairs=4, max_memory=per_chunk, spill_dir=tmp_path,
        show_progress=False,
    )  # fmt: skip
    kept = cache_activations(
        llama, tokens, ("z", "resid_pre"), [1, 4], max_pairs=4, max_memory=None, show_progress=False
    )
    assert len(spilled.shards) == 4 and not kept.shards  # 13 prompts in chunks of 4: every chunk spills
    assert (
        spilled.nbytes_in_memory() == 0 and sorted(p.name for p in tmp_path.iterdir())[0] == "shard_00000.safetensors"
    )
    for site in ("z", "resid_pre"):
        for L in (1, 4):
            assert torch.allclose(spilled[site, L], ref.site(site)[L], atol=1e-6)
            assert torch.allclose(kept.get(site, L), ref.site(site)[L], atol=1e-6)
    with pytest.raises(HeadscopeError, match="was not cached"):
        spilled.get("z", 2)
    kept.close()
