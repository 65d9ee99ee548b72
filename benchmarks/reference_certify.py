"""The certifier's relaxation written the obvious way: every candidate line against every point in one broadcast,
(n, m, pairs, points). ``robinherit.evaluation.certify.relaxation``, which goes through the candidate lines one at
a time to keep memory at (n, m), must equal it to the bit (``tests/test_certify.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from robinherit.evaluation.certify import TwoLayerLinear
from robinherit.models.units import unit


def broadcast_relaxation(net: TwoLayerLinear, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(a_l, c_l, a_u, c_u), each (n, m): the lines ``certify.relaxation`` documents, from one (n, m, Q, P) array."""
    kinks = [torch.minimum(torch.maximum(k.expand_as(lo), lo), hi) for k in unit(net.activation).kinks(net.b)]
    pts = torch.stack([lo, *kinks, hi], dim=-1)  # (n, m, P)
    vals = unit(net.activation).function(pts, net.b[:, None])
    i, j = torch.triu_indices(pts.shape[-1], pts.shape[-1], offset=1)
    width = pts[..., j] - pts[..., i]
    wide = width > 1e-12
    slopes = torch.where(wide, (vals[..., j] - vals[..., i]) / torch.where(wide, width, 1.0), 0.0)  # (n, m, Q)
    resid = vals[..., None, :] - slopes[..., :, None] * pts[..., None, :]  # (n, m, Q, P)
    c_up, c_low = resid.amax(-1), resid.amin(-1)
    mid = ((lo + hi) / 2)[..., None]
    k_up = (slopes * mid + c_up).argmin(-1, keepdim=True)
    k_low = (slopes * mid + c_low).argmax(-1, keepdim=True)
    a_l, c_l = slopes.gather(-1, k_low).squeeze(-1), c_low.gather(-1, k_low).squeeze(-1)
    return a_l, c_l, slopes.gather(-1, k_up).squeeze(-1), c_up.gather(-1, k_up).squeeze(-1)
