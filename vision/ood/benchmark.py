"""ConjNorm against pytorch-ood's detectors on the same features and logits, offline.

One run = one in-distribution setting and one seed:

1. split the ID classes of an offline data set into train / held-out val / test
   (scikit-learn's ``digits``, 8×8 images, or the procedural ``mnist1d``, length-40 signals);
   the remaining classes are kept back as near-OOD;
2. train a small MLP classifier on the ID train split; extract its penultimate features
   (post-ReLU) and logits once for every split and every OOD set;
3. fit every detector on the *same* training features/logits and score the same test
   features/logits; ConjNorm picks p (and T) on the held-out ID val split, no OOD used;
4. AUROC, AUPR-OUT and FPR95 through ``pytorch_ood.metrics.functional``.

OOD sets: ``held-out-classes`` (near-OOD: the ID data set's other classes) and far-OOD
sets made from the ID test split or from bundled images: ``noise`` (uniform noise matched to
the ID value range), ``flipped`` (upside-down / time-reversed ID test inputs), ``inverted``
(value-inverted ID test inputs), ``textures`` (crops of scikit-image's bundled brick, grass
and gravel photos, downsampled to the ID input shape).

FPR95 is the paper's convention (ConjNorm, KNN, ReAct): the share of OOD samples accepted
as ID at the threshold that accepts 95% of the ID test samples. (pytorch-ood's
``FPRAtTPR`` takes OOD as the positive class instead; we call it with the roles swapped.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from headscope.common import HeadscopeError, log, progress, seed_everything
from headscope.common.threads import num_threads

SETTINGS = ("digits", "mnist1d")
DETECTORS = (
    "ConjNorm",
    "ConjNorm-p2.2-T0.05",
    "MaxSoftmax",
    "EnergyBased",
    "MaxLogit",
    "GEN",
    "Mahalanobis",
    "KNN",
    "ReAct",
    "ViM",
)
OOD_SETS = ("held-out-classes", "noise", "flipped", "inverted", "textures")


@dataclass
class OODData:
    """Inputs of one setting: ID splits ([N, F] float, labels 0..C-1) and named OOD sets."""

    name: str
    x_train: Float[Tensor, " n f"]
    y_train: Int[Tensor, " n"]
    x_val: Float[Tensor, " v f"]
    y_val: Int[Tensor, " v"]
    x_test: Float[Tensor, " t f"]
    y_test: Int[Tensor, " t"]
    ood: dict[str, Float[Tensor, " o f"]]
    n_classes: int


@dataclass
class Row:
    """One (setting, seed, OOD set, detector) result; metrics in [0, 1]."""

    setting: str
    seed: int
    ood_set: str
    detector: str
    auroc: float
    aupr: float
    fpr95: float


# -- data ----------------------------------------------------------------------------


def _stratified_split(
    y: np.ndarray, rng: np.random.Generator, fractions=(0.6, 0.2)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tr, va, te = [], [], []
    for k in np.unique(y):
        idx = rng.permutation(np.nonzero(y == k)[0])
        a = int(round(fractions[0] * len(idx)))
        b = a + int(round(fractions[1] * len(idx)))
        tr.append(idx[:a])
        va.append(idx[a:b])
        te.append(idx[b:])
    return np.concatenate(tr), np.concatenate(va), np.concatenate(te)


def _texture_patches(n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """n crops of scikit-image's bundled texture photos, resampled to ``shape``, in [0, 1]."""
    from skimage import data as skdata
    from skimage.transform import resize

    photos = [skdata.brick(), skdata.grass(), skdata.gravel()]
    out = []
    for i in range(n):
        img = photos[i % len(photos)].astype(np.float64) / 255.0
        size = int(rng.integers(24, 97))
        r, c = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        crop = img[r : r + size, c : c + size]
        if len(shape) == 3:  # (C, H, W): a grey patch repeated over the channels
            patch = np.repeat(resize(crop, shape[1:], anti_aliasing=True)[None], shape[0], axis=0)
        elif len(shape) == 2:
            patch = resize(crop, shape, anti_aliasing=True)
        else:  # 1-D signal: one row of the crop, resampled
            row = crop[size // 2]
            patch = np.interp(np.linspace(0, size - 1, shape[0]), np.arange(size), row)
        lo, hi = patch.min(), patch.max()
        out.append((patch - lo) / (hi - lo + 1e-12))
    return np.stack(out)


def _build(
    name: str, x: np.ndarray, y: np.ndarray, shape: tuple[int, ...], n_id: int, seed: int, lo: float, hi: float
) -> OODData:
    rng = np.random.default_rng(seed)
    id_mask = y < n_id
    xi, yi = x[id_mask], y[id_mask]
    tr, va, te = _stratified_split(yi, rng)
    x_test = xi[te]
    n_far = len(te)
    imgs = x_test.reshape((-1, *shape))
    flipped = np.flip(imgs, axis=-2 if len(shape) >= 2 else -1)  # upside-down / time-reversed
    ood = {
        "held-out-classes": x[~id_mask],
        "noise": rng.uniform(lo, hi, size=(n_far, x.shape[1])),
        "flipped": np.ascontiguousarray(flipped).reshape(n_far, -1),
        "inverted": (hi + lo) - x_test,
        "textures": lo + (hi - lo) * _texture_patches(n_far, shape, rng).reshape(n_far, -1),
    }

    def floats(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    def labels(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=torch.long)

    return OODData(
        name,
        floats(xi[tr]),
        labels(yi[tr]),
        floats(xi[va]),
        labels(yi[va]),
        floats(x_test),
        labels(yi[te]),
        {k: floats(v) for k, v in ood.items()},
        n_id,
    )


def digits_setting(seed: int, n_id_classes: int = 6) -> OODData:
    """scikit-learn's 8×8 digits scaled to [0, 1]; digits < ``n_id_classes`` are ID, the rest near-OOD."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _build("digits", d.data / 16.0, d.target, (8, 8), n_id_classes, seed, 0.0, 1.0)


def mnist1d_setting(seed: int, n_id_classes: int = 6, n_samples: int = 4000) -> OODData:
    """mnist1d's procedural length-40 signals (generated, never downloaded), standardised.

    The generator's own seed is fixed (the data set is a fixed object, like digits); ``seed``
    drives the splits, the OOD sets and training.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HeadscopeError("the mnist1d setting needs the mnist1d package: pip install 'headscope[vision]'") from e
    args = get_dataset_args()
    args.num_samples = n_samples
    raw = make_dataset(args)
    x = np.concatenate([raw["x"], raw["x_test"]]).astype(np.float64)
    y = np.concatenate([raw["y"], raw["y_test"]]).astype(np.int64)
    x = (x - x.mean()) / x.std()
    lo, hi = float(np.percentile(x, 1)), float(np.percentile(x, 99))
    return _build("mnist1d", x, y, (x.shape[1],), n_id_classes, seed, lo, hi)


def folder_setting(
    root: str,
    seed: int,
    id_classes: Optional[Sequence[str]] = None,
    image_size: Optional[int] = None,
    grayscale: bool = False,
    max_per_class: Optional[int] = None,
) -> OODData:
    """A CIFAR-style image folder (``root/train/<class>/*.png`` or ``root/<class>/*.png``).

    ``id_classes`` are in-distribution (default: the first half of the sorted class names);
    the other classes are the near-OOD set. Images are flattened to [N, C·H·W] for the MLP.
    """
    from pathlib import Path

    from vision.data.images import load_image_folder, select_classes

    split = "train" if (Path(root) / "train").is_dir() else None
    data = load_image_folder(
        root, split=split, image_size=image_size, grayscale=grayscale, max_per_class=max_per_class
    )
    names = list(id_classes) if id_classes else data.classes[: max(1, len(data.classes) // 2)]
    id_data, rest = select_classes(data, names)
    if len(rest.labels) == 0:
        raise HeadscopeError(f"every class of {root!r} is in-distribution; leave at least one class out as near-OOD")
    if int(torch.bincount(id_data.labels, minlength=len(names)).min()) < 5:
        raise HeadscopeError("each in-distribution class needs at least 5 images (train/val/test split)")
    shape = tuple(id_data.images.shape[1:])
    x = torch.cat([id_data.images, rest.images]).flatten(1).double().numpy()
    y = torch.cat([id_data.labels, rest.labels + len(names)]).numpy()
    return _build(f"folder:{Path(root).name}", x, y, shape, len(names), seed, 0.0, 1.0)


def load_setting(name: str, seed: int, **folder_kw) -> OODData:
    """``digits``, ``mnist1d``, or the path of a CIFAR-style image folder."""
    if name == "digits":
        return digits_setting(seed)
    if name == "mnist1d":
        return mnist1d_setting(seed)
    import os

    if os.path.isdir(name):
        return folder_setting(name, seed, **folder_kw)
    raise HeadscopeError(
        f"unknown in-distribution setting {name!r}; choose one of {', '.join(SETTINGS)} or give an image folder path"
    )


# -- classifier ------------------------------------------------------------------------


class MLP(nn.Module):
    """in → hidden → ReLU → feat → ReLU (penultimate features) → fc (logits)."""

    def __init__(self, n_in: int, n_classes: int, hidden: int = 128, feat: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, feat), nn.ReLU())
        self.fc = nn.Linear(feat, n_classes)

    def features(self, x: Float[Tensor, " b f"]) -> Float[Tensor, " b d"]:
        return self.body(x)

    def forward(self, x: Float[Tensor, " b f"]) -> Float[Tensor, " b c"]:
        return self.fc(self.body(x))


class CNN1D(nn.Module):
    """Small 1-D CNN for mnist1d (an MLP reaches only ~60% there): 3 convs → 64 post-ReLU features → fc."""

    def __init__(self, n_in: int, n_classes: int, channels: int = 32, feat: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        n_out = channels * math.ceil(math.ceil(n_in / 2) / 2)
        self.proj = nn.Sequential(nn.Linear(n_out, feat), nn.ReLU())
        self.fc = nn.Linear(feat, n_classes)

    def features(self, x: Float[Tensor, " b f"]) -> Float[Tensor, " b d"]:
        return self.proj(self.conv(x[:, None, :]).flatten(1))

    def forward(self, x: Float[Tensor, " b f"]) -> Float[Tensor, " b c"]:
        return self.fc(self.features(x))


def train_classifier(data: OODData, seed: int, epochs: int = 60, batch: int = 64, lr: float = 3e-3) -> nn.Module:
    """Adam + cross-entropy on the ID train split (MLP for digits, 1-D CNN for mnist1d)."""
    gen = seed_everything(seed)
    model = (
        CNN1D(data.x_train.shape[1], data.n_classes)
        if data.name == "mnist1d"
        else MLP(data.x_train.shape[1], data.n_classes)
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    n = data.x_train.shape[0]
    for _ in progress(range(epochs), desc=f"train {data.name} seed {seed}"):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


# -- detectors -------------------------------------------------------------------------


@dataclass
class Extracted:
    """Penultimate features and logits of every split, computed once."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    ood: dict[str, tuple[Tensor, Tensor]]


@torch.no_grad()
def extract(model: nn.Module, data: OODData) -> Extracted:
    def f(x: Tensor) -> tuple[Tensor, Tensor]:
        return model.features(x), model(x)

    return Extracted(f(data.x_train), f(data.x_val), f(data.x_test), {k: f(v) for k, v in data.ood.items()})


def make_scorers(
    model: nn.Module, ex: Extracted, data: OODData, names: Sequence[str]
) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Fit each named detector on the training features/logits; return name → (features, logits) → outlier score."""
    from pytorch_ood.detector import GEN, KNN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax, ReAct, ViM

    from .conjnorm import ConjNorm

    z_tr, _ = ex.train
    y_tr = data.y_train
    out: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
    for name in names:
        if name == "ConjNorm":
            det = ConjNorm(p=None, p_grid=(1.5, 2.0, 2.2, 2.5, 3.0, 4.0), t_grid=(0.01, 0.05, 0.1, 0.5)).fit_features(
                z_tr, y_tr, ex.val[0], data.y_val
            )
            out[name] = lambda z, lg, det=det: det.predict_features(z)
        elif name == "ConjNorm-p2.2-T0.05":
            det = ConjNorm(p=2.2, temperature=0.05).fit_features(z_tr, y_tr)
            out[name] = lambda z, lg, det=det: det.predict_features(z)
        elif name == "MaxSoftmax":
            out[name] = lambda z, lg, det=MaxSoftmax(None): det.predict_logits(lg)
        elif name == "EnergyBased":
            out[name] = lambda z, lg, det=EnergyBased(None): det.predict_logits(lg)
        elif name == "MaxLogit":
            out[name] = lambda z, lg, det=MaxLogit(None): det.predict_logits(lg)
        elif name == "GEN":
            out[name] = lambda z, lg, det=GEN(None): det.predict_logits(lg)
        elif name == "Mahalanobis":
            det = Mahalanobis(None).fit_features(z_tr, y_tr)
            out[name] = lambda z, lg, det=det: det.predict_features(z)
        elif name == "KNN":
            # the paper's k = 50 is for 50k CIFAR images; scale it (~1.5% of the training set)
            det = KNN(None, k=max(1, min(50, len(z_tr) // 64))).fit_features(z_tr, y_tr)
            out[name] = lambda z, lg, det=det: det.predict_features(z)
        elif name == "ReAct":

            def head(fm: Tensor) -> Tensor:
                return model.fc(fm.flatten(1))

            det = ReAct(backbone=None, head=head).fit_feature_maps(z_tr[:, :, None, None], y_tr)
            out[name] = lambda z, lg, det=det: det.predict_feature_maps(z[:, :, None, None])
        elif name == "ViM":
            d = z_tr.shape[1] // 2
            det = ViM(None, d=d, w=model.fc.weight, b=model.fc.bias).fit_features(z_tr, y_tr)
            out[name] = lambda z, lg, det=det: det.predict_features(z)
        else:
            raise HeadscopeError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)} or 'all'")
    return out


# -- metrics -------------------------------------------------------------------------


def ood_metrics(score_id: Float[Tensor, " n"], score_ood: Float[Tensor, " m"]) -> dict[str, float]:
    """AUROC, AUPR-OUT and FPR95 (OOD accepted at 95% ID acceptance) of outlier scores (higher = OOD)."""
    from pytorch_ood.metrics.functional import aupr, auroc, fpr_at_tpr

    s = torch.cat([score_id, score_ood]).double()
    is_ood = torch.cat([torch.zeros(len(score_id), dtype=torch.bool), torch.ones(len(score_ood), dtype=torch.bool)])
    labels = torch.where(is_ood, -1, 0)  # pytorch-ood: label < 0 = OOD (positive)
    swapped = torch.where(is_ood, 0, -1)  # ID as positive, scored by -s (ID-ness)
    return {
        "auroc": float(auroc(s, labels)),
        "aupr": float(aupr(s, labels, positive="ood")),
        "fpr95": float(fpr_at_tpr(-s, swapped, tpr=0.95)),
    }


def run_once(
    setting: str, seed: int, detectors: Sequence[str] = DETECTORS, epochs: int = 60, **folder_kw
) -> tuple[list[Row], dict]:
    """Train, extract, fit and score for one setting and seed; returns rows and run info.

    Runs on at most two torch threads; the caller's thread setting is restored afterwards.
    """
    with num_threads(min(torch.get_num_threads(), 2)):
        return _run_once(setting, seed, detectors, epochs, **folder_kw)


def _run_once(setting: str, seed: int, detectors: Sequence[str], epochs: int, **folder_kw) -> tuple[list[Row], dict]:
    data = load_setting(setting, seed, **folder_kw)
    model = train_classifier(data, seed, epochs=epochs)
    ex = extract(model, data)
    acc = float((ex.test[1].argmax(-1) == data.y_test).float().mean())
    log(
        f"[ood] {setting} seed {seed}: ID test accuracy {acc:.3f} "
        f"({data.n_classes} classes, {len(data.y_train)} train)"
    )
    scorers = make_scorers(model, ex, data, detectors)
    rows = []
    for name, fn in scorers.items():
        s_id = fn(*ex.test).detach().cpu()
        for ood_name, (z, lg) in ex.ood.items():
            m = ood_metrics(s_id, fn(z, lg).detach().cpu())
            rows.append(Row(setting, seed, ood_name, name, m["auroc"], m["aupr"], m["fpr95"]))
    info = {"setting": setting, "seed": seed, "id_test_accuracy": acc, "n_train": len(data.y_train)}
    return rows, info


def run(
    settings: Sequence[str], seeds: Sequence[int], detectors: Sequence[str] = DETECTORS, epochs: int = 60, **folder_kw
) -> tuple[list[Row], list[dict]]:
    """`run_once` for every setting and seed."""
    rows, infos = [], []
    for s in settings:
        for seed in seeds:
            r, i = run_once(s, seed, detectors, epochs, **folder_kw)
            rows += r
            infos.append(i)
    return rows, infos


def summarize(rows: Sequence[Row]) -> list[dict]:
    """Mean and std over seeds per (setting, OOD set, detector)."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.setting, r.ood_set, r.detector), []).append(r)
    out = []
    for (setting, ood_set, det), rs in groups.items():
        rec = {"setting": setting, "ood_set": ood_set, "detector": det, "n_seeds": len(rs)}
        for m in ("auroc", "aupr", "fpr95"):
            v = np.array([getattr(r, m) for r in rs])
            rec[m] = float(v.mean())
            rec[m + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(rec)
    return out


def markdown_table(summary: Sequence[dict], metric: str = "fpr95") -> str:
    """Rows = detectors, columns = OOD sets, cells = mean ± std (in %) of ``metric``; per setting."""
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in summary):
        recs = [r for r in summary if r["setting"] == setting]
        sets = list(dict.fromkeys(r["ood_set"] for r in recs))
        dets = list(dict.fromkeys(r["detector"] for r in recs))
        cell = {(r["detector"], r["ood_set"]): r for r in recs}
        better = "lower" if metric == "fpr95" else "higher"
        lines.append(
            f"**{setting}: {metric.upper()} (%), mean ± std over {recs[0]['n_seeds']} seeds ({better} is better)**\n"
        )
        lines.append("| detector | " + " | ".join(sets) + " | mean |")
        lines.append("|---" * (len(sets) + 2) + "|")
        for d in dets:
            vals = [cell[(d, s)] for s in sets]
            cells = [f"{100 * v[metric]:.1f} ± {100 * v[metric + '_std']:.1f}" for v in vals]
            mean = 100 * float(np.mean([v[metric] for v in vals]))
            lines.append(f"| {d} | " + " | ".join(cells) + f" | {mean:.1f} |")
        lines.append("")
    return "\n".join(lines)


def wins(summary: Sequence[dict], ours: str = "ConjNorm") -> list[str]:
    """Plain statements of where ``ours`` is best / not best per (setting, OOD set) on FPR95 and AUROC."""
    out = []
    keys = dict.fromkeys((r["setting"], r["ood_set"]) for r in summary)
    for setting, ood_set in keys:
        recs = {r["detector"]: r for r in summary if r["setting"] == setting and r["ood_set"] == ood_set}
        if ours not in recs:
            continue
        for metric, lower in (("fpr95", True), ("auroc", False)):
            others = {d: r[metric] for d, r in recs.items() if not d.startswith("ConjNorm")}
            if not others:
                continue
            best_d = min(others, key=others.get) if lower else max(others, key=others.get)
            mine, theirs = recs[ours][metric], others[best_d]
            won = mine < theirs if lower else mine > theirs
            out.append(
                f"{setting}/{ood_set} {metric}: {ours} {100 * mine:.1f} vs best other {best_d} {100 * theirs:.1f} -> "
                + ("ConjNorm wins" if won else "ConjNorm does not win")
            )
    return out


def rows_as_dicts(rows: Sequence[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
