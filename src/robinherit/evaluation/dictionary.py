"""Purification without a known dictionary: loadings on a dictionary learned from the data.

On real data the features M of the sparse-coding model are unknown. Sparse-coding theory (Olshausen &
Field 1996) and ICA (Hyvarinen & Oja 2000, FastICA) both estimate them from samples: ICA finds the
mixing matrix of statistically independent (here: sparse) sources, dictionary learning (Mairal et al.
2009, online dictionary learning) a basis in which the data are sparse. The estimate M_hat takes the
place of M in ``robinherit.evaluation.purity`` (same top-1 share, N_eff, top-s energy), for the first-layer
weights of a two-layer net (atoms over whole inputs) or the first conv layer's filters (atoms over
patches). Hidden-activation sparsity (share of zero activations) is reported alongside.

In the synthetic world, ICA recovers M up to sign and order, so the learned-dictionary measure must rank
clean vs adversarially pre-trained encoders as the true-dictionary measure does; the tests check that.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robinherit.config import DictMethod
from robinherit.evaluation.purity import Purity, measure


def _ica(x: np.ndarray, n_atoms: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import FastICA

    ica = FastICA(n_components=n_atoms, whiten="unit-variance", random_state=seed, max_iter=1000, tol=1e-4)
    with warnings.catch_warnings():
        # Non-convergence on real data still gives a usable basis; the measure only needs a fixed M_hat.
        warnings.simplefilter("ignore")
        ica.fit(x)
    return ica.mixing_  # (p, n_atoms): x ~ mixing_ @ sources


def _dictionary_learning(x: np.ndarray, n_atoms: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import MiniBatchDictionaryLearning

    dl = MiniBatchDictionaryLearning(
        n_components=n_atoms, alpha=0.1, batch_size=256, max_iter=20, random_state=seed, transform_algorithm="omp"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dl.fit(x - x.mean(axis=0))
    return dl.components_.T  # (p, n_atoms)


LEARNERS: dict[DictMethod, Callable[[np.ndarray, int, int], np.ndarray]] = {
    DictMethod.ica: _ica,
    DictMethod.dictionary_learning: _dictionary_learning,
}


def effective_rank(x: np.ndarray, energy: float = 0.999) -> int:
    """Number of principal directions holding ``energy`` of the centred data's variance."""
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(s) / s.sum(), energy) + 1)


# Default atom count: the data's effective rank, at most this many. FastICA's cost grows with the atom count times
# the input size: at 784 inputs (Fashion-MNIST, effective rank in the hundreds) one run spent over 8 minutes in
# FastICA before it was stopped.
MAX_DEFAULT_ATOMS = 64
# At most this many samples are used to fit (a fixed subset): the dictionary is a property of the data, which
# 10,000 samples pin down; digits (1,347) and MNIST-1D (4,000) are used whole.
MAX_SAMPLES = 10_000


def learn_dictionary(x: Tensor, n_atoms: int | None, method: DictMethod = DictMethod.ica, seed: int = 0) -> Tensor:
    """(p, D) unit-norm atoms learned from samples ``x`` (n, p). ``n_atoms=None``: the data's effective rank, at
    most ``MAX_DEFAULT_ATOMS``.

    Constant coordinates (e.g. always-black border pixels) make the data rank-deficient; whitening-based
    ICA cannot extract more sources than the rank, so the default size is the effective rank.
    """
    if x.shape[0] > MAX_SAMPLES:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:MAX_SAMPLES]
        x = x[idx]
    data = x.detach().cpu().double().numpy()
    k = min(n_atoms or min(effective_rank(data), MAX_DEFAULT_ATOMS), data.shape[1])
    m = torch.as_tensor(LEARNERS[DictMethod(method)](data, k, seed), dtype=torch.float32)
    return m / m.norm(dim=0, keepdim=True).clamp_min(1e-12)


def cache_dir() -> Path:
    """Where learned dictionaries are kept between runs: ``$ROBINHERIT_CACHE`` or ``~/.cache/robinherit``."""
    return Path(os.environ.get("ROBINHERIT_CACHE", Path.home() / ".cache" / "robinherit")) / "dictionaries"


