"""The bundled organism v3 (``llama-v3``): loading on both backends, its card, its arithmetic task.

- both backends load it from its alias and give HF's logits;
- a head sweep on its arithmetic task agrees across backends;
- eval.json is this model's: greedy answers re-decoded here with HF ``generate`` match its
  per-example record, and CARD.md is what ``render_card`` makes of eval.json;
- the arithmetic task's items are held out, its halves disjoint, its answers right (from
  numbers parsed out of the prompt text).
"""

from __future__ import annotations

import json
import operator
import re

import pytest
import torch

from headscope.organisms.world_v3 import WorldV3
from headscope.paths import organism_dir
from headscope.tasks import get_task

ALIAS = "llama-v3"
FOLDER = organism_dir(ALIAS)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@pytest.fixture(scope="module")
def hf():
    from headscope.organisms.eval_v3 import load_v3

    return load_v3(FOLDER)


@pytest.fixture(scope="module")
def backends():
    from headscope.loading import load_model

    return load_model(ALIAS, backend="tl"), load_model(ALIAS, backend="nnsight")


def test_both_backends_load_the_alias_and_match_hf(hf, backends):
    model, tok = hf
    task = get_task("arithmetic_v3", n=6)
    with torch.no_grad():
        want = model(torch.tensor(tok(task.clean)["input_ids"])).logits
    for m in backends:
        got = m.logits(m.to_tokens(task.clean))
        assert torch.allclose(got.float(), want, atol=2e-4), type(m).__name__


def test_head_sweep_agrees_across_backends(backends):
    from headscope.patching import patch_heads

    tl, nn = backends
    batch_tl = get_task("arithmetic_v3", n=8).prepare(tl)
    batch_nn = get_task("arithmetic_v3", n=8).prepare(nn)
    a = patch_heads(tl, batch_tl.clean, batch_tl.corrupt, batch_tl.metric, show_progress=False).scores
    b = patch_heads(nn, batch_nn.clean, batch_nn.corrupt, batch_nn.metric, show_progress=False).scores
    assert a.shape == (6, 8)
    assert torch.allclose(a, b, atol=1e-4)
    # and the slow path (every copy through the whole model) agrees with the fast one
    c = patch_heads(tl, batch_tl.clean, batch_tl.corrupt, batch_tl.metric, fast=False, show_progress=False).scores
    assert torch.allclose(a, c, atol=1e-4)


def test_eval_json_is_this_models_greedy_output(hf):
    from headscope.organisms.eval_v3 import exact
    from headscope.organisms.world_v3 import eval_sets

    model, tok = hf
    res = json.loads((FOLDER / "eval.json").read_text())
    rec = res["sets"]["arith_add/heldout"]["per_example"]
    exs = eval_sets(0)["arith_add/heldout"]
    for i in range(0, len(exs), len(exs) // 12):
        ids = torch.tensor([tok(exs[i].prompt)["input_ids"]])
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1] :].tolist()).split(tok.eos_token)[0]
        assert exact(text, exs[i].desired) == rec["exact"][i], exs[i].prompt


def test_card_is_rendered_from_eval_json():
    from headscope.organisms.eval_v3 import render_card

    res = json.loads((FOLDER / "eval.json").read_text())
    assert (FOLDER / "CARD.md").read_text() == render_card(ALIAS, FOLDER, res)


def _parse(prompt: str) -> tuple[int, str, int]:
    m = re.fullmatch(r"(\d+) ([-+*]) (\d+) = ", prompt)
    assert m, prompt
    return int(m[1]), m[2], int(m[3])


@pytest.mark.parametrize("corruption", ["A", "B"])
def test_arithmetic_task_items_halves_and_answers(corruption):
    w = WorldV3(0)
    halves = {}
    for part in ("identify", "evaluate"):
        t = get_task("arithmetic_v3", corruption=corruption, part=part, n=None)
        keys = set()
        for clean, corrupt, ans, wrong, meta in zip(t.clean, t.corrupt, t.answers, t.wrong, t.meta):
            a, sym, b = _parse(clean)
            a2, sym2, b2 = _parse(corrupt)
            op = {"+": "add", "-": "sub"}[sym]
            assert w.pair_heldout(op, a, b), clean  # never in training
            assert sym2 == sym and (b2 == b if corruption == "A" else a2 == a)
            assert ans == str(OPS[sym](a, b))[0] and wrong == str(OPS[sym](a2, b2))[0] and ans != wrong
            assert OPS[sym](a2, b2) >= 0 and len(str(a2)) == len(str(a)) and len(str(b2)) == len(str(b))
            keys.add((op, a, b))
        halves[part] = keys
        assert len(keys) > 300
    assert not halves["identify"] & halves["evaluate"]


def test_operator_corruption_uses_trained_nulls_and_keeps_lengths(hf):
    _, tok = hf
    for frame in ("eq/sym", "question/word"):
        t = get_task("arithmetic_v3", corruption="operator", frame=frame, n=None)
        null = "@" if frame.endswith("sym") else "nothing"
        for clean, corrupt in zip(t.clean, t.corrupt):
            assert f" {null} " in corrupt and f" {null} " not in clean
            assert len(tok(clean)["input_ids"]) == len(tok(corrupt)["input_ids"])
        assert t.meta[0]["frame_heldout"] == frame.startswith("question")
