"""A model spread over CPU memory and disk by an accelerate device map gives the same
results as the same model in one piece (headscope.load_model(..., device_map=...)).

Route (no mock): layer 1, the final norm and the unembedding of a tiny Llama are offloaded to disk, so
accelerate keeps their weights on the meta device and loads them for every forward; the
analyses that read weights directly (DLA, edge attribution) go through the same hooks.
"""

from __future__ import annotations

import pytest
import torch

from headscope.archcheck import _inputs, _ld, tiny_model_dir
from headscope.attribution import attribution_patching, direct_logit_attribution
from headscope.common.errors import HeadscopeError
from headscope.eap import edge_attribution
from headscope.loading import load_model
from headscope.patching import patch_heads, path_patch_heads

MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "disk",
    "model.rotary_emb": "cpu",
    "lm_head": "disk",
}


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
def test_disk_offloaded_model_equals_the_whole_model(backend, tmp_path_factory):
    path = str(tiny_model_dir("llama", tmp_path_factory.mktemp("dm")))
    mapped = load_model(path, backend, device_map=MAP)
    whole = load_model(path, backend)
    assert mapped.hf_model.hf_device_map["model.layers.1"] == "disk"
    assert any(p.is_meta for p in mapped.hf_model.model.layers[1].parameters())  # really offloaded
    clean, corrupt, ans, wrong = _inputs()

    def metric(lg):
        return _ld(lg, ans, wrong)

    results = {}
    for m in (mapped, whole):
        results.setdefault("logits", []).append(m.logits(clean))
        for fast in (True, False):
            for per_position in (True, False):
                r = patch_heads(m, clean, corrupt, metric, per_position=per_position, fast=fast, normalize=False,
                                show_progress=False)  # fmt: skip
                results.setdefault(f"patch {fast} {per_position}", []).append(r.scores)
        results.setdefault("path", []).append(
            path_patch_heads(m, clean, corrupt, metric, normalize=False, show_progress=False).scores
        )
        results.setdefault("attribution", []).append(attribution_patching(m, clean, corrupt, metric).scores)
        results.setdefault("dla", []).append(direct_logit_attribution(m, clean, ans, wrong).scores)
        for method in ("eap", "exact"):
            results.setdefault(method, []).append(edge_attribution(m, clean, corrupt, metric, method=method).scores)
    for name, (a, b) in results.items():
        assert torch.allclose(a, b, atol=1e-6, equal_nan=True), name
    # the offloaded weights are back on the meta device after the analyses
    assert any(p.is_meta for p in mapped.hf_model.model.layers[1].parameters())


def test_placement_arguments_need_a_device_map(tmp_path_factory):
    path = str(tiny_model_dir("llama", tmp_path_factory.mktemp("dm2")))
    with pytest.raises(HeadscopeError, match="go with device_map"):
        load_model(path, "nnsight", max_memory={"cpu": "1GB"})
