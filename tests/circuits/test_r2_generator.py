"""The second v3 registration's specs are the generator's output, and its rule does what the
protocol (experiments/circuit_specs_v3.py) says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from headscope.circuits.check import ranks_by_abs

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("circuit_specs_v3", ROOT / "experiments/circuit_specs_v3.py")
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_ranks_match_the_checker():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 8, generator=g).round(decimals=1)  # rounding makes ties
    s[2, 3] = -s[1, 1]  # a tie across signs
    assert gen._ranks(s.tolist()) == ranks_by_abs(s).tolist()


@pytest.mark.parametrize("model", gen.MODELS)
def test_committed_specs_are_the_generators_output(tmp_path, monkeypatch, model):
    import json

    src = gen.json_path(model)
    if not src.exists():
        pytest.skip(f"{src.name} not measured")
    first = gen.spec_path(model, "X", "x/y")  # where this model's specs live, and their prefix
    committed = sorted(first.parent.glob(first.name.split("r2_")[0] + "r2_*.toml"))
    monkeypatch.setattr(gen, "SPEC_DIR", tmp_path)
    written = gen.write(json.loads(src.read_text()))
    assert sorted(p.name for p in written) == [p.name for p in committed]
    for p, w in zip(committed, sorted(written, key=lambda q: q.name)):
        assert w.read_text() == p.read_text(), f"{p.name} was edited by hand"


def _res(frames: list[list[list[float]]]) -> dict:
    return {
        "frames": [f"f{i}" for i in range(len(frames))],
        "scores": {"A/noise": {f"f{i}": {"scores": s} for i, s in enumerate(frames)}},
    }


def test_pin_rule():
    # 1 layer x 6 heads, two frames. Head 0 rank 1 in both; head 1 rank 2 then 3; head 2 rank
    # 3 then 2 but changes sign; head 3 rank 4 then 5 (not pinned); heads 4, 5 small.
    f0 = [[-0.50, -0.40, -0.30, -0.20, -0.01, 0.0]]
    f1 = [[-0.60, -0.25, +0.35, -0.10, -0.15, 0.0]]
    got = {h["head"]: h for h in gen.pins(_res([f0, f1]))["A/noise"]}
    assert list(got) == ["L0H0", "L0H2", "L0H1"]  # by worst rank, then weakest |score|
    assert got["L0H0"]["expect"] == ["rank <= 1", "score <= -0.32"]  # 0.65 x -0.50 = -0.325 -> -0.32
    assert got["L0H1"]["expect"] == ["rank <= 3", "score <= -0.16"]  # 0.65 x -0.25 = -0.1625
    assert got["L0H2"]["expect"] == ["rank <= 3"]  # sign changes: rank only
    # positive scores get a lower bound
    pos = gen.pins(_res([[[0.5, 0.1, 0, 0, 0, 0]]]))["A/noise"]
    assert pos[0]["expect"] == ["rank <= 1", "score >= 0.32"]
