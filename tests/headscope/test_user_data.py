"""The paper pipelines on a user's own model folder and files (docs/userdata.md).

A random tiny grouped-query Qwen2 saved with ``save_pretrained`` (4 query / 2 key-value
heads; words ``t4``..``t63``) stands for the user's model. The numbers are meaningless
on random weights: these tests check that every documented format reaches the
pipelines unchanged, that the pipelines run end to end, and the error paths.
"""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from headscope.archcheck import tiny_model_dir
from headscope.common.errors import HeadscopeError
from headscope.loading import load_model
from headscope.tasks.userdata import (
    export_arith_rows,
    first_token_outcomes,
    load_arith_rows,
    load_sac_data,
    save_sac_data,
)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = tiny_model_dir("qwen2", tmp_path_factory.mktemp("user"))
    return load_model(str(path), "tl")


def _w(i: int) -> str:
    return f"t{4 + i % 60}"


def _arith_rows(n: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, op = (rng.randrange(60) for _ in range(3))
        rows.append(
            {
                "prompt": f"{_w(a)} {_w(op)} {_w(b)} t60",
                "answer": _w(a + b),
                "counterfactual": f"{_w(a)} t61 {_w(b)} t60",
                "counterfactual_A": f"t62 {_w(op)} {_w(b)} t60",
                "op": "add",
            }
        )
    return rows


def test_arithmetic_identification_from_user_files(qwen, tmp_path):
    from headscope.papers.arithmetic.identify import identify_maps

    rows = _arith_rows()
    jl = tmp_path / "arith.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cs = tmp_path / "arith.csv"
    with cs.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    by_jl, by_csv = load_arith_rows(jl), load_arith_rows(cs)
    assert list(by_jl) == ["operator", "A"] and by_jl == by_csv
    assert by_jl["operator"][0]["corrupt"] == rows[0]["counterfactual"]
    assert by_jl["A"][0]["corrupt"] == rows[0]["counterfactual_A"] and by_jl["A"][0]["op"] == "add"
    maps = identify_maps(qwen, by_jl, mlps=False, show_progress=False, threshold=-0.05)
    assert set(maps) == {"operator", "A", "union"}
    for sel in maps.values():
        assert sel.scores.scores.shape == (qwen.n_layers, qwen.n_heads)
        assert torch.isfinite(sel.scores.scores).all()
    # the union's score is the most negative over the maps, head by head
    u = torch.minimum(maps["operator"].scores.scores, maps["A"].scores.scores)
    assert torch.equal(maps["union"].scores.scores, u)
    # export and re-read: the same rows
    out = export_arith_rows(by_jl, tmp_path / "export.jsonl")
    assert load_arith_rows(out) == by_jl


def test_arithmetic_table_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "t5 t6", "answer": "t7"}) + "\n")
    with pytest.raises(HeadscopeError, match="lacks counterfactual"):
        load_arith_rows(bad)
    with pytest.raises(HeadscopeError, match="does not exist"):
        load_arith_rows(tmp_path / "none.jsonl")


def _sac_doc(seed: int = 0) -> dict:
    rng = random.Random(seed)

    def prompt() -> str:
        return " ".join(_w(rng.randrange(60)) for _ in range(4))

    tasks = {}
    for name, (d, u) in {"alpha": ("t10", "t11"), "beta": ("t20", "t21")}.items():
        tasks[name] = {
            "pairs": [{"clean": prompt(), "corrupt": prompt(), "answer": d, "wrong": u} for _ in range(6)],
            "stimuli": [{"prompt": prompt(), "desired": d, "undesired": u} for _ in range(24)],
            "evaluate": [{"prompt": prompt(), "desired": d, "undesired": u} for _ in range(10)],
        }
    return {"tasks": tasks, "background": {"general": [prompt() for _ in range(6)]}, "kl_texts": [prompt()]}


