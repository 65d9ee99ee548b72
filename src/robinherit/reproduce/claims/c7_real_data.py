"""Claim 7, real data (docs/theory.md: "the inheritance comparison on Fashion-MNIST, reported whatever it shows"): on
Fashion-MNIST (60,000 / 10,000 images, 28x28), a clean linear head (SLF, Kim et al. 2020; RobustSSL-Bench) on a
frozen two-layer encoder, robust accuracy at l-inf 0.1 (the standard Fashion-MNIST budget) after adversarial vs
clean supervised pre-training on the same 10 classes, attacked by PGD-20 and AutoAttack's components (Croce &
Hein 2020, torchattacks' implementation), per-example worst case.

Its runs are ordinary runs of the shipped ``fashion_mnist_two_layer`` config (``robinherit run
fashion_mnist_two_layer`` and ``reproduce`` share them in the store), with the pre-trained models' own clean and
robust accuracy and the adversarial head (ALF) beside the clean one, so a failed inheritance says whether there
was anything to inherit and how far a clean head is from the best linear head on the same features. Its optional
parts (torchattacks, the Fashion-MNIST files) may be missing; the claim then becomes a "not run" row with the
reason and the fix rather than disappearing from claims.json and the report. No side condition: it is reported
whatever it shows.

Row 7c is the same comparison after label-free contrastive pre-training of the same encoder (SimCLR InfoNCE; adversarial
arm RoCL-style, Kim et al. 2020: one view attacked at l-inf 0.1; clean arm eps 0). A contrastive encoder has no
classifier of its own, so beside SLF both rows report the representation's robustness: how far an eps-bounded attack
moves the features (Nern et al., NeurIPS 2023, bound a linear head's robustness by it), and ALF - SLF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robinherit.config import ExperimentConfig, build_config, deep_merge, load_yaml, parse_overrides, with_updates
from robinherit.data.sources import build_sources
from robinherit.errors import ConfigError, DataError
from robinherit.evaluation.units import representation_shift
from robinherit.records import eps_key
from robinherit.reproduce.jobs import derived_job, encoder_weights, run_aux
from robinherit.reproduce.spec import ClaimNotRunError, ClaimSpec, Evidence, Figure, Statistic, Tick
from robinherit.runs.experiment import frozen_encoder
from robinherit.runs.schedule import run_many_or_load
from robinherit.seeding import generator

TORCHATTACKS_FIX = (
    "install it with `pip install --no-deps torchattacks==3.5.1`, or run the other claims with --claims 1-6"
)
DATA_FIX = (
    "`make fashion-mnist` (Debian's dataset-fashion-mnist: `sudo apt-get install dataset-fashion-mnist`), or "
    "point ROBINHERIT_DATA at a folder holding the four Fashion-MNIST IDX files; see docs/realdata.md"
)
CLAIM7_CONFIG = "fashion_mnist_two_layer"
CLAIM7_EPS = 0.1
# Both modes: AutoAttack's components beside PGD-20 (the worst case is the number the field reports), at the
# claim's budget only.
CLAIM7_SET = (
    f"eval.eps_grid=[0,{CLAIM7_EPS}]",
    "eval.autoattack=custom",
    "eval.apgd_steps=25",
    "eval.square_queries=300",
)
# Quick mode: shorter pre-training, heads on fewer examples and epochs, 500 test images, shorter AutoAttack.
CLAIM7_QUICK = (
    "pretrain.steps=600",
    "downstream.n_train=5000",
    "downstream.epochs=3",
    "eval.n_test=500",
    "eval.apgd_steps=10",
    "eval.square_queries=100",
)


# Row 7c: label-free contrastive pre-training of the same encoder (SimCLR InfoNCE on the hidden features) with weak
# views (Gaussian noise of sd 0.1 on [0, 1] pixels), so that robustness can only come from the attack on one view
# (RoCL, Kim et al. 2020: ``pretrain.eps`` = CLAIM7_EPS, PGD-3 at l-inf; the clean arm has eps 0). Pixel masking at
# 0.5 made the clean arm's SLF itself 0.18 robust (seed 0, quick settings) against 0.06 with noise.
CLAIM7C_SET = (
    "pretrain.method=contrastive",
    "pretrain.augmentation=noise",
    "pretrain.aug_strength=0.1",
    "pretrain.temperature=0.2",
)
# The representation's own robustness (Nern et al. 2023: a linear head's robustness is bounded by how far an attack
# moves the features): PGD on the feature distance at CLAIM7_EPS, on the first test images.
SHIFT_POINTS = 300
SHIFT_STEPS = 10
SHIFT_VERSION = 1  # bump when representation_shifts computes something else


def claim7_configs(seeds: Sequence[int], quick: bool, overrides: Sequence[str] = ()) -> dict[str, list]:
    """The two arms' configs, one per seed: the shipped config with ``CLAIM7_SET`` (quick: and ``CLAIM7_QUICK``),
    AT as shipped and clean with ``pretrain.eps=0``."""
    raw = load_yaml(CLAIM7_CONFIG)
    base: ExperimentConfig = build_config(
        deep_merge(raw, parse_overrides([*CLAIM7_SET, *(CLAIM7_QUICK if quick else ()), *overrides]))
    )
    return {
        "clean_pretrain": [with_updates(base, **{"pretrain.eps": 0.0, "seed": s}) for s in seeds],
        "at_pretrain": [with_updates(base, seed=s) for s in seeds],
    }


def claim7(seeds: Sequence[int], quick: bool, store: Any, tick: Tick, contrastive: bool = False) -> dict[str, Any]:
    """Per seed and arm: the clean head's worst-case robust accuracy at ``CLAIM7_EPS``, and beside it the
    representation's robustness (:func:`representation_shifts`), the adversarial head's, the learned-dictionary
    purity and AutoAttack's check; after supervised pre-training also the pre-trained model's own clean and robust
    accuracy (a contrastive encoder has no classifier of its own). ``contrastive``: row 7c's label-free pre-training
    (``CLAIM7C_SET``)."""
    cfgs = claim7_configs(seeds, quick, CLAIM7C_SET if contrastive else ())
    row = "7c" if contrastive else "7"
    per_seed: dict[str, list[float]] = {}
    extra: dict[str, Any] = {}
    for arm, arm_cfgs in cfgs.items():
        recs = run_many_or_load(
            arm_cfgs, store, on_record=lambda r, cached, arm=arm: tick(f"claim {row}: {arm} seed {r['seed']}")
        )
        per_seed[arm], extra[arm] = arm_details(recs, contrastive)
        extra[arm]["representation_shift"] = representation_shifts(arm_cfgs, store, row)
    base = cfgs["at_pretrain"][0]
    extra["config"] = {
        "dataset": base.data.source,
        "protocol": base.data.protocol.value,
        "encoder": base.model.encoder.value,
        "pretrain_method": base.pretrain.method.value,
        "pretrain_eps": base.pretrain.eps,
        "pretrain_steps": base.pretrain.steps,
        "quick": quick,
    }
    how = (
        "label-free contrastive pre-training (SimCLR InfoNCE; RoCL-style adversarial views vs clean views)"
        if contrastive
        else "adversarial vs clean supervised pre-training"
    )
    return {
        "statement": (
            "On Fashion-MNIST (28x28, [0,1]), a clean linear head (SLF) on a frozen two-layer encoder, same 10-class "
            f"task: robust accuracy at l-inf eps={CLAIM7_EPS:g} (worst case of PGD-20 and AutoAttack's components) "
            f"after {how}; the representation's own robustness (how far an attack moves the features) and the "
            "adversarial head (ALF) in the details"
        ),
        "per_seed": per_seed,
        "eps": CLAIM7_EPS,
        "norm": base.eval.norm.value,
        "attack": "per-example worst case of PGD and AutoAttack's components",
        "extra": extra,
    }


def arm_details(recs: list[dict], contrastive: bool) -> tuple[list[float], dict[str, Any]]:
    """One arm's SLF robust accuracy per seed, and what stands beside it in the details."""
    key = eps_key(CLAIM7_EPS)
    heads = [r["downstream"]["clean_head"] for r in recs]
    slf = [h["robust_acc"][key] for h in heads]
    out: dict[str, Any] = {
        "clean_acc": [h["clean_acc"] for h in heads],
        "class_prior": [h.get("class_prior") for h in heads],
        "learned_dict_top1_share": [r["purification"]["top1_share_mean"] for r in recs],
        "autoattack_not_above_pgd": [h.get("autoattack_not_above_pgd", True) for h in heads],
    }
    if not contrastive:  # the supervised encoder's own classifier; a contrastive one's head is never trained
        out["pretrained_clean_acc"] = [r["pretrain"]["clean_acc"] for r in recs]
        out["pretrained_robust_acc"] = [r["pretrain"]["robust_acc"][key] for r in recs]
        out["pretrained_certified_acc"] = [r["pretrain"].get("certified_acc", {}).get(key) for r in recs]
    if "adversarial_head" in recs[0]["downstream"]:  # ALF beside SLF, where the config trains it
        alf = [r["downstream"]["adversarial_head"]["robust_acc"][key] for r in recs]
        out["adversarial_head_robust_acc"] = alf
        out["alf_minus_slf"] = [a - b for a, b in zip(alf, slf, strict=True)]
    return slf, out


