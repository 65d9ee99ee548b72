"""Data sources: what one experiment needs of its data, for the synthetic world and for real data sets alike.

``build_source(cfg)`` gives a :class:`DataSource`: the pre-training stream, the downstream training split, the
two test splits (pre-training task, downstream task), the reference the purity metrics read loadings on (the
true dictionary M, or one learned from the data), the input box attacks keep to, and the input centre the
encoder subtracts. ``robinherit.runs.experiment`` runs every source through the same stages with this and nothing
else; a new kind of source is one class here plus its config section (``docs/extending.md``).

Real data sets come from ``robinherit.data.datasets`` (flat inputs in [0, 1]). Their two tasks are made by a protocol
(``PROTOCOLS``): ``same_task`` (head on the pre-training labels, as robust SSL benchmarks do), ``relabel`` (head
on a derived task: digit parity or low/high class halves) or ``class_split`` (pre-train on some classes, head on
the others; Shafahi et al. 2020, "Adversarially robust transfer learning").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import torch
from torch import Tensor, nn

from robinherit.config import ExperimentConfig, Method, Protocol, RealDataConfig, Relabel
from robinherit.data.datasets import ArrayDataset, LoadSpec, load_dataset
from robinherit.errors import ConfigError
from robinherit.evaluation import purity as purification
from robinherit.evaluation.dictionary import activation_sparsity, cached_dictionary, image_patches, measure_learned
from robinherit.models.encoder import first_layer
from robinherit.ops.losses import class_margin, cross_entropy, multilabel_bce, multilabel_margin
from robinherit.seeding import derive_seed, generator
from robinherit.world.sparse_coding import BatchStream, World, make_world

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Split:
    """Inputs (n, d) and labels: (n,) class indices, or (n, K) {0, 1} targets of K binary tasks."""

    x: Tensor
    y: Tensor
    n_classes: int
    margin: LossFn = class_margin  # > 0 iff an example is classified correctly


class DataSource(TypingProtocol):
    """What the pipeline needs of a data source, and nothing else."""

    name: str
    d: int
    image_shape: tuple[int, int, int] | None  # (c, h, w) for image data (a conv encoder needs it)
    clip: tuple[float, float] | None  # the input box every attack keeps to (None: unbounded)
    center: Tensor | None  # (d,) subtracted inside the encoder
    world: World | None  # the synthetic world, where there is one
    pretrain_outputs: int  # outputs of the pre-training head
    pretrain_loss: LossFn  # per-example loss of supervised pre-training

    def pretrain_stream(self, cfg: ExperimentConfig, device: torch.device) -> BatchStream: ...

    def downstream_train(self, cfg: ExperimentConfig) -> Split: ...

    def test_splits(self, cfg: ExperimentConfig) -> tuple[Split, Split]: ...

    def purity(self, cfg: ExperimentConfig, model: nn.Module) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------- the synthetic world


@dataclass
class SyntheticSource:
    """The sparse-coding world of ``robinherit.world.sparse_coding``: fresh samples from named streams of the seed."""

    world: World
    seed: int
    name: str = "synthetic"
    image_shape: tuple[int, int, int] | None = None
    clip: tuple[float, float] | None = None
    center: Tensor | None = None
    pretrain_loss: LossFn = multilabel_bce
    _test: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def d(self) -> int:
        return self.world.cfg.d

    @property
    def pretrain_outputs(self) -> int:
        return self.world.cfg.n_tasks

    def pretrain_stream(self, cfg: ExperimentConfig, device: torch.device) -> BatchStream:
        return BatchStream(self.world, cfg.pretrain.batch_size, cfg.seed, cfg.data.n_train, device=device)

    def downstream_train(self, cfg: ExperimentConfig) -> Split:
        x, z = self.world.sample(cfg.downstream.n_train, generator(cfg.seed, "downstream-train"))
        return Split(x, self.world.downstream_labels(z), 2)

    def test_splits(self, cfg: ExperimentConfig) -> tuple[Split, Split]:
        if self._test is None:
            self._test = self.world.sample(cfg.eval.n_test, generator(cfg.seed, "test"))
        x, z = self._test
        pre = Split(x, self.world.pretrain_labels(z), self.pretrain_outputs, multilabel_margin)
        return pre, Split(x, self.world.downstream_labels(z), 2)

    def purity(self, cfg: ExperimentConfig, model: nn.Module) -> dict[str, Any]:
        """Loadings of the encoder's first layer (``first_layer()``; none: no purification) on the true dictionary
        M; dead nodes judged on fresh probe inputs."""
        layer = first_layer(model)
        if layer is None:
            return {}
        x_probe, _ = self.world.sample(2048, generator(cfg.seed, "probe"))
        with torch.no_grad():
            feats = model.features(x_probe.to(next(model.parameters()).device))
        p = purification.measure(layer.weight, self.world.M, feats, s=self.world.cfg.k)
        return {
            "purification": {
                **p.summary(),
                "reference": "true dictionary",
                "per_node_top1": [round(float(v), 5) for v in p.top1_share],
            }
        }

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "d": self.d, "n_features": self.world.cfg.D}


# ---------------------------------------------------------------- real data: protocols


@dataclass(frozen=True)
class TaskSplit:
    """Pre-training set, downstream train/test sets and the pre-training task's test set; labels 0..C-1."""

    x_pre: Tensor
    y_pre: Tensor
    n_pre: int
    x_tr: Tensor
    y_tr: Tensor
    x_te: Tensor
    y_te: Tensor
    n_down: int
    x_te_pre: Tensor
    y_te_pre: Tensor


