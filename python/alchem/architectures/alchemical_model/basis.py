"""Radial bases truncated by eigenvalue, tabulated on a grid with their derivatives.

Two bases, both eigenfunctions of a radial operator, ranked by eigenvalue:

- ``le``: Laplacian eigenstates R_nl(r) ~ j_l(z_nl r / r_c), z_nl the n-th zero of
  the spherical Bessel function j_l (zeros from torch-spex). Eigenvalue z_nl^2, the
  dimensionless eigenvalue of -laplacian on the unit ball (torch-spex reports
  z_nl^2 / r_c^2; ``basis_cutoff`` is on the dimensionless one, as the seeds use it).
- ``physical``: the eigenfunctions and eigenvalues E_ln tabulated by the
  ``physical-basis`` package, on the dimensionless x = r / basis_scale.

For every angular channel l the functions with eigenvalue <= ``basis_cutoff`` are
kept: this fixes both l_max and n_l. Every function is normalised to unit mean
square over the cutoff sphere, (3 / r_c^3) int_0^r_c r^2 R(r)^2 dr = 1, so the two
bases have comparable magnitudes.
"""

import math
from functools import lru_cache

import numpy as np
import torch

# the physical-basis tables stop at l = 50; the same bound is used for `le`
MAX_BASIS_CUTOFF = 3000.0


@lru_cache(maxsize=4)
def _physical_basis():
    from physical_basis import PhysicalBasis

    return PhysicalBasis()


@lru_cache(maxsize=16)
def _le_zeros(basis_cutoff: float) -> np.ndarray:
    """z_nl for every l with z_0l^2 <= basis_cutoff, shape [l, n] (enough n)."""
    from ...features import laplacian_zeros

    max_angular = int(math.ceil(math.sqrt(basis_cutoff))) + 1
    n_radial = int(math.ceil(math.sqrt(basis_cutoff) / math.pi)) + 2
    return laplacian_zeros(max_angular, n_radial)


def eigenvalues(kind: str, basis_cutoff: float) -> np.ndarray:
    """Dimensionless eigenvalues [l, n] covering everything <= basis_cutoff."""
    if kind == "le":
        return _le_zeros(float(basis_cutoff)) ** 2
    if kind == "physical":
        return _physical_basis().E_ln
    raise ValueError(f"unknown radial basis {kind!r}")


def n_per_l(kind: str, basis_cutoff: float) -> list[int]:
    """Number of radial functions kept for l = 0, 1, ... (stops at the first 0)."""
    values = eigenvalues(kind, basis_cutoff)
    counts: list[int] = []
    for row in values:
        count = int(np.sum(row <= basis_cutoff))
        if count == 0:
            break
        counts.append(count)
    return counts


def smallest_eigenvalue(kind: str) -> float:
    return float(eigenvalues(kind, 10.0)[0, 0])


def _raw_functions(kind: str, counts: list[int], cutoff: float, scale: float, r):
    """Unnormalised values and r-derivatives, shape [len(r), sum(counts)]."""
    values, derivatives = [], []
    if kind == "le":
        from scipy.special import spherical_jn

        zeros = _le_zeros_for(counts)
        for l, count in enumerate(counts):
            for n in range(count):
                k = zeros[l, n] / cutoff
                values.append(spherical_jn(l, k * r))
                derivatives.append(k * spherical_jn(l, k * r, derivative=True))
    else:
        # physical_basis.PhysicalBasis.compute, vectorised: the eigenvectors are
        # coefficients of cos((m + 1/2) pi x / 10) (l = 0) or sin((m + 1) pi x / 10)
        table = _physical_basis().eigenvectors
        x = np.asarray(r, dtype=np.float64) / scale
        m = np.arange(table.shape[1], dtype=np.float64)
        for l, count in enumerate(counts):
            k = np.pi * (m + (0.5 if l == 0 else 1.0)) / 10.0
            phase = np.outer(x, k)
            if l == 0:
                wave, slope = np.cos(phase), -np.sin(phase) * k
            else:
                wave, slope = np.sin(phase), np.cos(phase) * k
            coefficients = table[l][:, :count]
            values.extend((wave @ coefficients).T)
            derivatives.extend((slope @ coefficients / scale).T)
    return np.stack(values, axis=1), np.stack(derivatives, axis=1)


def _le_zeros_for(counts: list[int]) -> np.ndarray:
    from ...features import laplacian_zeros

    return laplacian_zeros(len(counts) - 1, max(counts))


def tabulate(
    kind: str, counts: list[int], cutoff: float, scale: float, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radial functions and their r-derivatives at distances ``r``.

    Columns are ordered by l, then n: [(l=0, n=0..n_0-1), (l=1, ...), ...].
    """
    fine = np.linspace(0.0, cutoff, 2001)
    values, _ = _raw_functions(kind, counts, cutoff, scale, fine)
    weight = fine[:, None] ** 2 * values**2
    integral = np.sum(0.5 * (weight[1:] + weight[:-1]), axis=0) * (fine[1] - fine[0])
    norm = 1.0 / np.sqrt(3.0 * integral / cutoff**3)
    values, derivatives = _raw_functions(kind, counts, cutoff, scale, r)
    return values * norm, derivatives * norm


def shifted_cosine(
    r: np.ndarray, cutoff: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """The switch ``alchem.features.shifted_cosine`` and its r-derivative at ``r``."""
    from ...features import shifted_cosine as value
    from ...features import shifted_cosine_slope as slope

    r = torch.as_tensor(np.asarray(r, dtype=np.float64))
    return value(r, cutoff, width).numpy(), slope(r, cutoff, width).numpy()


def grid(
    kind: str, basis_cutoff: float, cutoff: float, scale: float, width: float
) -> tuple[np.ndarray, int]:
    """Nodes on [0, r_c] for the cubic Hermite table, and how many intervals lie
    below the switch onset r_c - width.

    The onset is a node: the switch's second derivative jumps there, and a cubic
    interpolating across that kink would be only O(h^3) accurate. Within each
    of the two segments the spacing is about 0.2 / k_max, with k_max the fastest
    wave number (sqrt(E_max) / length, length r_c for ``le`` and basis_scale for
    ``physical``, or pi / width for the switch): interpolation error below 1e-4
    of each function's amplitude (measured: below 5e-6 for both bases).
    """
    length = cutoff if kind == "le" else scale
    k_max = max(math.sqrt(basis_cutoff) / length, math.pi / width)
    step = 0.2 / k_max
    onset = cutoff - width
    below = int(math.ceil(onset / step)) if onset > 0 else 0
    above = max(4, int(math.ceil(width / step)))
    nodes = np.concatenate(
        [
            np.linspace(0.0, onset, below + 1)[:-1] if below > 0 else np.zeros(0),
            np.linspace(onset, cutoff, above + 1),
        ]
    )
    return nodes, below
