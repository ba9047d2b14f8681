"""Bi-temporal hyperspectral change-detection scenes: the six public datasets' ``.mat``
layouts, a synthetic scene generator for offline use, and SpectralKAN's preprocessing.

Label convention everywhere in ``vision``: ``1`` changed, ``0`` unchanged, ``-1``
unlabelled. Images are ``(H, W, bands)`` float32.

The file layouts are those read by SpectralKAN's official ``demo.py``:

========  ===================================================  ============================
dataset   files['key']                                         labels in the file
========  ===================================================  ============================
farmland  farm06.mat['imgh'], farm07.mat['imghl'],             1 changed, 0 unchanged
          label.mat['label']
river     river_before.mat['river_before'],                    255 changed, 0 unchanged
          river_after.mat['river_after'],
          groundtruth.mat['lakelabel_v1']
hermiston USA_Change_Dataset.mat['T1'|'T2'|'Binary']           1 changed, 0 unchanged
china     China_Change_Dataset.mat['T1'|'T2'|'Binary']         1 changed, 0 unchanged
bayarea   Bay_Area_2013.mat, Bay_Area_2015.mat,                1 changed, 2 unchanged,
          bayArea_gtChanges.mat (all key 'HypeRvieW')          0 unlabelled
barbara   barbara_2013.mat, barbara_2014.mat,                  as bayarea
          barbara_gtChanges.mat (all key 'HypeRvieW')
========  ===================================================  ============================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Int
from scipy import ndimage

from headscope.common import HeadscopeError

__all__ = [
    "DATASETS",
    "BiTemporalScene",
    "extract_patches",
    "load_hsi",
    "minmax_normalize_pair",
    "mirror_pad",
    "sample_train_test",
    "synthetic_scene",
]


@dataclass
class BiTemporalScene:
    """Two co-registered dates of one scene and its change labels.

    ``t1, t2``: ``(H, W, bands)`` float32; ``label``: ``(H, W)`` int8 with 1 changed,
    0 unchanged, -1 unlabelled; ``meta``: how it was made (paths or generator parameters).
    """

    name: str
    t1: np.ndarray
    t2: np.ndarray
    label: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.t1.ndim != 3 or self.t1.shape != self.t2.shape:
            raise HeadscopeError(
                f"{self.name}: the two dates must be (H, W, bands) arrays of one shape, "
                f"got {self.t1.shape} and {self.t2.shape}"
            )
        if self.label.shape != self.t1.shape[:2]:
            raise HeadscopeError(
                f"{self.name}: label shape {self.label.shape} does not match the image's {self.t1.shape[:2]}"
            )

    @property
    def bands(self) -> int:
        return int(self.t1.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.t1.shape[0]), int(self.t1.shape[1])


# dataset -> (t1 (file, key), t2 (file, key), label (file, key), changed value, unchanged value)
DATASETS: dict[str, tuple[tuple[str, str], tuple[str, str], tuple[str, str], int, int]] = {
    "farmland": (("farm06.mat", "imgh"), ("farm07.mat", "imghl"), ("label.mat", "label"), 1, 0),
    "river": (
        ("river_before.mat", "river_before"),
        ("river_after.mat", "river_after"),
        ("groundtruth.mat", "lakelabel_v1"),
        255,
        0,
    ),
    "hermiston": (
        ("USA_Change_Dataset.mat", "T1"),
        ("USA_Change_Dataset.mat", "T2"),
        ("USA_Change_Dataset.mat", "Binary"),
        1,
        0,
    ),
    "china": (
        ("China_Change_Dataset.mat", "T1"),
        ("China_Change_Dataset.mat", "T2"),
        ("China_Change_Dataset.mat", "Binary"),
        1,
        0,
    ),
    "bayarea": (
        ("Bay_Area_2013.mat", "HypeRvieW"),
        ("Bay_Area_2015.mat", "HypeRvieW"),
        ("bayArea_gtChanges.mat", "HypeRvieW"),
        1,
        2,
    ),
    "barbara": (
        ("barbara_2013.mat", "HypeRvieW"),
        ("barbara_2014.mat", "HypeRvieW"),
        ("barbara_gtChanges.mat", "HypeRvieW"),
        1,
        2,
    ),
}
_ALIASES = {
    "usa": "hermiston",
    "farm": "farmland",
    "bay_area": "bayarea",
    "bay": "bayarea",
    "santa_barbara": "barbara",
}


def _find(root: Path, filename: str) -> Path:
    """``root/filename`` or, failing that, the first case-insensitive match below ``root``."""
    if root.is_file():
        if root.name.lower() == filename.lower():
            return root
        root = root.parent
    direct = root / filename
    if direct.is_file():
        return direct
    low = filename.lower()
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.lower() == low:
                return Path(dirpath) / f
    raise HeadscopeError(
        f"{filename} not found under {root}; point --root at the folder holding the dataset's .mat files"
    )


def _load_mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except NotImplementedError as e:  # MATLAB v7.3 = HDF5
        raise HeadscopeError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; "
            "re-save it with `save(..., '-v7')` in MATLAB/Octave"
        ) from e
    except Exception as e:  # noqa: BLE001 - scipy raises several types for corrupt files
        raise HeadscopeError(f"could not read {path} as a .mat file ({e}); check the download") from e


def _key(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise HeadscopeError(
            f"{path.name} has no variable {key!r} (it has {keys}); is this the right file for the dataset?"
        )
    return np.asarray(mat[key])


def _finite(img: np.ndarray, filename: str, key: str) -> np.ndarray:
    """``img`` unchanged, or a HeadscopeError when it holds NaN or ±inf (they would train a constant classifier)."""
    bad = ~np.isfinite(img)
    if bad.any():
        raise HeadscopeError(
            f"{filename}['{key}'] holds {int(bad.sum())} NaN/inf values ({float(bad.mean()):.1%} of it); "
            "fill them (e.g. interpolate the bad bands, or drop those bands from both dates) and re-save the file"
        )
    return img


def load_hsi(name: str, root: str | os.PathLike) -> BiTemporalScene:
    """Load one of ``DATASETS`` from the folder (or single ``.mat``) ``root``.

    Labels are mapped to 1 changed / 0 unchanged / -1 unlabelled (values that are
    neither the dataset's changed nor unchanged code). Images holding NaN or ±inf are
    rejected with a HeadscopeError naming the file.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise HeadscopeError(f"unknown HSI dataset {name!r}; choose one of {sorted(DATASETS)} or 'synthetic'")
    (f1, k1), (f2, k2), (fl, kl), changed, unchanged = DATASETS[key]
    root = Path(root)
    if not root.exists():
        raise HeadscopeError(f"{root} does not exist; pass the folder that holds the {key} .mat files")
    cache: dict[Path, dict[str, Any]] = {}

    def get(fname: str, k: str) -> np.ndarray:
        p = _find(root, fname)
        if p not in cache:
            cache[p] = _load_mat(p)
        return _key(cache[p], k, p)

    t1 = _finite(get(f1, k1).astype(np.float32), f1, k1)
    t2 = _finite(get(f2, k2).astype(np.float32), f2, k2)
    raw = get(fl, kl)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    label = np.full(raw.shape, -1, dtype=np.int8)
    label[raw == changed] = 1
    label[raw == unchanged] = 0
    return BiTemporalScene(key, t1, t2, label, meta={"root": str(root), "files": [f1, f2, fl]})


TAIZHOU_DIR = Path(__file__).resolve().parents[2] / "data" / "taizhou"


def _read_envi_bsq(path: Path) -> np.ndarray:
    """An uncompressed ENVI BSQ image (header ``path.HDR``/``.hdr``) as ``(lines, samples, bands)`` float32."""
    hdr = next(
        (h for h in (path.with_name(path.name + ".HDR"), path.with_name(path.name + ".hdr")) if h.is_file()), None
    )
    if hdr is None:
        raise HeadscopeError(f"no ENVI header {path}.hdr beside {path}")
    fields: dict[str, str] = {}
    for line in hdr.read_text(errors="replace").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            fields[k.strip().lower()] = v.strip()
    dtypes = {"1": np.uint8, "2": np.int16, "4": np.float32, "12": np.uint16}
    if fields.get("interleave", "").lower() != "bsq" or fields.get("data type") not in dtypes:
        raise HeadscopeError(f"{hdr}: only BSQ ENVI images of data type 1, 2, 4 or 12 are read here")
    lines, samples, bands = (int(fields[k]) for k in ("lines", "samples", "bands"))
    raw = np.fromfile(path, dtype=dtypes[fields["data type"]], offset=int(fields.get("header offset", "0")))
    if raw.size != lines * samples * bands:
        raise HeadscopeError(f"{path}: {raw.size} values, the header says {lines}x{samples}x{bands}")
    if fields.get("byte order", "0") == "1":
        raw = raw.byteswap()
    return raw.reshape(bands, lines, samples).transpose(1, 2, 0).astype(np.float32)


def load_taizhou(root: str | os.PathLike | None = None) -> BiTemporalScene:
    """The Taizhou Landsat pair (bundled in data/taizhou; CARD.md there): 400×400, 6 bands, 2000 vs 2003.

    Labels from ``change.bmp`` (white = changed) and ``unchanged.bmp`` (white = unchanged);
    the 139k pixels in neither are unlabelled (-1).
    """
    from PIL import Image

    root = Path(root) if root is not None else TAIZHOU_DIR
    t1 = _finite(_read_envi_bsq(root / "2000TM"), "2000TM", "bsq")
    t2 = _finite(_read_envi_bsq(root / "2003TM"), "2003TM", "bsq")
    with Image.open(root / "change.bmp") as im:
        changed = np.asarray(im.convert("L")) > 127
    with Image.open(root / "unchanged.bmp") as im:
        unchanged = np.asarray(im.convert("L")) > 127
    if (changed & unchanged).any():
        raise HeadscopeError(f"{root}: a pixel is marked both changed and unchanged")
    label = np.full(changed.shape, -1, dtype=np.int8)
    label[changed] = 1
    label[unchanged] = 0
    return BiTemporalScene(
        "taizhou", t1, t2, label, meta={"root": str(root), "sensor": "Landsat 7 ETM+ (bands 1-5, 7)"}
    )


# ----------------------------------------------------------------------------- synthetic


def _smooth_field(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def _endmembers(rng: np.random.Generator, n: int, bands: int) -> np.ndarray:
    """Smooth reflectance-like spectra in [0.05, 0.85]: sums of broad Gaussian bumps plus a slope."""
    lam = np.linspace(0.0, 1.0, bands)
    out = np.empty((n, bands))
    for i in range(n):
        s = rng.uniform(-0.3, 0.3) * lam
        for _ in range(rng.integers(2, 5)):
            c, wdt, a = rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(-1, 1)
            s = s + a * np.exp(-0.5 * ((lam - c) / wdt) ** 2)
        s = (s - s.min()) / (s.max() - s.min() + 1e-12)
        out[i] = 0.05 + rng.uniform(0.4, 0.8) * s
    return out


def synthetic_scene(
    height: int = 120,
    width: int = 120,
    bands: int = 224,
    n_endmembers: int = 6,
    n_changes: int = 6,
    noise: float = 0.01,
    seed: int = 0,
) -> BiTemporalScene:
    """A bi-temporal scene with a known change mask, by linear spectral mixing.

    - endmember spectra ``E (n_endmembers, bands)``: smooth, reflectance-like;
    - abundances ``A(x) = softmax(3·z(x))`` of smooth Gaussian random fields z;
    - date 1: ``X1 = A E + n1``; date 2: ``X2 = g ⊙ (A' E) + o + n2`` with a smooth
      per-band gain ``g ≈ 1 ± 5 %`` and offset ``o`` (illumination/sensor differences that
      are *not* change), a small abundance drift everywhere, and inside ``n_changes``
      elliptical regions ``A' = (1 − α) A + α·a_new`` with ``α ∈ [0.35, 1]`` (so some
      changes are subtle) and ``a_new`` a different mixture;
    - noise ``n ~ N(0, noise²)``.

    The changed pixels are those inside the ellipses (label 1), all others 0.
    """
    if min(height, width) < 8 or bands < 2 or n_endmembers < 2:
        raise HeadscopeError(
            f"synthetic scene too small (H={height}, W={width}, bands={bands}, endmembers={n_endmembers}); "
            "use H, W >= 8, bands >= 2"
        )
    rng = np.random.default_rng(seed)
    E = _endmembers(rng, n_endmembers, bands)
    z = np.stack([_smooth_field(rng, height, width, max(height, width) / 12) for _ in range(n_endmembers)], -1)
    A1 = np.exp(3 * z)
    A1 /= A1.sum(-1, keepdims=True)
    drift = np.stack([_smooth_field(rng, height, width, max(height, width) / 8) for _ in range(n_endmembers)], -1)
    A2 = np.clip(A1 + 0.03 * drift, 0, None)
    A2 /= A2.sum(-1, keepdims=True)
    mask = np.zeros((height, width), dtype=bool)
    yy, xx = np.mgrid[0:height, 0:width]
    regions = []
    for _ in range(n_changes):
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        ry, rx = rng.uniform(0.04, 0.12) * height, rng.uniform(0.04, 0.12) * width
        th = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(th) + dy * np.sin(th)) / rx
        v = (-dx * np.sin(th) + dy * np.cos(th)) / ry
        region = u**2 + v**2 <= 1.0
        alpha = rng.uniform(0.35, 1.0)
        new = rng.dirichlet(np.full(n_endmembers, 0.3))
        A2[region] = (1 - alpha) * A2[region] + alpha * new
        mask |= region
        regions.append(
            {
                "center": (float(cy), float(cx)),
                "radii": (float(ry), float(rx)),
                "angle": float(th),
                "alpha": float(alpha),
            }
        )
    lam = np.linspace(0, 1, bands)
    gain = 1 + 0.05 * np.sin(2 * np.pi * (lam * rng.uniform(0.5, 1.5) + rng.uniform(0, 1)))
    offset = rng.uniform(-0.02, 0.02)
    X1 = A1 @ E + noise * rng.standard_normal((height, width, bands))
    X2 = gain * (A2 @ E) + offset + noise * rng.standard_normal((height, width, bands))
    label = mask.astype(np.int8)
    meta = {
        "generator": "synthetic_scene",
        "seed": seed,
        "noise": noise,
        "n_endmembers": n_endmembers,
        "regions": regions,
        "gain_range": (float(gain.min()), float(gain.max())),
        "offset": float(offset),
        "changed_fraction": float(mask.mean()),
    }
    return BiTemporalScene("synthetic", X1.astype(np.float32), X2.astype(np.float32), label, meta=meta)


SPECTRA_DIR = Path(__file__).resolve().parents[2] / "data" / "spectra"
# ColorChecker patches standing in for land covers (data/spectra/CARD.md)
PHYSICAL_ENDMEMBERS: tuple[str, ...] = (
    "foliage",
    "yellow green",
    "dark skin",
    "neutral 5 (.70 D)",
    "bluish green",
    "orange",
)


def _read_spectra(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    lines = path.read_text().strip().splitlines()
    wl = np.array([float(v) for v in lines[0].split(",")[1:]])
    table = {}
    for line in lines[1:]:
        name, *vals = line.rsplit(",", len(wl))
        table[name] = np.array([float(v) for v in vals])
    return wl, table


def physical_scene(
    height: int = 120,
    width: int = 120,
    n_changes: int = 6,
    bilinear: float = 1.0,
    shading: float = 0.15,
    haze: float = 0.03,
    noise: float = 0.005,
    seed: int = 0,
) -> BiTemporalScene:
    """A bi-temporal scene from measured reflectances, bilinear mixing and illumination nuisance.

    Parameters are fixed here, before any model is trained on the scene (issue 23):

    - endmembers: the six measured ColorChecker reflectances of ``PHYSICAL_ENDMEMBERS``
      (Ohta 1997; 380–780 nm, 81 bands; data/spectra);
    - abundances ``A(x) = softmax(3·z(x))`` of smooth random fields (as :func:`synthetic_scene`),
      a 3 % drift everywhere between dates, and ``n_changes`` elliptical changed regions
      ``A' = (1 − α) A + α·a_new``, ``α ∈ [0.35, 1]``, ``a_new ~ Dir(0.3)``;
    - bilinear (Fan et al. 2009) mixing: ``r = Σ a_i e_i + bilinear · Σ_{i<j} a_i a_j e_i ⊙ e_j``
      (two-bounce scattering between covers);
    - illumination: date 1 under CIE D65, date 2 under CIE D50 (each SPD scaled to mean 1),
      each date with its own smooth shading field ``s(x) = 1 + shading·z(x)`` (terrain, sun
      angle, thin cloud), and date 2 with an additive Rayleigh-like haze
      ``haze·(450 nm/λ)⁴`` (path radiance); ``x_t = s_t(x) · E_t(λ) · r_t(x) + haze_t + n``;
    - noise ``n ~ N(0, noise²)``.

    None of the illumination differences is change; label 1 only inside the ellipses.
    """
    if min(height, width) < 8:
        raise HeadscopeError(f"physical scene too small (H={height}, W={width}); use H, W >= 8")
    wl, refl = _read_spectra(SPECTRA_DIR / "colorchecker_ohta.csv")
    _, ill = _read_spectra(SPECTRA_DIR / "illuminants.csv")
    E = np.stack([refl[n] for n in PHYSICAL_ENDMEMBERS])  # (k, bands)
    k = len(E)
    rng = np.random.default_rng(seed)
    z = np.stack([_smooth_field(rng, height, width, max(height, width) / 12) for _ in range(k)], -1)
    A1 = np.exp(3 * z)
    A1 /= A1.sum(-1, keepdims=True)
    drift = np.stack([_smooth_field(rng, height, width, max(height, width) / 8) for _ in range(k)], -1)
    A2 = np.clip(A1 + 0.03 * drift, 0, None)
    A2 /= A2.sum(-1, keepdims=True)
    mask = np.zeros((height, width), dtype=bool)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(n_changes):
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        ry, rx = rng.uniform(0.04, 0.12) * height, rng.uniform(0.04, 0.12) * width
        th = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(th) + dy * np.sin(th)) / rx
        v = (-dx * np.sin(th) + dy * np.cos(th)) / ry
        region = u**2 + v**2 <= 1.0
        alpha = rng.uniform(0.35, 1.0)
        A2[region] = (1 - alpha) * A2[region] + alpha * rng.dirichlet(np.full(k, 0.3))
        mask |= region

    def mix(A: np.ndarray) -> np.ndarray:
        r = A @ E
        for i in range(k):
            for j in range(i + 1, k):
                r = r + bilinear * (A[..., i : i + 1] * A[..., j : j + 1]) * (E[i] * E[j])
        return r

    d65, d50 = ill["D65"] / ill["D65"].mean(), ill["D50"] / ill["D50"].mean()
    s1 = np.clip(1 + shading * _smooth_field(rng, height, width, max(height, width) / 6), 0.5, 1.5)[..., None]
    s2 = np.clip(1 + shading * _smooth_field(rng, height, width, max(height, width) / 6), 0.5, 1.5)[..., None]
    path = haze * (450.0 / wl) ** 4
    X1 = s1 * d65 * mix(A1) + noise * rng.standard_normal((height, width, len(wl)))
    X2 = s2 * d50 * mix(A2) + path + noise * rng.standard_normal((height, width, len(wl)))
    meta = {
        "generator": "physical_scene",
        "seed": seed,
        "endmembers": list(PHYSICAL_ENDMEMBERS),
        "bilinear": bilinear,
        "shading": shading,
        "haze": haze,
        "noise": noise,
        "changed_fraction": float(mask.mean()),
    }
    return BiTemporalScene("physical", X1.astype(np.float32), X2.astype(np.float32), mask.astype(np.int8), meta=meta)


# ----------------------------------------------------------------------------- preprocessing


def minmax_normalize_pair(
    t1: Float[np.ndarray, " H W C"], t2: Float[np.ndarray, " H W C"]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band min–max scaling to [0, 1] with the min and max taken over *both* dates (SpectralKAN demo.py)."""
    both = np.concatenate([t1.reshape(-1, t1.shape[-1]), t2.reshape(-1, t2.shape[-1])], 0)
    lo, hi = both.min(0), both.max(0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    return ((t1 - lo) / scale).astype(np.float32), ((t2 - lo) / scale).astype(np.float32)


def mirror_pad(img: Float[np.ndarray, " H W C"], patch: int) -> Float[np.ndarray, " Hp Wp C"]:
    """Pad by ``patch // 2`` on each side by mirroring with the edge repeated (the official ``mirror_hsi``)."""
    if patch < 1 or patch % 2 == 0:
        raise HeadscopeError(f"patch size must be a positive odd number, got {patch}")
    p = patch // 2
    if p > min(img.shape[:2]):
        raise HeadscopeError(f"patch {patch} is larger than the image {img.shape[:2]}; use a smaller --patch")
    return np.pad(img, ((p, p), (p, p), (0, 0)), mode="symmetric")


def extract_patches(
    padded: Float[np.ndarray, " Hp Wp C"], positions: Int[np.ndarray, " N 2"], patch: int
) -> Float[np.ndarray, " N C P2"]:
    """The ``patch × patch`` neighbourhood of each ``(row, col)``, as ``(N, bands, patch²)``.

    Row-major within the patch.
    """
    win = np.lib.stride_tricks.sliding_window_view(padded, (patch, patch), axis=(0, 1))  # (H, W, C, p, p)
    out = win[positions[:, 0], positions[:, 1]]
    return np.ascontiguousarray(out.reshape(len(positions), padded.shape[2], patch * patch), dtype=np.float32)


def sample_train_test(
    label: Int[np.ndarray, " H W"], fraction: float = 0.01, seed: int = 0, min_per_class: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick ``max(min_per_class, floor(fraction·n_c))`` labelled pixels of each class for training; test on the rest.

    Returns ``(train_pos (N, 2), train_y, test_pos (M, 2), test_y)``; y is 1 changed / 0 unchanged.
    """
    if not 0 < fraction < 1:
        raise HeadscopeError(f"training fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in (0, 1):
        pos = np.argwhere(label == c)
        if len(pos) == 0:
            raise HeadscopeError(
                f"the labels have no {'changed' if c else 'unchanged'} pixels; change detection needs both classes"
            )
        n = min(len(pos) - 1, max(min_per_class, int(len(pos) * fraction)))
        perm = rng.permutation(len(pos))
        tr.append((pos[perm[:n]], np.full(n, c)))
        te.append((pos[perm[n:]], np.full(len(pos) - n, c)))

    def cat(parts: list[tuple[np.ndarray, np.ndarray]], i: int) -> np.ndarray:
        return np.concatenate([p[i] for p in parts])

    return cat(tr, 0), cat(tr, 1).astype(np.int64), cat(te, 0), cat(te, 1).astype(np.int64)
