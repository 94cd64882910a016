"""The Alchemical Model network: compressed SOAP power spectrum and K shared MLPs.

Per atom i with species a_i and neighbours j (r_ij = x_j - x_i, r = |r_ij|):

1. Radial functions g_{k,nl}(r), one set per pseudo-species k (``le`` or ``physical``
   basis, truncated by eigenvalue: see basis.py). With ``trainable_basis`` they are
   MLP_{lk}(R_l(r)), one small MLP (3 hidden layers of 32, SiLU, no bias) per
   (l, k); otherwise R_nl(r) for every k. Every function is multiplied by the
   shifted-cosine switch f_c (value and derivative zero at r_c).

   All of this depends on r only, so it is tabulated on a grid of r (values and
   exact r-derivatives, the MLP derivative propagated in forward mode) and every
   edge reads it by cubic Hermite interpolation. The MLP therefore runs on a few
   hundred grid points per call instead of on every edge (the cost model's
   "tabulate the radial MLP"), identically in training and inference, and the
   energy is continuously differentiable in every position.
2. Compressed density: c_{i,k,nlm} = s_l sum_j W[k, a_j] g_{k,nl}(r_ij) Y_lm(r_ij),
   W in R^{K x S} (N(0, 1) initialised), s_l from the mean neighbour count N of the
   training set (N^-3/4 for l = 0, N^-1/2 otherwise) when ``normalize``.
   The sum over j is one batched matrix product per l over neighbour slots.
3. Power spectrum P_l[(k n), (k' n')] = (2l+1)^-1/2 sum_m c_{k n l m} c_{k' n' l m},
   flattened and concatenated over l: F = K^2 sum_l n_l^2 features.
4. LayerNorm over the F features (``normalize``), then the head. With
   ``contract_center_species``: e_i = sum_k W[k, a_i] MLP_k(P_i) with the K first
   layers fused into one matrix product; otherwise one MLP per element.

P_l is symmetric, so only its upper triangle is formed. The LayerNorm statistics of
the full F features come from the densities (sum P_l = |sum_x c_x|^2, sum P_l^2 =
|c^T c|_F^2), the LayerNorm affine and the first layer are folded onto the triangle
(W_ab gamma_ab + W_ba gamma_ba), and the centring and division are applied after the
first layer: this is exactly the model on all F features, with the same parameters,
at half the multiply-adds of its largest product. In eval mode the spline table and
the folded first layer are cached (they depend on the parameters only).
"""

import math

import numpy as np
import torch

from ... import ops
from ...data import DatasetInfo
from ...pair_potential import pair_hypers
from ..checkpoints import drop_derived_keys
from ..folded_head import (
    fold_layernorm,
    folded_first_layer,
    last_layer_block,
    layernorm_statistics,
)
from . import basis
from .power_spectrum import KernelPowerSpectrum, TorchPowerSpectrum

RADIAL_HIDDEN = 32  # width of the per-(l, k) radial MLPs (upstream: 32)
RADIAL_LAYERS = 3  # hidden layers of the per-(l, k) radial MLPs (upstream: 3)
RADIAL_GAIN = 1.7  # initialisation gain of the radial MLPs (see __init__)
LAYERNORM_EPS = 1e-5
# constants rebuilt from the hyperparameters, saved by checkpoints before the
# features had their own module: dropped when such a checkpoint loads
DERIVED_KEYS = (
    "spherical_harmonics.a",
    "spherical_harmonics.b",
    "spherical_harmonics.factors",
    "spherical_harmonics.reverse",
)


def _activation(name: str) -> torch.nn.Module:
    modules = {
        "SiLU": torch.nn.SiLU,
        "ReLU": torch.nn.ReLU,
        "Tanh": torch.nn.Tanh,
        "GELU": torch.nn.GELU,
        "Softplus": torch.nn.Softplus,
    }
    return modules[name]()


