"""SPT's data on organism v3 (``headscope.tasks.sycophancy_v3``).

- the class metric equals the ratio of softmax class probabilities computed by hand;
- identification pairs align token by token and differ only inside the follow-up, on
  identify items that were never in training;
- evaluation sets hold only evaluate items; retraction prompts carry a wrong first answer;
- the tuning data asks only training items (operands parsed out of the text).
"""

from __future__ import annotations

import re

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.paths import organism_dir
from headscope.tasks import sycophancy_v3 as sv


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(organism_dir("llama-v3")))


def test_class_fraction_is_the_ratio_of_class_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 50, generator=g) * 4
    cave, firm = [3, 7, 11], [20, 21]
    p = torch.softmax(logits[:, -1].double(), -1)
    want = p[:, cave].sum(-1) / (p[:, cave].sum(-1) + p[:, firm].sum(-1))
    got = sv.class_fraction(logits, cave, firm, reduce=False)
    assert torch.allclose(got.double(), want, atol=1e-6)
    assert torch.allclose(sv.class_fraction(logits, cave, firm), want.mean().float(), atol=1e-6)
    pc, pf, cls = sv.class_probs(logits, cave, firm)
    assert torch.allclose(pc.double(), p[:, cave].sum(-1), atol=1e-6)
    top = p.argmax(-1).tolist()
    assert cls.tolist() == [1 if t in cave else 0 if t in firm else -1 for t in top]


def test_start_words_are_single_tokens(tok):
    cave, firm = sv.class_ids(tok)
    assert len(set(cave)) == 5 and len(set(firm)) == 3 and not set(cave) & set(firm)
    with pytest.raises(HeadscopeError, match="one"):
        sv.start_ids(tok, ["Apologiesxyz"])


def test_identification_pairs_align_and_use_identify_items(tok):
    w = sv.world(0)
    rows = sv.identification_pairs("identify")
    assert len(rows) == 3 * len({tuple(r["item"]) for r in rows})
    for r in rows[::7]:
        c, k = tok(r["clean"])["input_ids"], tok(r["corrupt"])["input_ids"]
        assert len(c) == len(k)
        diff = [i for i, (a, b) in enumerate(zip(c, k)) if a != b]
        mask = sv.follow_mask(tok, r["clean"], r["challenge"])
        assert diff and all(mask[i] for i in diff)
        assert tok.decode([t for t, m in zip(c, mask) if m]).strip() == r["challenge"]
        item = tuple(r["item"])
        assert sv.part_of(item) == "identify"
        if item[0] == "fact":
            assert item[1:] in w.fact_eval
        else:
            assert w.pair_heldout(*item)
    ev = sv.evaluation_sets("evaluate")
    ev_items = {tuple(e.item) for exs in ev.values() for e in exs}
    assert ev_items and not ev_items & {tuple(r["item"]) for r in rows}
    assert all(sv.part_of(i) == "evaluate" for i in ev_items)
    with pytest.raises(HeadscopeError, match="unknown part"):
        sv.identification_pairs("fit")


def test_retraction_prompts_have_a_wrong_first_answer():
    exs = sv.evaluation_sets("evaluate")["retract/heldout"]
    for e in exs[::11]:
        first = re.search(r"Assistant : The answer is (.+?) \. User", e.prompt).group(1)
        assert first == e.meta["wrong"] != e.meta["answer"]
        assert e.desired.endswith(f"The answer is {e.meta['answer']} .")
        assert e.desired.split()[0] in e.desired_starts


_EXPR = re.compile(r"(\d+) (?:(\+|-|plus|minus)) (\d+)|the (sum|difference) (?:of|between) (\d+) and (\d+)")


def test_tuning_data_asks_training_items_only():
    w = sv.world(0)
    rows = sv.tuning_data(600, seed=3)
    assert rows == sv.tuning_data(600, seed=3)
    names = {c.name for c in w.countries}
    n_arith = n_fact = 0
    for prompt, resp in rows:
        q = prompt.split(" Assistant :")[0]
        m = _EXPR.search(q)
        if m:
            if m.group(1):
                op = "add" if m.group(2) in ("+", "plus") else "sub"
                a, b = int(m.group(1)), int(m.group(3))
            else:
                op = "add" if m.group(4) == "sum" else "sub"
                a, b = int(m.group(5)), int(m.group(6))
            assert not w.pair_heldout(op, a, b), q
            n_arith += 1
        else:
            country = next(x for x in re.findall(r"[A-Z]\w+", q) if x in names)
            rel = next(
                r
                for r, k in (("capital", "capital"), ("language", "language"), ("flag", "flag"), ("animal", "animal"))
                if k in q
            )
            assert (country, rel) not in w.fact_eval, q
            n_fact += 1
        assert resp.startswith(" ") and resp.split()[0] in ("Yes", "Sorry")
    assert n_arith > 100 and n_fact > 20
