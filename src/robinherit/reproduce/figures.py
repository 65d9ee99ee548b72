"""Plotting helpers shared by the claims' figures (PNG bytes for the self-contained report).

Imported by a claim's ``figures`` only, so that computing the claims, and the pool workers that import the
claim modules to run derived jobs, never load matplotlib.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on a cluster
import matplotlib.pyplot as plt
import numpy as np

from robinherit.analysis.stats import t_half_width

COLORS = {"AT": "#c0392b", "clean": "#2c7fb8", "e2e": "#555555"}
ARM_LABELS = (("clean", "clean"), ("at", "AT"))  # (record arm, legend label), clean drawn first


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% t half-width over ``axis`` (0 half-width for a single seed)."""
    return values.mean(axis=axis), t_half_width(values, axis=axis)


class Rendered(bytes):
    """A figure's 300-dpi PNG (what the self-contained report embeds), with its SVG and PDF beside it (what the
    report writes as files for a paper). A bytes subclass, so every claim's ``png(fig)`` stays what it was."""

    svg: bytes
    pdf: bytes


def png(fig: plt.Figure) -> Rendered:
    def render(fmt: str) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=300, bbox_inches="tight")
        return buf.getvalue()

    out = Rendered(render("png"))
    out.svg, out.pdf = render("svg"), render("pdf")
    plt.close(fig)
    return out


__all__ = ["ARM_LABELS", "COLORS", "mean_ci", "plt", "png"]