def representation_shifts(cfgs: list[ExperimentConfig], store: Any, row: str) -> list[float]:
    """Per seed, :func:`shift_of_encoders` of the runs' stored encoders, a derived result of the store (computed
    once, keyed by the runs and the constants it reads)."""
    job = derived_job(
        "representation_shift",
        cfgs,
        f"claim {row}: representation shift, {len(cfgs)} encoder(s)",
        shift_of_encoders,
        lambda: (cfgs, [encoder_weights(store, c) for c in cfgs]),
        params={"eps": CLAIM7_EPS, "n_points": SHIFT_POINTS, "steps": SHIFT_STEPS},
        version=SHIFT_VERSION,
    )
    return run_aux(store, [job], workers=1, tick=lambda _what: None)[job.kind, job.key]["shift"]


def shift_of_encoders(
    cfgs: list[ExperimentConfig], weights: list[dict[str, Any]], eps: float, n_points: int, steps: int
) -> dict[str, Any]:
    """``evaluation.units.representation_shift`` of each frozen encoder on its first ``n_points`` downstream test
    images: the mean largest feature move inside the l-inf ``eps`` ball (PGD-``steps``), over the features' mean
    distance to their centre."""
    sources = build_sources(cfgs)  # one read of the data set for every seed
    out = []
    for cfg, w, source in zip(cfgs, weights, sources, strict=True):
        enc = frozen_encoder(cfg, w, source)
        x = source.test_splits(cfg)[1].x[:n_points].to(cfg.device)
        g = generator(cfg.seed, "representation-shift", x.device)
        shift = representation_shift(
            enc.features, x, eps=eps, norm=cfg.eval.norm, steps=steps, generator=g, clip=source.clip
        )
        out.append(float(shift))
    return {"shift": out, "n_points": n_points}


