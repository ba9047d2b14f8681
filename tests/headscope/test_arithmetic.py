"""Arithmetic heads (headscope/papers/arithmetic/, prompt rows from headscope/tasks/arithmetic.py).

Prompts, identification, knockout, inspection, precise SFT. Each check compares against
an independent computation (hand-built patches, plain activation patching, generation,
manual parameter slices, the shared random-head control) or the issue's acceptance
numbers; long experiments live in experiments/arith_table.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.controls import random_heads
from headscope.model import Patch
from headscope.organisms.world import ARITH_TEMPLATES, OP_NOUN, OP_SYMBOL, OP_WORD, OPERATORS, arith_operands
from headscope.papers import arithmetic as ar
from headscope.tasks import arithmetic as tasks

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def correct(llama_tl):
    """Correctly answered prompts (all operators, styles, templates)."""
    return ar.filter_correct(llama_tl, tasks.arith_prompts())


@pytest.fixture(scope="module")
def ident(llama_tl, correct):
    return ar.identify(llama_tl, correct, max_per_group=8, mlps=False, show_progress=False)


# -- prompts --------------------------------------------------------------------------


def test_prompts_cover_every_template_and_keep_length(llama_tl):
    rows = tasks.arith_prompts()
    n_templates = sum(len(t) for t in ARITH_TEMPLATES.values())
    assert len(rows) == n_templates * sum(len(arith_operands(op)) for op in OPERATORS)
    for r in rows:
        assert r["corrupt"] != r["prompt"]
        assert r["null"] in r["corrupt"].split()
    # every counterfactual tokenizes to its prompt's length (incl. two-word "divided by")
    groups = ar.length_groups(llama_tl, rows)
    assert sum(len(g) for g in groups.values()) == len(rows)
    tr, ho = tasks.arith_prompts(split="train"), tasks.arith_prompts(split="heldout")
    assert len(tr) + len(ho) == len(rows) and not {r["prompt"] for r in tr} & {r["prompt"] for r in ho}
    ds = tasks.arith_dataset(ops=["div"], styles=["qa"])
    assert ds.num_rows == 4 * 81 and {"prompt", "corrupt", "answer", "op", "style"} <= set(ds.column_names)
    with pytest.raises(HeadscopeError, match="operator"):
        tasks.arith_prompts(ops=["pow"])
    with pytest.raises(HeadscopeError, match="templates 0..3"):
        tasks.arith_prompts(templates=[7])
    # the paper package re-exports the organism's prompt rows
    assert ar.arith_prompts is tasks.arith_prompts


def test_filter_correct_matches_generation(llama_tl):
    from headscope.tasks.suite import greedy

    rows = tasks.arith_prompts(ops=["div"], styles=["equation", "qa"], templates=[0])
    kept = ar.filter_correct(llama_tl, rows)
    gen = greedy(llama_tl, [r["prompt"] for r in rows], 1)
    expect = [r for r, g in zip(rows, gen) if g == r["answer"]]
    assert [r["prompt"] for r in kept] == [r["prompt"] for r in expect]
    assert 0 < len(kept) < len(rows)  # the organism gets some divisions wrong


# -- identification -------------------------------------------------------------------


def test_relative_score_matches_hand_built_path_patch(llama_tl, correct):
    grp = [r for r in correct if r["style"] == "equation" and r["template"] == 0][:16]
    res = ar.identify(llama_tl, grp, max_per_group=None, min_group=1, show_progress=False)
    assert len(res.extra["groups"]) == 1
    clean = llama_tl.to_tokens([r["prompt"] for r in grp])
    corrupt = llama_tl.to_tokens([r["corrupt"] for r in grp])
    ans = torch.tensor([llama_tl.token_id(r["answer"]) for r in grp])
    _, cl = llama_tl.run_with_heads(clean, sites=("z", "mlp_out"))
    _, co = llama_tl.run_with_heads(corrupt, sites=("z", "mlp_out"))

    def logit(lg):
        return lg[torch.arange(len(grp)), -1, ans].mean()

    m0 = logit(llama_tl.logits(clean))
    for L, h in [(0, 3), (2, 5), (5, 1)]:
        z = cl.z[L].clone()
        z[:, :, h] = co.z[L][:, :, h]
        patches = [Patch(layer=ell, site="z", value=z if ell == L else cl.z[ell]) for ell in range(llama_tl.n_layers)]
        m = logit(llama_tl.run_patched(clean, patches))
        assert float(res.scores.scores[L, h]) == pytest.approx(float((m - m0) / m0), abs=1e-4)
    # the last MLP has no later heads to freeze: its path score is plain activation patching
    m_last = logit(llama_tl.run_patched(clean, [Patch(layer=5, site="mlp_out", value=co.mlp_out[5])]))
    assert float(ar.mlp_scores(res)[5]) == pytest.approx(float((m_last - m0) / m0), abs=1e-4)


def test_few_heads_pass_the_five_percent_rule(ident):
    # acceptance: fewer than 10% of heads pass the -5% rule (the paper: < 5% on LLaMA2-7B)
    assert 0 < ident.share < 0.10, ident.heads
    assert all(float(ident.scores.scores[L, h]) <= -0.05 for L, h in ident.heads)
    assert ident.top(len(ident.heads)) == ident.heads
    assert "-0.05" in ident.rule and ident.extra["threshold"] == -0.05


def test_identify_agrees_across_backends(llama_tl, llama_nn, correct):
    grp = [r for r in correct if r["style"] == "qa" and r["template"] == 2 and r["op"] != "div"][::9]
    a = ar.identify(llama_tl, grp, max_per_group=None, min_group=1, show_progress=False)
    b = ar.identify(llama_nn, grp, max_per_group=None, min_group=1, show_progress=False)
    torch.testing.assert_close(a.scores.scores, b.scores.scores, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(ar.mlp_scores(a), ar.mlp_scores(b), atol=1e-4, rtol=1e-3)


# -- knockout -------------------------------------------------------------------------


def test_knockout_key_heads_vs_random_heads(llama_tl, correct, ident):
    rows = correct[::10]
    k = len(ident.heads)
    ko = ar.knockout(llama_tl, rows, ident.top(k), ks=(0, k), seeds=(0, 1, 2), show_progress=False)
    assert ko["top"][0] == 1.0 and ko["random_mean"][0] == 1.0  # only correct prompts, nothing ablated
    gap = ko["random_mean"][1] - ko["top"][1]
    assert gap >= 0.30, ko  # acceptance: gap >= 30 points over 3 random seeds
    assert set(ko["top_by"][1]) >= {"op:add", "op:div", "style:qa", "style:equation"}


def test_knockout_random_heads_are_the_shared_control(llama_tl, correct, ident):
    """The random heads are controls.random_heads' draw (same seed, same heads), never a knocked-out head."""
    rows = correct[::60]
    ranking = ident.top(4)
    ko = ar.knockout(llama_tl, rows, ranking, ks=(1, 4), seeds=(0, 5), show_progress=False)
    for i, k in enumerate(ko["k"]):
        for j, seed in enumerate(ko["seeds"]):
            drawn = [tuple(h) for h in ko["random_heads"][i][j]]
            assert drawn == random_heads(llama_tl.n_layers, llama_tl.n_heads, k, seed, exclude=ranking[:k])
            assert len(drawn) == k and not set(drawn) & set(ranking[:k])
    # and the accuracy reported is the accuracy with exactly those heads ablated
    ref = ar.MeanReference(llama_tl, rows)
    pick = [tuple(h) for h in ko["random_heads"][1][1]]
    acc = ar.accuracy_table(llama_tl, rows, patches_for=ref.patches(pick))["all"]
    assert ko["random"][1][1] == acc


