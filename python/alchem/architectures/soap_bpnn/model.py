"""SOAP power spectrum per species pair, LayerNorm, one MLP per centre species.

Radial basis: Laplacian eigenstates R_nl(r) ~ j_l(z_nl r / r_c) (torch-spex, splined),
damped by exp(-(sigma k_nl)^2 / 2) with k_nl = z_nl / r_c. That factor is the exact
effect of smearing each neighbour into a Gaussian of width sigma
(``atomic_gaussian_width``) on its projection onto j_l(k r). Every function is
multiplied by the shifted-cosine cutoff and the Willatt2018 radial scaling, so the
expansion goes smoothly to zero at the cutoff.
"""

import math
from typing import Final

import torch
from spex.radial.physical import LaplacianEigenstates

from ... import ops
from ...data import DatasetInfo
from ...features import (
    RadialScaling,
    ShiftedCosineCutoff,
    laplacian_zeros,
    neighbor_slots,
)
from ...harmonics import SphericalHarmonics
from ...ops.modules import kernel_module


def mlp(n_in: int, n_hidden: int, n_layers: int, n_out: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    size = n_in
    for _ in range(n_layers):
        layers += [torch.nn.Linear(size, n_hidden), torch.nn.SiLU()]
        size = n_hidden
    layers.append(torch.nn.Linear(size, n_out))
    return torch.nn.Sequential(*layers)


class SoapBpnn(torch.nn.Module):
    # A TorchScript constant: the compiler drops the branch not taken, so the
    # LayerNorm's eps, weight and bias are only compiled where there is one.
    # (isinstance(..., torch.nn.LayerNorm) only compiles in a process that has
    # already scripted a LayerNorm: exporting a `layernorm: false` model failed.)
    use_layernorm: Final[bool]

    def __init__(self, hypers: dict, info: DatasetInfo):
        super().__init__()
        # forward(..., both_directions=True) takes each neighbour pair once (see
        # feature_blocks); alchem.model.predict uses it for training and evaluation
        self.accepts_both_directions = True
        soap, bpnn = hypers["soap"], hypers["bpnn"]
        self.cutoff = float(soap["cutoff"])
        self.n_species = len(info.atomic_types)
        self.max_angular = int(soap["max_angular"])
        self.n_radial = int(soap["max_radial"])

        self.radial = LaplacianEigenstates(
            self.cutoff,
            max_angular=self.max_angular,
            max_radial=self.n_radial - 1,
            trim=False,
        )
        k = laplacian_zeros(self.max_angular, self.n_radial) / self.cutoff
        sigma = soap["atomic_gaussian_width"]
        damping = torch.exp(-0.5 * (sigma * torch.tensor(k)) ** 2).reshape(-1)
        self.register_buffer("damping", damping.to(torch.get_default_dtype()))
        # torch-spex's cubic Hermite spline of R_nl as four tables: row k of them
        # holds R(r_k), h R'(r_k), R(r_k+1), h R'(r_k+1) times the damping, so the
        # basis of every edge is a sum of four weighted rows (see radial_basis)
        spliner = self.radial.spliner
        spacing = spliner.spline_spacing
        values = spliner.spline_values * damping
        slopes = spliner.spline_derivatives * damping * spacing
        table = torch.stack([values[:-1], slopes[:-1], values[1:], slopes[1:]])
        self.register_buffer("spline_table", table, persistent=False)
        self.register_buffer("spline_spacing", spacing.clone(), persistent=False)
        self.spherical_harmonics = SphericalHarmonics(self.max_angular)
        self.cutoff_function = ShiftedCosineCutoff(
            self.cutoff, soap["cutoff_function"]["ShiftedCosine"]["width"]
        )
        scaling = soap["radial_scaling"].get("Willatt2018")
        self.use_scaling = scaling is not None
        self.radial_scaling = RadialScaling(
            **(scaling or {"rate": 1, "scale": 1, "exponent": 1})
        )

        # the centre's own density: r = 0, only l = 0, Y_00 = 1 / sqrt(4 pi)
        with torch.no_grad():
            at_origin = self.radial(torch.zeros(1))[0][0] * damping[: self.n_radial]
        center = soap["center_atom_weight"] * at_origin / math.sqrt(4.0 * math.pi)
        self.register_buffer("center_density", center.to(torch.get_default_dtype()))

        # species pairs a <= b of the power spectrum; a < b counted twice (sqrt 2)
        first, second = torch.triu_indices(self.n_species, self.n_species)
        self.register_buffer("pair_first", first)
        self.register_buffer("pair_second", second)
        weight = torch.where(first == second, 1.0, math.sqrt(2.0))
        self.register_buffer("pair_weight", weight.reshape(1, -1, 1, 1))
        # the (pair a <= b, n, n') features of the [(a, n), (b, n')] product of
        # the densities (see feature_blocks): viewed as rows (a, n, b) of N
        # numbers (n'), one gather of whole rows per l makes the features
        S, N = self.n_species, self.n_radial
        rows = (first.reshape(-1, 1) * N + torch.arange(N)) * S + second.reshape(-1, 1)
        self.register_buffer("pair_rows", rows.reshape(-1), persistent=False)
        scale = weight.reshape(-1, 1, 1).expand(-1, N, N).reshape(-1)
        self.register_buffer(
            "pair_scale", scale.to(torch.get_default_dtype()), persistent=False
        )
        n_features = len(first) * self.n_radial**2 * (self.max_angular + 1)
        self.n_features = n_features

        self.use_layernorm = bool(bpnn["layernorm"])
        self.layernorm = (
            torch.nn.LayerNorm(n_features)
            if self.use_layernorm
            else torch.nn.Identity()
        )
        self._init_kernel(spacing, table, center)
        self.networks = torch.nn.ModuleList(
            [
                mlp(
                    n_features,
                    bpnn["num_neurons_per_layer"],
                    bpnn["num_hidden_layers"],
                    1,
                )
                for _ in range(self.n_species)
            ]
        )

    def _init_kernel(
        self, spacing: torch.Tensor, table: torch.Tensor, center: torch.Tensor
    ) -> None:
        """The CPU kernel's form of the features (python/alchem/ops), used in eval
        mode on the CPU: channels (species a, n) per l, with each element's radial
        functions in its own block of the spline table (the compression of the
        Alchemical Model with W = identity), the same cubic Hermite spline as
        radial_basis, its cutoff and scaling as the kernel's per-edge factor, and
        each feature mapped onto an entry of the upper triangles of P_l."""
        S, N, L = self.n_species, self.n_radial, self.max_angular
        self.use_kernel = ops.kernel_enabled()
        self.kernel = kernel_module()
        channels = S * N
        self.kernel_column_sizes = [channels] * (L + 1)
        # coefficients of t^0..t^3 per interval, from values and h-scaled slopes
        v0, d0, v1, d1 = table[0], table[1], table[2], table[3]  # [G, (l, n)]
        cubic = [v0, d0, 3.0 * (v1 - v0) - 2.0 * d0 - d1, 2.0 * (v0 - v1) + d0 + d1]
        G = v0.shape[0]
        rows = torch.zeros(S, G, 4, L + 1, S, N, dtype=v0.dtype)
        for p, c in enumerate(cubic):
            per_l = c.reshape(G, L + 1, N)
            for a in range(S):
                rows[a, :, p, :, a, :] = per_l
        kernel_table = rows.reshape(S * G, 4, (L + 1) * channels)
        self.register_buffer("kernel_table", kernel_table, persistent=False)
        # one segment of G uniform intervals (onset at the cutoff)
        self.kernel_grid = [self.cutoff, self.cutoff, float(spacing), 1.0]
        self.kernel_nodes = [G, G + 1]
        own = torch.zeros(S, channels, dtype=center.dtype)
        for a in range(S):
            own[a, a * N : (a + 1) * N] = center
        self.register_buffer("kernel_center_density", own, persistent=False)
        # features -> upper-triangle entries (i <= j of (a n, b n')), and scale
        first, second = self.pair_first.tolist(), self.pair_second.tolist()
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
        coefficient = torch.tensor(coefficient, dtype=v0.dtype)
        self.register_buffer("kernel_feature_entry", index, persistent=False)
        self.register_buffer("kernel_feature_scale", coefficient, persistent=False)
        weights = torch.zeros((L + 1) * per_l, dtype=v0.dtype)
        self.register_buffer(
            "kernel_total_weights",
            weights.index_add(0, index, coefficient),
            persistent=False,
        )
        self.register_buffer(
            "kernel_square_weights",
            weights.index_add(0, index, coefficient * coefficient),
            persistent=False,
        )
        self.kernel_smooth = [self.cutoff_function.width, 1.0, 1.0, 0.0]
        if self.use_scaling:
            self.kernel_smooth = [
                self.cutoff_function.width,
                float(self.radial_scaling.rate),
                float(self.radial_scaling.scale),
                float(self.radial_scaling.exponent),
            ]

    def radial_basis(
        self, distances: torch.Tensor, smooth: torch.Tensor
    ) -> torch.Tensor:
        """[edges, (l, n)]: smooth(r) damping_nl R_nl(r), torch-spex's spline.

        The same cubic Hermite interpolation as ``spex`` (evaluate_splines), with
        the damping folded into the table; r (and the cutoff and scaling) enter
        only through the four weights h(t), so the backward passes of force
        training reach r through [edges x 4] weights, not the spline's terms."""
        r = torch.clamp(distances, min=0.0, max=self.cutoff)
        interval = torch.floor(r / self.spline_spacing).to(dtype=torch.long)
        t = (r - interval * self.spline_spacing) / self.spline_spacing
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

    def features(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
    ) -> torch.Tensor:
        """The [n_centers, n_features] power spectrum, atoms in their own order."""
        row = torch.arange(n_centers, device=species.device)
        blocks = self.feature_blocks(
            species, edge_vectors, centers, neighbors, n_centers, row
        )
        return torch.cat(blocks, dim=1)

    def feature_blocks(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        row: torch.Tensor,
        both_directions: bool = False,
    ) -> list[torch.Tensor]:
        """Power spectrum of the first ``n_centers`` atoms, one [n_centers, pairs *
        n * n] block per l; atom i's features are in row ``row[i]`` (a permutation
        of 0..n_centers-1).

        ``both_directions``: edge (i, j, r_ij) also stands for (j, i, -r_ij), so a
        full neighbour list can be given with each pair once (every atom must then
        be a centre). The radial functions and harmonics of a pair are computed
        once (Y_l(-r) = (-1)^l Y_l(r)), which halves their share of a training
        step."""
        n_atoms = n_centers  # features only for the centres
        distances = torch.linalg.norm(edge_vectors, dim=1)
        smooth = self.cutoff_function(distances)
        if self.use_scaling:
            smooth = smooth * self.radial_scaling(distances)
        radial = self.radial_basis(distances, smooth)
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
        S, N = self.n_species, self.n_radial
        center_row = row.index_select(0, centers)
        neighbor_species = species.index_select(0, neighbors)
        rank, width = neighbor_slots(center_row, n_atoms)
        place = center_row * width + rank
        species_place = place * S + neighbor_species
        padded = torch.zeros(
            (n_atoms * width, radial.shape[1]), dtype=radial.dtype, device=radial.device
        )
        padded.index_copy_(0, place[:n_given], radial)
        if both_directions:
            padded.index_copy_(0, place[n_given:], radial)
        radial_per_l = padded.reshape(
            n_atoms, width, self.max_angular + 1, self.n_radial
        ).unbind(2)
        # the centre's own density (l = 0) in the column of its species
        row_species = torch.empty_like(species[:n_atoms]).index_copy_(
            0, row, species[:n_atoms]
        )
        own = torch.nn.functional.one_hot(row_species, S).to(radial.dtype)
        own = self.center_density.reshape(1, -1, 1) * own.unsqueeze(1)

        blocks: list[torch.Tensor] = []
        for l, harmonics_l in enumerate(harmonics_per_l):
            size = 2 * l + 1
            padded = torch.zeros(
                (n_atoms * width * S, size),
                dtype=harmonics_l.dtype,
                device=harmonics_l.device,
            )
            padded.index_copy_(0, species_place[:n_given], harmonics_l)
            if both_directions:
                reverse = harmonics_l if l % 2 == 0 else -harmonics_l
                padded.index_copy_(0, species_place[n_given:], reverse)
            harmonics_l = padded.reshape(n_atoms, width, S * size)
            # [row, n, (a, m)]
            density = torch.bmm(radial_per_l[l].transpose(1, 2), harmonics_l)
            if l == 0:
                density = density + own
            # all species pairs at once: [row, (a, n), (b, n')], then the a <= b
            # pairs in (pair, n, n') order, off-diagonal pairs times sqrt(2)
            density = density.reshape(n_atoms, N, S, size).transpose(1, 2)
            density = density.reshape(n_atoms, S * N, size)
            power = torch.bmm(density, density.transpose(1, 2))
            power = power.reshape(n_atoms, S * N * S, N).index_select(1, self.pair_rows)
            power = power.reshape(n_atoms, -1)
            blocks.append(power * (self.pair_scale / math.sqrt(2 * l + 1)))
        return blocks

    def forward(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int = -1,
        both_directions: bool = False,
    ) -> torch.Tensor:
        """Outputs of the first ``n_centers`` atoms (all atoms if negative); the
        others only serve as neighbours. ``both_directions``: see feature_blocks."""
        if n_centers < 0:
            n_centers = species.shape[0]
        if self.use_kernel and not self.training and edge_vectors.device.type == "cpu":
            return self.kernel_energies(
                species, edge_vectors, centers, neighbors, n_centers, both_directions
            )
        center_species = species[:n_centers]
        # The features are built directly in centre-species order (row[i] is atom
        # i's row), so each species' MLP reads a contiguous block: no gather or
        # scatter of the [atoms x features] matrix in any of the backward passes.
        order = torch.argsort(center_species, stable=True)
        row = torch.empty_like(order).index_copy_(
            0, order, torch.arange(n_centers, device=species.device)
        )
        counts: list[int] = torch.bincount(
            center_species, minlength=self.n_species
        ).tolist()
        blocks = self.feature_blocks(
            species, edge_vectors, centers, neighbors, n_centers, row, both_directions
        )
        # LayerNorm folded into each first layer (as in the Alchemical Model):
        # W (g (x - mean) / std + b) + c = (x W'^T - mean W'1) / std + W b + c with
        # W' = W g, and the per-l blocks are never concatenated. The [atoms x
        # features] matrix then only meets one sum, one sum of squares and one
        # product per block and species: in the double backward of force training
        # this avoids the full-size zero fills of cat, gathers and LayerNorm.
        norm = self.layernorm
        if self.use_layernorm:
            total = blocks[0].sum(dim=1, keepdim=True)
            squares = blocks[0].pow(2).sum(dim=1, keepdim=True)
            for block in blocks[1:]:
                total = total + block.sum(dim=1, keepdim=True)
                squares = squares + block.pow(2).sum(dim=1, keepdim=True)
            mean, inverse_std = self.normalization(total, squares, norm.eps)
            gain, shift = norm.weight, norm.bias
        else:
            mean = torch.zeros_like(blocks[0][:, :1])
            inverse_std = torch.ones_like(mean)
            gain, shift = None, None
        # rows of each species, per l block
        chunks = [block.split(counts) for block in blocks]
        means = mean.split(counts)
        scales = inverse_std.split(counts)
        block_size = blocks[0].shape[1]
        outputs: list[torch.Tensor] = []
        for index, network in enumerate(self.networks):
            first = network[0]
            weight, bias = first.weight, first.bias
            if gain is not None and shift is not None:
                bias = torch.addmv(bias, weight, shift)
                weight = weight * gain
            hidden = -means[index] * weight.sum(dim=1)
            for l, part in enumerate(weight.split(block_size, dim=1)):
                hidden = torch.addmm(hidden, chunks[l][index], part.t())
            hidden = torch.addcmul(bias, hidden, scales[index])
            for position, layer in enumerate(network):
                if position > 0:
                    hidden = layer(hidden)
            outputs.append(hidden.reshape(-1))
        return torch.cat(outputs).index_select(0, row)

    def normalization(
        self, total: torch.Tensor, squares: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm's mean and 1 / std from the sums of the features and of their
        squares per atom."""
        mean = total / self.n_features
        variance = torch.clamp(squares / self.n_features - mean * mean, min=0.0)
        return mean, torch.rsqrt(variance + eps)

    def kernel_energies(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        both_directions: bool,
    ) -> torch.Tensor:
        """forward() through alchem::power_spectrum (eval mode, CPU): the kernel
        gives the upper triangles of P_l and the LayerNorm sums of the features;
        each first layer, LayerNorm folded in as in forward(), is mapped onto the
        triangle entries (the features are those entries times a scale, a <= b
        pairs once, n, n' both ways)."""
        if both_directions:
            centers, neighbors = (
                torch.cat([centers, neighbors]),
                torch.cat([neighbors, centers]),
            )
            edge_vectors = torch.cat([edge_vectors, -edge_vectors])
        center_species = species[:n_centers]
        triangles, total, squares = self.kernel(
            edge_vectors,
            species.index_select(0, neighbors),
            centers,
            n_centers,
            self.kernel_table,
            self.kernel_column_sizes,
            self.kernel_grid,
            self.kernel_nodes,
            self.kernel_total_weights,
            self.kernel_square_weights,
            center_species,
            self.kernel_center_density,
            self.kernel_smooth,
        )
        norm = self.layernorm
        if self.use_layernorm:
            mean, inverse_std = self.normalization(total, squares, norm.eps)
            gain, shift = norm.weight, norm.bias
        else:
            mean = torch.zeros_like(total)
            inverse_std = torch.ones_like(total)
            gain, shift = None, None
        energies = torch.zeros_like(total)
        # (no `continue`: TorchScript unrolls loops over a ModuleList)
        for index, network in enumerate(self.networks):
            atoms = torch.nonzero(center_species == index).reshape(-1)
            if atoms.shape[0] > 0:
                first = network[0]
                weight, bias = first.weight, first.bias
                if gain is not None and shift is not None:
                    bias = torch.addmv(bias, weight, shift)
                    weight = weight * gain
                folded = torch.zeros(
                    (triangles.shape[1], weight.shape[0]),
                    dtype=weight.dtype,
                    device=weight.device,
                ).index_add(
                    0,
                    self.kernel_feature_entry,
                    (weight * self.kernel_feature_scale).t(),
                )
                hidden = triangles.index_select(0, atoms) @ folded
                hidden = hidden - mean.index_select(0, atoms).unsqueeze(1) * weight.sum(
                    dim=1
                )
                hidden = bias + hidden * inverse_std.index_select(0, atoms).unsqueeze(1)
                for position, layer in enumerate(network):
                    if position > 0:
                        hidden = layer(hidden)
                energies = energies.index_put((atoms,), hidden.reshape(-1))
        return energies
