"""`headscope gen ...`: the group registers, interpolate writes a strip, bad input is a HeadscopeError."""

from __future__ import annotations

import argparse

import pytest

from generative.cli import register
from generative.data import read_image, save_image
from headscope.common import HeadscopeError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headscope")
    register(p.add_subparsers(dest="command"))
    return p


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture()
def two_pngs(tmp_path, eval_images):
    a = save_image(eval_images[1][0], tmp_path / "a.png")
    b = save_image(eval_images[1][3], tmp_path / "b.png")
    return a, b


def test_interpolate_writes_strip(tmp_path, two_pngs, pixel_model_path, capsys) -> None:
    a, b = two_pngs
    out = tmp_path / "strip.png"
    rc = _run(
        [
            "gen",
            "interpolate",
            str(a),
            str(b),
            "--model",
            pixel_model_path,
            "--method",
            "slerp",
            "--steps",
            "4",
            "--frames",
            "3",
            "--upscale",
            "1",
            "--out",
            str(out),
            "--metrics",
        ]
    )
    assert rc == 0 and out.is_file()
    strip = read_image(out)
    assert strip.shape == (1, 3, 32, 3 * 32 + 2 * 2)
    assert '"endpoint_psnr"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--method", "bezier"], "unknown --method"),
        (["--steps", "1"], "--steps"),
        (["--frames", "1"], "at least 2"),
        (["--stop-frac", "1.5"], "stopping fraction"),
    ],
)
def test_bad_options_raise_headscope_error(two_pngs, pixel_model_path, extra, match) -> None:
    a, b = two_pngs
    with pytest.raises(HeadscopeError, match=match):
        _run(["gen", "interpolate", str(a), str(b), "--model", pixel_model_path, *extra])


def test_missing_image_and_model(tmp_path, two_pngs) -> None:
    a, _ = two_pngs
    with pytest.raises(HeadscopeError, match="does not exist"):
        _run(["gen", "interpolate", str(a), str(tmp_path / "nope.png"), "--steps", "4"])
    with pytest.raises(HeadscopeError, match="no pixel DDPM"):
        _run(["gen", "interpolate", str(a), str(a), "--model", str(tmp_path)])


def test_headscope_main_prints_one_line_and_exits_2(tmp_path, two_pngs, capsys) -> None:
    from headscope.cli import main

    a, _ = two_pngs
    rc = main(["gen", "interpolate", str(a), str(tmp_path / "nope.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "does not exist" in err[0]


def _ddpm_copy(src: str, dst, *, weights: bool, scheduler: bool = True):
    """A copy of the DDPM folder ``src`` at ``dst``, without its weights and/or scheduler when asked."""
    import shutil
    from pathlib import Path

    skip = [] if weights else ["diffusion_pytorch_model*"]
    skip += [] if scheduler else ["scheduler*"]
    shutil.copytree(Path(src), dst, ignore=shutil.ignore_patterns(*skip))
    return dst


@pytest.mark.parametrize(
    "broken, match",
    [("no weights", "no weights"), ("no scheduler", "no noise schedule"), ("corrupt weights", "could not load")],
)
def test_ddpm_folder_without_usable_weights_is_one_line(tmp_path, two_pngs, pixel_model_path, capsys, broken, match):
    """A DDPM folder with unet/config.json but missing/corrupt weights or no scheduler: exit 2, one line naming it."""
    from headscope.cli import main

    model = _ddpm_copy(
        pixel_model_path, tmp_path / "ddpm", weights=broken != "no weights", scheduler=broken != "no scheduler"
    )
    unet_files = sorted((model / "unet").iterdir())
    assert [f.name for f in unet_files if f.name.startswith("diffusion_pytorch_model")] == (
        [] if broken == "no weights" else ["diffusion_pytorch_model.safetensors"]
    )
    if broken == "corrupt weights":
        (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors" * 64)
    a, b = two_pngs
    capsys.readouterr()
    rc = main(["gen", "interpolate", str(a), str(b), "--model", str(model), "--steps", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("headscope: error:") and match in err[0] and str(model) in err[0]