def test_mean_ablation_matches_attribution_ablate(llama_tl, correct):
    from headscope.attribution import ablate

    grp = [r for r in correct if r["style"] == "qa" and r["template"] == 0][:20]
    heads = [(0, 3), (4, 2)]
    toks = llama_tl.to_tokens([r["prompt"] for r in grp])
    ref = ar.MeanReference(llama_tl, grp)
    ours = llama_tl.run_patched(toks, ref.patches(heads)(toks.shape[1], toks))
    theirs = ablate(llama_tl, toks, heads, "mean", toks)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


# -- inspection -----------------------------------------------------------------------


def test_token_masks(llama_tl):
    rows = tasks.arith_prompts(ops=["div"], styles=["statement"], templates=[0])[:1]  # "1 divided by 1 equals"
    opnd, oper = ar.token_masks(llama_tl, rows)
    assert opnd[0].tolist() == [False, True, False, False, True, False]
    assert oper[0].tolist() == [False, False, True, True, False, False]
    # a researcher's own row: the operator words come from the row, not from the organism
    own = [
        {
            "prompt": "7 times 3 equals",
            "corrupt": "7 none 3 equals",
            "answer": "21",
            "a": 7,
            "b": 3,
            "op_text": "times",
        }
    ]
    opnd, oper = ar.token_masks(llama_tl, own)
    assert opnd[0].tolist() == [False, True, False, True, False] and oper[0].tolist() == [
        False,
        False,
        True,
        False,
        False,
    ]
    with pytest.raises(HeadscopeError, match="op_text"):
        ar.token_masks(llama_tl, [{k: v for k, v in own[0].items() if k != "op_text"}])