def test_sac_fit_and_apply_from_a_user_file(qwen, tmp_path):
    from headscope.papers import sac

    f = tmp_path / "sac.json"
    f.write_text(json.dumps(_sac_doc()))
    data = load_sac_data(f)
    assert list(data.tasks) == ["alpha", "beta"] and data.columns == ("alpha_desired", "beta_desired")
    sel = sac.identify(qwen, data, k=2, n=6, show_progress=False)
    ctl = sac.fit_all(qwen, data, sac.heads_of(sel))
    both = sac.compose(*ctl.values())
    oc = data.outcomes(qwen, []) if data.outcomes else {}
    # the unsteered outcomes by hand: greedy first token after each prompt == desired
    doc = _sac_doc()
    for name, measure in (("alpha", "alpha_desired"), ("beta", "beta_desired")):
        ev = doc["tasks"][name]["evaluate"]
        toks = qwen.to_tokens([e["prompt"] for e in ev])
        pred = qwen.logits(toks)[:, -1].argmax(-1)
        assert oc[measure] == [int(p) == qwen.token_id(e["desired"]) for p, e in zip(pred, ev)]
    steered = sac.evaluate_condition(qwen, data, both)
    assert set(steered) >= {"alpha_desired", "beta_desired", "kl_last"}
    for t, c in ctl.items():  # each controller steers exactly the heads identified for its behaviour
        assert sorted((L, h) for L, v in c.layers.items() for h in v["heads"]) == sorted(sel[t].heads)
    # round trip: saving and loading gives the same tasks
    from headscope.tasks.sac import Stimulus

    evaluate = {n: [Stimulus(**e) for e in doc["tasks"][n]["evaluate"]] for n in doc["tasks"]}
    back = load_sac_data(save_sac_data(data, tmp_path / "again.json", evaluate))
    for n in data.tasks:
        assert back.tasks[n].stimuli == data.tasks[n].stimuli
        assert back.tasks[n].pairs.clean == data.tasks[n].pairs.clean
    assert first_token_outcomes(qwen, evaluate["alpha"], both) == data.outcomes(qwen, both)["alpha_desired"]


@pytest.mark.parametrize(
    "doc,match",
    [
        ({}, "'tasks' object"),
        ({"tasks": {"x": {"pairs": []}}}, "needs 'pairs'"),
        ({"tasks": {"x": {"pairs": [{"clean": "t5"}], "stimuli": []}}}, "lacks corrupt"),
    ],
)
def test_sac_file_errors(tmp_path, doc, match):
    f = tmp_path / "sac.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(HeadscopeError, match=match):
        load_sac_data(f)


