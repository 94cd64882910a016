"""Pieces of the SOAP features shared by the architectures.

Radial bases come from torch-spex and spherical harmonics from ``alchem.harmonics``;
what lives here is the glue those do not provide: the smooth cutoff, the radial
scaling and the zeros of the spherical Bessel functions.
"""

import math

import numpy as np
import torch


class ShiftedCosineCutoff(torch.nn.Module):
    """f(r) = 1 below r_c - w, 1/2 (1 + cos(pi (r - r_c + w) / w)) up to r_c, then 0.

    Value and first derivative are zero at r_c, so energies and forces are continuous
    when a neighbour crosses the cutoff.
    """

    def __init__(self, cutoff: float, width: float):
        super().__init__()
        self.cutoff = cutoff
        self.width = width

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        onset = self.cutoff - self.width
        # clamp first so the unused branch of torch.where has finite gradients
        x = torch.clamp((r - onset) / self.width, 0.0, 1.0)
        return 0.5 * (1.0 + torch.cos(math.pi * x))


class RadialScaling(torch.nn.Module):
    """Willatt et al. 2018: u(r) = rate / (rate + (r / scale)^exponent)."""

    def __init__(self, rate: float, scale: float, exponent: float):
        super().__init__()
        self.rate = rate
        self.scale = scale
        self.exponent = exponent

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.rate / (self.rate + (r / self.scale) ** self.exponent)


def laplacian_zeros(max_angular: int, n_radial: int) -> np.ndarray:
    """z_nl, the n-th zero of the spherical Bessel function j_l: shape [l, n]."""
    from spex.radial.physical.laplacian_eigenstates import _compute_zeros

    return _compute_zeros(max_angular, n_radial - 1)[: max_angular + 1, :n_radial]
