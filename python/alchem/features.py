"""Pieces of the SOAP features shared by the architectures.

Radial bases come from torch-spex and spherical harmonics from ``alchem.harmonics``;
what lives here is the glue those do not provide: the smooth cutoff, the radial
scaling, the location of a distance on a spline grid, the zeros of the spherical
Bessel functions and the neighbour slots that turn sums over neighbours into batched
matrix products. The C++ kernel (python/alchem/ops/kernel_common.h) implements the
same cutoff and grid formulas.
"""

import math

import numpy as np
import torch


def shifted_cosine(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """f(r) = 1 below r_c - w, 1/2 (1 + cos(pi (r - r_c + w) / w)) up to r_c, then 0.

    Value and first derivative are zero at r_c, so energies and forces are continuous
    when a neighbour crosses the cutoff.
    """
    # clamp first so the unused branch of torch.where has finite gradients
    x = torch.clamp((r - (cutoff - width)) / width, 0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * x))


def shifted_cosine_slope(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """df/dr of ``shifted_cosine``: exactly 0 from r_c on (sin(pi) is not)."""
    x = torch.clamp((r - (cutoff - width)) / width, 0.0, 1.0)
    slope = -0.5 * math.pi / width * torch.sin(math.pi * x)
    return torch.where(x < 1.0, slope, torch.zeros_like(slope))


def spline_interval(
    r: torch.Tensor, grid: list[float], nodes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(interval, t): the grid interval of each distance and the position in it,
    t in [0, 1].

    The grid is the kernel's (kernel_common.h, Grid): ``grid`` = [r_c, onset,
    step_below, step_above], ``nodes`` = [n_below, n_nodes]: n_below uniform
    intervals on [0, onset], then uniform intervals up to r_c (one segment when
    onset = r_c). Distances are clamped to [0, r_c].
    """
    cutoff, onset, step_below, step_above = grid[0], grid[1], grid[2], grid[3]
    n_below, n_nodes = nodes[0], nodes[1]
    r = torch.clamp(r, 0.0, cutoff)
    above = r >= onset
    x = torch.where(above, (r - onset) / step_above + n_below, r / step_below)
    interval = torch.clamp(torch.floor(x).to(torch.int64), 0, n_nodes - 2)
    # the first segment never reaches into the second (rounding at the onset)
    interval = torch.where(
        above, interval, torch.clamp(interval, max=max(n_below - 1, 0))
    )
    return interval, x - interval.to(x.dtype)


class ShiftedCosineCutoff(torch.nn.Module):
    """``shifted_cosine`` as a module (cutoff and width its attributes)."""

    def __init__(self, cutoff: float, width: float):
        super().__init__()
        self.cutoff = cutoff
        self.width = width

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return shifted_cosine(r, self.cutoff, self.width)


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
