"""``headscope vision ...``: SpectralKAN change detection, LSNet enhancement (and OOD, added by ``vision.ood.cli``).

    headscope vision spectralkan train --dataset synthetic --out runs/skan
    headscope vision spectralkan eval  --checkpoint runs/skan/model.pt --dataset farmland --root data/Farmland \
                                       --out runs/eval
    headscope vision lsnet train   --data synthetic --out runs/lsnet
    headscope vision lsnet enhance --checkpoint runs/lsnet/lsnet.pt --input photo.jpg --out runs/enhanced

Heavy imports happen inside the commands, so ``headscope --help`` stays fast. Bad input
raises HeadscopeError (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from headscope.common.errors import HeadscopeError


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add the ``vision`` group and its subcommands; returns the group's subparsers (for extensions)."""
    vision = subparsers.add_parser(
        "vision",
        help="SpectralKAN, LSNet and OOD detection (vision papers)",
        description="Vision papers: SpectralKAN (HSI change detection), LSNet (underwater enhancement), "
        "OOD detection.",
    )
    vsub = vision.add_subparsers(dest="vision_command", metavar="METHOD")
    vision.set_defaults(func=lambda args: (vision.print_help(), 2)[1])
    _register_spectralkan(vsub)
    _register_lsnet(vsub)
    _register_ood(vsub)
    return vsub


def _register_ood(vsub: argparse._SubParsersAction) -> None:
    """The OOD engineer's ``vision.ood.cli.register(vsub)``, when that module exists."""
    try:
        from vision.ood.cli import register as register_ood
    except ImportError:
        return
    register_ood(vsub)


# ----------------------------------------------------------------------------- helpers


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))


def _save_png(path: Path, arr) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(a).save(path)


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise HeadscopeError(f"--{name} must be positive, got {value}")


# ----------------------------------------------------------------------------- spectralkan


def _register_spectralkan(vsub: argparse._SubParsersAction) -> None:
    sk = vsub.add_parser(
        "spectralkan",
        help="hyperspectral change detection with SpectralKAN",
        description="SpectralKAN (and MLP/CNN baselines) for bi-temporal HSI change detection.",
    )
    sksub = sk.add_subparsers(dest="spectralkan_command", metavar="ACTION")
    sk.set_defaults(func=lambda args: (sk.print_help(), 2)[1])

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dataset",
            default="synthetic",
            help="synthetic | farmland | river | hermiston | china | bayarea | barbara (default synthetic)",
        )
        p.add_argument("--root", default=None, help="folder with the dataset's .mat files (real datasets)")
        p.add_argument("--size", type=int, default=120, help="synthetic scene height = width (default 120)")
        p.add_argument("--bands", type=int, default=224, help="synthetic scene bands (default 224)")
        p.add_argument("--scene-seed", type=int, default=0, help="synthetic scene seed")
        p.add_argument("--out", required=True, help="output folder")

    tr = sksub.add_parser(
        "train", help="train on ~1%% of the labelled pixels, evaluate on the rest, write a change map"
    )
    data_args(tr)
    tr.add_argument("--model", default="spectralkan", choices=["spectralkan", "mlp", "cnn"])
    tr.add_argument("--epochs", type=int, default=200)
    tr.add_argument("--fraction", type=float, default=0.01, help="training fraction of each class (default 0.01)")
    tr.add_argument("--patch", type=int, default=5)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=_spectralkan_train)

    ev = sksub.add_parser("eval", help="full-scene change map and metrics of a trained checkpoint")
    data_args(ev)
    ev.add_argument("--checkpoint", required=True, help="model.pt written by `spectralkan train`")
    ev.set_defaults(func=_spectralkan_eval)


def _load_scene(args: argparse.Namespace):
    from vision.data.hsi import load_hsi, synthetic_scene

    if args.dataset == "synthetic":
        _positive("size", args.size)
        return synthetic_scene(args.size, args.size, args.bands, seed=args.scene_seed)
    if args.root is None:
        raise HeadscopeError(
            f"--dataset {args.dataset} needs --root pointing at the folder with its .mat files "
            "(or use --dataset synthetic)"
        )
    return load_hsi(args.dataset, args.root)


def _write_change_outputs(out: Path, scene, cmap, metrics: dict, title: str) -> None:
    import numpy as np

    from headscope.common import save_figure
    from vision.spectralkan import change_map_figure

    np.save(out / "change_map.npy", cmap.astype(np.int8))
    _save_png(out / "change_map.png", cmap.astype(float))
    save_figure(change_map_figure(cmap, scene.label, title=title), out / "change_map")
    _write_json(out / "metrics.json", metrics)