def test_token_masks_match_every_operator_spelling(llama_tl):
    """Per-row ``op_text`` marks exactly what the organism's whole operator vocabulary would mark."""
    for n, grp in ar.length_groups(llama_tl, tasks.arith_prompts()[::7]).items():
        toks = llama_tl.to_tokens([r["prompt"] for r in grp])
        _, oper = ar.token_masks(llama_tl, grp)
        for i, r in enumerate(grp):
            vocab = {OP_SYMBOL[r["op"]], OP_NOUN[r["op"]], *OP_WORD[r["op"]].split()}
            words = [str(w).strip() for w in llama_tl.to_str_tokens(toks[i])]
            expect = [w in vocab and w not in (str(r["a"]), str(r["b"])) for w in words]
            assert oper[i].tolist() == expect, r["prompt"]


def test_key_heads_attend_to_operands_and_operators(llama_tl, correct, ident):
    ins = ar.inspect(llama_tl, correct, ident.heads, max_per_group=16)
    assert ins["key_mean_attention"] > ins["average_head_attention"] + 0.1, ins["key"]
    lens = ins["mlp_logit_lens"]["rank_of_C"]
    assert len(lens) == llama_tl.n_layers and all(v >= 0 for v in lens)


# -- tuning ---------------------------------------------------------------------------


def _slices_changed(base, tuned, heads, d, projs):
    """Independent bookkeeping: which entries may differ (q/k/v rows, o columns of each head)."""
    may = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in base.named_parameters()}
    group = base.config.num_attention_heads // base.config.num_key_value_heads
    for L, h in heads:
        pre = f"model.layers.{L}.self_attn."
        for pr in projs:
            if pr == "o":
                may[pre + "o_proj.weight"][:, h * d : (h + 1) * d] = True
            else:
                blk = h if pr == "q" else h // group
                may[pre + f"{pr}_proj.weight"][blk * d : (blk + 1) * d] = True
    tuned_p = dict(tuned.named_parameters())
    for n, p in base.named_parameters():
        assert torch.equal(tuned_p[n][~may[n]], p.detach()[~may[n]]), n
    return sum(int(m.sum()) for m in may.values())


def test_precise_sft_trains_only_head_slices():
    from headscope.loading import load_hf
    from headscope.tuning import TuneConfig

    base, tok, _ = load_hf("llama-v2", "cpu")
    heads = [(0, 3), (0, 0)]
    tuned, log = ar.tune_one(
        base,
        tok,
        "heads",
        tasks.tune_examples(("div",))[:64],
        TuneConfig(steps=3, batch_size=8, warmup=1),
        heads=heads,
    )
    n_may = _slices_changed(base, tuned, heads, 16, "qkvo")
    assert log["n_trainable"] == n_may == 2 * 4 * 16 * 128
    assert log["trainable_share"] <= 0.05 and log["untouched_bit_identical"]
    qw = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(tuned.named_parameters())[qw][48:64], dict(base.named_parameters())[qw][48:64])


