"""Real-data loaders: tiny files in the exact MNIST (IDX, gzipped or not) and CIFAR-10 (pickle) formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from robinherit.datasets import DatasetName, LoadSpec, load_dataset, read_idx
from robinherit.errors import DataError


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, type code 0x08 (ubyte), ndim, big-endian uint32 dims, then the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)


def make_mnist_files(root: Path, n_train: int = 60, n_test: int = 30, gz: bool = True, seed: int = 0) -> dict:
    """Tiny MNIST-format files: 8x8 images whose mean brightness encodes the class (learnable)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 4
        x = np.clip(rng.normal(40 + 50 * y[:, None, None], 20, size=(n, 8, 8)), 0, 255).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", y.astype(np.uint8))
        out[split] = (x, y)
    return out


def make_cifar_files(root: Path, per_batch: int = 8, seed: int = 0) -> None:
    """Tiny CIFAR-10 python batches (dicts with b'data' (n, 3072) uint8 and b'labels')."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        y = rng.integers(0, 10, per_batch)
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": x, b"labels": [int(v) for v in y]}, fh)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_round_trip(tmp_path: Path, gz: bool, name: str) -> None:
    files = make_mnist_files(tmp_path, gz=gz)
    ds = load_dataset(name, LoadSpec(root=tmp_path))
    x, y = files["train"]
    assert ds.x_train.shape == (60, 64) and ds.x_test.shape == (30, 64)
    assert ds.image_shape == (1, 8, 8) and ds.n_classes == 4
    np.testing.assert_allclose(ds.x_train.numpy(), x.reshape(60, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train.numpy(), y)
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1


def test_idx_in_torchvision_layout(tmp_path: Path) -> None:
    make_mnist_files(tmp_path / "MNIST" / "raw")
    assert load_dataset("mnist", LoadSpec(root=tmp_path)).x_train.shape == (60, 64)


def test_missing_idx_file_names_file_and_folder(tmp_path: Path) -> None:
    make_mnist_files(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", LoadSpec(root=tmp_path))
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path) in msg


def test_file_sets_need_a_root() -> None:
    with pytest.raises(DataError, match=r"data\.root"):
        load_dataset("cifar10", LoadSpec(root=None))


def test_bad_idx_magic(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)


def test_truncated_idx(tmp_path: Path) -> None:
    p = tmp_path / "x"
    write_idx(p, np.zeros((4, 3), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


def test_cifar_batches(tmp_path: Path) -> None:
    make_cifar_files(tmp_path)
    ds = load_dataset("cifar10", LoadSpec(root=tmp_path))
    assert ds.x_train.shape == (40, 3072) and ds.x_test.shape == (8, 3072)
    assert ds.image_shape == (3, 32, 32)
    with (tmp_path / "cifar-10-batches-py" / "data_batch_1").open("rb") as fh:
        first = pickle.load(fh)
    np.testing.assert_allclose(ds.x_train[:8].numpy(), first[b"data"] / 255.0, rtol=1e-6)


def test_missing_cifar_batch(tmp_path: Path) -> None:
    make_cifar_files(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", LoadSpec(root=tmp_path))


def test_digits_in_unit_range() -> None:
    ds = load_dataset(DatasetName.digits)
    assert ds.x_train.shape[1] == 64 and ds.n_classes == 10
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0


def test_mnist1d_generated_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy.random

    requests = pytest.importorskip("requests")
    pytest.importorskip("mnist1d")

    def no_network(*a, **k):
        raise AssertionError("mnist1d must be generated locally, not downloaded")

    monkeypatch.setattr(requests, "get", no_network)
    state = numpy.random.get_state()[1].copy()
    ds = load_dataset("mnist1d", LoadSpec(mnist1d_samples=200))
    assert ds.x_train.shape == (160, 40) and ds.x_test.shape == (40, 40)
    assert ds.image_shape == (1, 1, 40) and ds.n_classes == 10
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == pytest.approx(1.0)
    assert float(ds.x_test.min()) >= 0.0 and float(ds.x_test.max()) <= 1.0
    # the generator seeds numpy's global stream; the loader restores it
    np.testing.assert_array_equal(numpy.random.get_state()[1], state)
