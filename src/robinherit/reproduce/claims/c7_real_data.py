"""Claim 7, real data (THEORY.md: "the same comparisons on real data sets, reported whatever they show"; the
protocol is RoCL's SLF, Kim et al. 2020, on sklearn digits): clean-head robust accuracy after adversarial vs
clean supervised pre-training, attacked by PGD and AutoAttack (Croce & Hein 2020, torchattacks' implementation).

The one adapter between reproduce and ``realdata.claim7``, which runs and stores its own runs. Its optional
parts (torchattacks, a data set on disk) may be missing; the claim then becomes a "not run" row with the reason
and the fix rather than disappearing from claims.json and the report. No side condition: it is reported
whatever it shows.
"""

from __future__ import annotations

from typing import Any

from robinherit.errors import ConfigError, DataError
from robinherit.reproduce.spec import ClaimNotRunError, ClaimSpec, Evidence, Figure, Statistic, Tick

TORCHATTACKS_FIX = (
    "install it with `pip install --no-deps torchattacks==3.5.1`, or run the other claims with --claims 1-6"
)


class RealData(ClaimSpec):
    id = "7"
    number = 7
    name = "real data"
    statement = "Real data: the clean-head comparison of claim 3 on sklearn digits (parity relabelling, l2)."

    def extra_ticks(self, settings: Any) -> int:
        return 2 * len(settings.seeds)  # realdata.claim7 reports each of its runs

    def gather(self, ev: Evidence, tick: Tick) -> dict[str, Any]:
        try:
            from robinherit import realdata

            return realdata.claim7(
                list(ev.settings.seeds), ev.settings.quick, ev.store, progress=lambda what, _d, _t: tick(what)
            )
        except ImportError as err:
            raise ClaimNotRunError(f"the real-data module could not be imported ({err})", _import_fix(err)) from None
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
