"""``headscope vision spectralkan|lsnet``: tiny end-to-end runs and one-line errors for bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vision.cli
from headscope.common import HeadscopeError

torch.set_num_threads(1)


def run(argv: list[str]) -> int:
    """Parse like ``headscope`` does (vision.cli.register on the top-level subparsers) and run the command."""
    parser = argparse.ArgumentParser(prog="headscope")
    vision.cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSCOPE_PROGRESS", "0")
    monkeypatch.setenv("HEADSCOPE_HTML_CDN", "1")  # small HTML files


def test_spectralkan_train_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "skan"
    assert (
        run(
            [
                "vision",
                "spectralkan",
                "train",
                "--dataset",
                "synthetic",
                "--size",
                "20",
                "--bands",
                "6",
                "--epochs",
                "2",
                "--fraction",
                "0.1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= res["oa"] <= 1
    for f in ("model.pt", "metrics.json", "change_map.npy", "change_map.png", "change_map.html"):
        assert (out / f).is_file(), f
    cmap = np.load(out / "change_map.npy")
    assert cmap.shape == (20, 20) and set(np.unique(cmap)) <= {0, 1}
    ev = tmp_path / "eval"
    assert (
        run(
            [
                "vision",
                "spectralkan",
                "eval",
                "--checkpoint",
                str(out / "model.pt"),
                "--dataset",
                "synthetic",
                "--size",
                "20",
                "--bands",
                "6",
                "--out",
                str(ev),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.load(ev / "change_map.npy"), cmap)  # same model, same scene -> same map
    with pytest.raises(HeadscopeError, match="trained on 6 bands"):
        run(
            [
                "vision",
                "spectralkan",
                "eval",
                "--checkpoint",
                str(out / "model.pt"),
                "--dataset",
                "synthetic",
                "--size",
                "20",
                "--bands",
                "7",
                "--out",
                str(ev),
            ]
        )


def test_spectralkan_bad_input(tmp_path: Path) -> None:
    with pytest.raises(HeadscopeError, match="needs --root"):
        run(["vision", "spectralkan", "train", "--dataset", "farmland", "--out", str(tmp_path)])
    with pytest.raises(HeadscopeError, match="not found"):
        run(["vision", "spectralkan", "eval", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    with pytest.raises(HeadscopeError, match="epochs"):
        run(["vision", "spectralkan", "train", "--epochs", "0", "--out", str(tmp_path)])


def test_lsnet_train_on_folder_and_enhance(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    for d in ("input", "reference"):
        (tmp_path / "pairs" / d).mkdir(parents=True)
    for i in range(3):
        ref = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(ref).save(tmp_path / "pairs" / "reference" / f"{i}.png")
        Image.fromarray((ref * 0.5 + 60).astype(np.uint8)).save(tmp_path / "pairs" / "input" / f"{i}.png")
    out = tmp_path / "lsnet"
    assert (
        run(
            [
                "vision",
                "lsnet",
                "train",
                "--data",
                str(tmp_path / "pairs"),
                "--size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["parameters"] == 7534
    assert (out / "lsnet.pt").is_file() and (out / "before_after.png").is_file()
    enh = tmp_path / "enh"
    assert (
        run(
            [
                "vision",
                "lsnet",
                "enhance",
                "--checkpoint",
                str(out / "lsnet.pt"),
                "--input",
                str(tmp_path / "pairs" / "input"),
                "--size",
                "32",
                "--out",
                str(enh),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in enh.glob("?.png")) == ["0.png", "1.png", "2.png"]
    assert Image.open(enh / "0.png").size == (32, 32)
    assert (enh / "0_before_after.png").is_file() and (enh / "0_before_after.html").is_file()


def test_lsnet_bad_input(tmp_path: Path) -> None:
    with pytest.raises(HeadscopeError, match="paired layouts"):
        run(["vision", "lsnet", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(HeadscopeError, match="even"):
        run(["vision", "lsnet", "train", "--size", "33", "--out", str(tmp_path / "o")])
    with pytest.raises(HeadscopeError, match="not found"):
        run(
            [
                "vision",
                "lsnet",
                "enhance",
                "--checkpoint",
                str(tmp_path / "x.pt"),
                "--input",
                str(tmp_path),
                "--out",
                str(tmp_path),
            ]
        )
