"""Reading data: units, stress or virial, neighbour lists."""

import ase.io
import ase.units
import numpy as np
import pytest
import torch
from alchem.data import collate, read_structures, structure_from_atoms
from alchem.data.emt import generate_emt_structures
from alchem.options import _expand_dataset
from ase.neighborlist import neighbor_list


def read(section, folder):
    expanded = _expand_dataset(section, "test", "training_set", str(folder))
    return read_structures(expanded, cutoff=4.0, where="training_set")


def test_units_are_converted_to_ev_and_angstrom(tmp_path):
    frames = generate_emt_structures(3, elements=("Cu", "Au"), seed=4)
    ase.io.write(tmp_path / "ev.xyz", frames)
    energy_unit = ase.units.kcal / ase.units.mol
    converted = []
    for atoms in frames:
        copy = atoms.copy()
        copy.positions = atoms.positions / 10.0  # nm
        copy.cell = atoms.cell.array / 10.0
        copy.info["U"] = atoms.get_potential_energy() / energy_unit
        copy.arrays["F"] = atoms.get_forces() / energy_unit * 10.0
        copy.info["S"] = atoms.get_stress() / energy_unit * 1000.0
        converted.append(copy)
    ase.io.write(tmp_path / "kcal.xyz", converted)

    reference = read({"systems": "ev.xyz"}, tmp_path)
    other = read(
        {
            "systems": {"read_from": "kcal.xyz", "length_unit": "nm"},
            "targets": {
                "energy": {"key": "U", "unit": "kcal/mol", "forces": "F", "stress": "S"}
            },
        },
        tmp_path,
    )
    # extxyz keeps 8 decimals in the file's own units: 1e-8 nm is 1e-7 Å
    for a, b in zip(reference, other):
        assert b.energy == pytest.approx(a.energy, rel=1e-9)
        torch.testing.assert_close(b.positions, a.positions, rtol=0, atol=2e-7)
        torch.testing.assert_close(b.forces, a.forces, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b.virial, a.virial, rtol=1e-6, atol=1e-6)
        assert len(b.centers) == len(a.centers)


def test_virial_key_is_an_alternative_to_stress(tmp_path):
    frames = generate_emt_structures(2, elements=("Ni",), seed=6)
    for atoms in frames:
        atoms.info["my_virial"] = (
            -atoms.get_stress(voigt=False) * atoms.get_volume()
        ).ravel()
    ase.io.write(tmp_path / "v.xyz", frames)
    from_stress = read({"systems": "v.xyz"}, tmp_path)
    from_virial = read(
        {
            "systems": "v.xyz",
            "targets": {"energy": {"virial": {"key": "my_virial"}, "stress": False}},
        },
        tmp_path,
    )
    for a, b in zip(from_stress, from_virial):
        torch.testing.assert_close(b.virial, a.virial, rtol=1e-8, atol=1e-10)


def test_forces_false_turns_the_target_off(tmp_path):
    ase.io.write(tmp_path / "d.xyz", generate_emt_structures(2, seed=1))
    structures = read(
        {"systems": "d.xyz", "targets": {"energy": {"forces": False}}}, tmp_path
    )
    assert all(s.forces is None for s in structures)
    assert all(s.virial is not None for s in structures)


def test_neighbour_list_matches_ase_and_batches_offset_indices():
    frames = generate_emt_structures(2, elements=("Cu", "Pt"), seed=2)
    structures = [structure_from_atoms(a, 4.0) for a in frames]
    for atoms, structure in zip(frames, structures):
        i, j, shifts = neighbor_list("ijS", atoms, 4.0)
        assert len(i) == len(structure.centers)
        ours = sorted(
            zip(
                structure.centers.tolist(),
                structure.neighbors.tolist(),
                map(tuple, structure.shifts.int().tolist()),
            )
        )
        theirs = sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))
        assert ours == theirs
    batch = collate(structures)
    n0 = len(frames[0])
    assert batch.centers[len(structures[0].centers) :].min() >= n0
    assert batch.atom_structure.tolist() == [0] * n0 + [1] * len(frames[1])
    vectors = (
        batch.positions[batch.neighbors]
        - batch.positions[batch.centers]
        + torch.einsum("ea,eab->eb", batch.shifts, batch.cells[batch.edge_structure])
    )
    assert float(torch.linalg.norm(vectors, dim=1).max()) <= 4.0
    assert np.isclose(float(torch.linalg.norm(vectors, dim=1).min()), 1.5, atol=1.2)
