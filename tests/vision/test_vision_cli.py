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


# ----------------------------------------------------------------------------- bad files through `headscope` main


def _main_err(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """Run ``headscope`` (the real entry point) and return its exit status and stderr lines."""
    from headscope.cli import main

    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def _checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Every kind of wrong file, next to a right one of each kind (written the way `train` writes them)."""
    from vision.checkpoint import save_checkpoint
    from vision.lsnet import LSNet
    from vision.spectralkan import build_change_model

    skan_cfg = {"model": "spectralkan", "bands": 6, "patch": 3}
    files = {
        "lsnet": save_checkpoint(tmp_path / "lsnet.pt", "lsnet", {"space_to_depth": "pixel"}, LSNet()),
        "spectralkan": save_checkpoint(
            tmp_path / "skan.pt", "spectralkan", skan_cfg, build_change_model("spectralkan", 6, 3)
        ),
    }
    files["corrupt"] = tmp_path / "corrupt.pt"
    files["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(files["lsnet"].read_bytes()[:300])
    files["tensor"] = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), files["tensor"])
    # the right kinds, but weights of another shape (hand-edited, or saved from another architecture)
    sd = LSNet().state_dict()
    name = next(k for k, v in sd.items() if v.ndim == 4)
    sd[name] = torch.zeros(*sd[name].shape[:-1], sd[name].shape[-1] + 2)
    files["lsnet_shape"] = tmp_path / "lsnet_shape.pt"
    torch.save({"kind": "lsnet", "config": {"space_to_depth": "pixel"}, "state_dict": sd}, files["lsnet_shape"])
    files["skan_shape"] = tmp_path / "skan_shape.pt"
    torch.save(
        {"config": skan_cfg, "state_dict": build_change_model("spectralkan", 6, 5).state_dict()}, files["skan_shape"]
    )
    # a checkpoint from before `kind` was saved: recognised by its keys
    files["skan_legacy"] = tmp_path / "skan_legacy.pt"
    torch.save(
        {"config": skan_cfg, "state_dict": build_change_model("spectralkan", 6, 3).state_dict()}, files["skan_legacy"]
    )
    return files


LSNET_BAD = [
    ("corrupt", "corrupt or not a checkpoint of tensors"),
    ("truncated", "corrupt, truncated or not a PyTorch checkpoint"),
    ("tensor", "holds Tensor, not a lsnet checkpoint"),
    ("spectralkan", "is a spectralkan checkpoint, not a lsnet one"),
    ("skan_legacy", "do not fit the LSNet"),
    ("lsnet_shape", "1 of another shape"),
]
SKAN_BAD = [
    ("corrupt", "corrupt or not a checkpoint of tensors"),
    ("tensor", "holds Tensor"),
    ("lsnet", "is a lsnet checkpoint, not a spectralkan one"),
    ("skan_shape", "of another shape"),
]


@pytest.mark.parametrize(("which", "match"), LSNET_BAD, ids=[w for w, _ in LSNET_BAD])
def test_lsnet_enhance_bad_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, which: str, match: str
) -> None:
    ck = _checkpoints(tmp_path)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(img)
    argv = ["vision", "lsnet", "enhance", "--checkpoint", str(ck[which]), "--input", str(img), "--size", "16"]
    rc, err = _main_err([*argv, "--out", str(tmp_path / "en")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("headscope: error:") and match in err[0] and str(ck[which]) in err[0]
    assert "lsnet train" in err[0] and not (tmp_path / "en").exists()
    # the right checkpoint goes through the same path
    rc, _ = _main_err([*argv[:4], str(ck["lsnet"]), *argv[5:], "--out", str(tmp_path / "ok")], capsys)
    assert rc == 0 and Image.open(tmp_path / "ok" / "x.png").size == (16, 16)


@pytest.mark.parametrize(("which", "match"), SKAN_BAD, ids=[w for w, _ in SKAN_BAD])
def test_spectralkan_eval_bad_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, which: str, match: str
) -> None:
    ck = _checkpoints(tmp_path)
    argv = ["vision", "spectralkan", "eval", "--size", "12", "--bands", "6", "--out", str(tmp_path / "ev")]
    rc, err = _main_err([*argv, "--checkpoint", str(ck[which])], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("headscope: error:") and match in err[0] and str(ck[which]) in err[0]
    assert "spectralkan train" in err[0] and not (tmp_path / "ev").exists()
    for good in ("spectralkan", "skan_legacy"):
        assert _main_err([*argv, "--checkpoint", str(ck[good])], capsys)[0] == 0


def test_nan_hyperspectral_cube_is_rejected_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A .mat date full of NaN used to train to OA 0.70, Kappa 0 (a constant map); now: exit 2, one line naming it."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    t2 = rng.random((12, 12, 6))
    t2[:, :, 2] = np.nan  # one dead band
    savemat(str(tmp_path / "farm06.mat"), {"imgh": rng.random((12, 12, 6))})
    savemat(str(tmp_path / "farm07.mat"), {"imghl": t2})
    savemat(str(tmp_path / "label.mat"), {"label": (rng.random((12, 12)) < 0.3).astype(np.uint8)})
    argv = ["vision", "spectralkan", "train", "--dataset", "farmland", "--root", str(tmp_path), "--epochs", "1"]
    rc, err = _main_err([*argv, "--fraction", "0.2", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "farm07.mat['imghl'] holds 144 NaN/inf values (16.7% of it)" in err[0] and not (tmp_path / "o").exists()
