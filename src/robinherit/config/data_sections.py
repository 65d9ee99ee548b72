"""The data sections of a config: the synthetic world (``DataConfig``) and a real data set (``RealDataConfig``);
``data.source`` tells them apart. Their base, ``Strict``, is every config section's: unknown keys are errors and
values are frozen."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from robinherit.config import inert
from robinherit.config.enums import Dictionary, Protocol, Relabel, Sparsity, Values
from robinherit.config.identity import field
from robinherit.registry import DATASETS


class Strict(BaseModel):
    # inf/nan are never meaningful settings (an infinite lr or budget only fails later, mid-run).
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, allow_inf_nan=False)


class DataConfig(Strict):
    """The sparse-coding world: x = M z + noise, tasks are signs of linear functions of z."""

    source: Literal["synthetic"] = field(
        "synthetic", identity="always", description="synthetic (this world) or a real data set"
    )
    d: int = field(64, identity="always", ge=1, description="input dimension")
    n_features: int | None = field(None, identity="always", ge=1, description="dictionary size D (default: d)")
    k: int = field(
        3, identity="always", ge=1, description="non-zero latent coordinates per sample (expected, for bernoulli)"
    )
    sparsity: Sparsity = field(
        Sparsity.exact, identity="always", description="exact: k non-zeros; bernoulli: each w.p. k/D"
    )
    values: Values = field(Values.sign, identity="always", description="sign: +-1; uniform: +-U[value_low, 1]")
    value_low: float = field(0.5, identity="always", ge=0.0, le=1.0, description="lower end a of |z_j| ~ U[a, 1]")
    noise: float = field(0.05, identity="always", ge=0.0, description="sigma: xi ~ N(0, sigma^2/d I)")
    dictionary: Dictionary = field(
        Dictionary.orthogonal, identity="always", description="orthogonal, identity or overcomplete"
    )
    coherence: float = field(
        0.0,
        identity="always",
        ge=0.0,
        lt=1.0,
        description="share of a common direction mixed into every column (0 = none)",
    )
    n_tasks: int = field(1, identity="always", ge=1, description="number of pre-training tasks K")
    n_train: int | None = field(
        None, identity="always", ge=1, description="fixed pre-training set size (default: fresh batches)"
    )

    @property
    def D(self) -> int:  # noqa: N802 - the paper's symbol
        return self.n_features if self.n_features is not None else self.d

    @model_validator(mode="after")
    def _check_sizes(self) -> DataConfig:
        if self.k > self.D:
            raise ValueError(
                f"data.k={self.k} exceeds data.n_features={self.D}: a code cannot have more non-zeros than "
                "features; lower data.k or raise data.n_features"
            )
        if self.dictionary == Dictionary.overcomplete and self.d >= self.D:
            raise ValueError(
                f"data.dictionary=overcomplete needs data.n_features > data.d (got {self.D} <= {self.d}); "
                "set data.n_features larger than data.d"
            )
        if self.dictionary != Dictionary.overcomplete and self.d != self.D:
            raise ValueError(
                f"data.dictionary={self.dictionary.value} needs data.n_features == data.d "
                f"(got {self.D} != {self.d}); use data.dictionary=overcomplete for D > d"
            )
        if self.values == Values.sign and self.sparsity == Sparsity.exact and self.k % 2 == 0:
            # <theta, z> is a sum of k terms +-1: with even k it can be 0 and labels become ties.
            raise ValueError(
                f"data.k={self.k} is even with +-1 values, so <theta, z> can be 0 and labels are ties; "
                "use an odd data.k or data.values=uniform"
            )
        return self


class RealDataConfig(Strict):
    """A real data set, flat inputs in [0, 1] (robinherit.data.datasets), and the protocol that makes its two tasks."""

    source: str = field(
        identity="always", description="a data set of robinherit.registry.DATASETS: digits, mnist1d, mnist, ..."
    )

    @field_validator("source")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"data.source={v!r} is not a data set; allowed values: {DATASETS.allowed()}")
        return v

    root: str | None = field(
        None,
        identity="never",
        description="folder of the data files (mnist, fashion_mnist, cifar10; default: the usual places)",
    )
    n_train: int | None = field(
        None, identity="always", ge=2, description="cap on training examples (a fixed subset; None = all)"
    )
    mnist1d_samples: int = field(
        5000, identity=inert.not_mnist1d, ge=20, description="examples MNIST-1D's generator makes (80% train)"
    )
    center: bool = field(
        True, identity="always", description="subtract the training mean inside the encoder (inputs stay in [0, 1])"
    )
    protocol: Protocol = field(Protocol.same_task, identity="always", description="same_task, relabel or class_split")
    relabel: Relabel = field(
        Relabel.parity, identity=inert.not_relabel, description="derived downstream task of relabel: parity or halves"
    )
    pretrain_classes: tuple[int, ...] | None = field(
        None,
        identity=inert.not_class_split,
        description="class_split: classes seen in pre-training (default: the lower half)",
    )
    pretrain_all_images: bool = field(
        False,
        identity=inert.not_label_free_split,
        description="class_split with label-free (contrastive) pre-training: pre-train on every training image, "
        "held-out classes included, without their labels; the heads still see only the held-out classes. "
        "Supervised pre-training reads labels, so it always keeps to the seen classes (inert there)",
    )
