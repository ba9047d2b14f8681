"""``headscope fl``: bad input gives a HeadscopeError naming the fix; a small run prints and writes results."""

import argparse
import json

import pytest

from federated.cli import register
from headscope.common import HeadscopeError


def _parse(argv):
    p = argparse.ArgumentParser(prog="headscope")
    register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["fl", "run", "fedprox"], "unknown algorithm"),
        (["fl", "run", "fedavg", "--alpha", "0"], "alpha"),
        (["fl", "run", "fedavg", "--alpha", "-0.5"], "alpha"),
        (["fl", "run", "fedavg", "--clients", "100000"], "clients"),
        (["fl", "run", "fusefl", "--engine", "spark"], "engine"),
        (["fl", "bench", "--alphas", "0.1,x"], "numbers"),
        (["fl", "bench", "--alphas", "0,0.5"], "alphas"),
        (["fl", "bench", "--algorithms", "fedavg,nope"], "unknown algorithm"),
    ],
)
def test_bad_input(argv, match):
    args = _parse(argv)
    with pytest.raises(HeadscopeError, match=match):
        args.func(args)


def test_run_prints_and_writes(tmp_path, capsys):
    args = _parse(
        [
            "fl",
            "run",
            "ensemble",
            "--clients",
            "2",
            "--local-epochs",
            "1",
            "--width",
            "4",
            "--out",
            str(tmp_path),
            "--plot",
            str(tmp_path / "hist"),
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "results.json").read_text())[0]
    assert res["algorithm"] == "ensemble" and f"{res['accuracy']:.4f}" in out
    assert (tmp_path / "hist.html").exists()


def test_bench_table(tmp_path, capsys):
    args = _parse(
        [
            "fl",
            "bench",
            "--alphas",
            "0.5,1",
            "--seeds",
            "0",
            "--algorithms",
            "fedavg,ensemble",
            "--clients",
            "2",
            "--local-epochs",
            "1",
            "--width",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| fedavg |" in out and "α=0.5" in out and "α=1" in out
    assert len(json.loads((tmp_path / "results.json").read_text())) == 4
