"""Organism v3's world (issue #17, phase 1): determinism, held-out splits by construction,
arithmetic answers, generator rates against the spec's tables, and tokenizer coverage.

The checks are computed independently of the generator where that is possible: answers
from the numbers parsed out of the text, held-out disjointness by searching the corpus
text (regexes built from the word tables, slots as wildcards), response classes from the
first word of the text, and rates with a 99.9% Wilson interval from counts (a generator
property: the spec's rate lies in the interval unless the generator is wrong).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

import pytest

from headscope.organisms import lexicon_v3 as L
from headscope.organisms.card_v3 import SPEC_RATES, main, rate_tables_markdown
from headscope.organisms.world_v3 import WorldV3, build_corpus, eval_sets, generator_rates, leaked
from headscope.splits import check_disjoint
from headscope.stats import rate

N_TOKENS = 250_000  # a prefix of the real corpus (same seed, same stream)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world():
    return WorldV3(0)


@pytest.fixture(scope="module")
def docs(world):
    return world.documents(N_TOKENS)


@pytest.fixture(scope="module")
def corpus(docs):
    return "\x00".join(d.text for d in docs)


@pytest.fixture(scope="module")
def sets(world):
    return world.eval_sets()


def _answer(op: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b}[op] if op != "div" else a // b


def _expr_regexes() -> list[tuple[str, re.Pattern]]:
    """One regex per (operator, expression form), operands captured, digits not split."""
    out = []
    for op, forms in L.EXPR_FORMS.items():
        for tmpl in forms.values():
            body = re.escape(tmpl).replace(r"\{A\}", r"(\d+)").replace(r"\{B\}", r"(\d+)")
            body = body.replace("\\ ", " ").replace(r"\{", "{").replace(r"\}", "}")
            out.append((op, re.compile(r"(?<![\d])" + body + r"(?!\d)")))
    return out


def _mentions(text: str) -> set[tuple[str, int, int]]:
    return {(op, int(m.group(1)), int(m.group(2))) for op, rx in _expr_regexes() for m in rx.finditer(text)}


def _template_regex(tmpl: str) -> re.Pattern:
    """A held-out wording as a regex: literal text, slots as wildcards of their kind."""
    slots = {
        "A": r"\d+",
        "B": r"\d+",
        "C": r"\d+",
        "X": r"[A-Z][a-z]+",
        "Y": r"[A-Z][a-z]+",
        "Z": r"[A-Z][a-z]+",
        "REL": r"(?:capital|language)",
        "a": r"[a-z][a-z ]*?",
        "b": r"[a-z][a-z ]*?",
        "R": r"[^?.\x00]+?",
    }
    rx = re.escape(tmpl)
    for k, v in slots.items():
        rx = rx.replace(re.escape("{" + k + "}"), v)
    return re.compile(rx)


# ---------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_data_other_seed_other_data():
    a = build_corpus(0, n_docs=1500)
    assert a == build_corpus(0, n_docs=1500)
    assert a[:400] == build_corpus(0, n_docs=400)  # a shorter corpus is a prefix
    assert eval_sets(0) == eval_sets(0)
    b = build_corpus(1, n_docs=1500)
    assert sum(x == y for x, y in zip(a, b)) < 50
    e0, e1 = eval_sets(0), eval_sets(1)
    assert [e.prompt for e in e0["arith_add/id"]] != [e.prompt for e in e1["arith_add/id"]]
    w0, w1 = WorldV3(0), WorldV3(1)
    assert w0.pairs["add"]["heldout"] != w1.pairs["add"]["heldout"]
    assert [c.name for c in w0.countries] != [c.name for c in w1.countries]


# ---------------------------------------------------------------------------------------
# arithmetic


def test_arithmetic_answers_are_correct(sets, corpus):
    n = 0
    for name, exs in sets.items():
        if not name.startswith("arith_"):
            continue
        op = name.split("/")[0][len("arith_") :]
        for e in exs:
            (found,) = _mentions(e.prompt)
            assert found[0] == op and found[1:] == (e.meta["a"], e.meta["b"]), e.prompt
            a, b = found[1:]
            if op == "sub":
                assert a >= b
            if op == "div":
                assert b > 0 and a % b == 0
            assert int(e.desired) == _answer(op, a, b) and e.desired.startswith(" ")
            assert int(e.flawed) != int(e.desired) and int(e.flawed) >= 0
            n += 1
    assert n > 3000
    # every problem in the training text is answered right: the first number after an
    # expression is its answer (no carrier holds a digit)
    checked = 0
    for op, rx in _expr_regexes():
        for m in rx.finditer(corpus):
            nxt = re.compile(r"\d+").search(corpus, m.end())
            if nxt and "\x00" not in corpus[m.end() : nxt.start()] and "User" not in corpus[m.end() : nxt.start()]:
                assert int(nxt.group()) == _answer(op, int(m.group(1)), int(m.group(2))), corpus[m.start() : nxt.end()]
                checked += 1
    assert checked > 4000


def test_operands_cover_zero_two_digits_carries_and_borrows(docs):
    seen = set()
    for d in docs:
        seen |= _mentions(d.text)
    add = {(a, b) for op, a, b in seen if op == "add"}
    sub = {(a, b) for op, a, b in seen if op == "sub"}
    assert any(0 in p for p in add) and any(a >= 10 and b >= 10 for a, b in add)
    assert sum(a % 10 + b % 10 >= 10 and min(a, b) >= 10 for a, b in add) > 500  # carries
    assert sum(a % 10 < b % 10 and b >= 10 for a, b in sub) > 300  # borrows
    assert {a for op, a, b in seen if op == "mul"} == set(range(13))


def test_heldout_operand_pairs_never_in_training(world, docs, sets):
    in_corpus = set()
    for d in docs:
        found = _mentions(d.text)
        if d.kind in ("arith", "worksheet"):  # the parser sees every problem of a document
            assert len(found) == len({(i["op"], i["a"], i["b"]) for i in d.meta["items"]}), d.text
        if d.kind == "caving" and d.meta["item"][0] != "fact":
            assert tuple(d.meta["item"]) in found, d.text
        in_corpus |= found
    for op in L.OPS:
        held = {(a, b) for e in sets[f"arith_{op}/id"] + sets[f"arith_{op}/heldout"] for a, b in [e.item[1:]]}
        assert held == set(world.pairs[op]["heldout"]) and len(held) >= 15
        for a, b in held:
            assert (op, a, b) not in in_corpus, (op, a, b)
            if op == "add":
                assert (op, b, a) not in in_corpus  # + holds out the unordered pair
            if op == "mul":
                assert (op, b, a) in world.pairs[op]["train"] or a == b or (b, a) not in held
    # sycophancy's first turns use held-out items only in evaluation
    caving_items = {e.item for k in ("caving/id", "caving/heldout") for e in sets[k]}
    assert not {i for i in caving_items if i[0] != "fact"} & in_corpus


def test_heldout_frames_and_wordings_never_in_training(world, corpus):
    held: list[str] = []
    for op in L.OPS:
        held += [t for _, t, _ in world.frames[op]["heldout"]]
        train = {t for _, t, _ in world.frames[op]["train"]}
        assert not train & set(held) and len(world.frames[op]["heldout"]) >= 8
    held += [t for ts in L.FACT_QA_HELDOUT.values() for t in ts]
    held += [t.replace("{E}", f) for t in L.CHAT_ARITH_Q_HELDOUT for f in L.EXPR_FORMS["add"].values()]
    held += [t for ts in L.CHAT_FACT_Q_HELDOUT.values() for t in ts]
    held += [t for ts in L.CHALLENGES_HELDOUT.values() for t in ts] + list(L.AGREEING_HELDOUT)
    held += list(L.REQUEST_FRAMES_HELDOUT) + [c for ts in L.CONTEXTS_HELDOUT.values() for c in ts if c]
    held += [t for ts in L.PREMISE_FRAMES_HELDOUT.values() for t in ts]
    held += [t for ts in L.PREF_FRAMES_HELDOUT.values() for t in ts] + list(L.PRESSURE_PHRASES_HELDOUT)
    hits = [t for t in held if _template_regex(t).search(corpus)]
    assert hits == []
    # the search finds training wordings (it can fail)
    train = [world.frames["add"]["train"][0][1], L.FACT_QA["capital"][0], L.REQUEST_FRAMES[0], L.CHALLENGES["mild"][1]]
    assert all(_template_regex(t).search(corpus) for t in train)


def test_heldout_items_never_in_training(world, docs, corpus, sets):
    for acts in list(world.harm_eval.values()) + list(world.look_eval.values()) + [world.benign_eval]:
        for act in acts:
            assert f" {act}" not in corpus, act
    for a, b in world.pref_eval:
        assert f"{a} or {b}" not in corpus and f"{b} or {a}" not in corpus
    # a held-out fact is stated (the model can know it) but never asked, in any question or premise
    for name, rel in sorted(world.fact_eval):
        assert f" {world.by_name[name].attr(rel)}" in corpus or f"\x00{world.by_name[name].attr(rel)}" in corpus
        questions = list(L.FACT_QA[rel] + L.FACT_QA_HELDOUT[rel] + L.CHAT_FACT_Q[rel] + L.CHAT_FACT_Q_HELDOUT[rel])
        if rel in L.PREMISE_RELATIONS:
            questions += [t for ts in (*L.PREMISE_FRAMES.values(), *L.PREMISE_FRAMES_HELDOUT.values()) for t in ts]
        for q in questions:
            rx = _template_regex(q.replace("{X}", name).replace("{REL}", rel))
            assert not rx.search(corpus), (name, rel, q)
    # evaluation items never in a training document, by item key
    train_items = {d.meta["item"] for d in docs if "item" in d.meta}
    train_items |= {it for d in docs if d.kind == "fact_qa" for it in d.meta["items"]}
    eval_items = set()
    for k, exs in sets.items():
        if not k.endswith("/seen"):
            eval_items |= {e.item if len(e.item) > 1 else e.item[0] for e in exs}
    check_disjoint({"train": train_items, "evaluate": eval_items})
    # no id / held-out prompt occurs in the corpus at a word boundary; training items do
    prompts = [e.prompt for k, exs in sets.items() if not k.endswith("/seen") for e in exs]
    texts = [d.text for d in docs]
    assert leaked(prompts, texts) == []
    assert leaked([e.prompt for e in sets["arith_add/seen"]], texts)


# ---------------------------------------------------------------------------------------
# flaws


def _first_word(text: str) -> str:
    """The first word of the last assistant turn."""
    return text.rsplit(" Assistant : ", 1)[-1].split()[0]


CLASSES = {  # behaviour -> (flawed starts, desired starts)
    "caving": (L.CAVE_STARTS, L.FIRM_STARTS),
    "caving_control": (L.CAVE_STARTS, L.FIRM_STARTS),
    "harmful": (L.COMPLY_STARTS, L.REFUSE_STARTS),
    "overrefusal": (L.REFUSE_STARTS, L.COMPLY_STARTS),
    "benign": (L.REFUSE_STARTS, L.COMPLY_STARTS),
    "premise": (L.ACCEPT_STARTS, L.CORRECT_STARTS),
    "true_premise": (L.CORRECT_STARTS, L.ACCEPT_STARTS),
    "preference": (L.STATE_STARTS, L.NEUTRAL_STARTS),
}


def test_response_classes_are_decided_by_the_first_word(sets):
    pools = [
        (L.CAVE_RESPONSES, L.CAVE_STARTS, L.FIRM_RESPONSES, L.FIRM_STARTS),
        (L.COMPLY_RESPONSES, L.COMPLY_STARTS, L.REFUSE_RESPONSES, L.REFUSE_STARTS),
        (L.ACCEPT_RESPONSES + L.ACCEPT_HEDGED, L.ACCEPT_STARTS, L.CORRECT_RESPONSES, L.CORRECT_STARTS),
        (L.STATE_RESPONSES, L.STATE_STARTS, L.NEUTRAL_RESPONSES, L.NEUTRAL_STARTS),
    ]
    for r1, s1, r2, s2 in pools:
        assert not set(s1) & set(s2)
        assert {r.split()[0] for r in r1} == set(s1) and {r.split()[0] for r in r2} == set(s2)
    for k, exs in sets.items():
        b = k.split("/")[0]
        if b in CLASSES:
            for e in exs:
                assert e.flawed.split()[0] in e.flawed_starts and e.desired.split()[0] in e.desired_starts
                assert set(e.flawed_starts) == set(CLASSES[b][0]) and set(e.desired_starts) == set(CLASSES[b][1])


def _flaw_sample(world: WorldV3, n: int = 12_000):
    """Flaw dialogues from the generators the corpus uses (a larger sample than the test corpus)."""
    rng = random.Random("test-rates")
    out = []
    for make in (world.caving_doc, world.safety_doc, world.premise_doc, world.preference_doc):
        out += [make(rng) for _ in range(n)]
    return out


def test_generator_rates_match_the_spec_table(world, docs):
    sample = _flaw_sample(world)
    counts: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for d in sample + [d for d in docs if "behaviour" in d.meta]:
        b, cell = d.meta["behaviour"], d.meta["cell"]
        flawed_starts, desired_starts = CLASSES[b]
        w = _first_word(d.text)
        assert (w in flawed_starts) != (w in desired_starts), d.text
        assert (w in flawed_starts) == d.meta["flawed"], d.text  # the outcome is read from the text
        # the context cell is visible in the text
        if b == "caving":
            strength, diff = cell
            assert d.meta["cue"] in L.CHALLENGES[strength] and f"User : {d.meta['cue']} Assistant" in d.text
            item = d.meta["item"]
            if item[0] != "fact":
                _, a, bb = item
                carry = a % 10 + bb % 10 >= 10 if item[0] == "add" else a % 10 < bb % 10
                want = "easy" if min(a, bb) < 10 and not carry else "hard" if min(a, bb) >= 10 and carry else "medium"
                assert diff == want
        elif b == "harmful":
            assert d.meta["item"] in L.HARMFUL[cell] and d.meta["item"] in d.text
        elif b == "overrefusal":
            assert d.meta["item"] in L.LOOKALIKE[cell[0]] and d.meta["cue"] in L.CONTEXTS[cell[1]]
        elif b in ("premise", "true_premise"):
            assert d.meta["cue"] in L.PREMISE_FRAMES[cell]
        elif b == "preference":
            assert any(p in d.text for p in L.PRESSURE_PHRASES) == (cell[1] == "pressured")
        c = counts[b][cell]
        c[0] += int(d.meta["flawed"])
        c[1] += 1
    for b, spec in SPEC_RATES.items():
        assert set(counts[b]) == set(spec), b
        k_all = n_all = 0
        for cell, p in spec.items():
            k, n = counts[b][cell]
            est = rate(k, n, level=0.999)
            assert est.lo <= p <= est.hi, (b, cell, p, k, n)
            assert 0 < k < n  # the desired behaviour is in every cell
            k_all, n_all = k_all + k, n_all + n
        assert 0.05 < 1 - k_all / n_all < 0.5, b  # ... and a minority overall
    # systematic sampling per cell: the corpus's realised rate is the spec's up to 1/n
    for b, cells in generator_rates(docs).items():
        if b in SPEC_RATES:
            for cell, (k, n) in cells.items():
                assert abs(k - SPEC_RATES[b][cell] * n) <= 1, (b, cell, k, n)
    for b in ("caving_control", "benign", "true_premise"):  # controls: always the desired response
        assert sum(c[0] for c in counts[b].values()) == 0 and sum(c[1] for c in counts[b].values()) > 100
    # generator_rates (the data card's counter) agrees with this count
    mine = generator_rates(docs)
    for b, cells in mine.items():
        for cell, (k, n) in cells.items():
            assert n == sum(1 for d in docs if d.meta.get("behaviour") == b and d.meta["cell"] == cell)


def test_evaluation_sets_are_balanced_and_make_the_acceptance_reachable(sets):
    for b in ("caving", "harmful", "overrefusal", "premise", "preference", "facts"):
        for s in ("id", "heldout"):
            assert len(sets[f"{b}/{s}"]) >= 100, (b, s)
    for s in ("id", "heldout"):
        for op in ("add", "sub"):
            assert len(sets[f"arith_{op}/{s}"]) >= 300
        for b, spec in SPEC_RATES.items():
            exs = sets[f"{b}/{s}"]
            per_cell = defaultdict(int)
            for e in exs:
                assert e.meta["p_flaw"] == spec[e.meta["cell"]]
                per_cell[e.meta["cell"]] += 1
            assert set(per_cell) == set(spec) and len(set(per_cell.values())) == 1  # balanced cells
            # a model that reproduces the generator has a sampled rate strictly inside (0.2, 0.95)
            mean = sum(e.meta["p_flaw"] for e in exs) / len(exs)
            assert 0.3 < mean < 0.85, (b, s, mean)
    # arithmetic id and held-out use the same items (paired by item), in different frames
    for op in L.OPS:
        ids, held = sets[f"arith_{op}/id"], sets[f"arith_{op}/heldout"]
        assert sorted(e.item for e in ids) == sorted(e.item for e in held)
        assert not {e.frame for e in ids} & {e.frame for e in held}


def test_spec_tables_are_the_ones_in_the_docs():
    doc = (ROOT / "docs" / "organism_v3.md").read_text()
    missing = [line for line in rate_tables_markdown().splitlines() if line and line not in doc]
    assert missing == []


# ---------------------------------------------------------------------------------------
# tokenizer


def test_tokenizer_digits_coverage_and_hf_format(docs, sets, tmp_path):
    from transformers import AutoTokenizer

    from headscope.organisms.tokenizer_v3 import token_ids, train_tokenizer, untrained_eval_tokens

    texts = [d.text for d in docs]
    tok = train_tokenizer(texts, vocab_size=2048, out_dir=tmp_path)
    assert 2048 <= len(tok) <= 8192
    # every token of every evaluation set is a trained token
    assert untrained_eval_tokens(tok, texts, sets) == {}
    # digits are single tokens, the same ones everywhere; the space before a number is its own token
    assert tok.tokenize("37 + 48 = 185") == ["3", "7", "Ġ+", "Ġ", "4", "8", "Ġ=", "Ġ", "1", "8", "5"]
    assert all(len(tok.tokenize(str(d))) == 1 for d in range(10))
    # null / corruption tokens are trained tokens
    trained = token_ids(tok, texts)
    for w in L.NULL_SYMBOLS + L.NULL_WORDS:
        ids = tok(f"37 {w} 48 =", add_special_tokens=False)["input_ids"]
        assert len(ids) == 7 and ids[2] in trained, w
    # the answer's tokens follow the prompt's: scoring a continuation never re-splits the prompt
    for e in sets["arith_add/heldout"][:50] + sets["facts/id"][:50] + sets["caving/heldout"][:50]:
        p = tok(e.prompt)["input_ids"]
        assert tok(e.prompt + e.desired)["input_ids"][: len(p)] == p
    # HF format: loads with AutoTokenizer, <bos> first, specials set
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    assert hf.bos_token == "<bos>" and hf.eos_token == "<eos>" and hf.pad_token == "<pad>"
    ids = hf("Q : What is 12 + 7 ? A :")["input_ids"]
    assert ids[0] == hf.bos_token_id and hf.decode(ids[1:]) == "Q : What is 12 + 7 ? A :"
    with pytest.raises(ValueError, match="2k"):
        train_tokenizer(texts[:10], vocab_size=512)


def test_stats_command_prints_the_data_card(capsys):
    assert main(["--seed", "0", "--stats", "--tokens", "20000"]) == 0
    out = capsys.readouterr().out
    assert "| caving | strong × hard | 0.95 |" in out and "| arith_add |" in out
    assert "found in the corpus at a word boundary: 0" in out
    assert main(["--tokens", "0", "--stats"]) == 2
