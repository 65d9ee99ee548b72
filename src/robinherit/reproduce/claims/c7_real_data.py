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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robinherit.config import ExperimentConfig, build_config, deep_merge, load_yaml, parse_overrides, with_updates
from robinherit.errors import ConfigError, DataError
from robinherit.records import eps_key
from robinherit.reproduce.spec import ClaimNotRunError, ClaimSpec, Evidence, Figure, Statistic, Tick
from robinherit.runs.schedule import run_many_or_load

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


def claim7(seeds: Sequence[int], quick: bool, store: Any, tick: Tick) -> dict[str, Any]:
    """Per seed and arm: the clean head's worst-case robust accuracy at ``CLAIM7_EPS``, and beside it the
    pre-trained model's own clean and robust accuracy, the learned-dictionary purity and AutoAttack's check."""
    cfgs = claim7_configs(seeds, quick)
    key = eps_key(CLAIM7_EPS)
    per_seed: dict[str, list[float]] = {}
    extra: dict[str, Any] = {}
    for arm, arm_cfgs in cfgs.items():
        recs = run_many_or_load(
            arm_cfgs, store, on_record=lambda r, cached, arm=arm: tick(f"claim 7: {arm} seed {r['seed']}")
        )
        heads = [r["downstream"]["clean_head"] for r in recs]
        per_seed[arm] = [h["robust_acc"][key] for h in heads]
        extra[arm] = {
            "clean_acc": [h["clean_acc"] for h in heads],
            "pretrained_clean_acc": [r["pretrain"]["clean_acc"] for r in recs],
            "pretrained_robust_acc": [r["pretrain"]["robust_acc"][key] for r in recs],
            "pretrained_certified_acc": [r["pretrain"].get("certified_acc", {}).get(key) for r in recs],
            "learned_dict_top1_share": [r["purification"]["top1_share_mean"] for r in recs],
            "autoattack_not_above_pgd": [h.get("autoattack_not_above_pgd", True) for h in heads],
        }
        if "adversarial_head" in recs[0]["downstream"]:  # ALF beside SLF, where the config trains it
            alf = [r["downstream"]["adversarial_head"]["robust_acc"][key] for r in recs]
            extra[arm]["adversarial_head_robust_acc"] = alf
            extra[arm]["alf_minus_slf"] = [a - b for a, b in zip(alf, per_seed[arm], strict=True)]
    base = cfgs["at_pretrain"][0]
    extra["config"] = {
        "dataset": base.data.source,
        "protocol": base.data.protocol.value,
        "encoder": base.model.encoder.value,
        "pretrain_eps": base.pretrain.eps,
        "pretrain_steps": base.pretrain.steps,
        "quick": quick,
    }
    return {
        "statement": (
            "On Fashion-MNIST (28x28, [0,1]), a clean linear head (SLF) on a frozen two-layer encoder, same 10-class "
            f"task: robust accuracy at l-inf eps={CLAIM7_EPS:g} (worst case of PGD-20 and AutoAttack's components) "
            "after adversarial vs clean supervised pre-training; the pre-trained models' own robustness and the "
            "adversarial head (ALF) in the details"
        ),
        "per_seed": per_seed,
        "eps": CLAIM7_EPS,
        "norm": base.eval.norm.value,
        "attack": "per-example worst case of PGD and AutoAttack's components",
        "extra": extra,
    }


class RealData(ClaimSpec):
    id = "7"
    number = 7
    name = "real data"
    statement = "Real data: the clean-head comparison of claim 3 on Fashion-MNIST (same task, l-inf 0.1)."

    def extra_ticks(self, settings: Any) -> int:
        return 2 * len(settings.seeds)  # one tick per run

    def gather(self, ev: Evidence, tick: Tick) -> dict[str, Any]:
        try:
            return claim7(list(ev.settings.seeds), ev.settings.quick, ev.store, tick)
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
        return [Figure("Real data", *real_figure(ev.gathered[self.id]))]


def _import_fix(err: ImportError) -> str:
    missing = getattr(err, "name", None)
    return f"install {missing}" if missing else "reinstall robinherit with its real-data extras"


def real_figure(real: dict[str, Any]) -> tuple[bytes, str]:
    """Per arm: the pre-trained model's own robust accuracy, the clean head's (SLF) and, where trained, the
    adversarial head's (ALF), as means with 95% intervals over seeds and the per-seed points."""
    import numpy as np

    from robinherit.reproduce.figures import COLORS, mean_ci, plt, png

    extra = real.get("extra", {})
    bars = [("pre-trained", "pretrained_robust_acc", "#999999"), ("SLF (clean head)", None, COLORS["AT"])]
    if "adversarial_head_robust_acc" in extra.get("at_pretrain", {}):
        bars.append(("ALF (adv. head)", "adversarial_head_robust_acc", "#444444"))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / len(bars)
    means: dict[tuple[str, str], float] = {}
    for a, arm in enumerate(("clean_pretrain", "at_pretrain")):
        for b, (name, field, color) in enumerate(bars):
            vals = np.array(real["per_seed"][arm] if field is None else extra[arm][field], dtype=float)
            mean, half = mean_ci(vals[:, None])
            x = a + (b - (len(bars) - 1) / 2) * width
            ax.bar(
                x,
                mean[0],
                width * 0.9,
                yerr=half[0],
                capsize=3,
                color=color,
                label=name if a == 1 else None,
            )
            ax.scatter(np.full(vals.size, x), vals, color="k", s=8, zorder=3)
            means[(arm, name)] = float(mean[0])
    ax.set_xticks([0, 1], ["clean pre-training", "AT pre-training"])
    ax.set_ylabel(f"robust accuracy ({real.get('norm', '')} eps {real.get('eps', '')})")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    slf_at, slf_clean = means[("at_pretrain", "SLF (clean head)")], means[("clean_pretrain", "SLF (clean head)")]
    caption = (
        f"Real data ({real.get('attack', 'attack')}): a clean head on adversarially pre-trained features reaches "
        f"{slf_at:.2f} robust accuracy vs {slf_clean:.2f} on clean features; the pre-trained AT model itself "
        f"{means[('at_pretrain', 'pre-trained')]:.2f}"
    )
    if len(bars) == 3:
        caption += f", an adversarial head on its features {means[('at_pretrain', 'ALF (adv. head)')]:.2f}"
    return png(fig), caption + " (means, 95% intervals, per-seed points)."


CLAIM = RealData()