class RealData(ClaimSpec):
    """Row 7 (supervised pre-training) or, with ``contrastive``, row 7c (label-free contrastive pre-training)."""

    number = 7

    def __init__(self, contrastive: bool = False):
        self.contrastive = contrastive
        self.id = "7c" if contrastive else "7"
        self.name = "real data (contrastive)" if contrastive else "real data"
        how = "after contrastive pre-training, " if contrastive else ""
        self.statement = (
            f"Real data: the clean-head comparison of claim 3 on Fashion-MNIST {how}(same task, l-inf 0.1)."
        )

    def extra_ticks(self, settings: Any) -> int:
        return 2 * len(settings.seeds)  # one tick per run

    def gather(self, ev: Evidence, tick: Tick) -> dict[str, Any]:
        try:
            return claim7(list(ev.settings.seeds), ev.settings.quick, ev.store, tick, contrastive=self.contrastive)
        except ImportError as err:
            raise ClaimNotRunError(f"an optional package could not be imported ({err})", _import_fix(err)) from None
        except DataError as err:
            raise ClaimNotRunError(f"the Fashion-MNIST files are not available ({err})", DATA_FIX) from None
        except ConfigError as err:
            if "torchattacks" not in str(err):
                raise  # a config mistake is a bug to fix, not an optional part that is missing
            raise ClaimNotRunError(
                "torchattacks (the AutoAttack implementation) is not installed", TORCHATTACKS_FIX
            ) from None

    def statistic(self, ev: Evidence) -> Statistic:
        out = ev.gathered[self.id]
        a, c = out["per_seed"]["at_pretrain"], out["per_seed"]["clean_pretrain"]
        return Statistic(
            out["statement"],
            {"at_pretrain_robust": a, "clean_pretrain_robust": c},
            [x - y for x, y in zip(a, c, strict=True)],
            details={k: out[k] for k in ("eps", "norm", "attack") if k in out} | {"extra": out.get("extra", {})},
        )

    def figures(self, row: dict[str, Any], ev: Evidence) -> list[Figure]:
        title = "Real data, contrastive pre-training" if self.contrastive else "Real data"
        return [Figure(title, *real_figure(ev.gathered[self.id]))]


