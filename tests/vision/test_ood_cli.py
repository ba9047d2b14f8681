"""``headscope vision ood``: parser wiring, one short run, one-line errors."""

from __future__ import annotations

import argparse
import json

import pytest

from headscope.common import HeadscopeError
from vision.ood import benchmark as bm
from vision.ood.cli import _DETECTORS, parse_detectors, register_ood


def _parser():
    top = argparse.ArgumentParser(prog="headscope")
    sub = top.add_subparsers(dest="command")
    vision = sub.add_parser("vision").add_subparsers(dest="vision_command")
    register_ood(vision)
    return top


def test_detector_names_match_the_benchmark():
    assert tuple(_DETECTORS) == tuple(bm.DETECTORS)
    assert parse_detectors("all") == list(bm.DETECTORS)
    assert parse_detectors("conjnorm, knn") == ["ConjNorm", "KNN"]
    with pytest.raises(HeadscopeError, match="unknown detector"):
        parse_detectors("ConjNorm,Foo")


def test_short_run_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = _parser().parse_args(
        ["vision", "ood", "--id", "digits", "--detectors", "ConjNorm,MaxLogit", "--epochs", "5", "--json", str(out)]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "ConjNorm" in text and "MaxLogit" in text and "FPR95" in text
    res = json.loads(out.read_text())
    assert {r["detector"] for r in res["rows"]} == {"ConjNorm", "MaxLogit"}
    assert {r["ood_set"] for r in res["rows"]} == set(bm.OOD_SETS)


def test_bad_id_is_a_headscope_error(tmp_path):
    args = _parser().parse_args(["vision", "ood", "--id", str(tmp_path / "nope")])
    with pytest.raises(HeadscopeError, match="neither digits, mnist1d nor an existing image folder"):
        args.func(args)


def test_vision_cli_registers_the_ood_command():
    vision_cli = pytest.importorskip("vision.cli", reason="vision/cli.py is not there yet")
    top = argparse.ArgumentParser(prog="headscope")
    vision_cli.register(top.add_subparsers(dest="command"))
    args = top.parse_args(["vision", "ood", "--id", "digits", "--detectors", "nonsense"])
    with pytest.raises(HeadscopeError, match="unknown detector"):
        args.func(args)


def test_headscope_main_prints_one_line_and_exits_2(capsys):
    pytest.importorskip("vision.cli", reason="vision/cli.py is not there yet")
    from headscope.cli import main

    rc = main(["vision", "ood", "--detectors", "nonsense"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown detector" in err[0]