def _uniform(shape: list[int], fan_in: int) -> torch.nn.Parameter:
    """torch.nn.Linear's initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return torch.nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class GroupedLinear(torch.nn.Module):
    """G independent linear layers applied to x [G, N, in] in one batched product."""

    def __init__(self, groups: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = _uniform([groups, n_in, n_out], n_in)
        self.bias = _uniform([groups, n_out], n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def single(self, x: torch.Tensor, group: int) -> torch.Tensor:
        return x @ self.weight[group] + self.bias[group]


def _refresh_after_load(module, incompatible_keys) -> None:
    module.refresh_cache()


class AlchemicalModel(torch.nn.Module):
    n_per_l: list[int]
    radial_offsets: list[int]
    column_offsets: list[int]
    triangle_offsets: list[int]

    def __init__(self, hypers: dict, info: DatasetInfo):
        super().__init__()
        soap, bpnn = hypers["soap"], hypers["bpnn"]
        self.cutoff = float(soap["cutoff"])
        self.n_species = len(info.atomic_types)
        self.n_pseudo = int(soap["num_pseudo_species"])
        self.trainable_basis = bool(soap["trainable_basis"])
        self.normalize = bool(soap["normalize"])
        self.contract_center_species = bool(soap["contract_center_species"])
        # the pair term EnergyModel adds (alchem.pair_potential): [basis_size,
        # inner_cutoff, cutoff_width]; absent from hypers saved before it existed
        self.pair_potential_hypers = pair_hypers(hypers, float(soap["cutoff_width"]))
        # its features are built on neighbour slots: each pair once would not help
        self.accepts_both_directions = False
        self.radial_hidden_size = RADIAL_HIDDEN
        self.radial_layers = RADIAL_LAYERS
        self.layernorm_eps = LAYERNORM_EPS
        # the order matters: each step reads what the previous ones set
        self._init_columns(soap["radial_basis_type"], soap)
        self._init_radial_table(soap["radial_basis_type"], soap)
        self._init_compression(info)
        self._init_triangles()
        self._init_head(bpnn)
        self._init_inference_cache()
        self.use_backend("kernel" if ops.kernel_enabled() else "torch")

    def _init_columns(self, kind: str, soap: dict) -> None:
        """The radial basis, truncated by eigenvalue, and the columns (l, k, n)."""
        K = self.n_pseudo
        self.n_per_l = basis.n_per_l(kind, float(soap["basis_cutoff_power_spectrum"]))
        self.max_angular = len(self.n_per_l) - 1
        self.n_radial = sum(self.n_per_l)
        self.radial_offsets = [0]  # columns of l in the basis [(l, n)]
        self.column_offsets = [0]  # columns of l in the radial table [(l, k, n)]
        for count in self.n_per_l:
            self.radial_offsets.append(self.radial_offsets[-1] + count)
            self.column_offsets.append(self.column_offsets[-1] + K * count)
        self.n_columns = K * self.n_radial
        self.column_sizes = [K * count for count in self.n_per_l]
        pseudo_of_column = []
        self.basis_of_column = []
        for l, count in enumerate(self.n_per_l):
            for k in range(K):
                for n in range(count):
                    pseudo_of_column.append(k)
                    self.basis_of_column.append(self.radial_offsets[l] + n)
        self.register_buffer("pseudo_of_column", torch.tensor(pseudo_of_column))

    def _init_radial_table(self, kind: str, soap: dict) -> None:
        """The grid on which the radial functions are tabulated, and either the
        fixed table (f_c R_nl) or the basis and switch the trainable MLPs read."""
        dtype = torch.get_default_dtype()
        basis_cutoff = float(soap["basis_cutoff_power_spectrum"])
        scale = float(soap["basis_scale"])
        width = float(soap["cutoff_width"])
        nodes, below = basis.grid(kind, basis_cutoff, self.cutoff, scale, width)
        self.n_nodes = len(nodes)
        # two uniform segments, [0, r_c - w] and [r_c - w, r_c], meeting at a node
        self.onset = float(self.cutoff - width)
        self.n_below = below
        self.step_below = float(nodes[1] - nodes[0]) if below > 0 else 1.0
        self.step_above = float(nodes[-1] - nodes[-2])
        self.register_buffer(
            "interval_step", torch.tensor(np.diff(nodes), dtype=dtype).unsqueeze(1)
        )
        values, derivatives = basis.tabulate(
            kind, self.n_per_l, self.cutoff, scale, nodes
        )
        switch, switch_derivative = basis.shifted_cosine(nodes, self.cutoff, width)
        if self.trainable_basis:
            self.register_buffer(
                "basis_nodes",
                torch.tensor(np.concatenate([values, derivatives]), dtype=dtype),
            )
            self.register_buffer("switch", torch.tensor(switch, dtype=dtype))
            self.register_buffer(
                "switch_derivative", torch.tensor(switch_derivative, dtype=dtype)
            )
            self.register_buffer("table", torch.zeros(0, 2, 0))
            self._init_radial_mlps()
        else:
            columns = np.asarray(self.basis_of_column)
            value = switch[:, None] * values
            derivative = switch_derivative[:, None] * values + switch[:, None] * (
                derivatives
            )
            table = np.stack([value[:, columns], derivative[:, columns]], axis=1)
            self.register_buffer("table", torch.tensor(table, dtype=dtype))
            for name in ("basis_nodes", "switch", "switch_derivative"):
                self.register_buffer(name, torch.zeros(0))
            self.radial_in = torch.nn.Parameter(torch.zeros(0, 0))
            self.radial_hidden = torch.nn.Parameter(torch.zeros(0, 0, 0, 0))
            self.radial_out = torch.nn.Parameter(torch.zeros(0, 0, 0))

    def _init_radial_mlps(self) -> None:
        """One MLP per (l, k), batched: normal weights, std gain / sqrt(fan_in); gain
        1.7 through the SiLU layers keeps the outputs' RMS near that of the basis
        (about 1) at initialisation."""
        dtype = torch.get_default_dtype()
        K, L, H = self.n_pseudo, len(self.n_per_l), RADIAL_HIDDEN
        fan_in = torch.tensor(self.n_per_l).repeat_interleave(
            torch.tensor(self.n_per_l)
        )
        self.radial_in = torch.nn.Parameter(
            torch.randn(self.n_radial, K * H)
            * (RADIAL_GAIN / fan_in.to(dtype).sqrt().unsqueeze(1))
        )
        self.radial_hidden = torch.nn.Parameter(
            torch.randn(RADIAL_LAYERS - 1, L * K, H, H) * (RADIAL_GAIN / H**0.5)
        )
        self.radial_out = torch.nn.Parameter(torch.randn(K, H, self.n_radial) / H**0.5)

    def _init_compression(self, info: DatasetInfo) -> None:
        """W [K, S] and the per-l scale s_l^2 / sqrt(2l + 1) of P_l."""
        dtype = torch.get_default_dtype()
        self.compression = torch.nn.Parameter(
            torch.randn(self.n_pseudo, self.n_species)
        )
        neighbors = max(float(info.mean_num_neighbors), 1.0)
        ps_scale = []
        for l in range(self.max_angular + 1):
            s_l = 1.0
            if self.normalize:
                s_l = neighbors ** (-0.75) if l == 0 else neighbors ** (-0.5)
            ps_scale.append(s_l**2 / math.sqrt(2 * l + 1))
        # fitted on the training set: a buffer, so it travels with checkpoints
        self.register_buffer("ps_scale", torch.tensor(ps_scale, dtype=dtype))
        column_l = torch.repeat_interleave(
            torch.arange(len(self.n_per_l)), torch.tensor(self.column_sizes)
        )
        self.register_buffer(
            "column_scale", torch.tensor(ps_scale, dtype=dtype)[column_l].sqrt()
        )

    def _init_triangles(self) -> None:
        """The upper triangle of each P_l, and its place in the F features."""
        local, full, transposed, multiplicity = [], [], [], []
        self.triangle_offsets = [0]
        full_offset = 0
        for size in self.column_sizes:
            rows, cols = torch.triu_indices(size, size)
            local.append(rows * size + cols)
            full.append(full_offset + rows * size + cols)
            transposed.append(full_offset + cols * size + rows)
            multiplicity.append(torch.where(rows == cols, 1.0, 2.0))
            self.triangle_offsets.append(self.triangle_offsets[-1] + len(rows))
            full_offset += size * size
        self.n_features = full_offset  # K^2 sum_l n_l^2
        self.triangle_sizes = [
            b - a for a, b in zip(self.triangle_offsets[:-1], self.triangle_offsets[1:])
        ]
        self.register_buffer("triangle_local", torch.cat(local))
        self.register_buffer("triangle_full", torch.cat(full))
        self.register_buffer("triangle_transposed", torch.cat(transposed))
        multiplicity = torch.cat(multiplicity).to(torch.get_default_dtype())
        self.register_buffer("multiplicity", multiplicity)
        self.register_buffer("off_diagonal", (multiplicity - 1.0).unsqueeze(1))

    def _init_head(self, bpnn: dict) -> None:
        """LayerNorm over the F features and the MLPs (K or S groups)."""
        F, K = self.n_features, self.n_pseudo
        if self.normalize:
            self.layernorm_weight = torch.nn.Parameter(torch.ones(F))
            self.layernorm_bias = torch.nn.Parameter(torch.zeros(F))
        else:
            self.layernorm_weight = torch.nn.Parameter(torch.zeros(0))
            self.layernorm_bias = torch.nn.Parameter(torch.zeros(0))
        self.n_groups = K if self.contract_center_species else self.n_species
        sizes = [F] + list(bpnn["hidden_sizes"]) + [int(bpnn["output_size"])]
        self.first_size = sizes[1]
        self.head_weight = _uniform([F, self.n_groups * sizes[1]], F)
        self.head_bias = _uniform([self.n_groups * sizes[1]], F)
        self.head_layers = torch.nn.ModuleList(
            [
                GroupedLinear(self.n_groups, sizes[i], sizes[i + 1])
                for i in range(1, len(sizes) - 1)
            ]
        )
        self.activation = _activation(bpnn["activation_function"])
        # the last layer's input, plus 1 for its bias, per group: the per-atom
        # features of uncertainty (forward_with_features); 0 without hidden layers
        self.n_head_layers = len(self.head_layers)
        self.last_layer_size = sizes[-2] + 1 if self.n_head_layers > 0 else 0
        self.n_last_layer_features = self.n_groups * self.last_layer_size
        # e_i = sum_k W[k, a_i] MLP_k: with W ~ N(0, 1) this grows like sqrt(K);
        # as upstream, ``normalize`` divides it by sqrt(K)
        self.output_scale = 1.0
        if self.normalize and self.contract_center_species:
            self.output_scale = 1.0 / math.sqrt(K)

    def _init_inference_cache(self) -> None:
        """The spline table and the folded first layer depend on the parameters
        only. In eval mode they are computed once (on eval(), and again after
        load_state_dict) instead of on every call; train() drops them. Not
        persistent: never part of a checkpoint."""
        self.cached = False
        self.register_buffer("cache_table", torch.zeros(0), persistent=False)
        for name in ("cache_c0", "cache_c1", "cache_c2", "cache_c3"):
            self.register_buffer(name, torch.zeros(0), persistent=False)
        for name in ("cache_weight", "cache_bias"):
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @torch.jit.unused
    def use_backend(self, name: str) -> None:
        """Compute the features with the CPU kernel (``kernel``: inference on the
        CPU; training and other devices on torch operations) or with torch
        operations only (``torch``: alchem-export --torch-only)."""
        torch_operations = TorchPowerSpectrum(
            [self.cutoff, self.onset, self.step_below, self.step_above],
            [self.n_below, self.n_nodes],
            self.column_sizes,
            self.triangle_local,
            self.triangle_offsets,
            self.normalize,
            self.multiplicity.dtype,
        ).to(self.multiplicity.device)
        if name == "kernel":
            if not ops.load():
                raise RuntimeError(f"{ops.OPERATOR} is not loaded")
            self.features = KernelPowerSpectrum(torch_operations, self.multiplicity)
            self.features.to(self.multiplicity.device, self.multiplicity.dtype)
        elif name == "torch":
            self.features = torch_operations
        else:
            raise ValueError(f"unknown feature backend {name!r}: kernel or torch")
        self.feature_backend = name

    @torch.jit.unused
    def torch_operations(self) -> TorchPowerSpectrum:
        """The torch operations of the features, whatever the backend."""
        if isinstance(self.features, KernelPowerSpectrum):
            return self.features.torch_operations
        return self.features

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        drop_derived_keys(state_dict, prefix, DERIVED_KEYS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.refresh_cache()
        return self

    @torch.jit.unused
    def refresh_cache(self) -> None:
        """Recompute (eval mode) or drop (training mode) the inference cache."""
        if self.training:
            self.cached = False
            for name in ("c0", "c1", "c2", "c3", "weight", "bias", "table"):
                setattr(self, f"cache_{name}", getattr(self, f"cache_{name}")[:0])
            return
        with torch.no_grad():
            c = self.spline_coefficients()
            weight, bias = self.first_layer()
        self.cache_c0, self.cache_c1, self.cache_c2, self.cache_c3 = c
        # the kernel reads the 4 coefficients of a row together: [rows, 4, C]
        self.cache_table = torch.stack(c, dim=1).contiguous()
        # without ``normalize`` the bias is head_bias itself: assigned as it is, that
        # Parameter would become a parameter named cache_bias (in the state dict, and
        # train() could no longer empty it)
        self.cache_weight, self.cache_bias = weight, bias.detach().clone()
        self.cached = True

    # ------------------------------------------------------------------ radial
    def radial_table(self) -> torch.Tensor:
        """Values and r-derivatives of g_{k,nl} at the grid nodes: [G, 2, C]."""
        if not self.trainable_basis:
            return self.table
        G = self.n_nodes
        K = self.n_pseudo
        L = len(self.n_per_l)
        H = self.radial_hidden_size
        x = self.basis_nodes  # [2G, Nr]: values, then d/dr (carried as tangents)
        blocks: list[torch.Tensor] = []
        for l in range(L):
            a, b = self.radial_offsets[l], self.radial_offsets[l + 1]
            blocks.append(x[:, a:b] @ self.radial_in[a:b])
        z = torch.stack(blocks).reshape(L, 2 * G, K, H)
        z = z.permute(0, 2, 1, 3).reshape(L * K, 2 * G, H)
        h = z
        for i in range(self.radial_layers):
            value, tangent = z[:, :G], z[:, G:]
            sigmoid = torch.sigmoid(value)
            slope = sigmoid * (1.0 + value * (1.0 - sigmoid))  # d silu / dz
            h = torch.cat([value * sigmoid, tangent * slope], dim=1)
            if i < self.radial_layers - 1:
                z = torch.bmm(h, self.radial_hidden[i])
        h = h.reshape(L, K, 2 * G, H)
        outputs: list[torch.Tensor] = []
        for l in range(L):
            a, b = self.radial_offsets[l], self.radial_offsets[l + 1]
            out = torch.bmm(h[l], self.radial_out[:, :, a:b])  # [K, 2G, n_l]
            outputs.append(out.permute(1, 0, 2).reshape(2 * G, K * (b - a)))
        out = torch.cat(outputs, dim=1)
        value, derivative = out[:G], out[G:]
        switch = self.switch.unsqueeze(1)
        value, derivative = (
            switch * value,
            self.switch_derivative.unsqueeze(1) * value + switch * derivative,
        )
        return torch.stack([value, derivative], dim=1)

    def spline_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The spline table in two factors: cubic coefficients per grid interval
        [G - 1, 4, C] (c_0 .. c_3 of g_{k,nl} on that interval, t in [0, 1)) and
        weights per element and column [S, C] (W[k, a] times the column's scale).
        Row a (G - 1) + g of the table is their product."""
        table = self.radial_table()
        h = self.interval_step
        v0, v1 = table[:-1, 0], table[1:, 0]
        d0, d1 = table[:-1, 1] * h, table[1:, 1] * h
        cubic = [v0, d0, 3.0 * (v1 - v0) - 2.0 * d0 - d1, 2.0 * (v0 - v1) + d0 + d1]
        weights = self.compression.index_select(0, self.pseudo_of_column).t()
        # sqrt(s_l^2 / sqrt(2l + 1)) per column, so that P_l comes out scaled
        return torch.stack(cubic, dim=1), weights * self.column_scale

    def spline_coefficients(self) -> list[torch.Tensor]:
        """Cubic coefficients per (element, grid interval), W folded in.

        Row a (G - 1) + g of c_p holds, for r in interval g (t in [0, 1)), the
        polynomial W[k, a] g_{k,nl}(r) = c_0 + c_1 t + c_2 t^2 + c_3 t^3 of every
        column: four tensors [S (G - 1), C].
        """
        cubic, weights = self.spline_factors()
        weights = weights.reshape(self.n_species, 1, self.n_columns)
        return [
            (cubic[:, p].unsqueeze(0) * weights).reshape(-1, self.n_columns)
            for p in range(4)
        ]

    def feature_blocks(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Steps 1-3: the triangles of P_l and the LayerNorm sums, from the
        inference cache (eval mode), through the kernel with the table in factors
        (training on the CPU, in Python) or the torch operations (other devices,
        and a scripted model in training mode)."""
        if self.cached:
            coefficients = [self.cache_c0, self.cache_c1, self.cache_c2, self.cache_c3]
        elif (
            self.feature_backend == "kernel"
            and edge_vectors.device.type == "cpu"
            and not torch.jit.is_scripting()
        ):
            return self.kernel_training_features(
                species, edge_vectors, centers, neighbors, n_centers
            )
        else:
            coefficients = self.spline_coefficients()
        return self.features(
            species,
            edge_vectors,
            centers,
            neighbors,
            n_centers,
            coefficients,
            self.cache_table,
        )

    @torch.jit.unused
    def kernel_training_features(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Training on the kernel: its gradients go straight to the table's factors
        (an exported model is in eval mode and never calls this)."""
        cubic, weights = self.spline_factors()
        return self.features.factored(
            species, edge_vectors, centers, neighbors, n_centers, cubic, weights
        )

    # -------------------------------------------------------------------- head
    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm affine + first layer folded onto the upper triangle."""
        weight, bias = self.head_weight, self.head_bias
        if self.normalize:
            weight, bias = fold_layernorm(
                weight, bias, self.layernorm_weight, self.layernorm_bias
            )
        folded = (
            weight.index_select(0, self.triangle_full)
            + weight.index_select(0, self.triangle_transposed) * self.off_diagonal
        )
        return folded, bias

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
        others only serve as neighbours. Every directed edge must be given
        (``both_directions`` is for architectures with ``accepts_both_directions``)."""
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
        each atom's output is its features times the last layer's weights and
        biases (summed over its outputs), the input of uncertainty (LLPR)."""
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
        if both_directions:
            raise RuntimeError("the Alchemical Model needs every directed edge")
        if with_features and self.n_head_layers == 0:
            raise RuntimeError(
                "last-layer features need at least one hidden layer (bpnn.hidden_sizes)"
            )
        if n_centers < 0:
            n_centers = species.shape[0]
        if self.cached:
            weight, bias = self.cache_weight, self.cache_bias
        else:
            weight, bias = self.first_layer()
        blocks, total, squares = self.feature_blocks(
            species, edge_vectors, centers, neighbors, n_centers
        )
        # the LayerNorm over the F features of the full symmetric P, applied after
        # the first layer (folded_head.py)
        mean, inverse_std = layernorm_statistics(
            total, squares, self.n_features, self.layernorm_eps, self.normalize
        )
        # one block: the kernel's triangles of every l, side by side
        if len(blocks) == 1:
            weights = [weight]
        else:
            weights = list(weight.split(self.triangle_sizes, dim=0))
        column_sum = weight.sum(dim=0)
        species = species[:n_centers]
        if self.contract_center_species:
            return self.contracted_networks(
                species,
                blocks,
                weights,
                column_sum,
                bias,
                mean,
                inverse_std,
                with_features,
            )
        return self.element_networks(
            species, blocks, weights, column_sum, bias, mean, inverse_std, with_features
        )

    def contracted_networks(
        self,
        species: torch.Tensor,
        blocks: list[torch.Tensor],
        weights: list[torch.Tensor],
        column_sum: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        inverse_std: torch.Tensor,
        with_features: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """e_i = sum_k W[k, a_i] MLP_k(P_i): all K first layers in one product per
        l block; features: W[k, a_i] (last layer input_k, 1), side by side."""
        n_centers = species.shape[0]
        hidden = folded_first_layer(
            blocks, weights, column_sum, bias, mean, inverse_std
        )
        hidden = hidden.reshape(n_centers, self.n_groups, self.first_size)
        hidden = hidden.transpose(0, 1)
        last_input = hidden
        for position, layer in enumerate(self.head_layers):
            hidden = self.activation(hidden)
            if position == self.n_head_layers - 1:
                last_input = hidden
            hidden = layer(hidden)
        outputs = hidden.sum(dim=2)  # [K, n_atoms]
        mix = self.compression.index_select(1, species)  # W[k, a_i]
        energies = (outputs * mix).sum(dim=0) * self.output_scale
        if not with_features:
            return energies, energies.new_zeros(0)
        with_bias = torch.cat([last_input, torch.ones_like(last_input[:, :, :1])], 2)
        features = with_bias * (mix * self.output_scale).unsqueeze(2)
        return energies, features.transpose(0, 1).reshape(n_centers, -1)

    def element_networks(
        self,
        species: torch.Tensor,
        blocks: list[torch.Tensor],
        weights: list[torch.Tensor],
        column_sum: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        inverse_std: torch.Tensor,
        with_features: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One MLP per centre element (without ``contract_center_species``);
        features: (last layer input, 1) in the block of the atom's element.

        The atoms are sorted by element once, and each element's rows are one
        contiguous chunk of a single gathered feature matrix: gathering each
        element's rows from every l block instead (18 elements x 14 blocks) made
        this head 3.9x slower per training step than the contracted one, mostly in
        the double backward of those gathers."""
        size = self.first_size
        features = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        weight = weights[0] if len(weights) == 1 else torch.cat(weights, dim=0)
        order = torch.argsort(species, stable=True)
        counts: list[int] = torch.bincount(species, minlength=self.n_groups).tolist()
        chunks = features.index_select(0, order).split(counts)
        means = mean.index_select(0, order).split(counts)
        scales = inverse_std.index_select(0, order).split(counts)
        # split, not slices: their backward is one concatenation, where each
        # slice's would be a zero-filled gradient of the whole first layer
        group_weights = weight.split(size, dim=1)
        group_sums = column_sum.split(size)
        group_biases = bias.split(size)
        outputs: list[torch.Tensor] = []
        last_features: list[torch.Tensor] = []
        for group in range(self.n_groups):
            if counts[group] == 0:
                continue
            hidden = folded_first_layer(
                [chunks[group]],
                [group_weights[group]],
                group_sums[group],
                group_biases[group],
                means[group],
                scales[group],
            )
            for position, layer in enumerate(self.head_layers):
                hidden = self.activation(hidden)
                if with_features and position == self.n_head_layers - 1:
                    last_features.append(
                        last_layer_block(
                            hidden,
                            group,
                            self.last_layer_size,
                            self.n_last_layer_features,
                        )
                    )
                hidden = layer.single(hidden, group)
            outputs.append(hidden.sum(dim=1))
        energies = torch.zeros(species.shape[0], dtype=mean.dtype, device=mean.device)
        if len(outputs) == 0:
            return energies, mean.new_zeros((0, self.n_last_layer_features))
        energies = energies.index_copy(0, order, torch.cat(outputs))
        if not with_features:
            return energies, energies.new_zeros(0)
        rows = mean.new_zeros((species.shape[0], self.n_last_layer_features))
        return energies, rows.index_copy(0, order, torch.cat(last_features))
