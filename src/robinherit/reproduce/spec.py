"""What a claim module declares, and what the driver hands it back.

A claim of docs/theory.md (Xing et al., AISTATS 2024, arXiv 2401.15248; the mechanism after Allen-Zhu & Li 2020,
"Feature purification") is a :class:`ClaimSpec`: the base config family and pre-training arms whose runs it
reads, the derived jobs it needs beyond those runs, its statistic, its side condition and its figures. The
driver runs the union of what the selected claims declare, once, and passes every claim the same
:class:`Evidence`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from robinherit.config import ExperimentConfig, with_updates
from robinherit.errors import RobinheritError
from robinherit.records import eps_key
from robinherit.reproduce.jobs import AuxJob
from robinherit.runs.store import ResultStore


class ReproduceSettings(Protocol):
    """What a claim reads of ``driver.ReproduceSettings`` (a protocol, so this module need not import the driver,
    which imports the claims: the import graph stays a DAG)."""

    seeds: tuple[int, ...]
    quick: bool
    overrides: tuple[str, ...]

    def base(self, name: str) -> ExperimentConfig: ...


EPS_REF = 0.25  # the budget the claims are stated at (docs/claims.md)
AT_EPS = 0.25  # pre-training budget of the adversarial arm; the clean arm has 0
ARMS = ("at", "clean")

Tick = Callable[[str], None]  # one unit of progress done, with what it was


def pair_configs(base: ExperimentConfig, seeds: Sequence[int]) -> tuple[list[ExperimentConfig], list[ExperimentConfig]]:
    """(AT configs, clean configs), one per seed."""
    at = [with_updates(base, **{"pretrain.eps": AT_EPS, "seed": s}) for s in seeds]
    clean = [with_updates(base, **{"pretrain.eps": 0.0, "seed": s}) for s in seeds]
    return at, clean


def robust_at(rec: dict[str, Any], head: str, eps: float = EPS_REF) -> float:
    return rec["downstream"][f"{head}_head"]["robust_acc"][eps_key(eps)]


class ClaimNotRunError(RobinheritError):
    """Raised by a claim whose inputs cannot exist here (an optional dependency or a data set is missing):
    the claim becomes a "not run" row with ``reason`` and ``fix`` instead of disappearing."""

    def __init__(self, reason: str, fix: str):
        super().__init__(f"{reason}. {fix}")
        self.reason = reason
        self.fix = fix


@dataclass
class Statistic:
    """A claim's per-seed values and its per-seed differences in the claimed direction."""

    statement: str
    per_seed: dict[str, list[float]]
    differences: list[float]
    details: dict[str, Any] = field(default_factory=dict)
    # The claim's own verdict on its effect, where "the 95% interval excludes 0" cannot give it (claim 4 when no head
    # on clean features is non-degenerate: no number to compare, and nothing robust there); None: the interval decides.
    decision: bool | None = None


@dataclass(frozen=True)
class SideCondition:
    """What a consistent difference must also satisfy to mean what the claim says, and whether it does."""

    text: str
    ok: bool


@dataclass(frozen=True)
class Figure:
    title: str
    png: bytes
    caption: str


@dataclass
class Evidence:
    """Everything the claims read, filled by the driver step by step: the per-seed configs of each base config
    family (arm -> one per seed), then the runs' records, then each claim's derived results."""

    settings: ReproduceSettings
    store: ResultStore
    configs: dict[str, dict[str, list[ExperimentConfig]]]  # family -> arm ("at"/"clean") -> per seed
    records: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # family -> arm -> per seed
    derived: dict[str, list[tuple[AuxJob, dict]]] = field(default_factory=dict)  # claim id -> (job, result)
    gathered: dict[str, Any] = field(default_factory=dict)  # claim id -> what its gather() returned

    def results(self, claim_id: str) -> dict[Any, dict]:
        """A claim's derived results by the tag its jobs carry."""
        return {job.tag: value for job, value in self.derived.get(claim_id, [])}

    def base(self, family: str) -> ExperimentConfig:
        return self.settings.base(family)


class ClaimSpec:
    """One claim (one row of claims.json). Subclasses set the class attributes and implement
    :meth:`statistic`; everything else has a default that declares nothing."""

    id: str  # row id, unique: "3" (supervised), "3c" (the same claim on contrastive pre-training)
    number: int  # the claim's number in docs/theory.md: what `--claims` selects
    name: str
    statement: str = ""  # what a "not run" row says the claim is (a row that ran states it from its statistic)
    family: str | None = None  # base config (configs/<family>.yaml) the claim reads
    arms: tuple[str, ...] = ()  # pre-training arms of that family whose runs it reads

    def jobs(self, ev: Evidence) -> list[AuxJob]:
        """Derived results beyond the runs (reading only ``ev.configs`` and, lazily, the store)."""
        return []

    def extra_ticks(self, settings: ReproduceSettings) -> int:
        """Progress steps :meth:`gather` reports."""
        return 0

    def gather(self, ev: Evidence, tick: Tick) -> Any:
        """Results made outside the run and job machinery (claim 7: the real-data pipeline); may raise
        :class:`ClaimNotRunError`."""
        return None

    def statistic(self, ev: Evidence) -> Statistic:
        raise NotImplementedError

    def side_condition(self, ev: Evidence, stat: Statistic) -> SideCondition | None:
        return None

    def figures(self, row: dict[str, Any], ev: Evidence) -> list[Figure]:
        """The report's figures for this claim's row (only called for a row that ran)."""
        return []

    # ------------------------------------------------------------------ helpers for the subclasses

    def runs(self, ev: Evidence, arm: str) -> list[dict]:
        assert self.family is not None
        return ev.records[self.family][arm]

    def cfgs(self, ev: Evidence, arm: str) -> list[ExperimentConfig]:
        assert self.family is not None
        return ev.configs[self.family][arm]
