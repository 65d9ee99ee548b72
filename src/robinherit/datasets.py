"""Real data sets as flat tensors in [0, 1], read or generated locally (nothing is downloaded).

- ``digits``: scikit-learn's 8x8 handwritten digits (shipped inside scikit-learn), pixels / 16.
- ``mnist1d``: MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated with the ``mnist1d``
  package's own generator (``make_dataset``); its download path is never used. The generator standardises
  the signals; here they are min-max scaled to [0, 1] with the training split's range (test values clipped),
  so that [0, 1]-clamping attacks (AutoAttack) see valid inputs.
- ``mnist``, ``fashion_mnist``: the four IDX files (gzipped or not) under a user-given root.
- ``cifar10``: the python pickle batches (``cifar-10-batches-py``) under a user-given root.

Every loader returns an :class:`ArrayDataset` with inputs flattened to (n, d) and the (c, h, w) shape they
came from, so two-layer networks read the flat vector and convolutional encoders reshape it.
"""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robinherit.errors import DataError


class DatasetName(str, Enum):
    digits = "digits"
    mnist1d = "mnist1d"
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


@dataclass(frozen=True)
class ArrayDataset:
    """A labelled train/test split; ``x_*`` are (n, d) float32 in [0, 1], ``y_*`` (n,) int64 class indices."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    image_shape: tuple[int, int, int]  # (c, h, w), c * h * w == d
    n_classes: int

    @property
    def d(self) -> int:
        return int(self.x_train.shape[1])


@dataclass(frozen=True)
class LoadSpec:
    """What a loader needs: where files live and generator settings."""

    root: Path | None = None
    mnist1d_samples: int = 5000
    test_share: float = 0.25


def _dataset(name: str, xtr, ytr, xte, yte, shape: tuple[int, int, int]) -> ArrayDataset:
    x_train = torch.as_tensor(np.ascontiguousarray(xtr), dtype=torch.float32).reshape(len(ytr), -1)
    x_test = torch.as_tensor(np.ascontiguousarray(xte), dtype=torch.float32).reshape(len(yte), -1)
    y_train = torch.as_tensor(np.array(ytr, dtype=np.int64))
    y_test = torch.as_tensor(np.array(yte, dtype=np.int64))
    n_classes = int(max(int(y_train.max()), int(y_test.max())) + 1)
    return ArrayDataset(name, x_train, y_train, x_test, y_test, shape, n_classes)


def load_digits(spec: LoadSpec) -> ArrayDataset:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = bunch.data.astype(np.float32) / 16.0  # grey levels 0..16 -> [0, 1]
    # A fixed, stratified split: the test set is the same for every experiment seed.
    xtr, xte, ytr, yte = train_test_split(
        x, bunch.target, test_size=spec.test_share, random_state=0, stratify=bunch.target
    )
    return _dataset("digits", xtr, ytr, xte, yte, (1, 8, 8))


def load_mnist1d(spec: LoadSpec) -> ArrayDataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(
            "data set 'mnist1d' needs the mnist1d package (its generator runs locally); "
            "install it with `pip install mnist1d` or `pip install -e '.[realdata]'`"
        ) from None
    args = get_dataset_args()
    args.num_samples = spec.mnist1d_samples
    # make_dataset seeds numpy's and python's global generators; keep the caller's streams untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)  # the package's generator; never get_dataset (which downloads)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    lo, hi = float(data["x"].min()), float(data["x"].max())
    xtr = (data["x"] - lo) / (hi - lo)
    xte = np.clip((data["x_test"] - lo) / (hi - lo), 0.0, 1.0)
    return _dataset("mnist1d", xtr, data["y"], xte, data["y_test"], (1, 1, int(xtr.shape[1])))


# ---- IDX (MNIST, Fashion-MNIST) ----

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not: 2 zero bytes, a type code, ndim, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"'{path}' is not an IDX file (bad magic number {raw[:4].hex()}); expected MNIST-format data")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"'{path}' holds {body.size} values but its header says {dims}; the file is truncated")
    return body.reshape(dims)


_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# Sub-folders where these files usually sit (torchvision's layout included).
_IDX_SUBDIRS = {"mnist": ("", "raw", "MNIST/raw", "mnist"), "fashion_mnist": ("", "raw", "FashionMNIST/raw")}


def _require_root(spec: LoadSpec, name: str) -> Path:
    if spec.root is None:
        raise DataError(
            f"data set '{name}' is read from local files: set data.root to the folder that holds them "
            f"(e.g. --set data.root=/path/to/{name}); nothing is downloaded"
        )
    return Path(spec.root).expanduser()


def _find(root: Path, subdirs: tuple[str, ...], stem: str, suffixes: tuple[str, ...], name: str) -> Path:
    looked = []
    for sub in subdirs:
        folder = root / sub if sub else root
        for suf in suffixes:
            p = folder / (stem + suf)
            looked.append(str(p))
            if p.is_file():
                return p
    raise DataError(
        f"data set '{name}': file '{stem}' ({' or '.join(s or 'uncompressed' for s in suffixes)}) not found; "
        f"looked for: {', '.join(looked)}. Put the file there or point data.root at the folder that has it"
    )


def _load_idx_set(spec: LoadSpec, name: str) -> ArrayDataset:
    root = _require_root(spec, name)
    arrays = {
        key: read_idx(_find(root, _IDX_SUBDIRS[name], stem, ("", ".gz"), name)) for key, stem in _IDX_FILES.items()
    }
    h, w = arrays["x_train"].shape[1:]
    xtr = arrays["x_train"].astype(np.float32) / 255.0
    xte = arrays["x_test"].astype(np.float32) / 255.0
    return _dataset(name, xtr, arrays["y_train"], xte, arrays["y_test"], (1, int(h), int(w)))


def load_mnist(spec: LoadSpec) -> ArrayDataset:
    return _load_idx_set(spec, "mnist")


def load_fashion_mnist(spec: LoadSpec) -> ArrayDataset:
    return _load_idx_set(spec, "fashion_mnist")


# ---- CIFAR-10 python batches ----

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as fh:
        try:
            batch = pickle.load(fh, encoding="bytes")
        except Exception as err:  # any unpickling failure means the file is not a CIFAR batch
            raise DataError(f"'{path}' is not a CIFAR-10 python batch ({err})") from None
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"'{path}' has no 'data'/'labels' entries; expected a CIFAR-10 python batch")
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels)


def load_cifar10(spec: LoadSpec) -> ArrayDataset:
    root = _require_root(spec, "cifar10")
    subdirs = ("cifar-10-batches-py", "")
    train = [_read_cifar_batch(_find(root, subdirs, stem, ("",), "cifar10")) for stem in _CIFAR_TRAIN]
    xte, yte = _read_cifar_batch(_find(root, subdirs, "test_batch", ("",), "cifar10"))
    xtr = np.concatenate([b[0] for b in train]).astype(np.float32) / 255.0
    ytr = np.concatenate([b[1] for b in train])
    return _dataset("cifar10", xtr, ytr, xte.astype(np.float32) / 255.0, yte, (3, 32, 32))


LOADERS: dict[DatasetName, Callable[[LoadSpec], ArrayDataset]] = {
    DatasetName.digits: load_digits,
    DatasetName.mnist1d: load_mnist1d,
    DatasetName.mnist: load_mnist,
    DatasetName.fashion_mnist: load_fashion_mnist,
    DatasetName.cifar10: load_cifar10,
}


def load_dataset(name: DatasetName | str, spec: LoadSpec | None = None) -> ArrayDataset:
    """Load ``name`` (see ``DatasetName``); file-based sets read from ``spec.root``.

    The generated sets (digits, MNIST-1D) are cached per process (generating MNIST-1D takes seconds; a
    sweep makes it once); their tensors are shared between callers and must not be modified in place.
    File-based sets are read each time, so a file that changed or went missing is noticed.
    """
    name, spec = DatasetName(name), spec or LoadSpec()
    if name in (DatasetName.digits, DatasetName.mnist1d):
        return _load_cached(name, spec)
    return LOADERS[name](spec)


@lru_cache(maxsize=8)
def _load_cached(name: DatasetName, spec: LoadSpec) -> ArrayDataset:
    return LOADERS[name](spec)