def cached_dictionary(
    x: Tensor, n_atoms: int | None, method: DictMethod = DictMethod.ica, seed: int = 0, cache: bool = True
) -> tuple[Tensor, bool]:
    """:func:`learn_dictionary`, fitted once per (samples, method, atoms, seed) and kept on disk: ``(M_hat, hit)``.

    The dictionary depends on the data only, not on the run, so every seed and arm of a study reads the same one.
    The key hashes the samples' bytes themselves, so a cached dictionary can only answer for exactly these
    samples (no stale answer when a split, a cap or centring changes); a corrupt or unreadable file is refit.
    """
    arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
    meta = json.dumps([DictMethod(method).value, n_atoms, seed, MAX_DEFAULT_ATOMS, MAX_SAMPLES, list(arr.shape)])
    key = hashlib.sha256(arr.tobytes() + meta.encode()).hexdigest()[:24]
    path = cache_dir() / f"{key}.npz"
    if cache and path.is_file():
        m_hat = _read_cached(path, key, arr.shape[1])
        if m_hat is not None:
            return m_hat, True
    m_hat = learn_dictionary(x, n_atoms, method, seed)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with tmp.open("wb") as fh:
                np.savez(fh, m_hat=m_hat.numpy(), checksum=np.array(_checksum(key, m_hat.numpy())))
            tmp.replace(path)  # atomic: parallel workers never read half a file
        except OSError:
            pass  # a read-only home: the run goes on, only without the cache
    return m_hat, False


def _checksum(key: str, m_hat: np.ndarray) -> str:
    """Ties a cached dictionary to its key: a file copied from another key, or edited, fails it."""
    return hashlib.sha256(key.encode() + np.ascontiguousarray(m_hat, dtype=np.float32).tobytes()).hexdigest()


def _read_cached(path: Path, key: str, dim: int) -> Tensor | None:
    """The cached dictionary at ``path`` if it is whole and is the one of ``key``: (dim, k) with k <= dim, finite,
    its checksum matching; else None, and the caller fits it again and overwrites the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            m_hat, checksum = npz["m_hat"], str(npz["checksum"])
    except (OSError, ValueError, KeyError, EOFError):
        return None  # a partial, damaged or foreign file
    ok = m_hat.ndim == 2 and m_hat.shape[0] == dim and 0 < m_hat.shape[1] <= dim and m_hat.dtype == np.float32
    if not ok or not np.isfinite(m_hat).all() or checksum != _checksum(key, m_hat):
        return None
    return torch.from_numpy(m_hat)


def image_patches(x: Tensor, image_shape: tuple[int, int, int], kernel: tuple[int, int], max_patches: int, seed: int):
    """(N, c*kh*kw) patches of flat images ``x`` (n, c*h*w), the inputs a first conv layer sees; at most
    ``max_patches``, drawn with a seeded generator."""
    c, h, w = image_shape
    imgs = x.detach().cpu().reshape(-1, c, h, w)
    cols = torch.nn.functional.unfold(imgs, kernel_size=kernel)  # (n, c*kh*kw, L)
    patches = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (n * L, c*kh*kw)
    if patches.shape[0] > max_patches:
        g = torch.Generator().manual_seed(seed)
        patches = patches[torch.randperm(patches.shape[0], generator=g)[:max_patches]]
    return patches


def measure_learned(weight: Tensor, dictionary: Tensor, features: Tensor | None = None, s: int = 3) -> Purity:
    """Purity of ``weight`` (m, p) on a learned ``dictionary`` (p, D): ``purification.measure`` with M_hat."""
    return measure(weight, dictionary, features, s=s)


def activation_sparsity(features: Tensor) -> dict[str, float]:
    """Share of exactly-zero hidden activations, overall and per example (mean active nodes)."""
    zero = (features == 0).float()
    return {
        "zero_share": float(zero.mean()),
        "active_nodes_mean": float((1 - zero).sum(dim=1).mean()),
    }