def _import_fix(err: ImportError) -> str:
    missing = getattr(err, "name", None)
    return f"install {missing}" if missing else "reinstall robinherit with its real-data extras"


def real_figure(real: dict[str, Any]) -> tuple[bytes, str]:
    """Per arm: the pre-trained model's own robust accuracy (supervised pre-training only), the clean head's (SLF)
    and, where trained, the adversarial head's (ALF), as means with 95% intervals over seeds and the per-seed
    points; the class prior dashed."""
    from robinherit.reproduce.figures import COLORS, plt, png

    extra = real.get("extra", {})
    bars = [("SLF (clean head)", None, COLORS["AT"])]
    if "pretrained_robust_acc" in extra.get("at_pretrain", {}):
        bars.insert(0, ("pre-trained", "pretrained_robust_acc", "#999999"))
    if "adversarial_head_robust_acc" in extra.get("at_pretrain", {}):
        bars.append(("ALF (adv. head)", "adversarial_head_robust_acc", "#444444"))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    means = _bars(ax, real, bars)
    priors = [p for arm in ("clean_pretrain", "at_pretrain") for p in extra.get(arm, {}).get("class_prior", []) if p]
    if priors:
        ax.axhline(float(np.mean(priors)), ls="--", color="#555", lw=1, label=f"class prior ({np.mean(priors):.2f})")
    ax.set_xticks([0, 1], ["clean pre-training", "AT pre-training"])
    ax.set_ylabel(f"robust accuracy ({real.get('norm', '')} eps {real.get('eps', '')})")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    slf_at, slf_clean = means[("at_pretrain", "SLF (clean head)")], means[("clean_pretrain", "SLF (clean head)")]
    caption = (
        f"Real data ({real.get('attack', 'attack')}): a clean head on adversarially pre-trained features reaches "
        f"{slf_at:.2f} robust accuracy vs {slf_clean:.2f} on clean features"
    )
    if ("at_pretrain", "pre-trained") in means:
        caption += f"; the pre-trained AT model itself {means[('at_pretrain', 'pre-trained')]:.2f}"
    if ("at_pretrain", "ALF (adv. head)") in means:
        caption += f", an adversarial head on its features {means[('at_pretrain', 'ALF (adv. head)')]:.2f}"
    shift = {arm: extra.get(arm, {}).get("representation_shift") for arm in ("at_pretrain", "clean_pretrain")}
    if all(shift.values()):
        caption += (
            f"; an attack moves the features {np.mean(shift['at_pretrain']):.2f} (AT) vs "
            f"{np.mean(shift['clean_pretrain']):.2f} (clean) of their typical distance to the centre"
        )
    if priors:
        caption += f"; class prior {np.mean(priors):.2f} dashed"
    return png(fig), caption + " (means, 95% intervals, per-seed points)."


def _bars(ax: Any, real: dict[str, Any], bars: list[tuple[str, str | None, str]]) -> dict[tuple[str, str], float]:
    """Draw each arm's bars; returns their means by (arm, bar name)."""
    from robinherit.reproduce.figures import mean_ci

    extra = real.get("extra", {})
    width = 0.8 / len(bars)
    means: dict[tuple[str, str], float] = {}
    for a, arm in enumerate(("clean_pretrain", "at_pretrain")):
        for b, (name, field, color) in enumerate(bars):
            vals = np.array(real["per_seed"][arm] if field is None else extra[arm][field], dtype=float)
            mean, half = mean_ci(vals[:, None])
            x = a + (b - (len(bars) - 1) / 2) * width
            ax.bar(x, mean[0], width * 0.9, yerr=half[0], capsize=3, color=color, label=name if a == 1 else None)
            ax.scatter(np.full(vals.size, x), vals, color="k", s=8, zorder=3)
            means[(arm, name)] = float(mean[0])
    return means


CLAIM = RealData()
CONTRASTIVE = RealData(contrastive=True)
