import gzip
import pickle
import struct

import numpy as np
import pytest

from federated.data import dirichlet_partition, label_histogram, load_dataset, plot_label_histogram
from headscope.common import HeadscopeError


def _labels(n_per_class=60, classes=10):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), n_per_class)
    rng.shuffle(y)
    return y


@pytest.mark.parametrize("alpha", [0.1, 0.5, 5.0])
def test_partition_covers_every_sample_once(alpha):
    y = _labels()
    parts = dirichlet_partition(y, 5, alpha, seed=3)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(y)
    assert np.array_equal(np.sort(allidx), np.arange(len(y)))
    hist = label_histogram(y, parts, 10)
    assert hist.sum() == len(y)
    assert np.array_equal(hist.sum(0), np.bincount(y, minlength=10))


def _skew(y, alpha, seeds=range(5)):
    """Mean total-variation distance between a client's label distribution and the global one."""
    glob = np.bincount(y, minlength=10) / len(y)
    tvs = []
    for s in seeds:
        parts = dirichlet_partition(y, 5, alpha, seed=s)
        for p in parts:
            h = np.bincount(y[p], minlength=10) / len(p)
            tvs.append(0.5 * np.abs(h - glob).sum())
    return float(np.mean(tvs))


def test_skew_grows_as_alpha_falls():
    y = _labels()
    s = [_skew(y, a) for a in (100.0, 1.0, 0.1)]
    assert s[0] < s[1] < s[2]


def test_partition_is_seeded():
    y = _labels()
    a = dirichlet_partition(y, 4, 0.3, seed=1)
    b = dirichlet_partition(y, 4, 0.3, seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_bad_alpha(alpha):
    with pytest.raises(HeadscopeError, match="alpha"):
        dirichlet_partition(_labels(), 3, alpha)


def test_more_clients_than_samples():
    with pytest.raises(HeadscopeError, match="clients"):
        dirichlet_partition(np.arange(5) % 2, 6, 0.5)


def test_digits_shapes_and_disjoint_pools():
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_server) + len(d.x_test) == 1797
    assert abs(float(d.x_train.mean())) < 1e-4


def test_histogram_plot_has_a_trace_per_class():
    y = _labels()
    hist = label_histogram(y, dirichlet_partition(y, 3, 0.5), 10)
    fig = plot_label_histogram(hist)
    assert len(fig.data) == 10
    assert sum(sum(t.y) for t in fig.data) == len(y)


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_mnist_folder_format(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (40, 28, 28)), np.arange(40) % 10
    xte, yte = rng.integers(0, 256, (20, 28, 28)), (np.arange(20) * 3) % 10
    _write_idx(raw / "train-images-idx3-ubyte.gz", xtr)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", ytr)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", xte)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", yte)
    d = load_dataset("mnist", str(tmp_path), server_fraction=0.0)
    assert d.input_shape == (1, 28, 28)
    assert np.array_equal(d.y_test.numpy(), yte)
    # standardisation is affine: the test images keep their order of pixel values
    a = d.x_test[0].flatten().numpy()
    assert np.array_equal(np.argsort(a, kind="stable"), np.argsort(xte[0].flatten(), kind="stable"))


def test_cifar10_folder_format(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(1)
    for name, n in [(f"data_batch_{i}", 6) for i in range(1, 6)] + [("test_batch", 4)]:
        with open(base / name, "wb") as f:
            pickle.dump(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}, f
            )
    d = load_dataset("cifar10", str(tmp_path), server_fraction=0.0)
    assert d.input_shape == (3, 32, 32)
    assert len(d.x_train) == 30 and len(d.x_test) == 4


def test_missing_local_dataset(tmp_path):
    with pytest.raises(HeadscopeError, match="data-root"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(HeadscopeError, match="unknown dataset"):
        load_dataset("imagenet")


def test_mnist1d_is_generated_offline():
    from federated.protocol import FLConfig

    d = load_dataset("mnist1d")
    assert d.input_shape == (40,) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_server) == 4000 and len(d.x_test) == 1000
    assert FLConfig().model_kind(d.input_shape) == "mlp"


def test_redraws_are_one_log_line_not_warnings(capsys):
    """Dir(0.1) over 20 clients of 300 samples needs redraws (seed 0: 5) before every client has 2 samples."""
    import warnings

    y = np.repeat(np.arange(10), 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = dirichlet_partition(y, 20, 0.1, seed=0)
    assert not [w for w in caught if "min_partition_size" in str(w.message)]
    assert capsys.readouterr().err.strip().splitlines() == [
        "Dirichlet(α=0.1): 5 redraw(s) until every client had ≥2 samples"
    ]
    assert min(map(len, parts)) >= 2 and np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
