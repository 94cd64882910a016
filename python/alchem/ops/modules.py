"""The TorchScript caller of ``alchem::power_spectrum`` that both architectures'
kernel backends use.

Only models built while the operator is registered call it (the architectures'
``use_backend("kernel")``), so TorchScript compiles the call only where the
operator exists. Arguments: see alchemical_ops.cpp and kernel_common.h (Layout,
Grid, Features); ``grid`` and ``nodes`` are the Grid as in
``alchem.features.spline_interval``.
"""

import torch


def power_spectrum(
    vectors: torch.Tensor,
    elements: torch.Tensor,
    centers: torch.Tensor,
    n_atoms: int,
    table: torch.Tensor,
    column_sizes: list[int],
    grid: list[float],
    nodes: list[int],
    total_weights: torch.Tensor,
    square_weights: torch.Tensor,
    center_species: torch.Tensor,
    center_density: torch.Tensor,
    smooth: list[float],
) -> list[torch.Tensor]:
    """Densities, upper triangles of P_l and the LayerNorm sums per atom, with the
    gradient to the edge vectors, in one CPU kernel: [triangles, total, squares]."""
    return torch.ops.alchem.power_spectrum(
        vectors,
        elements,
        centers,
        n_atoms,
        table,
        column_sizes,
        grid[0],
        grid[1],
        grid[2],
        grid[3],
        nodes[0],
        nodes[1],
        total_weights,
        square_weights,
        center_species,
        center_density,
        smooth,
    )


def power_spectrum_factored(
    vectors: torch.Tensor,
    elements: torch.Tensor,
    centers: torch.Tensor,
    n_atoms: int,
    cubic: torch.Tensor,
    weights: torch.Tensor,
    column_sizes: list[int],
    grid: list[float],
    nodes: list[int],
    total_weights: torch.Tensor,
    square_weights: torch.Tensor,
) -> list[torch.Tensor]:
    """``power_spectrum`` for training: the spline table as cubic coefficients per
    grid interval [G - 1, 4, C] times weights per element [S, C] (no centre
    density, no radial factor), with gradients for both and a double backward."""
    return torch.ops.alchem.power_spectrum_factored(
        vectors,
        elements,
        centers,
        n_atoms,
        cubic,
        weights,
        column_sizes,
        grid[0],
        grid[1],
        grid[2],
        grid[3],
        nodes[0],
        nodes[1],
        total_weights,
        square_weights,
        [0.0, 1.0, 1.0, 0.0],
    )
