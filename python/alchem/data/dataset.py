"""Structures read with ASE, their targets, neighbour lists and batches.

Everything is converted to eV and Angstrom on reading and kept in float64. Neighbour
lists (vesin) are computed once per structure and reused every epoch. A batch is one
big disconnected graph, so the training step has no Python loop over atoms.

Each structure carries the labels its file gives it: the energy always, forces and
stress (or virial) where present, so bulk cells with stress, slabs and clusters
without it train together. A batch marks which of its structures have each label.
"""

import logging
from dataclasses import dataclass

import ase.io
import numpy as np
import torch
import vesin

from ..errors import ConfigError
from ..units import energy_factor, length_factor

LOG = logging.getLogger("alchem")


@dataclass
class Structure:
    """One labelled structure with its neighbour list (eV, Angstrom, float64)."""

    numbers: torch.Tensor  # [n_atoms] atomic numbers
    positions: torch.Tensor  # [n_atoms, 3]
    cell: torch.Tensor  # [3, 3], rows are cell vectors (zeros if not periodic)
    pbc: torch.Tensor  # [3] bool
    centers: torch.Tensor  # [n_edges]
    neighbors: torch.Tensor  # [n_edges]
    shifts: torch.Tensor  # [n_edges, 3] integer cell shifts (as float64)
    energy: float | None = None
    forces: torch.Tensor | None = None  # [n_atoms, 3]
    virial: torch.Tensor | None = None  # [3, 3], W = -dE/d(strain)
    # one edge per pair of the (symmetric) full list: see one_way_edges
    one_way: torch.Tensor | None = None  # [n_edges] bool


@dataclass
class DatasetInfo:
    """What a model needs to know about the training set when it is built."""

    atomic_types: list[int]  # sorted atomic numbers seen in training
    mean_num_neighbors: float  # for the neighbour-count normalisation