def test_evaluate_tuned_with_a_users_suite():
    """evaluate_tuned reads everything from the suite; its KL is the all-positions next-token KL."""
    from headscope.common.metrics import kl_div
    from headscope.loading import load_hf

    base, tok, _ = load_hf("llama-v2", "cpu")
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.lm_head.weight.mul_(1.2)
    texts = ["3 plus 4 equals 7", "Q : What is the sum of 2 and 2 ? A : 4", "5 * 5 = 25", "2 minus 1 is 1"]
    rows = tasks.arith_prompts(ops=["add", "sub"], styles=["equation"], templates=[0])[::9]
    suite = tasks.TuneSuite(
        examples=[], heldout=rows, unseen=rows[:3], kl_texts=texts, general=lambda m: {"mine": 0.5}
    )
    ev = ar.evaluate_tuned(tuned, tok, suite, base)
    assert list(ev) == ["arith_add_heldout", "arith_sub_heldout", "unseen_all", "unseen_add", "mine", "kl_vs_base"]
    with torch.no_grad():
        per = [
            (kl_div(base(input_ids=x).logits, tuned(input_ids=x).logits), x.numel())
            for x in (torch.tensor([tok(t)["input_ids"]]) for t in texts)
        ]
    expect = sum(float(v) * n for v, n in per) / sum(n for _, n in per)
    assert ev["kl_vs_base"] == pytest.approx(expect, rel=1e-5) and ev["kl_vs_base"] > 0
    assert ar.evaluate_tuned(base, tok, suite, base)["kl_vs_base"] == 0.0


def test_paper_package_reads_no_organism():
    """Every string the paper uses arrives through rows and suites (docs/design.md §2)."""
    import pathlib

    import headscope.papers.arithmetic as pkg

    for f in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        assert "organisms" not in f.read_text(), f.name


# -- grouped-query model through identify / knockout / tune ------------------------------


def test_gqa_identify_knockout_tune():
    from transformers import LlamaForCausalLM

    from headscope.loading import load_hf, wrap
    from headscope.organisms.train import llama_config
    from headscope.tuning import TuneConfig

    _, tok, _ = load_hf("llama-v2", "cpu")
    torch.manual_seed(0)
    cfg = llama_config(len(tok.get_vocab()), d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_mlp=96, max_pos=64)
    hf = LlamaForCausalLM(cfg).eval()
    hm = wrap(copy.deepcopy(hf), tok, "tl", name="gqa")
    rows = tasks.arith_prompts(ops=["add"], styles=["equation"], templates=[0])[:12]
    res = ar.identify(hm, rows, min_group=1, show_progress=False)
    assert res.scores.scores.shape == (2, 4) and torch.isfinite(res.scores.scores).all()
    ko = ar.knockout(hm, rows, res.top(2), ks=(0, 2), seeds=(0, 1, 2), show_progress=False)
    assert len(ko["random"][1]) == 3
    heads = res.top(2)
    tuned, log = ar.tune_one(
        hf, tok, "heads", tasks.tune_examples(("add",))[:32], TuneConfig(steps=2, batch_size=8, warmup=1), heads=heads
    )
    assert log["projections"] == ["q_proj", "o_proj"]  # grouped-query rule: q and o only
    assert log["n_trainable"] == _slices_changed(hf, tuned, heads, 16, "qo") == 2 * 2 * 16 * 64
    assert log["untouched_bit_identical"]


# -- CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["arith", "identify", "--ops", "pow"], "unknown operator"),
        (["arith", "knockout", "--ks", "a,b"], "--ks must be"),
        (["arith", "tune", "--methods", "foo"], "unknown method"),
        (["arith", "inspect", "--styles", "poem"], "unknown template style"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys):
    from headscope.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.mark.parametrize("action", ["prompts", "identify", "knockout", "inspect", "transfer", "tune"])
def test_cli_help(action, capsys):
    from headscope.cli import main

    with pytest.raises(SystemExit) as e:
        main(["arith", action, "--help"])
    assert e.value.code == 0 and "--model" in capsys.readouterr().out


