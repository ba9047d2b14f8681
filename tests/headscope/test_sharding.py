"""Sharded patching sweeps on Ray (headscope/sharding.py): 2 local workers equal the
single-process sweep exactly; a worker killed mid-sweep is retried and the result is
still identical; an interrupted sweep resumes from its checkpoint without recomputing
finished layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from headscope.archcheck import VOCAB, tiny_model_dir
from headscope.common.errors import HeadscopeError
from headscope.common.threads import num_threads
from headscope.loading import load_model
from headscope.patching import patch_heads
from headscope.sharding import sharded_patch_heads, start_ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (sharded_patch_heads reuses a running Ray)."""
    start_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = str(tiny_model_dir("llama", tmp_path_factory.mktemp("shard")))
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(4, VOCAB, (3, 6), generator=g)
    clean[:, 0] = 2
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(4, VOCAB, (3,), generator=g)
    ans = torch.randint(4, VOCAB, (3,), generator=g)
    wrong = (ans + 1 - 4) % (VOCAB - 4) + 4
    model = load_model(path, "tl", device="cpu")
    with num_threads(1):
        ref = patch_heads(model, clean, corrupt, Metric(ans, wrong), per_position=True, normalize=False,
                          show_progress=False)  # fmt: skip
    return path, clean, corrupt, ans, wrong, ref


class Metric:
    """A picklable logit-difference metric; with ``die_once`` the first worker that
    calls it in the sweep for layer 1 exits hard (a killed worker), once."""

    def __init__(self, ans, wrong, die_once: str | None = None) -> None:
        self.ans, self.wrong, self.die_once = ans, wrong, die_once
        self.calls = 0

    def __call__(self, lg):
        self.calls += 1
        if self.die_once and self.calls > 3 and not Path(self.die_once).exists():
            Path(self.die_once).write_text("died")
            os._exit(1)
        idx = torch.arange(lg.shape[0])
        return (lg[:, -1][idx, self.ans] - lg[:, -1][idx, self.wrong]).mean()


def test_two_workers_equal_single_process_and_survive_a_killed_worker(setup, tmp_path):
    path, clean, corrupt, ans, wrong, ref = setup
    marker = tmp_path / "died"
    res = sharded_patch_heads(path, clean, corrupt, Metric(ans, wrong, die_once=str(marker)), workers=2,
                              per_position=True, normalize=False)  # fmt: skip
    assert marker.exists()  # a worker really died mid-sweep and its layer was retried
    assert torch.equal(res.scores, ref.scores)
    assert res.info["sharding"]["layers_computed"] == ref.scores.shape[0]


def test_resume_skips_finished_layers(setup, tmp_path):
    path, clean, corrupt, ans, wrong, ref = setup
    ck = tmp_path / "ck"
    first = sharded_patch_heads(path, clean, corrupt, Metric(ans, wrong), workers=1, checkpoint=ck, layers=[0],
                                per_position=True, normalize=False)  # fmt: skip
    assert first.info["sharding"]["layers_computed"] == 1
    # mark the saved layer so that a recomputation would be visible
    saved = torch.load(ck / "layer_000.pt", weights_only=False)
    saved["scores"] = saved["scores"] + 1000.0
    torch.save(saved, ck / "layer_000.pt")
    res = sharded_patch_heads(path, clean, corrupt, Metric(ans, wrong), workers=2, checkpoint=ck,
                              per_position=True, normalize=False)  # fmt: skip
    assert res.info["sharding"] == {**res.info["sharding"], "layers_computed": 1, "layers_loaded": 1}
    assert torch.equal(res.scores[0], ref.scores[0] + 1000.0)  # loaded, not recomputed
    assert torch.equal(res.scores[1], ref.scores[1])
    with pytest.raises(HeadscopeError, match="different sweep"):
        sharded_patch_heads(path, clean, corrupt, Metric(ans, wrong), workers=1, checkpoint=ck, mode="noise",
                            per_position=True, normalize=False)  # fmt: skip


def test_bad_inputs(setup):
    path, clean, corrupt, ans, wrong, _ = setup
    with pytest.raises(HeadscopeError, match="name or folder"):
        sharded_patch_heads(load_model(path, "tl"), clean, corrupt, Metric(ans, wrong))  # type: ignore[arg-type]
    with pytest.raises(HeadscopeError, match="do not exist"):
        sharded_patch_heads(path, clean, corrupt, Metric(ans, wrong), layers=[7])
