"""TorchScript-friendly callers of ``alchem::power_spectrum``.

A model holds ``kernel_module()``: PowerSpectrumKernel where the operator is
registered, else NoKernel (same signature), so that TorchScript compiles the
operator call only where it exists. Arguments: see alchemical_ops.cpp and
kernel_common.h (Layout, Grid, Features).
"""

import torch

from . import kernel_enabled


class PowerSpectrumKernel(torch.nn.Module):
    """Densities, upper triangles of P_l and the LayerNorm sums per atom, with the
    gradient to the edge vectors, in one CPU kernel."""

    def forward(
        self,
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


class NoKernel(torch.nn.Module):
    """Stands in for PowerSpectrumKernel where the operator is not available."""

    def forward(
        self,
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
        raise RuntimeError("alchem::power_spectrum is not loaded")


def kernel_module() -> torch.nn.Module:
    return PowerSpectrumKernel() if kernel_enabled() else NoKernel()
