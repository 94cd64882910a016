"""The SOAP-BPNN power spectrum, two backends.

Both return the features of the centres in rows ordered by centre species (atom i in
row ``row[i]``, ``order`` its inverse), as blocks with the LayerNorm sums of the F
features and of their squares per row, and map a first layer [F, out] onto the
layout of their blocks (``layout``):

- ``TorchPowerSpectrum``: torch operations, one block of (species pair a <= b, n,
  n') features per l; differentiable in the parameters and the edge vectors, on any
  device.
- ``KernelPowerSpectrum``: the CPU kernel ``alchem::power_spectrum`` in eval mode,
  one block of upper-triangle entries of P_l (the features are those entries times
  a scale); training and other devices go to its torch operations.

The model picks one at construction (``SoapBpnn.use_backend``); both give the same
numbers (tests/test_model_physics.py, to 1e-12 in float64).
"""

import math

import torch

from ...features import (
    RadialScaling,
    ShiftedCosineCutoff,
    neighbor_slots,
    spline_interval,
)
from ...harmonics import SphericalHarmonics
from ...ops.modules import power_spectrum


class TorchPowerSpectrum(torch.nn.Module):
    def __init__(
        self,
        n_species: int,
        n_radial: int,
        max_angular: int,
        spline_table: torch.Tensor,
        spacing: float,
        cutoff_function: ShiftedCosineCutoff,
        radial_scaling: RadialScaling | None,
        pair_first: torch.Tensor,
        pair_second: torch.Tensor,
        normalize: bool,
    ):
        super().__init__()
        self.n_species = n_species
        self.n_radial = n_radial
        self.max_angular = max_angular
        self.normalize = normalize
        # torch-spex's cubic Hermite spline of R_nl as four tables: row k of them
        # holds R(r_k), h R'(r_k), R(r_k+1), h R'(r_k+1) times the damping, so the
        # basis of every edge is a sum of four weighted rows (see radial_basis)
        self.register_buffer("spline_table", spline_table, persistent=False)
        intervals = spline_table.shape[1]
        # one segment of uniform intervals (onset at the cutoff), as in the kernel
        cutoff = cutoff_function.cutoff
        self.grid = [cutoff, cutoff, spacing, 1.0]
        self.nodes = [intervals, intervals + 1]
        self.cutoff_function = cutoff_function
        self.use_scaling = radial_scaling is not None
        self.radial_scaling = radial_scaling or RadialScaling(1.0, 1.0, 1.0)
        self.spherical_harmonics = SphericalHarmonics(max_angular, spline_table.dtype)
        # the (pair a <= b, n, n') features of the [(a, n), (b, n')] product of
        # the densities (see forward): viewed as rows (a, n, b) of N numbers (n'),
        # one gather of whole rows per l makes the features; a < b counted twice
        S, N = n_species, n_radial
        first, second = pair_first, pair_second
        rows = (first.reshape(-1, 1) * N + torch.arange(N)) * S + second.reshape(-1, 1)
        self.register_buffer("pair_rows", rows.reshape(-1), persistent=False)
        # (in the table's precision: the default dtype may be another one)
        weight = torch.ones(len(first), dtype=spline_table.dtype)
        weight[first != second] = math.sqrt(2.0)
        scale = weight.reshape(-1, 1, 1).expand(-1, N, N).reshape(-1)
        self.register_buffer("pair_scale", scale, persistent=False)

    def smooth(self, distances: torch.Tensor) -> torch.Tensor:
        """The cutoff function times the radial scaling (if any)."""
        smooth = self.cutoff_function(distances)
        if self.use_scaling:
            smooth = smooth * self.radial_scaling(distances)
        return smooth

    def radial_basis(
        self, distances: torch.Tensor, smooth: torch.Tensor
    ) -> torch.Tensor:
        """[edges, (l, n)]: smooth(r) damping_nl R_nl(r), torch-spex's spline.

        The same cubic Hermite interpolation as ``spex`` (evaluate_splines), with
        the damping folded into the table; r (and the cutoff and scaling) enter
        only through the four weights h(t), so the backward passes of force
        training reach r through [edges x 4] weights, not the spline's terms."""
        interval, t = spline_interval(distances, self.grid, self.nodes)
        t2 = t * t
        t3 = t2 * t
        weights = torch.stack(
            [
                2.0 * t3 - 3.0 * t2 + 1.0,
                t3 - 2.0 * t2 + t,
                3.0 * t2 - 2.0 * t3,
                t3 - t2,
            ],
            dim=1,
        )
        weights = weights * smooth.unsqueeze(1)
        # four fused multiply-adds on contiguous rows: faster than bmm on [edges]
        # batches of 1 x 4, and than strided slices of one [edges, 4, F] gather
        radial = weights[:, 0:1] * self.spline_table[0].index_select(0, interval)
        for k in range(1, 4):
            rows = self.spline_table[k].index_select(0, interval)
            radial = torch.addcmul(radial, weights[:, k : k + 1], rows)
        return radial

    def forward(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        both_directions: bool,
        row: torch.Tensor,
        order: torch.Tensor,
        center_density: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Power spectrum of the first ``n_centers`` atoms, one [n_centers, pairs *
        n * n] block per l, atom i in row ``row[i]``, and the LayerNorm sums per row
        (zeros without LayerNorm). ``order``: unused here.

        ``both_directions``: edge (i, j, r_ij) also stands for (j, i, -r_ij), so a
        full neighbour list can be given with each pair once (every atom must then
        be a centre). The radial functions and harmonics of a pair are computed
        once (Y_l(-r) = (-1)^l Y_l(r)), which halves their share of a training
        step."""
        distances = torch.linalg.norm(edge_vectors, dim=1)
        radial = self.radial_basis(distances, self.smooth(distances))
        harmonics_per_l = self.spherical_harmonics(edge_vectors)
        n_given = centers.shape[0]
        if both_directions:
            centers, neighbors = (
                torch.cat([centers, neighbors]),
                torch.cat([neighbors, centers]),
            )
        # Neighbour sums as batched products: each centre (in its row) gets `width`
        # places, its largest neighbour count, and edge e goes to place row * width
        # + (its rank among the edges of its centre); empty places are zero. The
        # harmonics of neighbour species a fill columns a (2l + 1) .. of their place
        # so that one [n x width] @ [width x S (2l + 1)] product per centre gives
        # the densities of every species, and the backward passes are products too
        # (no [edges x n x (2l + 1)] outer products, gathers and scatters).
        center_row = row.index_select(0, centers)
        rank, width = neighbor_slots(center_row, n_centers)
        place = center_row * width + rank
        species_place = place * self.n_species + species.index_select(0, neighbors)
        padded = torch.zeros(
            (n_centers * width, radial.shape[1]),
            dtype=radial.dtype,
            device=radial.device,
        )
        padded.index_copy_(0, place[:n_given], radial)
        if both_directions:
            padded.index_copy_(0, place[n_given:], radial)
        radial_per_l = padded.reshape(
            n_centers, width, self.max_angular + 1, self.n_radial
        ).unbind(2)
        # the centre's own density (l = 0) in the column of its species
        row_species = torch.empty_like(species[:n_centers]).index_copy_(
            0, row, species[:n_centers]
        )
        own = torch.nn.functional.one_hot(row_species, self.n_species)
        own = center_density.reshape(1, -1, 1) * own.to(radial.dtype).unsqueeze(1)
        blocks: list[torch.Tensor] = []
        for l, harmonics_l in enumerate(harmonics_per_l):
            blocks.append(
                self.block(
                    l,
                    harmonics_l,
                    radial_per_l[l],
                    species_place,
                    n_given,
                    both_directions,
                    own,
                )
            )
        total, squares = self.layernorm_sums(blocks)
        return blocks, total, squares

    def block(
        self,
        l: int,
        harmonics: torch.Tensor,
        radial: torch.Tensor,
        species_place: torch.Tensor,
        n_given: int,
        both_directions: bool,
        own: torch.Tensor,
    ) -> torch.Tensor:
        """The features of one l from the harmonics of the edges and the radial
        functions in neighbour places."""
        n_atoms, width = radial.shape[0], radial.shape[1]
        S, N, size = self.n_species, self.n_radial, 2 * l + 1
        padded = torch.zeros(
            (n_atoms * width * S, size), dtype=harmonics.dtype, device=harmonics.device
        )
        padded.index_copy_(0, species_place[:n_given], harmonics)
        if both_directions:
            reverse = harmonics if l % 2 == 0 else -harmonics
            padded.index_copy_(0, species_place[n_given:], reverse)
        # [row, n, (a, m)]
        density = torch.bmm(radial.transpose(1, 2), padded.reshape(n_atoms, width, -1))
        if l == 0:
            density = density + own
        # all species pairs at once: [row, (a, n), (b, n')], then the a <= b pairs
        # in (pair, n, n') order, off-diagonal pairs times sqrt(2)
        density = density.reshape(n_atoms, N, S, size).transpose(1, 2)
        density = density.reshape(n_atoms, S * N, size)
        power = torch.bmm(density, density.transpose(1, 2))
        power = power.reshape(n_atoms, S * N * S, N).index_select(1, self.pair_rows)
        return power.reshape(n_atoms, -1) * (self.pair_scale / math.sqrt(2 * l + 1))

    def layernorm_sums(
        self, blocks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums of the features and of their squares per row (zeros without
        LayerNorm, which does not read them)."""
        total = torch.zeros_like(blocks[0][:, 0])
        squares = torch.zeros_like(total)
        if self.normalize:
            for block in blocks:
                total = total + block.sum(dim=1)
                squares = squares + block.pow(2).sum(dim=1)
        return total, squares

    def layout(
        self, weight: torch.Tensor, edge_vectors: torch.Tensor
    ) -> list[torch.Tensor]:
        """A first layer [F, out] as one [block size, out] weight per block."""
        return list(weight.split(weight.shape[0] // (self.max_angular + 1), dim=0))


class KernelPowerSpectrum(torch.nn.Module):
    """The features of ``alchem::power_spectrum``: channels (species a, n) per l,
    with each element's radial functions in its own block of the spline table (the
    compression of the Alchemical Model with W = identity), the same cubic Hermite
    spline as the torch operations, their cutoff and scaling as the kernel's
    per-edge factor, and each feature mapped onto an entry of the upper triangles
    of P_l."""

    def __init__(
        self,
        torch_operations: TorchPowerSpectrum,
        center_density: torch.Tensor,
        pair_first: torch.Tensor,
        pair_second: torch.Tensor,
    ):
        super().__init__()
        self.torch_operations = torch_operations
        S, N = torch_operations.n_species, torch_operations.n_radial
        L = torch_operations.max_angular
        self.column_sizes = [S * N] * (L + 1)
        self.grid = torch_operations.grid
        self.nodes = torch_operations.nodes
        self.register_buffer(
            "table",
            self.coefficients(torch_operations.spline_table, S, N, L),
            persistent=False,
        )
        own = torch.zeros(S, S * N, dtype=center_density.dtype)
        for a in range(S):
            own[a, a * N : (a + 1) * N] = center_density
        self.register_buffer("center_density", own, persistent=False)
        self.feature_entries(pair_first.tolist(), pair_second.tolist(), S, N, L)
        scaling = torch_operations.radial_scaling
        width = torch_operations.cutoff_function.width
        self.smooth = [width, 1.0, 1.0, 0.0]
        if torch_operations.use_scaling:
            self.smooth = [
                width,
                float(scaling.rate),
                float(scaling.scale),
                float(scaling.exponent),
            ]

    @staticmethod
    def coefficients(table: torch.Tensor, S: int, N: int, L: int) -> torch.Tensor:
        """The kernel's spline table [S G, 4, (l, a, n)]: coefficients of t^0..t^3
        per interval, from values and h-scaled slopes, element a in its own
        columns."""
        v0, d0, v1, d1 = table[0], table[1], table[2], table[3]  # [G, (l, n)]
        cubic = [v0, d0, 3.0 * (v1 - v0) - 2.0 * d0 - d1, 2.0 * (v0 - v1) + d0 + d1]
        G = v0.shape[0]
        rows = torch.zeros(S, G, 4, L + 1, S, N, dtype=v0.dtype)
        for p, c in enumerate(cubic):
            per_l = c.reshape(G, L + 1, N)
            for a in range(S):
                rows[a, :, p, :, a, :] = per_l
        return rows.reshape(S * G, 4, (L + 1) * S * N)

    def feature_entries(
        self, first: list[int], second: list[int], S: int, N: int, L: int
    ) -> None:
        """Features -> upper-triangle entries (i <= j of (a n, b n')) and scales,
        and the weights of the entries in the LayerNorm sums."""
        channels = S * N
        per_l = channels * (channels + 1) // 2
        index, coefficient = [], []
        for l in range(L + 1):
            for a, b in zip(first, second):
                scale = (math.sqrt(2.0) if a != b else 1.0) / math.sqrt(2 * l + 1)
                for n in range(N):
                    for n2 in range(N):
                        i, j = sorted((a * N + n, b * N + n2))
                        index.append(
                            l * per_l + i * channels - i * (i - 1) // 2 + j - i
                        )
                        coefficient.append(scale)
        index = torch.tensor(index)
        dtype = self.table.dtype
        coefficient = torch.tensor(coefficient, dtype=dtype)
        self.n_entries = (L + 1) * per_l
        self.register_buffer("feature_entry", index, persistent=False)
        self.register_buffer("feature_scale", coefficient, persistent=False)
        weights = torch.zeros(self.n_entries, dtype=dtype)
        self.register_buffer(
            "total_weights", weights.index_add(0, index, coefficient), persistent=False
        )
        self.register_buffer(
            "square_weights",
            weights.index_add(0, index, coefficient * coefficient),
            persistent=False,
        )

    def runs_kernel(self, edge_vectors: torch.Tensor) -> bool:
        return not self.training and edge_vectors.device.type == "cpu"

    def forward(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        both_directions: bool,
        row: torch.Tensor,
        order: torch.Tensor,
        center_density: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """As TorchPowerSpectrum.forward; one block, the upper triangles of every
        l (``center_density``: the kernel's own form is a buffer)."""
        if not self.runs_kernel(edge_vectors):
            return self.torch_operations(
                species,
                edge_vectors,
                centers,
                neighbors,
                n_centers,
                both_directions,
                row,
                order,
                center_density,
            )
        if both_directions:
            centers, neighbors = (
                torch.cat([centers, neighbors]),
                torch.cat([neighbors, centers]),
            )
            edge_vectors = torch.cat([edge_vectors, -edge_vectors])
        triangles, total, squares = power_spectrum(
            edge_vectors,
            species.index_select(0, neighbors),
            centers,
            n_centers,
            self.table,
            self.column_sizes,
            self.grid,
            self.nodes,
            self.total_weights,
            self.square_weights,
            species[:n_centers],
            self.center_density,
            self.smooth,
        )
        # atoms in the rows of their species, as the torch operations give them
        return (
            [triangles.index_select(0, order)],
            total.index_select(0, order),
            squares.index_select(0, order),
        )

    def layout(
        self, weight: torch.Tensor, edge_vectors: torch.Tensor
    ) -> list[torch.Tensor]:
        """A first layer [F, out] mapped onto the triangle entries [entries, out]."""
        if not self.runs_kernel(edge_vectors):
            return self.torch_operations.layout(weight, edge_vectors)
        folded = torch.zeros(
            (self.n_entries, weight.shape[1]), dtype=weight.dtype, device=weight.device
        )
        scaled = weight * self.feature_scale.unsqueeze(1)
        return [folded.index_add(0, self.feature_entry, scaled)]