def _spectralkan_train(args: argparse.Namespace) -> int:
    import torch

    from headscope.common import log
    from vision.checkpoint import save_checkpoint
    from vision.spectralkan import build_change_model, change_map, evaluate, prepare_scene, train_change_model

    _positive("epochs", args.epochs)
    _positive("lr", args.lr)
    out = Path(args.out)
    scene = _load_scene(args)
    prep = prepare_scene(scene, patch=args.patch, train_fraction=args.fraction, seed=args.seed)
    log(
        f"{scene.name}: {scene.shape[0]}×{scene.shape[1]}×{scene.bands}, {len(prep.train_y)} training pixels "
        f"({int(prep.train_y.sum())} changed), {len(prep.test_y)} test pixels"
    )
    torch.manual_seed(args.seed)
    model = build_change_model(args.model, scene.bands, args.patch)
    losses = train_change_model(
        model,
        prep.diff_patches(prep.train_pos),
        torch.from_numpy(prep.train_y),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    m = evaluate(model, prep)
    log(f"{args.model}: OA {m.oa:.4f}  AA {m.aa:.4f}  Kappa {m.kappa:.4f}  F1 {m.f1:.4f} on held-out pixels")
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": args.model,
        "bands": scene.bands,
        "patch": args.patch,
        "dataset": scene.name,
        "fraction": args.fraction,
        "seed": args.seed,
        "epochs": args.epochs,
    }
    save_checkpoint(out / "model.pt", "spectralkan", config, model)
    cmap = change_map(model, prep)
    n_params = sum(p.numel() for p in model.parameters())
    _write_change_outputs(
        out,
        scene,
        cmap,
        {
            "held_out": m.as_dict(),
            "config": config,
            "parameters": n_params,
            "final_loss": losses[-1],
            "scene_meta": scene.meta,
        },
        f"{args.model} on {scene.name}: OA {m.oa:.3f}, κ {m.kappa:.3f}",
    )
    print(json.dumps({"oa": m.oa, "aa": m.aa, "kappa": m.kappa, "f1": m.f1, "parameters": n_params, "out": str(out)}))
    return 0


def _spectralkan_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from vision.checkpoint import load_checkpoint, load_weights
    from vision.spectralkan import build_change_model, change_map, change_metrics, prepare_scene

    ckpt = Path(args.checkpoint)
    train_cmd = "headscope vision spectralkan train"
    state = load_checkpoint(ckpt, "spectralkan", train_cmd, required=("model", "bands", "patch"))
    cfg = state["config"]
    if not all(isinstance(cfg[k], int) and cfg[k] > 0 for k in ("bands", "patch")):
        raise HeadscopeError(
            f"{ckpt}: config bands={cfg['bands']!r}, patch={cfg['patch']!r} are not positive integers; "
            f"pass the .pt file written by `{train_cmd}`"
        )
    scene = _load_scene(args)
    if scene.bands != cfg["bands"]:
        raise HeadscopeError(
            f"the checkpoint was trained on {cfg['bands']} bands but {scene.name} has {scene.bands}; "
            "use a model trained on this sensor"
        )
    model = build_change_model(cfg["model"], cfg["bands"], cfg["patch"])
    load_weights(model, state["state_dict"], ckpt, train_cmd)
    prep = prepare_scene(scene, patch=cfg["patch"], train_fraction=cfg.get("fraction", 0.01), seed=cfg.get("seed", 0))
    cmap = change_map(model, prep)
    lab = scene.label >= 0
    m = change_metrics(scene.label[lab], cmap[lab])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_change_outputs(
        out,
        scene,
        cmap,
        {"all_labelled": m.as_dict(), "checkpoint": str(ckpt), "changed_fraction_predicted": float(np.mean(cmap))},
        f"{cfg['model']} on {scene.name}: OA {m.oa:.3f}, κ {m.kappa:.3f}",
    )
    print(json.dumps({"oa": m.oa, "aa": m.aa, "kappa": m.kappa, "f1": m.f1, "out": str(out)}))
    return 0


# ----------------------------------------------------------------------------- lsnet


def _register_lsnet(vsub: argparse._SubParsersAction) -> None:
    ls = vsub.add_parser(
        "lsnet",
        help="underwater image enhancement with LSNet",
        description="LSNet (7.5K parameters) for underwater image enhancement.",
    )
    lssub = ls.add_subparsers(dest="lsnet_command", metavar="ACTION")
    ls.set_defaults(func=lambda args: (ls.print_help(), 2)[1])

    tr = lssub.add_parser("train", help="train on synthetic pairs or a paired folder (input/ + reference/)")
    tr.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (degraded scikit-image photos) or a folder with input/ and reference/ "
        "(UIEB/EUVP/LSUI layouts)",
    )
    tr.add_argument("--size", type=int, default=64, help="training/eval image size (paper: 256; default 64 for CPU)")
    tr.add_argument("--pairs-per-photo", type=int, default=16, help="synthetic crops per photo")
    tr.add_argument("--epochs", type=int, default=15)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", required=True)
    tr.set_defaults(func=_lsnet_train)

    en = lssub.add_parser("enhance", help="enhance an image or a folder of images")
    en.add_argument("--checkpoint", required=True, help="lsnet.pt written by `lsnet train`")
    en.add_argument("--input", required=True, help="an image file or a folder of images")
    en.add_argument("--size", type=int, default=256, help="resize to size×size first (paper: 256)")
    en.add_argument("--out", required=True)
    en.set_defaults(func=_lsnet_enhance)


