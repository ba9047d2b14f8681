"""SAC's data on organism v3 (``headscope.tasks.sac_v3``).

- identification pairs are equal in token length and built from training items only,
  identify and fit disjoint by item; every scored prompt is a held-out item;
- the unpatched outcomes equal the bundled ``eval.json`` (greedy decoding with HF, left
  padding, first word of the text) — an independent computation of the same measures.
"""

from __future__ import annotations

import json

import pytest

from headscope.paths import organism_dir
from headscope.tasks import sac_v3

ALIAS = "llama-v3"


@pytest.fixture(scope="module")
def model():
    from headscope.loading import load_model

    return load_model(ALIAS, backend="tl")


@pytest.fixture(scope="module")
def data(model):
    return sac_v3.organism_v3_sac(model.tokenizer, kl_texts=8)


def test_pairs_are_equal_length_training_items(model, data):
    tok = model.tokenizer
    w = sac_v3._world()
    for name, task in data.tasks.items():
        assert len(task.pairs) >= 100, name
        for c, k in zip(task.pairs.clean, task.pairs.corrupt):
            assert len(tok(c)["input_ids"]) == len(tok(k)["input_ids"])
        ids = [(model.token_id(a), model.token_id(w)) for a, w in zip(task.pairs.answers, task.pairs.wrong)]
        assert all(a != w for a, w in ids)  # single tokens, distinct desired / undesired
    harm_eval = {a for acts in w.harm_eval.values() for a in acts}
    look_eval = {a for acts in w.look_eval.values() for a in acts}
    safety = data.tasks["safety"]
    for meta in safety.pairs.meta:
        assert meta["harmful"] not in harm_eval and meta["lookalike"] not in look_eval
        assert sac_v3.part_of(("req", meta["harmful"])) == "identify"
    fit_prompts = {s.prompt for s in safety.stimuli}
    assert fit_prompts and not fit_prompts & set(safety.pairs.clean + safety.pairs.corrupt)
    for ex in sac_v3.v3_eval_sets()["harmful_refusal"]:
        assert ex.item[0] in harm_eval and ex.split == "heldout"
    for ex in sac_v3.v3_eval_sets()["premise_correction"]:
        assert tuple(ex.item) in w.fact_eval


def test_unpatched_outcomes_equal_the_bundled_eval(model, data):
    sets = json.loads((organism_dir(ALIAS) / "eval.json").read_text())["sets"]
    out = sac_v3.v3_outcomes(model, [])
    for measure, (key, _) in sac_v3.EVAL_MAP.items():
        s = sets[key]
        desired = s["n"] - s["greedy_flawed"]["k"] - s["greedy_other"]["k"]
        assert len(out[measure]) == s["n"] and sum(out[measure]) == desired, measure
    add, sub = sets["arith_add/heldout"]["per_example"]["exact"], sets["arith_sub/heldout"]["per_example"]["exact"]
    assert out["arithmetic"] == (add + sub)[:: sac_v3.ARITH_EVERY]
    assert out["facts"] == sets["facts/heldout"]["per_example"]["exact"]