def test_sac_cli_on_a_user_model_and_file(tmp_path, capsys):
    from headscope.cli import main

    model = tiny_model_dir("qwen2", tmp_path / "m")
    f = tmp_path / "sac.json"
    f.write_text(json.dumps(_sac_doc()))
    out = tmp_path / "out"
    args = ["--model", str(model), "--data", str(f), "--out", str(out)]
    assert main(["sac", "identify", *args, "-k", "2", "-n", "6"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("alpha ") and "jaccard alpha|beta" in printed
    ident = next(out.glob("*_sac_identify_tl/identify.json"))
    ctl = tmp_path / "alpha_ctl"
    fit = ["sac", "fit", "--model", str(model), "--data", str(f), "--identify", str(ident), "--out", str(ctl)]
    assert main([*fit, "--task", "alpha"]) == 0
    assert ctl.with_suffix(".safetensors").exists()
    assert main([*fit, "--task", "gamma"]) == 2
    assert "unknown SAC task" in capsys.readouterr().err


def test_the_organism_is_one_user_of_the_same_formats(tmp_path):
    # The bundled organism's SAC data and arithmetic rows, written in the user formats and
    # read back through the user loaders, are the objects the papers ran on.
    from headscope.tasks.arithmetic import arith_prompts, with_operand_corruption
    from headscope.tasks.sac import organism_sac

    data = organism_sac()
    back = load_sac_data(save_sac_data(data, tmp_path / "sac.json"))
    assert list(back.tasks) == list(data.tasks)
    for n, t in data.tasks.items():
        assert back.tasks[n].stimuli == t.stimuli and back.tasks[n].source_groups == t.source_groups
        assert (back.tasks[n].pairs.clean, back.tasks[n].pairs.answers) == (t.pairs.clean, t.pairs.answers)
    assert back.background == data.background and back.kl_texts == list(data.kl_texts)
    rows = arith_prompts(ops=("add",))[:40]
    by = {"operator": rows, "A": with_operand_corruption(rows, "A")}
    read = load_arith_rows(export_arith_rows(by, tmp_path / "arith.jsonl"))
    for name in by:
        assert [(r["prompt"], r["corrupt"], r["answer"]) for r in read[name]] == [
            (r["prompt"], r["corrupt"], r["answer"]) for r in by[name]
        ]


def _syc_doc(seed: int = 0) -> dict:
    rng = random.Random(seed)
    qs = []
    for i in range(12):
        fam = "short" if i % 2 else "long"
        words = 2 if fam == "short" else 3
        qs.append(
            {
                "question": " ".join(_w(rng.randrange(60)) for _ in range(words)),
                "answer": _w(rng.randrange(60)),
                "family": fam,
                "split": "identify" if i < 8 else "evaluate",
            }
        )
    return {
        "challenge": "t40 t41 t42",
        "counter": "t43 t41 t42",
        "apology": "t50",
        "affirm": "t51",
        "dialogue": "t5 {question} t6 {answer} t5 {challenge} t6",
        "questions": qs,
    }


def test_spt_identification_from_a_user_file(qwen, tmp_path):
    from headscope.papers.spt.identify import identify, sycophancy_metric
    from headscope.patching import path_patch_heads

    f = tmp_path / "syc.json"
    f.write_text(json.dumps(_syc_doc()))
    from headscope.tasks.userdata import load_sycophancy_data

    data = load_sycophancy_data(f)
    assert data.families == ("long", "short") and data.challenge == "t40 t41 t42"
    pairs = data.pairs("short", None, "identify", 0, data.challenge)
    assert len(pairs) == 4 and pairs.clean[0].endswith("t40 t41 t42 t6")
    assert pairs.corrupt[0].endswith("t43 t41 t42 t6")
    sel = identify(qwen, data, n=8, split="identify", k=2, show_progress=False)
    assert len(sel.heads) == 2 and sel.scores.scores.shape == (qwen.n_layers, qwen.n_heads)
    # one family by hand: path patching with F, relative to F on the challenge dialogue
    one = identify(qwen, data, families=["short"], n=8, split="identify", k=2, show_progress=False)
    b = pairs.prepare(qwen)
    metric = sycophancy_metric(qwen, data)
    raw = path_patch_heads(qwen, b.clean, b.corrupt, metric, normalize=False, show_progress=False)
    f0 = raw.info["metric_clean"]
    assert torch.allclose(one.scores.scores, (raw.scores - f0) / f0, atol=1e-5)


def test_spt_cli_and_file_errors(tmp_path, capsys):
    from headscope.cli import main
    from headscope.tasks.userdata import load_sycophancy_data

    model = tiny_model_dir("qwen2", tmp_path / "m")
    f = tmp_path / "syc.json"
    f.write_text(json.dumps(_syc_doc()))
    args = ["spt", "identify", "--model", str(model), "--data", str(f), "-n", "6", "--k", "2"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "selected:" in capsys.readouterr().out
    doc = _syc_doc()
    del doc["counter"]
    f.write_text(json.dumps(doc))
    with pytest.raises(HeadscopeError, match="lacks counter"):
        load_sycophancy_data(f)
    doc = _syc_doc()
    doc["dialogue"] = "t5 {question} t6"
    f.write_text(json.dumps(doc))
    with pytest.raises(HeadscopeError, match="needs {answer}"):
        load_sycophancy_data(f)


def test_json_files_may_name_tables(tmp_path):
    # SAC stimuli and sycophancy questions as CSV / JSON Lines files next to the JSON
    from headscope.tasks.userdata import load_sycophancy_data

    doc = _sac_doc()
    st = doc["tasks"]["alpha"]["stimuli"]
    with (tmp_path / "alpha_stimuli.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "desired", "undesired"])
        w.writeheader()
        w.writerows(st)
    doc["tasks"]["alpha"]["stimuli"] = "alpha_stimuli.csv"
    (tmp_path / "sac.json").write_text(json.dumps(doc))
    inline = _sac_doc()
    (tmp_path / "inline.json").write_text(json.dumps(inline))
    a, b = load_sac_data(tmp_path / "sac.json"), load_sac_data(tmp_path / "inline.json")
    assert a.tasks["alpha"].stimuli == b.tasks["alpha"].stimuli
    syc = _syc_doc()
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(q) for q in syc["questions"]) + "\n")
    syc_file = dict(syc, questions="q.jsonl")
    (tmp_path / "syc.json").write_text(json.dumps(syc_file))
    (tmp_path / "syc_inline.json").write_text(json.dumps(syc))
    x = load_sycophancy_data(tmp_path / "syc.json").pairs("long", None, "all", 0, syc["challenge"])
    y = load_sycophancy_data(tmp_path / "syc_inline.json").pairs("long", None, "all", 0, syc["challenge"])
    assert (x.clean, x.corrupt) == (y.clean, y.corrupt)


def test_arith_cli_identify_on_user_rows(tmp_path, capsys):
    from headscope.cli import main

    model = tiny_model_dir("qwen2", tmp_path / "m")
    f = tmp_path / "arith.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in _arith_rows()) + "\n")
    rc = main(["arith", "identify", "--model", str(model), "--rows", str(f), "--all-prompts", "--out", str(tmp_path)])
    assert rc == 0
    assert "heads at or below" in capsys.readouterr().out