def _before_after(before, after, out: Path, title: str, reference=None) -> None:
    """Side-by-side PNG (PIL, no browser needed) and an HTML figure."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from headscope.common import save_figure

    panels = [("input", before), ("LSNet", after)] + ([("reference", reference)] if reference is not None else [])
    arrs = [(np.clip(p.permute(1, 2, 0).numpy(), 0, 1) * 255).round().astype(np.uint8) for _, p in panels]
    _save_png(out.with_suffix(".png"), np.concatenate(arrs, axis=1))
    fig = make_subplots(rows=1, cols=len(arrs), subplot_titles=[n for n, _ in panels])
    for j, a in enumerate(arrs, start=1):
        fig.add_trace(go.Image(z=a), row=1, col=j)
    fig.update_layout(title=title, template="plotly_white")
    save_figure(fig, out)


def _lsnet_train(args: argparse.Namespace) -> int:
    import torch

    from headscope.common import log
    from vision.checkpoint import save_checkpoint
    from vision.data.underwater import HELD_OUT_PHOTOS, TRAIN_PHOTOS, PairedFolder, synthetic_pairs
    from vision.lsnet import LSNet, train_lsnet
    from vision.metrics import psnr, ssim

    for name in ("size", "epochs", "lr", "batch_size"):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.size % 2:
        raise HeadscopeError(f"--size must be even (LSNet's 2×2 space-to-depth), got {args.size}")
    if args.data == "synthetic":
        tr_in, tr_ref, _ = synthetic_pairs(TRAIN_PHOTOS, args.pairs_per_photo, args.size, seed=args.seed)
        te_in, te_ref, _ = synthetic_pairs(
            HELD_OUT_PHOTOS, max(2, args.pairs_per_photo // 2), args.size, seed=args.seed + 1000
        )
    else:
        xs, ys = PairedFolder(args.data, size=args.size).tensors()
        if len(xs) < 2:
            raise HeadscopeError(f"{args.data} has {len(xs)} pair(s); need at least 2 to hold one out for evaluation")
        g = torch.Generator().manual_seed(args.seed)
        perm = torch.randperm(len(xs), generator=g)
        n_te = max(1, len(xs) // 10)
        te_in, te_ref, tr_in, tr_ref = xs[perm[:n_te]], ys[perm[:n_te]], xs[perm[n_te:]], ys[perm[n_te:]]
    log(f"LSNet: {len(tr_in)} training pairs, {len(te_in)} held-out pairs at {args.size}×{args.size}")
    torch.manual_seed(args.seed)
    model = LSNet()
    losses = train_lsnet(
        model, tr_in, tr_ref, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed
    )
    pred = model.enhance(te_in)
    metrics = {
        "identity": {"psnr": psnr(te_in, te_ref), "ssim": ssim(te_in, te_ref)},
        "lsnet": {"psnr": psnr(pred, te_ref), "ssim": ssim(pred, te_ref)},
        "losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss": "L1 + (1 - SSIM) (the official repository has no training loss)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "lsnet.pt", "lsnet", {"space_to_depth": "pixel"}, model)
    _write_json(out / "metrics.json", metrics)
    _before_after(
        te_in[0],
        pred[0],
        out / "before_after",
        f"held-out: PSNR {metrics['identity']['psnr']:.2f} → {metrics['lsnet']['psnr']:.2f} dB",
        reference=te_ref[0],
    )
    log(
        f"held-out PSNR {metrics['identity']['psnr']:.2f} → {metrics['lsnet']['psnr']:.2f} dB, "
        f"SSIM {metrics['identity']['ssim']:.4f} → {metrics['lsnet']['ssim']:.4f}"
    )
    print(json.dumps({k: metrics[k] for k in ("identity", "lsnet", "parameters")} | {"out": str(out)}))
    return 0


def _lsnet_enhance(args: argparse.Namespace) -> int:
    from headscope.common import progress
    from vision.checkpoint import load_checkpoint, load_weights
    from vision.data.underwater import _EXT, load_image
    from vision.lsnet import LSNet

    ckpt = Path(args.checkpoint)
    if args.size % 2 or args.size <= 0:
        raise HeadscopeError(f"--size must be a positive even number, got {args.size}")
    train_cmd = "headscope vision lsnet train"
    state = load_checkpoint(ckpt, "lsnet", train_cmd)
    model = LSNet(space_to_depth=state["config"].get("space_to_depth", "pixel"))
    load_weights(model, state["state_dict"], ckpt, train_cmd)
    src = Path(args.input)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in _EXT)
    elif src.is_file():
        files = [src]
    else:
        raise HeadscopeError(f"{src} is neither an image nor a folder")
    if not files:
        raise HeadscopeError(f"no images ({', '.join(_EXT)}) in {src}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, f in enumerate(progress(files, desc="enhance")):
        x = load_image(f, args.size).unsqueeze(0)
        y = model.enhance(x)[0]
        _save_png(out / f"{f.stem}.png", y.permute(1, 2, 0).numpy())
        if i == 0:
            _before_after(x[0], y, out / f"{f.stem}_before_after", f"LSNet: {f.name}")
        written.append(str(out / f"{f.stem}.png"))
    print(json.dumps({"enhanced": written}))
    return 0
