"""``headscope arith`` on organism v3: its prompt rows (``arith_v3_rows``) and the CLI wiring.

- rows: held-out + / − items only (never training pairs), the ``train`` split on the identify
  half in training frames and ``heldout`` on the evaluate half in held-out frames, disjoint
  by item; answers are the leading digit of A ± B (recomputed here); the counterfactual is
  the prompt with the operator replaced by ``@``, of equal token length;
- ``arith identify --model llama`` gives what the Python API gives on those rows, and selects
  the heads of the committed paper table's operator map (experiments/arith_v3_table.py,
  another sampling of the same half and frames).
"""

from __future__ import annotations

import json

import pytest

from headscope.common.errors import HeadscopeError
from headscope.tasks.arithmetic_v3 import V3_ARITH_SPLITS, _world, arith_v3_rows, part_of


@pytest.fixture(scope="module")
def model():
    from headscope.loading import load_model

    return load_model("llama", backend="tl")


def test_rows_are_heldout_items_split_by_half_and_frame(model):
    w, _ = _world(0)
    by_split = {sp: arith_v3_rows(split=sp, organism="llama") for sp in ("train", "heldout")}
    items = {sp: {(r["op"], r["a"], r["b"]) for r in rows} for sp, rows in by_split.items()}
    assert items["train"] and items["heldout"] and not items["train"] & items["heldout"]
    train_frames = {op: {n for n, _, _ in w.frames[op]["train"]} for op in ("add", "sub")}
    for sp, rows in by_split.items():
        frames, part = V3_ARITH_SPLITS[sp]
        for r in rows:
            op, a, b = r["op"], r["a"], r["b"]
            assert (a, b) not in w.pairs[op]["train"] and (a, b) in w.pairs[op]["heldout"]
            assert part_of(op, a, b) == part and r["frame"] in frames
            assert (r["frame"] in train_frames[op]) == (sp == "train")
            c = a + b if op == "add" else a - b
            assert r["c"] == c and r["answer"] == str(c)[0] and 10 <= c <= 99
            sym = " + " if op == "add" else " - "
            assert r["corrupt"] == r["prompt"].replace(sym, " @ ", 1) != r["prompt"]
        lens = {(len(model.to_tokens(r["prompt"])[0]), len(model.to_tokens(r["corrupt"])[0])) for r in rows[:40]}
        assert all(x == y for x, y in lens)
    assert len(arith_v3_rows(organism="llama")) == len(by_split["train"]) + len(by_split["heldout"])
    with pytest.raises(HeadscopeError, match="memorised table"):
        arith_v3_rows(ops=("mul",))


def test_cli_identify_equals_the_api_and_the_paper_table(model, tmp_path):
    from headscope.cli import main
    from headscope.papers import arithmetic as ar

    assert main(["arith", "identify", "--model", "llama", "--split", "train", "--per-group", "64",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    got = json.loads(next(tmp_path.glob("llama_arith_identify_*.json")).read_text())
    rows = ar.filter_correct(model, arith_v3_rows(split="train", organism="llama"))
    sel = ar.identify(model, rows, max_per_group=64, show_progress=False)
    assert got["heads"] == [list(h) for h in sel.heads]
    flat = [x for row in got["scores"] for x in row]
    assert flat == pytest.approx(sel.scores.scores.flatten().tolist(), abs=1e-6)
    from pathlib import Path

    table = json.loads((Path(__file__).parents[2] / "docs/results/arith_v3.json").read_text())
    assert [f"L{L}H{H}" for L, H in got["heads"]] == table["identify"]["operator"]["heads"]
