"""The default alias ``llama`` is organism v3, training seed 0; organism v2 is ``llama-v2``.

- ``llama`` resolves to the ``llama-v3`` folder and loads the same weights (logits equal
  to those of ``llama-v3`` loaded by its own name);
- a v2 prompt set on organism v3 (and a v3 one on organism v2) is a HeadscopeError that
  names the fix, in Python and on the CLI (one line, exit 2), instead of a number;
- the CLI's default task on organism v3 is its own held-out arithmetic.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.paths import ORGANISMS, organism_dir, organism_generation


def test_alias_names_the_v3_seed0_folder():
    assert organism_dir("llama") == organism_dir("llama-v3")
    assert organism_dir("llama-v2").name == "llama-v2" and (organism_dir("llama-v2") / "model.safetensors").is_file()
    assert {"llama", "llama-v2", "llama-v3", "llama-v3-s1", "llama-v3-s2"} <= set(ORGANISMS)
    gens = {n: organism_generation(n) for n in ("llama", "llama-v3", "llama-v3-s2", "llama-v2", "induction", "gpt2")}
    assert gens == {
        "llama": "v3",
        "llama-v3": "v3",
        "llama-v3-s2": "v3",
        "llama-v2": "v2",
        "induction": None,
        "gpt2": None,
    }
    assert organism_generation(organism_dir("llama-v2")) == "v2"  # a folder, by its organism.json


@pytest.fixture(scope="module")
def v3():
    from headscope.loading import load_model

    return load_model("llama", backend="tl")


def test_llama_loads_organism_v3_seed0(v3):
    from headscope.loading import load_model
    from headscope.tasks import get_task

    ref = load_model("llama-v3", backend="tl")
    toks = v3.to_tokens(get_task("arithmetic_v3", n=4).clean)
    assert torch.equal(toks, ref.to_tokens(get_task("arithmetic_v3", n=4).clean))
    assert torch.equal(v3.logits(toks), ref.logits(toks))
    assert (v3.n_layers, v3.n_heads) == (6, 8)


def test_v2_task_on_v3_model_is_an_error(v3):
    from headscope.tasks import get_task

    with pytest.raises(HeadscopeError, match=r"organism v2's vocabulary.*'arithmetic_v3'.*llama-v2"):
        get_task("arithmetic", n=2).prepare(v3)
    with pytest.raises(HeadscopeError, match="organism v2's vocabulary"):
        get_task("safety", n=2).prepare(v3)
    assert get_task("arithmetic_v3", n=2).prepare(v3).clean.shape[0] == 2


def test_v3_task_on_v2_model_is_an_error():
    from headscope.loading import load_model
    from headscope.tasks import get_task

    v2 = load_model("llama-v2", backend="tl")
    with pytest.raises(HeadscopeError, match="written for organism v3"):
        get_task("arithmetic_v3", n=2).prepare(v2)
    assert get_task("arithmetic", n=2).prepare(v2).clean.shape[0] == 2


@pytest.mark.parametrize(
    "model,task,want",
    [
        ("llama", None, "arithmetic_v3"),
        ("llama", "arithmetic", "arithmetic_v3"),
        ("llama-v3-s1", None, "arithmetic_v3"),
        ("llama-v2", None, "arithmetic"),
        ("induction", None, "induction"),
    ],
)
def test_cli_default_task_follows_the_organism(model, task, want):
    from headscope.cli._args import task_from_args

    ns = argparse.Namespace(model=model, task=task, prompts=None, n_prompts=2, seed=0)
    assert task_from_args(ns).name == want


@pytest.mark.parametrize(
    "argv",
    [
        ["spt", "knockout", "--model", "llama", "-n", "4"],
        ["arith", "inspect", "--model", "llama-v3-s1"],
        ["arith", "tune", "--model", "llama"],
    ],
)
def test_paper_commands_refuse_organism_v3_in_one_line(argv, capsys):
    from headscope.cli import main

    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("headscope: error:"), err
    assert "organism v2's vocabulary" in err[0] and "--model llama-v2" in err[0], err[0]


def test_paper_commands_default_to_v2():
    from headscope.cli import build_parser

    for argv in (["spt", "identify"], ["arith", "identify"], ["sac", "identify"]):
        assert build_parser().parse_args(argv).model == "llama-v2"
    assert build_parser().parse_args(["patch"]).model == "llama"
