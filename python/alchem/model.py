"""The energy model: an architecture plus the composition baseline, target scale and
(where the architecture asks for one) a learned pair potential.

E = sum_i [ s * net(i) + w[a_i] + 1/2 sum_j V_{a_i a_j}(r_ij) ]: V
(alchem.pair_potential) is fitted by least squares to the training forces, then w
by least squares to the energies the pairs leave, and s is the RMS of the force
components the pairs leave (or of the residual energies per atom when no forces
are trained). w and s are buffers, V's weights parameters that train with the
network; all travel with checkpoints and the exported model.
"""

import torch

from .data import Batch, DatasetInfo, Structure
from .pair_potential import PairPotential, fit_pair_potential, pair_energies_and_forces

UNCERTAINTY_BUFFERS = (
    "uncertainty_covariance",
    "uncertainty_ensemble",
    "uncertainty_force_factor",
)


class EnergyModel(torch.nn.Module):
    def __init__(self, architecture: torch.nn.Module, info: DatasetInfo):
        super().__init__()
        self.architecture = architecture
        self.atomic_types: list[int] = list(info.atomic_types)
        self.cutoff: float = float(architecture.cutoff)
        type_to_index = torch.full((max(self.atomic_types) + 1,), -1, dtype=torch.int64)
        for index, atomic_type in enumerate(self.atomic_types):
            type_to_index[atomic_type] = index
        self.register_buffer("type_to_index", type_to_index)
        self.register_buffer("composition", torch.zeros(len(self.atomic_types)))
        self.register_buffer("energy_scale", torch.ones(()))
        # Å, per element pair, seen in training (alchem.contacts; inf: never)
        n_types = len(self.atomic_types)
        self.register_buffer(
            "shortest_distance",
            torch.full((n_types, n_types), float("inf"), dtype=torch.float64),
        )

        # [basis_size, inner_cutoff, cutoff_width] from the architecture's
        # hyperparameters; basis_size 0 (or none given): no pair term
        basis_size, inner, width = getattr(
            architecture, "pair_potential_hypers", [0, 1.0, 1.0]
        )
        self.pair = PairPotential(
            n_types, self.cutoff, float(width), int(basis_size), float(inner)
        )

        # uncertainty (alchem.uncertainty, LLPR): the calibrated covariance of the
        # last layers' weights [D, D] in eV^2 per squared feature, an ensemble of
        # weight offsets drawn from it [D, M], and the factor that calibrates
        # the ensemble's force spread; empty until alchem.uncertainty fits them
        self.register_buffer("uncertainty_covariance", torch.zeros(0, 0))
        self.register_buffer("uncertainty_ensemble", torch.zeros(0, 0))
        self.register_buffer("uncertainty_force_factor", torch.ones(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the shortest distances were recorded load
        # with none (inf: no close-contact warning)
        state_dict.setdefault(prefix + "shortest_distance", self.shortest_distance)
        # checkpoints written before the pair potential existed: none (zero)
        state_dict.setdefault(
            prefix + "pair.weights", torch.zeros_like(self.pair.weights)
        )
        # the uncertainty's buffers take the saved shapes (empty: none fitted)
        for name in UNCERTAINTY_BUFFERS:
            saved = state_dict.setdefault(prefix + name, getattr(self, name))
            if saved.shape != getattr(self, name).shape:
                setattr(
                    self, name, torch.empty_like(saved, device=self.composition.device)
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def has_uncertainty(self) -> bool:
        """Whether alchem.uncertainty has fitted the model's uncertainty."""
        return self.uncertainty_covariance.numel() > 0

    @property
    def n_last_layer_features(self) -> int:
        """D: per-atom features of the last layers (0: none, no hidden layer)."""
        return int(getattr(self.architecture, "n_last_layer_features", 0))

    @property
    def n_pair_features(self) -> int:
        """The pair potential's weights, n_pairs x basis_size (0: no pair term)."""
        return int(self.pair.weights.numel())

    @property
    def n_uncertainty_features(self) -> int:
        """Per-atom features of the linear model of uncertainty: the last layers'
        then the pair potential's (``atomic_energies_and_features``)."""
        return self.n_last_layer_features + self.n_pair_features

    def atomic_energies(
        self,
        numbers: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int = -1,
        both_directions: bool = False,
    ) -> torch.Tensor:
        """Energy of each atom (eV) from atomic numbers and edges r_ij = x_j - x_i.

        With ``n_centers >= 0`` only the first ``n_centers`` atoms are centres (every
        edge starts at one of them) and only their energies are computed; the other
        atoms are neighbours only (e.g. LAMMPS ghosts). With ``both_directions``
        (architectures with ``accepts_both_directions``) each edge also stands for
        its reverse (j, i, -r_ij): a full list given with each pair once.
        """
        species = self.type_to_index[numbers]
        if n_centers < 0:
            n_centers = species.shape[0]
        network = self.architecture(
            species, edge_vectors, centers, neighbors, n_centers, both_directions
        )
        pairs = self.pair(
            species, edge_vectors, centers, neighbors, n_centers, both_directions
        )
        return (
            network * self.energy_scale + self.composition[species[:n_centers]] + pairs
        )

    def atomic_energies_and_features(
        self,
        numbers: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int = -1,
        both_directions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``atomic_energies`` and each atom's features of the linear model of
        uncertainty (alchem.uncertainty), [atoms, D + n_pairs x basis_size] in eV:
        the last layers' features (atom i's network energy is features[i, :D] .
        theta, theta the last layers' weights and biases) then the pair
        potential's (``PairPotential.features``: its pair energy is features[i, D:] . the
        pair weights, flattened)."""
        species = self.type_to_index[numbers]
        if n_centers < 0:
            n_centers = species.shape[0]
        network, features = self.architecture.forward_with_features(
            species, edge_vectors, centers, neighbors, n_centers, both_directions
        )
        pairs = self.pair(
            species, edge_vectors, centers, neighbors, n_centers, both_directions
        )
        energies = (
            network * self.energy_scale + self.composition[species[:n_centers]] + pairs
        )
        features = features * self.energy_scale
        if self.pair.basis_size > 0:
            pair_features = self.pair.features(
                species, edge_vectors, centers, neighbors, n_centers, both_directions
            )
            features = torch.cat([features, pair_features.to(features.dtype)], dim=1)
        return energies, features


def fit_composition_and_scale(model: EnergyModel, structures: list[Structure]) -> None:
    """Least-squares per-element energies (with the pair potential, where the
    model has one: both fitted together to energies and forces), then the scale
    of what is left."""
    types = model.atomic_types

    def species_of(structure: Structure) -> torch.Tensor:
        return model.type_to_index[structure.numbers]

    counts = torch.zeros(len(structures), len(types), dtype=torch.float64)
    for row, structure in enumerate(structures):
        counts[row] = torch.bincount(species_of(structure), minlength=len(types))
    energies = torch.tensor([s.energy for s in structures], dtype=torch.float64)
    weights = fit_pair_potential(model.pair, structures, species_of, len(types))
    forces = []
    pair_energies = torch.zeros(len(structures), dtype=torch.float64)
    for row, structure in enumerate(structures):
        energy, pair_forces = pair_energies_and_forces(
            model.pair, structure, species_of(structure)
        )
        pair_energies[row] = energy
        if structure.forces is not None:
            forces.append(structure.forces.double() - pair_forces)
    energies = energies - pair_energies
    if weights is None:
        weights = _ridge(counts, energies)
    residual = (energies - counts @ weights) / counts.sum(1)
    if forces:
        scale = torch.cat(forces).pow(2).mean().sqrt()
    else:
        scale = residual.pow(2).mean().sqrt()
    if not torch.isfinite(scale) or scale <= 0:
        scale = torch.tensor(1.0)
    model.composition.copy_(weights)
    model.energy_scale.copy_(scale)


def _ridge(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Solve (X^T X + lambda I) w = X^T y, growing lambda 10x until it works."""
    lam = 1e-10 * max(float(torch.trace(x.T @ x)), 1.0)
    identity = torch.eye(x.shape[1], dtype=x.dtype)
    for _ in range(20):
        try:
            weights = torch.linalg.solve(x.T @ x + lam * identity, x.T @ y)
            if torch.all(torch.isfinite(weights)):
                return weights
        except RuntimeError:
            pass
        lam *= 10.0
    raise RuntimeError("could not fit the composition baseline")


def edge_vectors(
    positions: torch.Tensor,
    centers: torch.Tensor,
    neighbors: torch.Tensor,
    shifts: torch.Tensor,
    cells: torch.Tensor,
) -> torch.Tensor:
    """r_j - r_i + shift . cell of every edge (i, j): [edges, 3]; ``cells`` is
    each edge's structure's cell, [edges, 3, 3]."""
    return (
        positions[neighbors]
        - positions[centers]
        + torch.einsum("ea,eab->eb", shifts, cells)
    )


def predict(
    model: EnergyModel,
    batch: Batch,
    forces: bool,
    virial: bool,
    create_graph: bool = False,
    with_features: bool = False,
) -> dict[str, torch.Tensor]:
    """Energies per structure, and forces and virials by autograd.

    The virial is W = -dE/d(epsilon) for a strain epsilon applied to positions and
    cell, so that stress = -W / V. ``with_features``: also the last-layer features
    per atom (``atomic_features``) and summed per structure (``features``), for
    alchem.uncertainty; ``positions`` is the tensor the forces derive from.
    """
    positions = batch.positions
    if forces:
        positions = positions.detach().requires_grad_(True)
    centers, neighbors, shifts = batch.centers, batch.neighbors, batch.shifts
    edge_structure = batch.edge_structure
    # each pair once where the architecture can (see data.one_way_edges)
    one_way = batch.one_way if model.architecture.accepts_both_directions else None
    if one_way is not None:
        centers, neighbors = centers[one_way], neighbors[one_way]
        shifts, edge_structure = shifts[one_way], edge_structure[one_way]
    n_structures = batch.cells.shape[0]
    strain = torch.zeros(
        (n_structures, 3, 3), dtype=positions.dtype, device=positions.device
    )
    if virial:
        strain.requires_grad_(True)
    vectors = edge_vectors(
        positions, centers, neighbors, shifts, batch.cells[edge_structure]
    )
    if virial:
        deformation = (
            torch.eye(3, dtype=positions.dtype, device=positions.device) + strain
        )
        vectors = torch.einsum("ea,eab->eb", vectors, deformation[edge_structure])
    both_directions = one_way is not None
    if with_features:
        atomic, features = model.atomic_energies_and_features(
            batch.numbers, vectors, centers, neighbors, both_directions=both_directions
        )
    else:
        atomic = model.atomic_energies(
            batch.numbers, vectors, centers, neighbors, both_directions=both_directions
        )
    energy = torch.zeros(n_structures, dtype=atomic.dtype, device=atomic.device)
    energy = energy.index_add(0, batch.atom_structure, atomic)
    result = {"energy": energy, "atomic_energies": atomic}
    if with_features:
        result["atomic_features"] = features
        result["features"] = features.new_zeros(
            (n_structures, features.shape[1])
        ).index_add(0, batch.atom_structure, features)
        result["positions"] = positions
    inputs = ([positions] if forces else []) + ([strain] if virial else [])
    if inputs:
        grads = torch.autograd.grad(
            energy.sum(),
            inputs,
            create_graph=create_graph,
            # the features' graph stays for the ensemble's forces (uncertainty)
            retain_graph=create_graph or with_features,
            allow_unused=True,
        )
        grads = [
            torch.zeros_like(i) if g is None else g
            for g, i in zip(grads, inputs, strict=False)
        ]
        if forces:
            result["forces"] = -grads[0]
        if virial:
            result["virial"] = -grads[-1]
    return result
