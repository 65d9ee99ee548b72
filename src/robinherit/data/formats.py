"""The file formats of real data sets, read as data and nothing else.

- IDX (LeCun's MNIST format, gzipped or not): read only as far as its header promises, so a gzip bomb stops at one
  byte past that size, and never beyond half the machine's memory.
- CIFAR-10's python batches: pickles, read by an unpickler that admits only what a batch holds (builtin containers,
  bytes, NumPy arrays), so a file whose pickle would run code is refused before anything in it runs.
- Fingerprints: the sha256 of a data set's files, for a run's identity.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from robinherit.errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not: 2 zero bytes, a type code, ndim, big-endian dims.

    Decompression stops at the size the header promises: a file that unpacks to more (a gzip bomb, or two files
    glued together) is refused after reading one byte past it, never unpacked whole."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise DataError(
                    f"'{path}' is not an IDX file (bad magic number {head.hex()}); expected MNIST-format data"
                )
            ndim = head[3]
            dim_bytes = fh.read(4 * ndim)
            if len(dim_bytes) < 4 * ndim:  # checked, or struct.unpack would fail with a bare struct.error
                raise DataError(
                    f"'{path}' ends inside its header ({4 + len(dim_bytes)} bytes for {ndim} dimensions); truncated"
                )
            dims = struct.unpack(f">{ndim}I", dim_bytes)
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            promised = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            _check_fits_in_memory(path, promised)
            raw = _read_at_most(fh, promised + 1)
    except (OSError, EOFError, zlib.error) as err:  # a cut-off download ends the gzip stream early, or is no gzip
        raise DataError(f"'{path}' cannot be read ({err}); the file is damaged or truncated") from None
    if len(raw) > promised:
        raise DataError(
            f"'{path}' holds more data than its header promises ({dims} values of {dtype}); the file is damaged or "
            "not one IDX file"
        )
    if len(raw) % dtype.itemsize:  # np.frombuffer would raise a bare ValueError
        raise DataError(f"'{path}' does not end on a whole {dtype.itemsize}-byte value; the file is truncated")
    body = np.frombuffer(raw, dtype=dtype)
    if body.size != int(np.prod(dims)):
        raise DataError(f"'{path}' holds {body.size} values but its header says {dims}; the file is truncated")
    return body.reshape(dims)


def _read_at_most(fh: Any, limit: int, chunk: int = 16 * 2**20) -> bytes:
    """Up to ``limit`` bytes of ``fh``, read in chunks so that a short file never allocates ``limit``."""
    parts, size = [], 0
    while size < limit:
        part = fh.read(min(chunk, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _check_fits_in_memory(path: Path, nbytes: int) -> None:
    """Refuse a header that promises more data than the machine's memory holds, before reading any of it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: no check
        return
    if nbytes > total // 2:
        raise DataError(
            f"'{path}' says it holds {nbytes / 2**30:.1f} GiB of data, more than half of this machine's memory "
            f"({total / 2**30:.1f} GiB); the file is damaged or not an MNIST-format file"
        )


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only what a CIFAR-10 python batch holds: builtin containers, strings, bytes and
    numbers, and NumPy arrays (rebuilt from their class, dtype and raw buffer). Any other global a pickle names, a
    function such as ``os.system`` among them, is refused before it is looked up, so nothing in a data file runs.
    Written here because no library offers a pickle reader restricted to data; the stdlib's own documentation
    shows ``find_class`` as the place to restrict it."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),  # protocol 5's in-band arrays
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how a Python 3 pickle of Python 2 byte strings spells them
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR-10 batch holds only arrays and lists")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as fh:
        try:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
        except Exception as err:  # any unpickling failure means the file is not a CIFAR batch
            raise DataError(
                f"'{path}' is not a CIFAR-10 python batch ({err}). Nothing in it was run; replace it with the batch "
                "from the CIFAR-10 python archive (cifar-10-python.tar.gz)"
            ) from None
    if not isinstance(batch, dict):
        raise DataError(f"'{path}' holds a {type(batch).__name__}, not a CIFAR-10 python batch (a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"'{path}' has no 'data'/'labels' entries; expected a CIFAR-10 python batch")
    try:
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (ValueError, TypeError) as err:
        raise DataError(f"'{path}' holds data that is not 3x32x32 uint8 images with integer labels ({err})") from None
    if len(labels) != len(images) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"'{path}' holds {len(images)} images and {len(labels)} labels, or labels outside 0-9")
    return images, labels


# (resolved path, size, modification time in ns) -> sha256 of the file: each file is read once per process, and
# again only when it changes
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(2**20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def files_fingerprint(paths: list[Path]) -> str:
    """16 hex digits that change when any of ``paths``' contents does (names aside: the same files anywhere give
    the same fingerprint, so a store follows its data when the folder moves)."""
    return hashlib.sha256("".join(_file_sha256(p) for p in paths).encode()).hexdigest()[:16]
