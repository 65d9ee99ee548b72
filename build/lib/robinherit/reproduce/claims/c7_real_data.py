"""Claim 7, real data (THEORY.md: "the same comparisons on real data sets, reported whatever they show"; the
protocol is RoCL's SLF, Kim et al. 2020, on sklearn digits): clean-head robust accuracy after adversarial vs
clean supervised pre-training, attacked by PGD and AutoAttack (Croce & Hein 2020, torchattacks' implementation).

Its runs are ordinary runs of the shipped ``digits`` config (``robinherit run digits`` and ``reproduce`` share
them in the store), with the pre-trained models' own clean and robust accuracy beside the heads', so a failed
inheritance says whether there was anything to inherit. Its optional parts (torchattacks, a data set's package
or files) may be missing; the claim then becomes a "not run" row with the reason and the fix rather than
disappearing from claims.json and the report. No side condition: it is reported whatever it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robinherit.config import ExperimentConfig, build_config, deep_merge, load_yaml, parse_overrides, with_updates
from robinherit.errors import ConfigError, DataError
from robinherit.experiment import run_many_or_load
from robinherit.records import eps_key
from robinherit.reproduce.spec import ClaimNotRunError, ClaimSpec, Evidence, Figure, Statistic, Tick

TORCHATTACKS_FIX = (
    "install it with `pip install --no-deps torchattacks==3.5.1`, or run the other claims with --claims 1-6"
)
CLAIM7_CONFIG = "digits"
CLAIM7_EPS = 1.0
# Quick mode: fewer steps, the clean head only, one budget, 200 test digits, short AutoAttack components.
CLAIM7_QUICK = (
    "pretrain.steps=100",
    "pretrain.attack_steps=3",
    "downstream.heads=[clean]",
    "downstream.steps=100",
    "eval.n_test=200",
    f"eval.eps_grid=[0,{CLAIM7_EPS}]",
    "eval.apgd_steps=10",
    "eval.square_queries=100",
)


def claim7_configs(seeds: Sequence[int], quick: bool, overrides: Sequence[str] = ()) -> dict[str, list]:
    """The two arms' configs, one per seed: the shipped config (quick: with ``CLAIM7_QUICK``), AT as shipped and
    clean with ``pretrain.eps=0``."""
    raw = load_yaml(CLAIM7_CONFIG)
    base: ExperimentConfig = build_config(
        deep_merge(raw, parse_overrides([*(CLAIM7_QUICK if quick else ()), *overrides]))
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
            extra[arm]["adversarial_head_robust_acc"] = [
                r["downstream"]["adversarial_head"]["robust_acc"][key] for r in recs
            ]
    base = cfgs["at_pretrain"][0]
    extra["config"] = {
        "dataset": base.data.source,
        "protocol": f"{base.data.protocol.value} ({base.data.relabel.value})",
        "encoder": base.model.encoder.value,
        "pretrain_eps": base.pretrain.eps,
        "pretrain_steps": base.pretrain.steps,
        "quick": quick,
    }
    return {
        "statement": (
            f"On sklearn digits (8x8, [0,1]), a clean linear head on a frozen two-layer encoder, trained on a new task "
            f"(digit parity): robust accuracy at l2 eps={CLAIM7_EPS:g} (worst case of PGD and AutoAttack) after "
            "adversarial vs clean supervised pre-training on the 10 classes; the pre-trained models' own robustness "
            "in the details"
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
    statement = "Real data: the clean-head comparison of claim 3 on sklearn digits (parity relabelling, l2)."

    def extra_ticks(self, settings: Any) -> int:
        return 2 * len(settings.seeds)  # one tick per run

    def gather(self, ev: Evidence, tick: Tick) -> dict[str, Any]:
        try:
            return claim7(list(ev.settings.seeds), ev.settings.quick, ev.store, tick)
        except ImportError as err:
            raise ClaimNotRunError(f"an optional package could not be imported ({err})", _import_fix(err)) from None
        except DataError as err:
            raise ClaimNotRunError(f"the real-data set is not available ({err})", "see docs/realdata.md") from None
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
        return [Figure("Real data", *real_figure(ev.gathered[self.id], row))]


def _import_fix(err: ImportError) -> str:
    missing = getattr(err, "name", None)
    return f"install {missing}" if missing else "reinstall robinherit with its real-data extras"


def real_figure(real: dict[str, Any], row: dict[str, Any]) -> tuple[bytes, str]:
    import numpy as np

    from robinherit.reproduce.figures import COLORS, mean_ci, plt, png

    ps = row["per_seed"]
    a, c = np.array(ps["at_pretrain_robust"]), np.array(ps["clean_pretrain_robust"])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, (vals, label) in enumerate(((c, "clean"), (a, "AT"))):
        mean, half = mean_ci(vals[:, None])
        ax.bar(i, mean[0], yerr=half[0], capsize=4, color=COLORS[label])
        ax.scatter(np.full(vals.size, i), vals, color="k", s=12, zorder=3)
    ax.set_xticks([0, 1], ["clean pre-training", "AT pre-training"])
    ax.set_ylabel(f"robust accuracy, clean head ({real.get('norm', '')} eps {real.get('eps', '')})")
    ax.set_ylim(0, 1.02)
    caption = (
        f"Real data ({real.get('attack', 'attack')}): a clean head on adversarially pre-trained features reaches "
        f"{a.mean():.2f} robust accuracy vs {c.mean():.2f} on clean features (per-seed points shown)."
    )
    return png(fig), caption


CLAIM = RealData()