def test_cli_prompts_and_inspect_run(tmp_path, capsys):
    import json

    from headscope.cli import main

    assert main(["arith", "prompts", "--all-prompts", "--ops", "div", "--styles", "qa", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "llama-v2_arith_prompts_tl_seed0.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 81 and rows[0]["op_text"] == "quotient"
    argv = ["arith", "inspect", "--heads", "L0H0,0.6", "--ops", "add", "--styles", "equation", "--out", str(tmp_path)]
    assert main(argv) == 0
    ins = json.loads((tmp_path / "llama-v2_arith_inspect_tl_seed0.json").read_text())
    assert ins["key_heads"] == [[0, 0], [0, 6]] and "L0H0: attention onto operands" in capsys.readouterr().out


# -- issue 16: item splits, operand counterfactuals, placebo knockout -------------------


@pytest.fixture(scope="module")
def corpus():
    from headscope.organisms.world import World

    return World().documents()


@pytest.fixture(scope="module")
def splits(corpus):
    return tasks.arith_splits(corpus=corpus)


def test_splits_are_disjoint_by_item_and_evaluation_prompts_are_unseen(splits, corpus):
    """No evaluation prompt's item (op, A, B) is in the identify/fit split or the SFT data; no
    evaluation prompt occurs verbatim in the organism's training documents."""
    # the item of every prompt, rebuilt from the rows (not from ArithSplits.items)
    item_of = {r["prompt"]: (r["op"], r["a"], r["b"]) for r in tasks.arith_prompts() + tasks.unseen_prompts()}
    ev = {(r["op"], r["a"], r["b"]) for r in splits.evaluate + splits.tune_heldout}
    ident = {(r["op"], r["a"], r["b"]) for r in splits.identify}
    fit = {(r["op"], r["a"], r["b"]) for r in splits.fit}
    train = {item_of[p] for p, _ in splits.tune_examples}
    assert splits.evaluate and splits.identify and splits.fit and splits.tune_examples
    assert not ev & ident, sorted(ev & ident)[:5]
    assert not ev & fit, sorted(ev & fit)[:5]
    assert not ev & train, sorted(ev & train)[:5]
    assert not ident & fit
    # every item is in exactly one split, with roughly the stated fractions
    assert ev | ident | fit == {it for its in splits.items.values() for it in its}
    assert {r["template"] for r in splits.evaluate} == {0, 1} and {r["split"] for r in splits.evaluate} == {"unseen"}
    big = "\x00".join(corpus)
    hits = [r["prompt"] for r in splits.evaluate + splits.tune_heldout if r["prompt"] in big]
    assert not hits, hits[:5]
    # the check can fail: a training prompt is found, and an injected overlap is reported
    assert splits.tune_examples[0][0] in big
    from headscope.splits import check_disjoint

    check_disjoint({k: set(v) for k, v in splits.items.items()})
    with pytest.raises(HeadscopeError, match="more than one split"):
        check_disjoint({"identify": ident | {next(iter(ev))}, "evaluate": ev})


def test_split_assignment_is_a_function_of_the_item_alone(splits):
    from headscope.splits import split_of

    where = {it: name for name, its in splits.items.items() for it in its}
    assert sum(map(len, splits.items.values())) == 81 + 45 + 81 + 81
    for it, name in where.items():
        assert split_of(it, tasks.SPLIT_FRACTIONS, tasks.SPLIT_SALT) == name
    sub = tasks.split_items(ops=("div",))
    assert all(where[it] == name for name, its in sub.items() for it in its)


def test_operand_counterfactuals_change_one_operand_and_keep_the_length(llama_tl):
    rows = tasks.arith_prompts()[::37] + tasks.unseen_prompts()[::53]
    valid = {op: {(a, b) for a, b, _ in arith_operands(op)} for op in OPERATORS}
    for which, pos in (("A", 0), ("B", 1)):
        cor = tasks.with_operand_corruption(rows, which)
        for r, c in zip(rows, cor):
            w, v = r["prompt"].split(" "), c["corrupt"].split(" ")
            diff = [i for i, (x, y) in enumerate(zip(w, v)) if x != y]
            nums = [i for i, x in enumerate(w) if x.isdigit()]
            assert len(w) == len(v) and diff == [nums[pos]], (r["prompt"], c["corrupt"])
            new = int(v[nums[pos]])
            assert new != (r["a"], r["b"])[pos] and c["null"] == str(new)
            a2, b2 = (new, r["b"]) if which == "A" else (r["a"], new)
            # another valid item whenever one keeps the other operand
            others = [x for x in valid[r["op"]] if x[1 - pos] == (r["a"], r["b"])[1 - pos] and x != (r["a"], r["b"])]
            assert ((a2, b2) in valid[r["op"]]) == bool(others)
            assert c["prompt"] == r["prompt"] and c["answer"] == r["answer"]
            assert len(llama_tl.to_tokens(c["corrupt"])[0]) == len(llama_tl.to_tokens(r["prompt"])[0])
    assert tasks.with_operand_corruption(rows, "operator") == rows
    with pytest.raises(HeadscopeError, match="unknown corruption"):
        tasks.with_operand_corruption(rows, "C")


def test_union_selects_a_head_that_passes_under_any_map():
    from headscope.results import HeadResult, HeadSelection, select_heads

    g = torch.Generator().manual_seed(0)
    maps = {}
    for name in ("operator", "A", "B"):
        s = torch.randn(6, 8, generator=g) * 0.05
        maps[name] = HeadSelection(HeadResult(s, ("layer", "head"), {}, {}), select_heads(s, threshold=-0.05), "r", {})
    u = ar.union_selection(maps)
    expect = {h for m in maps.values() for h in m.heads}
    assert set(u.heads) == expect and len(u.heads) == len(expect)
    for L, h in u.heads:
        assert float(u.scores.scores[L, h]) == min(float(m.scores.scores[L, h]) for m in maps.values())


def test_knockout_placebo_matches_a_direct_computation(llama_tl, splits):
    from headscope.stats import placebo_p

    rows = ar.filter_correct(llama_tl, splits.evaluate[::48])
    heads = [(0, 0), (0, 2)]
    res = ar.knockout_placebo(llama_tl, rows, {"sel": heads}, splits.fit, n_draws=4, show_progress=False)
    ref = ar.MeanReference(llama_tl, splits.fit)
    c = res["conditions"]["sel"]
    assert c["accuracy"]["value"] == ar.accuracy_table(llama_tl, rows, patches_for=ref.patches(heads))["all"]
    accs = []
    for d, drawn in enumerate(c["placebo_heads"]):
        pick = random_heads(llama_tl.n_layers, llama_tl.n_heads, 2, d, exclude=heads)
        assert drawn == [f"L{L}H{h}" for L, h in pick] and not set(pick) & set(heads)
        accs.append(ar.accuracy_table(llama_tl, rows, patches_for=ref.patches(pick))["all"])
    assert c["placebo_accuracy"] == pytest.approx(accs)
    m = sum(a <= c["accuracy"]["value"] for a in accs)
    assert c["placebo"]["p"] == (1 + m) / 5 == placebo_p(c["accuracy"]["value"], accs)
    one = res["single"]["L0H2"]["accuracy"]["value"]
    assert one == ar.accuracy_table(llama_tl, rows, patches_for=ref.patches([(0, 2)]))["all"]
    assert len(res["single"]) == 48 and res["base"]["value"] == 1.0
    with pytest.raises(HeadscopeError, match="token length"):
        ar.knockout_placebo(llama_tl, rows, {"sel": heads}, splits.identify[:5], n_draws=1, single=False)


def test_attention_contrast_agrees_with_inspect(llama_tl, splits):
    rows = ar.filter_correct(llama_tl, splits.evaluate[::9])
    heads = [(0, 0), (0, 7)]
    a = ar.attention_contrast(llama_tl, rows, heads)
    b = ar.inspect(llama_tl, rows, heads, max_per_group=10**6)
    assert a["key_mean"] == pytest.approx(b["key_mean_attention"], abs=1e-5)
    assert a["average_head_mean"] == pytest.approx(b["average_head_attention"], abs=1e-5)
    d = a["difference"]
    assert d["lo"] <= d["value"] <= d["hi"] and d["n"] == len(rows) == a["n"]
