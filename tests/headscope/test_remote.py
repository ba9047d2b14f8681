"""Remote execution through nnsight (``load_model(..., remote=...)``), tested with nnsight's
``remote="local"`` simulation: every request is serialised and deserialised with local
modules hidden, as on a server, then run here. Results must equal the local model's."""

from __future__ import annotations

import pytest
import torch

from headscope.attribution import attribution_patching
from headscope.common.errors import HeadscopeError
from headscope.common.metrics import logit_diff
from headscope.eap import edge_attribution
from headscope.loading import load_model
from headscope.patching import patch_heads, patch_layers, path_patch_heads
from headscope.tasks import get_task

TOL = 1e-5


@pytest.fixture(scope="module")
def pair():
    local = load_model("induction", "nnsight")
    remote = load_model("induction", "nnsight", remote="local")
    b = get_task("induction", n=3).prepare(local)
    return local, remote, b.clean, b.corrupt, lambda lg: logit_diff(lg, b.answer, b.wrong)


class _Count:
    """Counts nnsight sessions and traces sent with ``remote=``."""

    def __init__(self, monkeypatch, nn_model):
        self.sessions, self.remote_traces = 0, 0
        cls = type(nn_model)
        session, trace = cls.session, cls.trace

        def counted_session(obj, *a, **k):
            self.sessions += bool(k.get("remote"))
            return session(obj, *a, **k)

        def counted_trace(obj, *a, **k):
            self.remote_traces += bool(k.get("remote"))
            return trace(obj, *a, **k)

        monkeypatch.setattr(cls, "session", counted_session)
        monkeypatch.setattr(cls, "trace", counted_trace)


def test_plain_runs_equal_local(pair, monkeypatch):
    local, remote, clean, _, _ = pair
    count = _Count(monkeypatch, remote.nn_model)
    assert torch.allclose(remote.logits(clean), local.logits(clean), atol=TOL)
    assert count.remote_traces == 1 and count.sessions == 0


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_head_sweeps_run_as_one_session_and_equal_local(pair, mode, monkeypatch):
    local, remote, clean, corrupt, metric = pair
    ref = patch_heads(local, clean, corrupt, metric, mode=mode, per_position=True, show_progress=False)
    count = _Count(monkeypatch, remote.nn_model)
    got = patch_heads(remote, clean, corrupt, metric, mode=mode, per_position=True, show_progress=False)
    assert count.sessions == 1 and count.remote_traces == 0  # one job for the whole sweep
    assert got.info["engine"] == "full" and ref.info["engine"] == "prefix"
    assert float((got.scores - ref.scores).abs().max()) <= TOL
    assert float(got.scores.abs().max()) > 0.1  # the corruption matters


def test_other_analyses_equal_local(pair):
    local, remote, clean, corrupt, metric = pair
    for receiver in (None, (1, 0)):  # to the logits; to an induction head's query
        a = path_patch_heads(local, clean, corrupt, metric, receiver=receiver, show_progress=False)
        b = path_patch_heads(remote, clean, corrupt, metric, receiver=receiver, show_progress=False)
        assert float((a.scores - b.scores).nan_to_num().abs().max()) <= TOL
    a = patch_layers(local, clean, corrupt, metric, show_progress=False)
    b = patch_layers(remote, clean, corrupt, metric, show_progress=False)
    assert float((a.scores - b.scores).nan_to_num().abs().max()) <= TOL
    a = attribution_patching(local, clean, corrupt, metric)
    b = attribution_patching(remote, clean, corrupt, metric)
    assert float((a.scores - b.scores).abs().max()) <= TOL
    assert not remote._in_session  # the flag is reset after every sweep


def test_bad_remote_arguments(pair):
    _, remote, clean, corrupt, metric = pair
    with pytest.raises(HeadscopeError, match="through nnsight"):
        load_model("induction", "tl", remote="local")
    with pytest.raises(HeadscopeError, match="not understood"):
        load_model("induction", "nnsight", remote="somewhere")
    with pytest.raises(HeadscopeError, match="edge attribution"):
        edge_attribution(remote, clean, corrupt, metric)


def test_cli_remote_local_equals_local(tmp_path, capsys):
    from safetensors.torch import load_file

    from headscope.cli import main

    base = ["patch", "--model", "induction", "--task", "induction", "--backend", "nnsight", "-n", "4"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--remote", "local", "--out", str(tmp_path / "b")]) == 0
    (fa,) = (tmp_path / "a").glob("*.safetensors")
    (fb,) = (tmp_path / "b").glob("*.safetensors")
    a, b = load_file(str(fa)), load_file(str(fb))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=TOL) for k in a)
    assert main(["patch", "--model", "induction", "--remote", "local", "--out", str(tmp_path / "c")]) == 2
    assert "through nnsight" in capsys.readouterr().err
