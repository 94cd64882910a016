"""Pieces of the SOAP features shared by the architectures.

Spherical harmonics come from sphericart-torch and radial bases from torch-spex (see
``radial_basis``); what lives here is the glue those libraries do not provide: the
smooth cutoff, the radial scaling, the density expansion summed into per-atom
coefficients, and the power spectrum.
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


def upper_triangle_index(
    n_channels: int, n_radial: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into a flattened [(a n), (b n')] matrix keeping a <= b, and weights.

    Off-diagonal species pairs (a < b) appear once with a factor sqrt(2), so the
    Euclidean norm of the features is that of the full symmetric matrix.
    """
    index = []
    weight = []
    size = n_channels * n_radial
    for a in range(n_channels):
        for b in range(a, n_channels):
            for n1 in range(n_radial):
                for n2 in range(n_radial):
                    index.append((a * n_radial + n1) * size + b * n_radial + n2)
                    weight.append(1.0 if a == b else math.sqrt(2.0))
    return torch.tensor(index, dtype=torch.int64), torch.tensor(
        weight, dtype=torch.float64
    )


def laplacian_zeros(max_angular: int, n_radial: int) -> np.ndarray:
    """z_nl, the n-th zero of the spherical Bessel function j_l: shape [l, n]."""
    from spex.radial.physical.laplacian_eigenstates import _compute_zeros

    return _compute_zeros(max_angular, n_radial - 1)[: max_angular + 1, :n_radial]
