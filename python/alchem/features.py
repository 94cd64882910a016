"""Pieces of the SOAP features shared by the architectures.

Radial bases come from torch-spex and spherical harmonics from ``alchem.harmonics``;
what lives here is the glue those do not provide: the smooth cutoff, the radial
scaling, the zeros of the spherical Bessel functions and the neighbour slots that
turn sums over neighbours into batched matrix products.
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


def neighbor_slots(centers: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, int]:
    """(rank, width): the place of each edge among the edges of its centre (0, 1,
    ... in edge order) and the largest neighbour count (at least 1).

    Edge e then has the slot ``centers[e] * width + rank[e]`` in a padded
    [n_atoms x width] layout, where a sum over neighbours is a batched product.
    """
    counts = torch.bincount(centers, minlength=n_atoms)
    width = 1
    if centers.shape[0] > 0:
        width = max(int(torch.max(counts)), 1)
    sorted_centers, order = torch.sort(centers, stable=True)
    first = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(
        centers.shape[0], device=centers.device
    ) - first.index_select(0, sorted_centers)
    rank = torch.empty_like(rank_sorted).scatter_(0, order, rank_sorted)
    return rank, width
