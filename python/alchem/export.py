"""Export to a TorchScript metatomic ``AtomisticModel`` (``model.pt``).

Engines (metatomic-ase, ``pair_style alchemical`` in LAMMPS) give the model systems
and a full neighbour list at the model's cutoff; the model returns the energy (total
or per atom). Forces and stress come from the engines' autograd through the neighbour
list's distance vectors.
"""

import contextlib
import json
import os
import shutil
import site
import sys
from copy import deepcopy
from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
)

from . import __version__, contacts, ops
from .errors import ConfigError
from .model import EnergyModel
from .uncertainty.posterior import ensemble_offsets, projected_sigma, square_root

REFERENCES = {
    "soap_bpnn": [
        "Behler and Parrinello, Phys. Rev. Lett. 98, 146401 (2007)",
        "Bartók, Kondor and Csányi, Phys. Rev. B 87, 184115 (2013)",
    ],
    "alchemical_model": [
        "Willatt, Musil and Ceriotti, Phys. Chem. Chem. Phys. 20, 29661 (2018)",
        "Lopanitsyna et al., Phys. Rev. Materials 7, 045802 (2023)",
        "Mazitov et al., arXiv:2404.10746 (2024)",
    ],
}


class MetatomicEnergyModel(torch.nn.Module):
    """Adapter from metatomic systems and neighbour lists to ``EnergyModel``.

    With uncertainty (alchem.uncertainty), the outputs ``energy_uncertainty`` (eV,
    per atom: sqrt(f_i C f_i), per system: that of the summed features),
    ``energy_ensemble`` (eV, the energies of the ensemble's members) and
    ``alchem::energy_uncertainty_projection`` (per system: s R with C = R R^T,
    additive over atoms, so engines that evaluate a system in parts sum it and
    take its norm). They cost nothing unless requested."""

    def __init__(self, model: EnergyModel):
        super().__init__()
        self.model = model
        self.neighbor_options = NeighborListOptions(
            cutoff=model.cutoff, full_list=True, strict=True, requestor="alchem"
        )
        # sigma = |f R| with C = R R^T: never negative, and without the
        # cancellation of f C f in float32
        root = square_root(model.uncertainty_covariance)
        self.register_buffer("projection", root.to(model.composition.dtype))
        # with a pair potential, an atom's features are non-zero only in the last
        # layer's and in its own element's pairs' columns: its sigma is |f R|
        # over those rows of R only (``element_columns``)
        self.register_buffer("element_columns", element_columns(model))

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbor_options]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        with_features = (
            "energy_uncertainty" in outputs
            or "energy_ensemble" in outputs
            or "alchem::energy_uncertainty_projection" in outputs
        )
        if not ("energy" in outputs or with_features):
            return {}
        numbers, vectors, centers, neighbors, samples = self._pairs(systems)
        if selected_atoms is None:
            energies, features, types = self._energies(
                numbers, vectors, centers, neighbors, -1, with_features
            )
        else:
            energies, features, types, samples = self._selected_atom_energies(
                numbers,
                vectors,
                centers,
                neighbors,
                samples,
                selected_atoms,
                systems,
                with_features,
            )
        result: Dict[str, TensorMap] = {}
        if "energy" in outputs:
            result["energy"] = _energy_map(
                energies, samples, outputs["energy"].sample_kind, len(systems)
            )
        if with_features:
            self._uncertainty(
                energies, features, types, samples, outputs, len(systems), result
            )
        return result

    def _energies(
        self,
        numbers: torch.Tensor,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        with_features: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energies of the first ``n_centers`` atoms, and their uncertainty features
        and atomic numbers where asked (else empty tensors)."""
        if with_features:
            energies, features = self.model.atomic_energies_and_features(
                numbers, vectors, centers, neighbors, n_centers
            )
            return energies, features, numbers[: energies.shape[0]]
        energies = self.model.atomic_energies(
            numbers, vectors, centers, neighbors, n_centers
        )
        return energies, energies.new_zeros(0), numbers[:0]

    def _uncertainty(
        self,
        energies: torch.Tensor,
        features: torch.Tensor,
        types: torch.Tensor,
        samples: torch.Tensor,
        outputs: Dict[str, ModelOutput],
        n_systems: int,
        result: Dict[str, TensorMap],
    ) -> None:
        """The requested uncertainty outputs, from the atoms' features (and
        atomic numbers, ``types``)."""
        if self.projection.numel() == 0:
            raise ValueError(
                "this model has no uncertainty: apply it with alchem-uncertainty"
            )
        # a posterior fitted before the pair weights joined it: the last layer's
        # features only (they come first)
        features = features[:, : self.projection.shape[0]]
        per_system = features.new_zeros((n_systems, features.shape[1]))
        per_system = per_system.index_add(0, samples[:, 0], features)
        if "energy_uncertainty" in outputs:
            if outputs["energy_uncertainty"].sample_kind == "atom":
                sigma = self._atom_sigma(features, types)
            else:
                sigma = projected_sigma(per_system, self.projection)
            kind = outputs["energy_uncertainty"].sample_kind
            result["energy_uncertainty"] = _values_map(
                sigma.reshape(-1, 1), samples, kind, n_systems, "energy", kind != "atom"
            )
        if "energy_ensemble" in outputs:
            ensemble = self.model.uncertainty_ensemble
            if outputs["energy_ensemble"].sample_kind == "atom":
                members = energies.unsqueeze(1) + ensemble_offsets(features, ensemble)
            else:
                totals = energies.new_zeros(n_systems).index_add(
                    0, samples[:, 0], energies
                )
                members = totals.unsqueeze(1) + ensemble_offsets(per_system, ensemble)
            kind = outputs["energy_ensemble"].sample_kind
            result["energy_ensemble"] = _values_map(
                members, samples, kind, n_systems, "energy", kind != "atom"
            )
        name = "alchem::energy_uncertainty_projection"
        if name in outputs:
            result[name] = _values_map(
                per_system @ self.projection,
                samples,
                "system",
                n_systems,
                "projection",
                True,
            )

    def _atom_sigma(self, features: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """|f_i R| per atom; with a pair potential, element by element over the
        columns its atoms' features can be non-zero in and those rows of R (the
        same products without the zeros: a fraction of the work with many
        elements)."""
        if self.element_columns.shape[0] == 0:
            return projected_sigma(features, self.projection)
        species = self.model.type_to_index[types]
        sigma = features.new_zeros(features.shape[0])
        for element in range(self.element_columns.shape[0]):
            atoms = torch.nonzero(species == element).reshape(-1)
            if atoms.shape[0] > 0:
                rows = features.index_select(0, atoms)
                rows = rows.index_select(1, self.element_columns[element])
                root = self.projection.index_select(0, self.element_columns[element])
                part = projected_sigma(rows, root)
                sigma = sigma.index_copy(0, atoms, part)
        return sigma

    def _pairs(
        self, systems: List[System]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atomic numbers, pair vectors, first and second atoms of every system
        as one system (atoms numbered on), and the (system, atom) of each atom."""
        numbers: List[torch.Tensor] = []
        vectors: List[torch.Tensor] = []
        centers: List[torch.Tensor] = []
        neighbors: List[torch.Tensor] = []
        system_index: List[torch.Tensor] = []
        atom_index: List[torch.Tensor] = []
        offset = 0
        for index, system in enumerate(systems):
            pairs = system.get_neighbor_list(self.neighbor_options)
            n_atoms = len(system)
            numbers.append(system.types)
            vectors.append(pairs.values.reshape(-1, 3))
            first_atom = pairs.samples.column("first_atom")
            second_atom = pairs.samples.column("second_atom")
            if offset > 0:
                first_atom, second_atom = first_atom + offset, second_atom + offset
            centers.append(first_atom)
            neighbors.append(second_atom)
            device = system.types.device
            system_index.append(torch.full((n_atoms,), index, device=device))
            atom_index.append(torch.arange(n_atoms, device=device))
            offset += n_atoms
        samples = torch.stack([torch.cat(system_index), torch.cat(atom_index)], dim=1)
        if len(systems) == 1:  # no copies: LAMMPS gives one (large) system
            return numbers[0], vectors[0], centers[0], neighbors[0], samples
        return (
            torch.cat(numbers),
            torch.cat(vectors),
            torch.cat(centers),
            torch.cat(neighbors),
            samples,
        )

    def _selected_atom_energies(
        self,
        numbers: torch.Tensor,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        samples: torch.Tensor,
        selected_atoms: Labels,
        systems: List[System],
        with_features: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Only the selected atoms are centres (in LAMMPS: the owned atoms, not the
        ghosts): put them first and drop the pairs of the others, so no feature or
        network is computed for an atom whose energy is not asked."""
        selected = selected_atoms.values.to(samples.device)
        first = _atom_range(selected, len(systems))
        if first >= 0 and _is_sorted(centers):
            return self._atom_range_energies(
                numbers,
                vectors,
                centers,
                neighbors,
                first,
                selected.shape[0],
                samples,
                with_features,
            )
        return self._selected_energies(
            numbers,
            vectors,
            centers,
            neighbors,
            selected,
            samples,
            samples.shape[0],
            with_features,
        )

    def _atom_range_energies(
        self,
        numbers: torch.Tensor,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        first: int,
        count: int,
        samples: torch.Tensor,
        with_features: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energies of atoms first .. first + count - 1 of the one system, its pairs
        sorted by centre: their pairs are one slice, found by binary search.

        This is how the LAMMPS plugin evaluates its owned atoms in chunks; the work
        per chunk then does not grow with the number of pairs of the whole rank."""
        end = first + count
        low, high = _lower_bound(centers, first), _lower_bound(centers, end)
        chunk_neighbors = neighbors[low:high]
        # atoms first..end - 1 move to the front, those before them behind them
        position = torch.where(
            chunk_neighbors >= end,
            chunk_neighbors,
            torch.where(
                chunk_neighbors >= first,
                chunk_neighbors - first,
                chunk_neighbors + count,
            ),
        )
        energies, features, types = self._energies(
            torch.cat([numbers[first:end], numbers[:first], numbers[end:]]),
            vectors[low:high],
            centers[low:high] - first,
            position,
            count,
            with_features,
        )
        return energies, features, types, samples[first:end]

    def _selected_energies(
        self,
        numbers: torch.Tensor,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        selected: torch.Tensor,
        samples: torch.Tensor,
        n_atoms: int,
        with_features: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energies of any selected atoms: a mask over all atoms and pairs."""
        keys = samples[:, 0] * (n_atoms + 1) + samples[:, 1]
        wanted = selected[:, 0] * (n_atoms + 1) + selected[:, 1]
        mask = torch.isin(keys, wanted)
        order = torch.cat([torch.nonzero(mask), torch.nonzero(~mask)]).reshape(-1)
        position = torch.empty_like(order).scatter_(
            0, order, torch.arange(order.shape[0], device=order.device)
        )
        kept = mask.index_select(0, centers)
        n_centers = int(mask.sum().item())
        energies, features, types = self._energies(
            numbers.index_select(0, order),
            vectors[kept],
            position.index_select(0, centers[kept]),
            position.index_select(0, neighbors[kept]),
            n_centers,
            with_features,
        )
        return energies, features, types, samples.index_select(0, order[:n_centers])


def element_columns(model: EnergyModel) -> torch.Tensor:
    """Per element a, the feature columns its atoms can be non-zero in: the last
    layer's, then those of the pairs (a, b) for every b, [S, W]. Empty without a
    pair potential or a posterior over its weights."""
    n_last, n_pair = model.n_last_layer_features, model.n_pair_features
    if n_pair == 0 or model.uncertainty_covariance.shape[0] != n_last + n_pair:
        return torch.zeros(0, 0, dtype=torch.int64)
    n_types, size = len(model.atomic_types), model.pair.basis_size
    index = model.pair.pair_index.reshape(n_types, n_types).cpu()
    blocks = n_last + index.unsqueeze(2) * size + torch.arange(size)  # [S, S, nb]
    last = torch.arange(n_last).expand(n_types, n_last)
    columns = torch.cat([last, blocks.reshape(n_types, -1)], dim=1)
    return columns.to(model.composition.device)


def _energy_map(
    energies: torch.Tensor, samples: torch.Tensor, sample_kind: str, n_systems: int
) -> TensorMap:
    """Per-atom energies (samples: system, atom) or their sums per system."""
    return _values_map(
        energies.reshape(-1, 1), samples, sample_kind, n_systems, "energy"
    )


def _values_map(
    values: torch.Tensor,
    samples: torch.Tensor,
    sample_kind: str,
    n_systems: int,
    property_name: str,
    per_system: bool = False,
) -> TensorMap:
    """Per-atom values [atoms, P] (samples: system, atom), or for ``sample_kind``
    "system" their sums per system (``per_system``: the values are already one
    row per system)."""
    device = values.device
    properties = Labels(
        property_name,
        torch.arange(values.shape[1], device=device).reshape(-1, 1),
    )
    if sample_kind == "atom":
        block = TensorBlock(
            values=values,
            samples=Labels(["system", "atom"], samples),
            components=[],
            properties=properties,
        )
    else:
        if not per_system:
            total = values.new_zeros((n_systems, values.shape[1]))
            values = total.index_add(0, samples[:, 0], values)
        block = TensorBlock(
            values=values,
            samples=Labels(
                "system", torch.arange(n_systems, device=device).reshape(-1, 1)
            ),
            components=[],
            properties=properties,
        )
    return TensorMap(Labels("_", torch.tensor([[0]], device=device)), [block])


def _atom_range(selected: torch.Tensor, n_systems: int) -> int:
    """The first atom if ``selected`` is atoms first, first + 1, ... of the only
    system, in that order; else -1."""
    if n_systems != 1 or selected.shape[0] == 0:
        return -1
    first = int(selected[0, 1])
    expected = torch.arange(
        first, first + selected.shape[0], dtype=selected.dtype, device=selected.device
    )
    if bool(torch.all(selected[:, 0] == 0)) and bool(
        torch.all(selected[:, 1] == expected)
    ):
        return first
    return -1


def _lower_bound(values: torch.Tensor, target: int) -> int:
    """First index of the sorted ``values`` with a value >= target (binary search;
    torch.searchsorted would copy the strided column of the Labels first)."""
    low, high = 0, values.shape[0]
    while low < high:
        middle = (low + high) // 2
        if int(values[middle]) < target:
            low = middle + 1
        else:
            high = middle
    return low


def _is_sorted(values: torch.Tensor) -> bool:
    if values.shape[0] < 2:
        return True
    return bool(torch.all(values[1:] >= values[:-1]))


# Owned atoms per evaluation in the LAMMPS pair style for a model on the CPU
# kernel (its `chunk` default otherwise 1024): the kernel's tensors take about 75
# KB per atom for the default Alchemical Model in float32 (300 MB per chunk), and
# 4 chunks of 4096 at 16384 atoms are 4-6 % faster per step than 16 of 1024.
KERNEL_CHUNK = 4096


def _on_kernel(model: EnergyModel) -> bool:
    """Whether the model computes its features with the CPU kernel."""
    return getattr(model.architecture, "feature_backend", "torch") == "kernel"


def _chunk_hint(model: EnergyModel) -> Dict[str, str]:
    if _on_kernel(model):
        return {"alchem.chunk": str(KERNEL_CHUNK)}
    return {}


def _operator_schema(model: EnergyModel) -> Dict[str, str]:
    """The signature of the operator the model calls, for loaders to compare with
    the library they have (alchem.calculator, the pair style)."""
    if _on_kernel(model):
        return {"alchem.ops_schema": ops.schema()}
    return {}


def _uncertainty_summary(options: dict) -> Dict[str, str]:
    """What alchem.uncertainty fitted (method, ensemble size, calibration)."""
    summary = options.get("uncertainty_fit")
    if summary:
        return {"alchem.uncertainty": json.dumps(summary)}
    return {}


def atomistic_model(model: EnergyModel, options: dict) -> AtomisticModel:
    """Wrap a trained model with its capabilities and metadata."""
    dtype = "float64" if options["base_precision"] == 64 else "float32"
    name = options["architecture"]["name"]
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="atom")}
    if model.has_uncertainty:
        outputs["energy_uncertainty"] = ModelOutput(unit="eV", sample_kind="atom")
        outputs["energy_ensemble"] = ModelOutput(unit="eV", sample_kind="atom")
        outputs["alchem::energy_uncertainty_projection"] = ModelOutput(
            unit="eV", sample_kind="system"
        )
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=model.atomic_types,
        interaction_range=model.cutoff,
        length_unit="angstrom",
        supported_devices=["cpu", "cuda"],
        dtype=dtype,
    )
    metadata = ModelMetadata(
        name=f"alchem {name}",
        description=f"{name} interatomic potential trained with alchem",
        references={
            "architecture": REFERENCES.get(name, []),
            "implementation": ["alchem (this project)"],
        },
        extra={
            "architecture": name,
            "hypers": json.dumps(options["architecture"]),
            # both architectures are local: a centre's energy needs only the
            # pairs it is the first atom of, so the LAMMPS pair style can give
            # each chunk of atoms its own pairs (alchemical_model.cpp)
            "alchem.pairs_of_selected_atoms": "first_atom",
            "alchem.version": __version__,
            **_chunk_hint(model),
            # what alchem-info prints (alchem.info): structures per target and
            # elements of each set, and the metrics of the best epoch
            "alchem.training_data": json.dumps(options.get("data_summary", {})),
            "alchem.metrics": json.dumps(options.get("metrics", {})),
            # engines warn below 0.9 x these distances (alchem.contacts)
            contacts.METADATA_KEY: contacts.to_metadata(
                model.shortest_distance, model.atomic_types
            ),
            **_operator_schema(model),
            **_uncertainty_summary(options),
        },
    )
    wrapper = MetatomicEnergyModel(model.to("cpu").eval())
    return AtomisticModel(wrapper.eval(), metadata, capabilities)


def export_model(
    model: EnergyModel, options: dict, path: str, torch_only: bool = False
) -> str:
    """Write ``path`` and the extensions it needs in ``extensions/`` beside it;
    returns that folder ('' if the model needs no extension).

    A model on the CPU kernel calls ``alchem::power_spectrum``: it declares
    ``libalchem_ops.so`` as a metatomic extension, and a copy goes to
    ``extensions/alchem/lib/`` (metatomic's layout: the path below site-packages),
    where any metatomic engine finds it with ``extensions_directory``.
    ``torch_only``: export the model on its torch operations instead, which needs
    no extension at all (same numbers, slower on the CPU).

    Files are written under temporary names and renamed, so an existing model or
    extension is never left half-written.
    """
    if torch_only:
        model = _on_torch_operations(model)
    folder = os.path.dirname(os.path.abspath(path))
    extensions = os.path.join(folder, "extensions")
    needed = _needed_libraries(model)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with declared_libraries(needed):
            atomistic_model(model, options).save(tmp)
        for library in needed:
            _copy_extension(library, extensions)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return extensions if needed else ""


def _on_torch_operations(model: EnergyModel) -> EnergyModel:
    """A copy of ``model`` that calls no custom operator."""
    copy = deepcopy(model)
    if _on_kernel(copy):
        copy.architecture.use_backend("torch")
    return copy


def _needed_libraries(model: EnergyModel) -> List[str]:
    """The TorchScript libraries the exported model calls: the operator library
    where the model runs on the kernel, else none (sphericart-torch, loaded while
    training, is never called by the scripted model)."""
    if _on_kernel(model):
        return [ops.library_path()]
    return []


@contextlib.contextmanager
def declared_libraries(needed: List[str]):
    """metatomic records every TorchScript library loaded in the process as an
    extension of the model it saves: make that exactly the ones it calls."""
    loaded = torch.ops.loaded_libraries
    saved = set(loaded)
    loaded.clear()
    loaded.update(needed)
    try:
        yield
    finally:
        loaded.clear()
        loaded.update(saved)


def _copy_extension(library: str, extensions: str) -> None:
    """Copy ``library`` to ``extensions/<its path below site-packages>``, the path
    the model records (metatomic.torch's rule); replaced atomically, so models
    already in the folder keep a loadable copy."""
    relative = _site_relative(library)
    if os.path.isabs(relative):
        raise ConfigError(
            f"{library} is not inside an installed package, so the exported model "
            "could not name it portably: install alchem with pip (`pip install .`, "
            "or `make` in the source folder), or export with --torch-only"
        )
    target = os.path.join(extensions, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        shutil.copyfile(library, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _site_relative(library: str) -> str:
    """The path metatomic records for a library: relative to the site-packages (or
    Python prefix) holding it, else absolute."""
    path = os.path.realpath(library)
    prefixes = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        prefixes.append(site.getusersitepackages())
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        prefix = os.path.realpath(prefix)
        if path.startswith(prefix + os.sep):
            return os.path.relpath(path, prefix)
    return path


def describe_extensions(folder: str) -> str:
    """For messages: where the model's extensions are, if it needs any."""
    if folder:
        return f"extensions in {folder}"
    return "no extensions needed"
