"""``headscope spt identify --model llama``: organism v3's identification (``identify_v3``).

The CLI writes what the API returns; the API's groups are the token-length groups of the
identification pairs, capped per group. (At the protocol's size, ``identify_v3`` on
``llama-v3-s1`` with 64 per group reproduces docs/results/spt_v3_s1.json's scores exactly;
that run takes minutes, so it is not repeated here.)
"""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def model():
    from headscope.loading import load_model

    return load_model("llama", backend="tl")


def test_cli_writes_the_api_selection(model, tmp_path):
    from headscope.cli import main
    from headscope.papers.spt.identify_v3 import identify_v3

    assert main(["spt", "identify", "--model", "llama", "-n", "2", "--k", "3", "--out", str(tmp_path)]) == 0
    got = json.loads(next(tmp_path.glob("llama_spt_identify_*.json")).read_text())
    sel = identify_v3(model, per_group=2, k=3, show_progress=False)
    assert got["heads"] == [list(h) for h in sel.heads] and len(sel.heads) == 3
    flat = [x for row in got["scores"] for x in row]
    assert flat == pytest.approx(sel.scores.scores.flatten().tolist(), abs=1e-6)
    assert sel.extra["n_prompts"] == 2 * sel.extra["groups"]  # every length group capped at 2
    # F on the unpatched prompts, recomputed here from the model's logits and a hand softmax
    from headscope.papers.spt.identify_v3 import length_groups
    from headscope.tasks import sycophancy_v3 as sv

    rows = sv.identification_pairs("identify")
    cave, firm = sv.class_ids(model.tokenizer)
    f = {"clean": [], "corrupt": []}
    for idx in length_groups([r["clean"] for r in rows], model.tokenizer, 2):
        for side in f:
            last = model.logits(model.to_tokens([rows[i][side] for i in idx]))[:, -1].double()
            p = last.softmax(-1)
            f[side] += (p[:, cave].sum(-1) / (p[:, cave].sum(-1) + p[:, firm].sum(-1))).tolist()
    assert sel.extra["f_orig"] == pytest.approx(sum(f["clean"]) / len(f["clean"]), abs=1e-5)
    assert sel.extra["f_counter"] == pytest.approx(sum(f["corrupt"]) / len(f["corrupt"]), abs=1e-5)


def test_length_groups_are_equal_length_and_capped(model):
    from headscope.papers.spt.identify_v3 import length_groups
    from headscope.tasks import sycophancy_v3 as sv

    clean = [r["clean"] for r in sv.identification_pairs("identify")]
    full = length_groups(clean, model.tokenizer, None)
    assert sorted(i for g in full for i in g) == list(range(len(clean)))
    lens = [{len(model.tokenizer(clean[i])["input_ids"]) for i in g} for g in full]
    assert all(len(s) == 1 for s in lens) and [min(s) for s in lens] == sorted(min(s) for s in lens)
    capped = length_groups(clean, model.tokenizer, 5, seed=1)
    assert all(set(c) <= set(f) and len(c) == min(5, len(f)) for c, f in zip(capped, full))
    assert capped == length_groups(clean, model.tokenizer, 5, seed=1)