def fixed_subset(x: Tensor, y: Tensor, cap: int | None, name: str) -> tuple[Tensor, Tensor]:
    """At most ``cap`` examples, the same ones for every experiment seed (seeds differ only in training)."""
    if cap is None or cap >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(derive_seed(0, name)))[:cap]
    return x[idx], y[idx]


def _same_task(ds: ArrayDataset, xtr, ytr, xte, yte, cfg: ExperimentConfig) -> TaskSplit:
    return TaskSplit(xtr, ytr, ds.n_classes, xtr, ytr, xte, yte, ds.n_classes, xte, yte)


RELABELS: dict[Relabel, Callable[[Tensor, int], Tensor]] = {
    Relabel.parity: lambda y, c: y % 2,
    Relabel.halves: lambda y, c: (y >= (c + 1) // 2).long(),
}


def _relabel(ds: ArrayDataset, xtr, ytr, xte, yte, cfg: ExperimentConfig) -> TaskSplit:
    f = RELABELS[cfg.data.relabel]
    return TaskSplit(xtr, ytr, ds.n_classes, xtr, f(ytr, ds.n_classes), xte, f(yte, ds.n_classes), 2, xte, yte)


def _class_split(ds: ArrayDataset, xtr, ytr, xte, yte, cfg: ExperimentConfig) -> TaskSplit:
    dcfg = cfg.data
    seen = sorted(dcfg.pretrain_classes) if dcfg.pretrain_classes else list(range(ds.n_classes // 2))
    rest = [c for c in range(ds.n_classes) if c not in seen]
    if any(c < 0 or c >= ds.n_classes for c in seen) or len(seen) < 2 or len(rest) < 2:
        raise ConfigError(
            f"data.pretrain_classes={seen} must name at least 2 of the {ds.n_classes} classes of "
            f"'{ds.name}' (0..{ds.n_classes - 1}) and leave at least 2 for the downstream task"
        )

    def remap(x: Tensor, y: Tensor, classes: list[int]) -> tuple[Tensor, Tensor]:
        lut = torch.full((ds.n_classes,), -1, dtype=torch.int64)
        lut[torch.tensor(classes)] = torch.arange(len(classes))
        keep = lut[y] >= 0
        return x[keep], lut[y[keep]]

    # label-free pre-training may see every image, as it never reads a label; supervised pre-training keeps to the
    # seen classes whatever the setting
    all_images = dcfg.pretrain_all_images and cfg.pretrain.method == Method.contrastive
    x_pre, y_pre = (xtr, ytr) if all_images else remap(xtr, ytr, seen)
    x_tr, y_tr = remap(xtr, ytr, rest)
    x_te, y_te = remap(xte, yte, rest)
    x_te_pre, y_te_pre = remap(xte, yte, seen)
    return TaskSplit(x_pre, y_pre, len(seen), x_tr, y_tr, x_te, y_te, len(rest), x_te_pre, y_te_pre)


PROTOCOLS: dict[Protocol, Callable[..., TaskSplit]] = {
    Protocol.same_task: _same_task,
    Protocol.relabel: _relabel,
    Protocol.class_split: _class_split,
}


def load_data(dcfg: RealDataConfig) -> ArrayDataset:
    return load_dataset(dcfg.source, LoadSpec(Path(dcfg.root) if dcfg.root else None, dcfg.mnist1d_samples))


def make_tasks(ds: ArrayDataset, cfg: ExperimentConfig) -> TaskSplit:
    """The protocol's splits of ``ds`` (training examples capped by ``data.n_train``, test by ``eval.n_test``)."""
    xtr, ytr = fixed_subset(ds.x_train, ds.y_train, cfg.data.n_train, f"{ds.name}-train")
    xte, yte = fixed_subset(ds.x_test, ds.y_test, cfg.eval.n_test, f"{ds.name}-test")
    return PROTOCOLS[cfg.data.protocol](ds, xtr, ytr, xte, yte, cfg)


# ---------------------------------------------------------------- real data: the source


@dataclass
class ArraySource:
    """A real data set: fixed splits, inputs in [0, 1], centred inside the encoder (``data.center``)."""

    dataset: ArrayDataset
    tasks: TaskSplit
    center: Tensor | None
    clip: tuple[float, float] | None = (0.0, 1.0)
    world: World | None = None
    pretrain_loss: LossFn = cross_entropy

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def d(self) -> int:
        return self.dataset.d

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    @property
    def pretrain_outputs(self) -> int:
        return self.tasks.n_pre

    def pretrain_stream(self, cfg: ExperimentConfig, device: torch.device) -> BatchStream:
        return BatchStream.from_arrays(self.tasks.x_pre, self.tasks.y_pre, cfg.pretrain.batch_size, cfg.seed, device)

    def downstream_train(self, cfg: ExperimentConfig) -> Split:
        n = min(cfg.downstream.n_train, self.tasks.x_tr.shape[0])
        return Split(self.tasks.x_tr[:n], self.tasks.y_tr[:n], self.tasks.n_down)

    def test_splits(self, cfg: ExperimentConfig) -> tuple[Split, Split]:
        t = self.tasks
        return Split(t.x_te_pre, t.y_te_pre, t.n_pre), Split(t.x_te, t.y_te, t.n_down)

    def centred_pretrain_inputs(self) -> Tensor:
        """The pre-training inputs less the encoder's input centre (where it has one): what the learned dictionary
        of :meth:`purity` is fitted on."""
        return self.tasks.x_pre - (self.center if self.center is not None else 0.0)

    def purity(self, cfg: ExperimentConfig, model: nn.Module) -> dict[str, Any]:
        """Top-1 share / N_eff of first-layer weights (``first_layer()``) on a dictionary learned from the (centred)
        pre-training inputs -- whole inputs for a dense first layer (the two-layer net), patches for conv filters
        -- and on the pixel basis; plus hidden-activation sparsity on the test inputs. An encoder without a first
        layer to read gets the sparsity only."""
        ecfg = cfg.eval
        dev = next(model.parameters()).device
        with torch.no_grad():
            feats = model.features(self.tasks.x_te.to(dev)).cpu()
        layer = first_layer(model)
        if layer is None:
            return {"sparsity": activation_sparsity(feats)}
        centred = self.centred_pretrain_inputs()
        weight = layer.weight.detach().cpu()
        if layer.kernel is not None:
            samples = image_patches(centred, self.image_shape, layer.kernel, ecfg.max_patches, cfg.seed)
        else:
            samples = centred
        # The dictionary depends on the data only (fixed seed), not on the run: encoders are compared on one M_hat.
        m_hat, _ = cached_dictionary(samples, ecfg.dictionary_atoms, ecfg.dictionary, seed=0)
        learned = measure_learned(weight, m_hat, None)
        pixel = purification.measure(weight, torch.eye(weight.shape[1]), None)
        return {
            "purification": {
                **learned.summary(),
                "reference": "learned dictionary",
                "dictionary": ecfg.dictionary.value,
                "atoms": int(m_hat.shape[1]),
                "per_node_top1": [round(float(v), 5) for v in learned.top1_share],
            },
            "purification_pixel": pixel.summary(),
            "sparsity": activation_sparsity(feats),
        }

    def describe(self) -> dict[str, Any]:
        t = self.tasks
        return {
            "name": self.name,
            "d": self.d,
            "image_shape": list(self.image_shape),
            "n_pretrain": int(t.x_pre.shape[0]),
            "n_test": int(t.x_te.shape[0]),
            "n_test_pretrain_task": int(t.x_te_pre.shape[0]),
            "pretrain_classes": t.n_pre,
            "downstream_classes": t.n_down,
        }


# ---------------------------------------------------------------- registry


def _synthetic(cfg: ExperimentConfig) -> SyntheticSource:
    return SyntheticSource(make_world(cfg.data, cfg.seed), cfg.seed)


def array_source(cfg: ExperimentConfig, ds: ArrayDataset | None = None) -> ArraySource:
    ds = ds if ds is not None else load_data(cfg.data)
    tasks = make_tasks(ds, cfg)
    center = tasks.x_pre.mean(dim=0) if cfg.data.center else None
    return ArraySource(ds, tasks, center)


# config section type -> builder; a new kind of source registers here
SOURCES: dict[str, Callable[[ExperimentConfig], DataSource]] = {"synthetic": _synthetic, "real": array_source}


def build_source(cfg: ExperimentConfig) -> DataSource:
    return SOURCES["real" if cfg.is_real else "synthetic"](cfg)


def build_sources(
    cfgs: list[ExperimentConfig], known: Sequence[tuple[ExperimentConfig, DataSource]] = ()
) -> list[DataSource]:
    """``build_source`` for many configs, reading each distinct real data set once (a stack of S runs on one data
    set would otherwise parse its files S times); ``known`` (config, source) pairs lend their data sets, read
    already."""
    loaded: dict[str, ArrayDataset] = {
        c.data.model_dump_json(): src.dataset for c, src in known if c.is_real and isinstance(src, ArraySource)
    }
    out: list[DataSource] = []
    for cfg in cfgs:
        if not cfg.is_real:
            out.append(build_source(cfg))
            continue
        key = cfg.data.model_dump_json()
        if key not in loaded:
            loaded[key] = load_data(cfg.data)
        out.append(array_source(cfg, loaded[key]))
    return out
