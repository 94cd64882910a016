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
from ...features import RadialScaling, ShiftedCosineCutoff, laplacian_zeros
from ...pair_potential import pair_hypers
from ..checkpoints import drop_derived_keys
from ..folded_head import (
    fold_layernorm,
    folded_first_layer,
    last_layer_block,
    layernorm_statistics,
)
from .power_spectrum import KernelPowerSpectrum, TorchPowerSpectrum

# constants rebuilt from the hyperparameters (or never read) that checkpoints of
# earlier versions carry: dropped when such a checkpoint loads
DERIVED_KEYS = (
    "pair_weight",
    "spherical_harmonics.a",
    "spherical_harmonics.b",
    "spherical_harmonics.factors",
    "spherical_harmonics.reverse",
)


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
        # power_spectrum.py); alchem.model.predict uses it for training and
        # evaluation
        self.accepts_both_directions = True
        soap, bpnn = hypers["soap"], hypers["bpnn"]
        self.cutoff = float(soap["cutoff"])
        self.n_species = len(info.atomic_types)
        self.max_angular = int(soap["max_angular"])
        self.n_radial = int(soap["max_radial"])
        self._init_radial_basis(soap)
        self.cutoff_function = ShiftedCosineCutoff(
            self.cutoff, soap["cutoff_function"]["ShiftedCosine"]["width"]
        )
        # the pair term EnergyModel adds (alchem.pair_potential; off by default)
        width = float(soap["cutoff_function"]["ShiftedCosine"]["width"])
        self.pair_potential_hypers = pair_hypers(hypers, width)
        scaling = soap["radial_scaling"].get("Willatt2018")
        self.use_scaling = scaling is not None
        self.radial_scaling = RadialScaling(
            **(scaling or {"rate": 1, "scale": 1, "exponent": 1})
        )
        # species pairs a <= b of the power spectrum
        first, second = torch.triu_indices(self.n_species, self.n_species)
        self.register_buffer("pair_first", first)
        self.register_buffer("pair_second", second)
        self.n_features = len(first) * self.n_radial**2 * (self.max_angular + 1)
        self.use_layernorm = bool(bpnn["layernorm"])
        self.layernorm = (
            torch.nn.LayerNorm(self.n_features)
            if self.use_layernorm
            else torch.nn.Identity()
        )
        self.networks = torch.nn.ModuleList(
            [
                mlp(
                    self.n_features,
                    bpnn["num_neurons_per_layer"],
                    bpnn["num_hidden_layers"],
                    1,
                )
                for _ in range(self.n_species)
            ]
        )
        # position of the last layer in each network, and the per-atom features
        # of uncertainty (forward_with_features): its input plus 1 for its bias,
        # in the block of the atom's species; 0 without hidden layers
        self.last_position = 2 * int(bpnn["num_hidden_layers"])
        self.last_layer_size = (
            int(bpnn["num_neurons_per_layer"]) + 1 if self.last_position > 0 else 0
        )
        self.n_last_layer_features = self.n_species * self.last_layer_size
        self.use_backend("kernel" if ops.kernel_enabled() else "torch")

    def _init_radial_basis(self, soap: dict) -> None:
        """Laplacian eigenstates (torch-spex) damped by the Gaussian smearing, as
        the four tables of their cubic Hermite spline, and the centre's own
        density."""
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
        # rows of the tables: R(r_k), h R'(r_k), R(r_k+1), h R'(r_k+1), damped
        spliner = self.radial.spliner
        self.spline_spacing = float(spliner.spline_spacing)
        values = spliner.spline_values * damping
        slopes = spliner.spline_derivatives * damping * spliner.spline_spacing
        table = torch.stack([values[:-1], slopes[:-1], values[1:], slopes[1:]])
        self.register_buffer("spline_table", table, persistent=False)
        # the centre's own density: r = 0, only l = 0, Y_00 = 1 / sqrt(4 pi)
        with torch.no_grad():
            at_origin = self.radial(torch.zeros(1))[0][0] * damping[: self.n_radial]
        center = soap["center_atom_weight"] * at_origin / math.sqrt(4.0 * math.pi)
        self.register_buffer("center_density", center.to(torch.get_default_dtype()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        drop_derived_keys(state_dict, prefix, DERIVED_KEYS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.jit.unused
    def use_backend(self, name: str) -> None:
        """Compute the features with the CPU kernel (``kernel``: eval mode on the
        CPU; training and other devices on torch operations) or with torch
        operations only (``torch``: alchem-export --torch-only)."""
        torch_operations = TorchPowerSpectrum(
            self.n_species,
            self.n_radial,
            self.max_angular,
            self.spline_table,
            self.spline_spacing,
            self.cutoff_function,
            self.radial_scaling if self.use_scaling else None,
            self.pair_first,
            self.pair_second,
            self.use_layernorm,
        ).to(self.damping.device, self.damping.dtype)
        if name == "kernel":
            if not ops.load():
                raise RuntimeError(f"{ops.OPERATOR} is not loaded")
            self.features = KernelPowerSpectrum(
                torch_operations, self.center_density, self.pair_first, self.pair_second
            )
        elif name == "torch":
            self.features = torch_operations
        else:
            raise ValueError(f"unknown feature backend {name!r}: kernel or torch")
        self.feature_backend = name
        self.features.to(self.damping.device, self.damping.dtype)
        self.features.train(self.training)

    @torch.jit.unused
    def torch_operations(self) -> TorchPowerSpectrum:
        """The torch operations of the features, whatever the backend."""
        if isinstance(self.features, KernelPowerSpectrum):
            return self.features.torch_operations
        return self.features

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
        others only serve as neighbours. ``both_directions``: see
        power_spectrum.py."""
        return self.outputs(
            species, edge_vectors, centers, neighbors, n_centers, both_directions, False
        )[0]

    @torch.jit.export
    def forward_with_features(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int = -1,
        both_directions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and the last layer's features [atoms, n_last_layer_features]:
        each atom's output is its features times the last layers' weights and
        biases, the input of uncertainty (LLPR)."""
        return self.outputs(
            species, edge_vectors, centers, neighbors, n_centers, both_directions, True
        )

    def outputs(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        both_directions: bool,
        with_features: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if with_features and self.last_position == 0:
            raise RuntimeError(
                "last-layer features need at least one hidden layer "
                "(bpnn.num_hidden_layers)"
            )
        if n_centers < 0:
            n_centers = species.shape[0]
        center_species = species[:n_centers]
        # The features come in centre-species order (row[i] is atom i's row), so
        # each species' MLP reads a contiguous block: no gather or scatter of the
        # [atoms x features] matrix in any of the backward passes.
        order = torch.argsort(center_species, stable=True)
        row = torch.empty_like(order).index_copy_(
            0, order, torch.arange(n_centers, device=species.device)
        )
        counts: list[int] = torch.bincount(
            center_species, minlength=self.n_species
        ).tolist()
        blocks, total, squares = self.features(
            species,
            edge_vectors,
            centers,
            neighbors,
            n_centers,
            both_directions,
            row,
            order,
            self.center_density,
        )
        eps = 0.0
        norm = self.layernorm
        if self.use_layernorm:
            eps = norm.eps
        mean, inverse_std = layernorm_statistics(
            total, squares, self.n_features, eps, self.use_layernorm
        )
        # rows of each species, per block
        chunks = [block.split(counts) for block in blocks]
        means = mean.split(counts)
        scales = inverse_std.split(counts)
        outputs: list[torch.Tensor] = []
        last_features: list[torch.Tensor] = []
        for index, network in enumerate(self.networks):
            first = network[0]
            weight, bias = first.weight.t(), first.bias
            if self.use_layernorm:
                # LayerNorm folded into each first layer (folded_head.py)
                weight, bias = fold_layernorm(weight, bias, norm.weight, norm.bias)
            hidden = folded_first_layer(
                [chunk[index] for chunk in chunks],
                self.features.layout(weight, edge_vectors),
                weight.sum(dim=0),
                bias,
                means[index],
                scales[index],
            )
            for position, layer in enumerate(network):
                if position > 0:
                    if with_features and position == self.last_position:
                        last_features.append(
                            last_layer_block(
                                hidden,
                                index,
                                self.last_layer_size,
                                self.n_last_layer_features,
                            )
                        )
                    hidden = layer(hidden)
            outputs.append(hidden.reshape(-1))
        energies = torch.cat(outputs).index_select(0, row)
        if not with_features:
            return energies, energies.new_zeros(0)
        return energies, torch.cat(last_features).index_select(0, row)
