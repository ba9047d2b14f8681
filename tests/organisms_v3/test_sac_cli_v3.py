"""``headscope sac`` on organism v3: the CLI picks organism v3's SAC data for ``--model llama``.

Checked against independent numbers: the unsteered row of ``sac evaluate`` equals the
rates of the bundled ``eval.json`` (the organism card's own greedy decoder), and the heads
that ``sac identify`` writes are those of the Python API on ``organism_v3_sac``.
"""

from __future__ import annotations

import json

import pytest

from headscope.paths import organism_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from headscope.cli import main

    d = tmp_path_factory.mktemp("sac_v3")
    args = ["--model", "llama", "--run-id", "t"]
    assert main(["sac", "identify", *args, "--tasks", "safety", "-k", "2", "-n", "8", "--out", str(d)]) == 0
    ident = next(d.glob("*/identify.json"))
    assert main(["sac", "fit", *args, "--task", "safety", "--identify", str(ident), "--out", str(d / "ctl")]) == 0
    assert main(["sac", "evaluate", *args, "--controller", str(d / "ctl.json"), "--out", str(d / "ev")]) == 0
    return d, ident


def test_identify_matches_the_api_on_v3_data(runs):
    from headscope.loading import load_model
    from headscope.papers.sac.identify import identify
    from headscope.tasks.sac_v3 import organism_v3_sac

    _, ident = runs
    model = load_model("llama", backend="tl")
    sel = identify(model, organism_v3_sac(model.tokenizer, ["safety"]), k=2, n=8, show_progress=False)
    got = json.loads(ident.read_text())
    assert "llama_sac_identify" in ident.parent.name
    assert got["heads"]["safety"] == [list(h) for h in sel["safety"].heads]


def test_unsteered_row_equals_the_bundled_card(runs):
    d, _ = runs
    rows = json.loads((d / "ev.json").read_text())
    sets = json.loads((organism_dir("llama-v3") / "eval.json").read_text())["sets"]
    from headscope.tasks.sac_v3 import EVAL_MAP

    for measure, (key, _) in EVAL_MAP.items():
        s = sets[key]
        desired = s["n"] - s["greedy_flawed"]["k"] - s["greedy_other"]["k"]
        assert rows["none"][measure] == pytest.approx(desired / s["n"], abs=1e-12), measure
    assert rows["none"]["kl_last"] == 0.0
    assert len(rows) == 2  # none and the one controller
