"""The Alchemical Model's features (steps 1-3 of model.py), two backends.

Both take the spline coefficients of the radial functions (W and the P_l scale
folded in) and return, per centre, the upper triangles of the scaled P_l and the
sums of the F features and of their squares (for the LayerNorm):

- ``TorchPowerSpectrum``: torch operations; differentiable in the parameters
  (training) and in the edge vectors, on any device.
- ``KernelPowerSpectrum``: the CPU kernel ``alchem::power_spectrum``: in inference
  with the model's cached table, in training (``factored``) with the table's two
  factors, differentiable in both (the kernel's double backward gives the
  gradient of a loss on forces); other devices go to its torch operations.

The model picks one at construction (``AlchemicalModel.use_backend``); both give the
same numbers (tests/test_alchemical_model.py, to 1e-12 in float64).
"""

import torch

from ...features import neighbor_slots, spline_interval
from ...harmonics import SphericalHarmonics
from ...ops.modules import power_spectrum, power_spectrum_factored


class TorchPowerSpectrum(torch.nn.Module):
    def __init__(
        self,
        grid: list[float],
        nodes: list[int],
        column_sizes: list[int],
        triangle_local: torch.Tensor,
        triangle_offsets: list[int],
        normalize: bool,
        dtype: torch.dtype,
    ):
        super().__init__()
        self.cutoff = grid[0]
        self.grid = grid  # [r_c, onset, step_below, step_above] (features.py)
        self.nodes = nodes  # [n_below, n_nodes]
        self.column_sizes = column_sizes  # K n_l per l
        self.max_angular = len(column_sizes) - 1
        self.triangle_offsets = triangle_offsets
        self.normalize = normalize
        # the model's buffer (saved with it), not saved a second time here
        self.register_buffer("triangle_local", triangle_local, persistent=False)
        self.spherical_harmonics = SphericalHarmonics(self.max_angular, dtype)

    def radial(
        self,
        distances: torch.Tensor,
        elements: torch.Tensor,
        coefficients: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """W[k, a_j] g_{k,nl}(r_ij) for every edge, one [n_edges, K n_l] per l.

        Evaluated l by l: the per-edge tensors stay a few MB, which avoids both the
        memory traffic and the page faults of one [n_edges, C] tensor per step.
        """
        interval, t = spline_interval(distances, self.grid, self.nodes)
        t = t.unsqueeze(1)
        row = elements * (self.nodes[1] - 1) + interval
        c0, c1, c2, c3 = [c.split(self.column_sizes, dim=1) for c in coefficients]
        result: list[torch.Tensor] = []
        for l in range(self.max_angular + 1):
            value = c3[l].index_select(0, row) * t + c2[l].index_select(0, row)
            value = value * t + c1[l].index_select(0, row)
            result.append(value * t + c0[l].index_select(0, row))
        return result

    def forward(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_atoms: int,
        coefficients: list[torch.Tensor],
        table: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Upper triangles of the scaled P_l, one [n_atoms, T_l] per l, and the sums
        of the F features and of their squares per atom (``table``: unused here).

        The blocks are not concatenated: the first layer is a sum of per-l
        products, which keeps every tensor small and the backward passes free of
        full-size zero fills."""
        vectors, elements, slots = self.neighbor_slots(
            species, edge_vectors, centers, neighbors, n_atoms
        )
        radial_l = self.radial(
            torch.linalg.norm(vectors, dim=1), elements, coefficients
        )
        angular_l = self.spherical_harmonics(vectors)
        blocks: list[torch.Tensor] = []
        total = torch.zeros(n_atoms, dtype=vectors.dtype, device=vectors.device)
        squares = torch.zeros(n_atoms, dtype=vectors.dtype, device=vectors.device)
        for l in range(self.max_angular + 1):
            radial = radial_l[l].reshape(n_atoms, slots, self.column_sizes[l])
            angular = angular_l[l].reshape(n_atoms, slots, 2 * l + 1)
            # The density c [n_atoms, K n_l, 2l + 1] is made as a transposed
            # view of c^T [n_atoms, 2l + 1, K n_l] when it has more channels
            # than components (l <= 9 by default): these batched products of
            # small matrices, forward and backward, then take 1.3-2x less time
            # on the CPU (MKL; a 1024-atom chunk of the default model: 122 ->
            # 97 ms for all l).
            if self.column_sizes[l] >= 2 * l + 1:
                density = torch.bmm(angular.transpose(1, 2), radial).transpose(1, 2)
            else:
                density = torch.bmm(radial.transpose(1, 2), angular)
            power = torch.bmm(density, density.transpose(1, 2))
            t0, t1 = self.triangle_offsets[l], self.triangle_offsets[l + 1]
            blocks.append(
                power.reshape(n_atoms, -1).index_select(1, self.triangle_local[t0:t1])
            )
            if self.normalize:
                # sums of P_l and of P_l^2 over the full matrix, from the density:
                # sum P = |sum_x c_x|^2 and sum P^2 = |c^T c|_F^2
                column = density.sum(dim=1)
                gram = torch.bmm(density.transpose(1, 2), density)
                total = total + (column * column).sum(dim=1)
                squares = squares + (gram * gram).sum(dim=(1, 2))
        return blocks, total, squares

    def neighbor_slots(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_atoms: int,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Edge vectors and neighbour elements in neighbour slots, and the slots per
        atom.

        Edge e goes to slot centers[e] * M + (its rank among the edges of
        centers[e]), M the largest neighbour count. Empty slots hold a vector of
        length r_c, where every radial function and its derivative vanish, so they
        add nothing and the sums over neighbours become batched matrix products."""
        rank, slots = neighbor_slots(centers, n_atoms)
        if centers.shape[0] == 0:
            slots = 0
        slot = centers * slots + rank
        padding = torch.zeros(
            (n_atoms * slots, 3), dtype=edge_vectors.dtype, device=edge_vectors.device
        )
        padding[:, 2] = self.cutoff
        vectors = padding.index_copy(0, slot, edge_vectors)
        elements = torch.zeros(
            n_atoms * slots, dtype=species.dtype, device=species.device
        ).index_copy(0, slot, species.index_select(0, neighbors))
        return vectors, elements, slots


class KernelPowerSpectrum(torch.nn.Module):
    """``alchem::power_spectrum`` with the table of spline coefficients
    ([rows, 4, C], the model's inference cache); without a table (training) or
    off the CPU, the torch operations."""

    def __init__(
        self, torch_operations: TorchPowerSpectrum, multiplicity: torch.Tensor
    ):
        super().__init__()
        self.torch_operations = torch_operations
        self.column_sizes = torch_operations.column_sizes
        self.grid = torch_operations.grid
        self.nodes = torch_operations.nodes
        # weights of the triangle entries in the sums of the F features (1 on the
        # diagonal, 2 off it); no centre term, no per-edge factor (both are folded
        # into the table)
        self.register_buffer("multiplicity", multiplicity, persistent=False)
        no_center = torch.zeros(0, dtype=torch.long)
        self.register_buffer("center_species", no_center, persistent=False)
        self.register_buffer("center_density", torch.zeros(0, 0), persistent=False)
        self.smooth = [0.0, 1.0, 1.0, 0.0]

    def forward(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_atoms: int,
        coefficients: list[torch.Tensor],
        table: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """As TorchPowerSpectrum.forward; the triangles of every l come as one
        block."""
        if table.shape[0] == 0 or edge_vectors.device.type != "cpu":
            return self.torch_operations(
                species, edge_vectors, centers, neighbors, n_atoms, coefficients, table
            )
        triangles, total, squares = power_spectrum(
            edge_vectors,
            species.index_select(0, neighbors),
            centers,
            n_atoms,
            table,
            self.column_sizes,
            self.grid,
            self.nodes,
            self.multiplicity,
            self.multiplicity,
            self.center_species,
            self.center_density,
            self.smooth,
        )
        return [triangles], total, squares

    @torch.jit.unused
    def factored(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_atoms: int,
        cubic: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Training on the CPU: as ``forward``, with the table given by its factors
        (model.py, ``spline_factors``) and differentiable in both, forces' gradient
        included (the kernel's double backward)."""
        triangles, total, squares = power_spectrum_factored(
            edge_vectors,
            species.index_select(0, neighbors),
            centers,
            n_atoms,
            cubic,
            weights,
            self.column_sizes,
            self.grid,
            self.nodes,
            self.multiplicity,
            self.multiplicity,
        )
        return [triangles], total, squares