@dataclass
class Batch:
    """Several structures concatenated into one graph."""

    numbers: torch.Tensor
    positions: torch.Tensor
    cells: torch.Tensor  # [n_structures, 3, 3]
    centers: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor
    atom_structure: torch.Tensor  # [n_atoms] index of the structure of each atom
    edge_structure: torch.Tensor  # [n_edges]
    n_atoms: torch.Tensor  # [n_structures]
    energy: torch.Tensor | None = None
    # forces and virials of the structures that have them, zeros for the others
    # (None when no structure of the batch has them); has_*: which have them
    forces: torch.Tensor | None = None  # [n_atoms, 3]
    virial: torch.Tensor | None = None  # [n_structures, 3, 3]
    has_forces: torch.Tensor | None = None  # [n_structures] bool
    has_virial: torch.Tensor | None = None  # [n_structures] bool
    one_way: torch.Tensor | None = None  # [n_edges] bool, see one_way_edges

    def to(self, device: torch.device, dtype: torch.dtype) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return Batch(
            **{name: move(getattr(self, name)) for name in self.__dataclass_fields__}
        )


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list (i -> j and j -> i), no self pairs, with cell shifts."""
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    box = cell if np.any(pbc) else np.zeros((3, 3))
    i, j, shifts = calculator.compute(positions, box, pbc.tolist(), quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.float64)


def one_way_edges(
    centers: torch.Tensor, neighbors: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor | None:
    """Mask of one edge per pair of a full neighbour list: (i, j, S) with i < j, or
    i = j and S > 0 (lexicographically); its reverse (j, i, -S) is the other one.
    None if the list is not symmetric (an edge whose reverse fell just outside the
    cutoff by rounding): then every directed edge is used.

    Architectures with ``accepts_both_directions`` compute each pair once from it
    (alchem.model.predict)."""
    positive = (shifts[:, 0] > 0) | (
        (shifts[:, 0] == 0)
        & ((shifts[:, 1] > 0) | ((shifts[:, 1] == 0) & (shifts[:, 2] > 0)))
    )
    keep = (centers < neighbors) | ((centers == neighbors) & positive)
    if 2 * int(keep.sum()) != centers.shape[0]:
        return None
    # every kept edge's reverse is among the others, and nothing else is
    shifts = shifts.long()
    reverse = torch.cat([torch.stack([neighbors, centers], dim=1), -shifts], dim=1)
    forward = torch.cat([torch.stack([centers, neighbors], dim=1), shifts], dim=1)
    kept = torch.unique(reverse[keep], dim=0)
    others = torch.unique(forward[~keep], dim=0)
    if kept.shape != others.shape or not torch.equal(kept, others):
        return None
    return keep


# atoms closer than this are one atom written twice: the model's pair directions
# (and so its energy) are undefined at zero distance
MIN_DISTANCE = 0.1
# the densest solids hold about 0.2 atoms per Å^3; far above is a cell in the wrong
# units, whose neighbour list would not fit in memory
MAX_DENSITY = 2.0
MIN_HEIGHT = 0.5  # Å between opposite faces of a periodic cell


def periodic_heights(cell: np.ndarray, pbc: np.ndarray) -> dict[int, float]:
    """Periodic direction -> distance between the cell's faces across it, counting
    only the periodic vectors (a slab's third vector may be anything, even zero)."""
    periodic = [int(k) for k in np.flatnonzero(pbc)]
    heights = {}
    for k in periodic:
        others = [cell[m] for m in periodic if m != k]
        if not others:
            heights[k] = float(np.linalg.norm(cell[k]))
        elif len(others) == 1:
            length = np.linalg.norm(others[0])
            area = np.linalg.norm(np.cross(cell[k], others[0]))
            heights[k] = float(area / length) if length > 0 else 0.0
        else:
            face = np.linalg.norm(np.cross(others[0], others[1]))
            volume = abs(np.linalg.det(cell))
            heights[k] = float(volume / face) if face > 0 else 0.0
    return heights


def check_cell_size(cell: np.ndarray, pbc: np.ndarray, n_atoms: int) -> None:
    """Cells far too small for atoms: an error before the neighbour list explodes."""
    volume = abs(np.linalg.det(cell))
    for k, height in periodic_heights(cell, pbc).items():
        if height < MIN_HEIGHT:
            raise ValueError(
                f"the periodic cell is {height:.3g} Å thick along cell vector {k + 1} "
                f"(below {MIN_HEIGHT} Å, no material is); check the cell and its "
                "length_unit"
            )
    if np.all(pbc) and n_atoms / volume > MAX_DENSITY:
        raise ValueError(
            f"{n_atoms} atoms in {volume:.3g} Å^3 is {n_atoms / volume:.3g} atoms/Å^3 "
            f"(above {MAX_DENSITY}; solids have about 0.1); check the cell and its "
            "length_unit"
        )


# vesin 0.6.2 (the neighbour list) dies with a floating-point exception on cell
# lists of more cells than about this in elongated boxes (e.g. 1300 x 1300 x 8 Å
# with a 4 Å cutoff, or two atoms 5e5 Å apart): refused before it is called
MAX_CELLS = 100_000


def check_extent(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> None:
    """A structure too large for the neighbour list: a ValueError, not a crash."""
    lengths = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
    for k, height in periodic_heights(cell, pbc).items():
        lengths[k] = height
    cells = np.prod(np.maximum(1.0, np.floor(lengths / cutoff)))
    if cells > MAX_CELLS:
        size = " x ".join(f"{length:.3g}" for length in lengths)
        raise ValueError(
            f"it spans {size} Å, too large for the neighbour list with a {cutoff:g} Å "
            f"cutoff ({cells:.3g} cells of the cutoff's size, at most {MAX_CELLS}); "
            "check for atoms far away from the others, and the cell's length_unit"
        )


def structure_from_atoms(atoms: ase.Atoms, cutoff: float) -> Structure:
    """A Structure without targets, e.g. for prediction."""
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if np.any(pbc) and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(
            f"periodic (pbc {' '.join('TF'[not p] for p in pbc)}) but its cell has "
            "zero volume; give the cell vectors, or pbc F F F for a cluster"
        )
    if np.any(pbc):
        check_cell_size(cell, pbc, len(positions))
    check_extent(positions, cell, pbc, cutoff)
    i, j, shifts = neighbor_list(positions, cell, pbc, cutoff)
    if len(i):
        distances = np.linalg.norm(positions[j] + shifts @ cell - positions[i], axis=1)
        closest = int(np.argmin(distances))
        if distances[closest] < MIN_DISTANCE:
            raise ValueError(
                f"atoms {i[closest]} and {j[closest]} are {distances[closest]:.3g} Å "
                f"apart (below {MIN_DISTANCE} Å, a duplicated atom?)"
            )
    centers, neighbors = torch.from_numpy(i), torch.from_numpy(j)
    shifts = torch.from_numpy(shifts)
    return Structure(
        numbers=torch.tensor(atoms.numbers, dtype=torch.int64),
        positions=torch.tensor(positions),
        cell=torch.tensor(cell),
        pbc=torch.tensor(pbc),
        centers=centers,
        neighbors=neighbors,
        shifts=shifts,
        one_way=one_way_edges(centers, neighbors, shifts),
    )


def read_structures(section: dict, cutoff: float, where: str) -> list[Structure]:
    """Read the structures and targets named by an expanded dataset section.

    Every structure needs the energy; forces, stress and virial are read from the
    structures that have their key. A key named explicitly in the options must be
    found in at least one structure. Non-finite values (NaN, inf) and periodic cells
    of zero volume are errors naming the structure.
    """
    systems = section["systems"]
    path = systems["read_from"]
    frames = _read_frames(path, systems["reader"], where)
    length = length_factor(systems["length_unit"], where)
    target = section["targets"]["energy"]
    energy_unit = energy_factor(target["unit"], where)
    _check_required_keys(frames, target, path, where)
    structures = []
    stress_not_used = []  # structures with a stress but not periodic in 3D
    for index, atoms in enumerate(frames):
        label = f"{where}: {path}, structure {index}"
        structure = _structure(atoms, cutoff, length, label)
        _read_labels(structure, atoms, target, energy_unit, length, label)
        if _unused_stress(atoms, target["stress"]):
            stress_not_used.append(index)
        structures.append(structure)
    if stress_not_used:
        shown = ", ".join(map(str, stress_not_used[:10]))
        more = ", ..." if len(stress_not_used) > 10 else ""
        LOG.warning(
            "%s: %s: the stress of %d structures not periodic in all directions is "
            "not used (a stress needs the cell volume): structures %s%s",
            where,
            path,
            len(stress_not_used),
            shown,
            more,
        )
    return structures


def _read_frames(path: str, reader: str | None, where: str) -> list[ase.Atoms]:
    try:
        frames = ase.io.read(path, index=":", format=reader)
    except Exception as error:  # ASE raises many types for unreadable files
        raise ConfigError(f"{where}: cannot read {path}: {error}") from None
    if len(frames) == 0:
        raise ConfigError(f"{where}: {path} holds no structures")
    return frames


def _check_required_keys(
    frames: list[ase.Atoms], target: dict, path: str, where: str
) -> None:
    """A gradient key named in the options is found in at least one structure."""
    for name in ("forces", "stress", "virial"):
        spec = target[name]
        if spec and spec["required"]:
            if not any(_has_key(atoms, spec["key"]) for atoms in frames):
                found = sorted({k for atoms in frames for k in available_keys(atoms)})
                raise ConfigError(
                    f"{where}.targets.energy.{name}: key {spec['key']!r} not found in "
                    f"any structure of {path} (keys in the file: {', '.join(found)})"
                )


def _structure(atoms: ase.Atoms, cutoff: float, length: float, label: str) -> Structure:
    """The structure's atoms, cell and neighbours, in Å."""
    if len(atoms) == 0:
        raise ConfigError(f"{label}: has no atoms; remove it from the file")
    _check_finite(atoms.positions, label, "positions")
    _check_finite(atoms.cell.array, label, "cell")
    atoms.positions = atoms.positions * length
    atoms.cell = atoms.cell.array * length
    try:
        return structure_from_atoms(atoms, cutoff)
    except ValueError as error:
        raise ConfigError(f"{label}: {error}") from None


def _read_labels(
    structure: Structure,
    atoms: ase.Atoms,
    target: dict,
    energy_unit: float,
    length: float,
    label: str,
) -> None:
    """Energy (required), and forces, stress or virial where the structure has
    them, in eV and Å; a stress only for cells periodic in all directions."""
    energy = _get(atoms, target["key"], label, "energy")
    energy = _check_finite(energy, label, target["key"])
    structure.energy = float(energy.reshape(-1)[0]) * energy_unit
    forces_spec = target["forces"]
    if forces_spec and _has_key(atoms, forces_spec["key"]):
        forces = _check_finite(
            _get(atoms, forces_spec["key"], label, "forces"),
            label,
            forces_spec["key"],
        )
        structure.forces = torch.tensor(forces.reshape(-1, 3) * energy_unit / length)
    stress_spec, virial_spec = target["stress"], target["virial"]
    # stress needs the volume: only cells periodic in all three directions
    has_stress = bool(stress_spec) and _has_key(atoms, stress_spec["key"])
    if has_stress and all(atoms.pbc):
        stress = _check_finite(
            _get(atoms, stress_spec["key"], label, "stress"),
            label,
            stress_spec["key"],
        )
        structure.virial = _virial_from_stress(
            stress, atoms, energy_unit, length, label
        )
    elif virial_spec and _has_key(atoms, virial_spec["key"]):
        virial = _check_finite(
            _get(atoms, virial_spec["key"], label, "virial"),
            label,
            virial_spec["key"],
        )
        structure.virial = torch.tensor(virial.reshape(3, 3) * energy_unit)


def _unused_stress(atoms: ase.Atoms, stress_spec: dict | None) -> bool:
    """A stress label on a structure not periodic in all directions (not used)."""
    has_stress = bool(stress_spec) and _has_key(atoms, stress_spec["key"])
    return has_stress and not all(atoms.pbc)


def count_targets(structures: list[Structure]) -> dict[str, int]:
    """How many structures carry each target (stress and virial both count as
    ``virial``, the form they are trained in)."""
    return {
        "structures": len(structures),
        "energy": sum(s.energy is not None for s in structures),
        "forces": sum(s.forces is not None for s in structures),
        "virial": sum(s.virial is not None for s in structures),
    }


def _check_finite(value, label: str, key: str) -> np.ndarray:
    """``value`` as a float64 array; NaN or inf is an error naming the key."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{label}: {key} is not a number: {value!r}") from None
    if not np.all(np.isfinite(array)):
        bad = "NaN" if np.any(np.isnan(array)) else "inf"
        raise ConfigError(
            f"{label}: {key} contains {bad}; fix or remove this structure"
        )
    return array


def _virial_from_stress(stress, atoms, energy_unit, length, label) -> torch.Tensor:
    stress = np.asarray(stress, dtype=np.float64).reshape(-1)
    if stress.size == 6:  # Voigt order xx yy zz yz xz xy, as ASE writes it
        xx, yy, zz, yz, xz, xy = stress
        stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif stress.size == 9:
        stress = stress.reshape(3, 3)
    else:
        raise ConfigError(f"{label}: stress must have 6 or 9 components")
    volume = abs(np.linalg.det(atoms.cell.array))
    # stress is in energy/length^3 of the file's units; atoms were already converted
    return torch.tensor(-stress * volume * energy_unit / length**3)


def available_keys(atoms: ase.Atoms) -> list[str]:
    """Names of the labels a structure has: atoms.info, arrays, calculator results."""
    keys = list(atoms.info) + [
        k for k in atoms.arrays if k not in ("numbers", "positions")
    ]
    if atoms.calc is not None:
        keys += list(atoms.calc.results)
    return sorted(set(keys))


def _has_key(atoms: ase.Atoms, key: str) -> bool:
    return key in available_keys(atoms)


def _get(atoms: ase.Atoms, key: str, label: str, kind: str):
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    if atoms.calc is not None and key in atoms.calc.results:
        return atoms.calc.results[key]
    raise ConfigError(
        f"{label}: {kind} key {key!r} not found (available: {', '.join(available_keys(atoms))})"
    )


def dataset_info(structures: list[Structure]) -> DatasetInfo:
    types = sorted({int(z) for s in structures for z in s.numbers.tolist()})
    n_edges = sum(len(s.centers) for s in structures)
    n_atoms = sum(len(s.numbers) for s in structures)
    return DatasetInfo(atomic_types=types, mean_num_neighbors=n_edges / max(n_atoms, 1))


def collate(structures: list[Structure]) -> Batch:
    """Concatenate structures into one graph (indices offset per structure)."""
    counts = torch.tensor([len(s.numbers) for s in structures])
    offsets = torch.cumsum(counts, 0) - counts
    edge_counts = torch.tensor([len(s.centers) for s in structures])
    structure_index = torch.arange(len(structures))
    has_energy = all(s.energy is not None for s in structures)
    has_forces = torch.tensor([s.forces is not None for s in structures])
    has_virial = torch.tensor([s.virial is not None for s in structures])
    has_one_way = all(s.one_way is not None for s in structures)
    forces = None
    if bool(has_forces.any()):
        forces = torch.cat(
            [
                torch.zeros(len(s.numbers), 3, dtype=torch.float64)
                if s.forces is None
                else s.forces
                for s in structures
            ]
        )
    virial = None
    if bool(has_virial.any()):
        zero = torch.zeros(3, 3, dtype=torch.float64)
        virial = torch.stack(
            [zero if s.virial is None else s.virial for s in structures]
        )
    return Batch(
        numbers=torch.cat([s.numbers for s in structures]),
        positions=torch.cat([s.positions for s in structures]),
        cells=torch.stack([s.cell for s in structures]),
        centers=torch.cat(
            [s.centers + o for s, o in zip(structures, offsets, strict=False)]
        ),
        neighbors=torch.cat(
            [s.neighbors + o for s, o in zip(structures, offsets, strict=False)]
        ),
        shifts=torch.cat([s.shifts for s in structures]),
        atom_structure=torch.repeat_interleave(structure_index, counts),
        edge_structure=torch.repeat_interleave(structure_index, edge_counts),
        n_atoms=counts,
        energy=torch.tensor([s.energy for s in structures]) if has_energy else None,
        forces=forces,
        virial=virial,
        has_forces=has_forces,
        has_virial=has_virial,
        one_way=torch.cat([s.one_way for s in structures]) if has_one_way else None,
    )
