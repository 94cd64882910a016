"""`pair_style alchemical` against the same model.pt through ASE (metatomic-ase).

The model is the hand-written metatomic pair + embedding potential of
lammps_support (not trained by this project). float64: everything agrees to 1e-8
relative (measured: 1e-14). Relative errors are max |a - b| / max |b| over the
array, so small components are held to the scale of the largest.
"""

import ase
import numpy as np
import pytest
from lammps_support import (
    ModelSpec,
    ase_single_point,
    energy_factor,
    export_model,
    fcc_alloy,
    lammps_finite_differences,
    lammps_global_point,
    lammps_single_point,
    lower_triangular,
    morse_coefficients,
    plugin_built,
    relative_error,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

FLOAT64 = 1e-8
ELEMENTS = [28, 29, 78]  # Ni Cu Pt


# ------------------------------------------------------------------ geometries
def small_cell() -> ase.Atoms:
    """4 atoms in a 3.6 A cube: the 5 A cutoff is 2.8 times half the box."""
    return fcc_alloy((1, 1, 1), 3.6, [28, 29], seed=2)


def skewed_triclinic() -> ase.Atoms:
    """108 atoms, tilts close to LAMMPS' limit of half the box length."""
    base = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=3)
    cell = lower_triangular(10.8, 10.8, 10.8, 5.0, -4.5, 5.2)
    return ase.Atoms(
        numbers=base.numbers,
        scaled_positions=base.get_scaled_positions(),
        cell=cell,
        pbc=True,
    )


def slab() -> ase.Atoms:
    """Periodic in x and y, free surfaces in z (boundary p p f)."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=4)
    atoms.pbc = [True, True, False]
    atoms.cell[2, 2] = 30.0
    atoms.positions[:, 2] += 5.0
    return atoms


def cluster() -> ase.Atoms:
    """A finite cluster (boundary s s s)."""
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=6)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def alloy_500() -> ase.Atoms:
    return fcc_alloy((5, 5, 5), 3.6, ELEMENTS, seed=7)


GEOMETRIES = {
    "small-cell": (small_cell, [28, 29], "metal"),
    "triclinic": (skewed_triclinic, ELEMENTS, "metal"),
    "slab-ppf": (slab, ELEMENTS, "metal"),
    "cluster-sss": (cluster, ELEMENTS, "metal"),
    "alloy500-real": (alloy_500, ELEMENTS, "real"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "full": export_model(folder / "full.pt", ModelSpec()),
        "half": export_model(folder / "half.pt", ModelSpec(full_list=False)),
        "float32": export_model(folder / "float32.pt", ModelSpec(dtype="float32")),
        "nm-kJ": export_model(
            folder / "nm.pt", ModelSpec(length_unit="nm", energy_unit="kJ/mol")
        ),
        "two-layers": export_model(folder / "mp.pt", ModelSpec(layers=2, cutoff=4.0)),
        "pair-only": export_model(folder / "pair.pt", ModelSpec(embedding=False)),
        "second": export_model(folder / "second.pt", ModelSpec(center_on_second=True)),
    }


def compare(lammps, reference, units: str, tolerance: float) -> dict[str, float]:
    """Relative errors of LAMMPS (converted to eV) against ASE; asserts them."""
    factor = energy_factor(units)
    errors = {
        "energy": relative_error(lammps.energy * factor, reference.energy),
        "energies": relative_error(lammps.energies * factor, reference.energies),
        "forces": relative_error(lammps.forces * factor, reference.forces),
        "virial": relative_error(lammps.virial * factor, reference.virial),
        "sum of per-atom virials": relative_error(
            lammps.virial_sum * factor, reference.virial
        ),
        "sum of centroid virials": relative_error(
            lammps.centroid_sum * factor, reference.virial
        ),
    }
    failed = {name: error for name, error in errors.items() if not error <= tolerance}
    assert not failed, f"above {tolerance}: {failed}"
    return errors


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_geometries_match_ase(name, models, tmp_path):
    make, numbers, units = GEOMETRIES[name]
    atoms = make()
    lammps = lammps_single_point(tmp_path, atoms, models["full"], numbers, units=units)
    reference = ase_single_point(atoms, models["full"])
    compare(lammps, reference, units, FLOAT64)
    # the structure is not trivial: forces and virial are far from zero
    assert np.abs(reference.forces).max() > 0.1
    assert np.abs(reference.virial).max() > 1.0


@pytest.mark.parametrize(
    ("model", "name", "nprocs"),
    [
        ("full", "triclinic", 1),
        ("full", "triclinic", 2),
        ("full", "slab-ppf", 2),
        ("full", "cluster-sss", 1),
        ("half", "triclinic", 2),
        ("two-layers", "alloy500-real", 2),
        ("nm-kJ", "small-cell", 1),
    ],
)
def test_global_virial_without_per_atom_computes(model, name, nprocs, models, tmp_path):
    """No per-atom energy or virial asked: the pair gradients are summed into atom
    gradients by the model's device and the virial is sum_i x_i (x) F_i over owned
    and ghost atoms (the other tests ask for per-atom virials, which take each
    pair's gradient). Same numbers as ASE and as the per-pair path."""
    make, numbers, units = GEOMETRIES[name]
    atoms = make()
    lammps = lammps_global_point(
        tmp_path / "global", atoms, models[model], numbers, units, nprocs=nprocs
    )
    per_pair = lammps_single_point(
        tmp_path / "pairs", atoms, models[model], numbers, units=units, nprocs=nprocs
    )
    reference = ase_single_point(atoms, models[model])
    factor = energy_factor(units)
    assert relative_error(lammps.energy * factor, reference.energy) < FLOAT64
    assert relative_error(lammps.forces * factor, reference.forces) < FLOAT64
    assert relative_error(lammps.virial * factor, reference.virial) < FLOAT64
    assert relative_error(lammps.forces, per_pair.forces) < 1e-12
    assert relative_error(lammps.virial, per_pair.virial) < 1e-12
    assert np.abs(reference.virial).max() > 1.0


@pytest.mark.parametrize("model", ["full", "float32", "two-layers"])
def test_gpu_pair_operations_on_the_cpu(model, models, tmp_path):
    """On a GPU the pair vectors and the per-atom sums of pair gradients are torch
    operations (index_select, index_add_), on the CPU plain loops; `pair_ops
    torch` makes the CPU run the GPU's operations, so that they are tested without
    a GPU: the same numbers as the loops, 2 ranks."""
    atoms = skewed_triclinic()
    runs = {
        ops: lammps_global_point(
            tmp_path / ops,
            atoms,
            models[model],
            ELEMENTS,
            nprocs=2,
            pair_options=f"pair_ops {ops}",
        )
        for ops in ["loops", "torch"]
    }
    assert "pair_ops torch" in runs["torch"].log
    loops, torch_ops = runs["loops"], runs["torch"]
    assert relative_error(torch_ops.forces, loops.forces) < 1e-12
    assert relative_error(torch_ops.virial, loops.virial) < 1e-12
    reference = ase_single_point(atoms, models[model])
    tolerance = 5e-5 if model == "float32" else FLOAT64
    assert relative_error(torch_ops.forces, reference.forces) < tolerance


@pytest.mark.parametrize(("omp", "threads"), [(None, 1), ("2", 2)])
def test_torch_threads_follow_lammps(omp, threads, models, tmp_path):
    """torch has its own OpenMP runtime in the plugin: without `threads`, it runs as
    many threads per rank as LAMMPS' OpenMP (OMP_NUM_THREADS, 1 when unset), not
    torch's default of every core under every MPI rank."""
    env = {"OMP_NUM_THREADS": omp} if omp else None
    result = lammps_global_point(
        tmp_path, small_cell(), models["full"], [28, 29], env=env
    )
    assert f"{threads} torch thread(s) per rank" in result.log


def test_check_consistency_and_threads(models, tmp_path):
    """metatomic's own input/output checks accept what the plugin gives."""
    atoms = small_cell()
    options = "check_consistency on threads 2"
    lammps = lammps_single_point(
        tmp_path, atoms, models["full"], [28, 29], pair_options=options
    )
    assert "2 torch thread(s) per rank" in lammps.log
    compare(lammps, ase_single_point(atoms, models["full"]), "metal", FLOAT64)


def test_positions_are_not_remapped(models, tmp_path):
    """LAMMPS wraps atoms into the box; compare at LAMMPS' positions."""
    atoms = skewed_triclinic()
    lammps = lammps_single_point(tmp_path, atoms, models["full"], ELEMENTS)
    moved = atoms.copy()
    moved.positions = lammps.positions
    reference = ase_single_point(moved, models["full"])
    assert relative_error(lammps.forces, reference.forces) < FLOAT64


def test_half_list_model(models, tmp_path):
    """A model asking for a half list: same physics as the full-list one."""
    atoms = skewed_triclinic()
    half = lammps_single_point(tmp_path / "half", atoms, models["half"], ELEMENTS)
    compare(half, ase_single_point(atoms, models["half"]), "metal", FLOAT64)
    full = lammps_single_point(tmp_path / "full", atoms, models["full"], ELEMENTS)
    assert relative_error(half.forces, full.forces) < 1e-12
    assert relative_error(half.energies, full.energies) < 1e-12


def test_model_reading_pairs_from_the_second_atom(models, tmp_path):
    """A full list has every pair from both ends, also across domain boundaries:
    a model summing over pairs (j, i) for atom i gets the same result."""
    atoms = skewed_triclinic()
    lammps = lammps_single_point(tmp_path, atoms, models["second"], ELEMENTS)
    compare(lammps, ase_single_point(atoms, models["second"]), "metal", FLOAT64)
    full = ase_single_point(atoms, models["full"])
    assert relative_error(lammps.forces, full.forces) < 1e-12


def test_message_passing_model(models, tmp_path):
    """Interaction range twice the cutoff: pairs between ghosts are needed."""
    atoms = alloy_500()
    lammps = lammps_single_point(tmp_path, atoms, models["two-layers"], ELEMENTS)
    compare(lammps, ase_single_point(atoms, models["two-layers"]), "metal", FLOAT64)
    assert "interaction range 8" in lammps.log


@pytest.mark.parametrize("units", ["metal", "real"])
def test_model_in_other_units(units, models, tmp_path):
    """A model declaring nm and kJ/mol: inputs and outputs are converted."""
    atoms = skewed_triclinic()
    lammps = lammps_single_point(
        tmp_path, atoms, models["nm-kJ"], ELEMENTS, units=units
    )
    reference = ase_single_point(atoms, models["nm-kJ"])
    compare(lammps, reference, units, FLOAT64)
    # and it is the same potential as the eV/Angstrom model
    same = ase_single_point(atoms, models["full"])
    assert relative_error(reference.forces, same.forces) < 1e-12


def test_float32_model(models, tmp_path):
    """float32: LAMMPS and ASE sum the same float32 terms in different orders.

    With unit roundoff u = 6e-8, a force sums ~80 pair terms each up to ~10x the
    largest force, so differences up to ~u * sqrt(80) * 10 = 5e-6 of the largest
    force are expected (measured: 4e-6); energies and virials sum positive-definite
    terms over 500 atoms and agree to ~u * sqrt(500) ~ 1e-6 (measured: 6e-7).
    Tolerances: 5e-5 for forces, 1e-5 for energies and virials.
    """
    atoms = alloy_500()
    lammps = lammps_single_point(tmp_path, atoms, models["float32"], ELEMENTS)
    reference = ase_single_point(atoms, models["float32"])
    errors = compare(lammps, reference, "metal", 5e-5)
    for name in ("energy", "energies", "virial", "sum of per-atom virials"):
        assert errors[name] < 1e-5, (name, errors[name])
    assert "dtype float32" in lammps.log
    # without per-atom computes (pair gradients summed per atom in float64)
    summed = lammps_global_point(
        tmp_path / "global", atoms, models["float32"], ELEMENTS
    )
    assert relative_error(summed.forces, reference.forces) < 5e-5
    assert relative_error(summed.virial, reference.virial) < 1e-5
    # float32 really was used: not bitwise the float64 model
    full = ase_single_point(atoms, models["full"])
    assert relative_error(lammps.forces, full.forces) > 1e-12


def test_several_types_per_element_and_empty_types(models, tmp_path):
    """Types 1 and 3 are both Ni; type 5 (Cu) has no atom."""
    atoms = skewed_triclinic()
    numbers = [28, 29, 28, 78, 29]
    rng = np.random.default_rng(0)
    first = {28: [1, 3], 29: [2], 78: [4]}
    types = [int(rng.choice(first[int(z)])) for z in atoms.numbers]
    assert 3 in types and 5 not in types
    lammps = lammps_single_point(tmp_path, atoms, models["full"], numbers, types=types)
    compare(lammps, ase_single_point(atoms, models["full"]), "metal", FLOAT64)


def test_hybrid_overlay(models, tmp_path):
    """Under pair_style hybrid/overlay (here with the zero pair style)."""
    atoms = skewed_triclinic()
    pair = (
        f"pair_style hybrid/overlay alchemical {models['full']} zero 5.0\n"
        "pair_coeff * * alchemical Ni Cu Pt\npair_coeff * * zero"
    )
    lammps = lammps_single_point(tmp_path, atoms, models["full"], ELEMENTS, pair=pair)
    compare(lammps, ase_single_point(atoms, models["full"]), "metal", FLOAT64)


def test_per_atom_virial_matches_lammps_morse(models, tmp_path):
    """With the embedding off the model is LAMMPS' morse/smooth/linear: per-atom
    energies, forces and per-atom virials must match LAMMPS' own pair style, which
    splits each pair's virial evenly between its two atoms as we do."""
    spec = ModelSpec(embedding=False)
    atoms = skewed_triclinic()
    ours = lammps_single_point(tmp_path / "ours", atoms, models["pair-only"], ELEMENTS)
    coefficients = "\n".join(
        f"pair_coeff {i} {j} {d0:.17g} {alpha:.17g} {r0:.17g}"
        for i, j, d0, alpha, r0 in morse_coefficients(spec)
    )
    morse = lammps_single_point(
        tmp_path / "morse",
        atoms,
        models["pair-only"],
        ELEMENTS,
        pair=f"pair_style morse/smooth/linear {spec.cutoff}\n{coefficients}",
    )
    assert relative_error(ours.energy, morse.energy) < FLOAT64
    assert relative_error(ours.energies, morse.energies) < FLOAT64
    assert relative_error(ours.forces, morse.forces) < FLOAT64
    assert relative_error(ours.atom_virials, morse.atom_virials) < FLOAT64
    assert relative_error(ours.virial, morse.virial) < FLOAT64


def test_forces_and_virial_are_energy_derivatives(models, tmp_path):
    """Independent of ASE: central differences (h = 1e-4 A, error ~h^2) of LAMMPS'
    own energy give its forces and virial (measured agreement: 1e-8)."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=14)
    fd = lammps_finite_differences(tmp_path, atoms, models["full"], ELEMENTS, [0, 7])
    assert relative_error(fd.numeric_forces, fd.forces) < 1e-6
    assert relative_error(fd.numeric_virial, fd.virial) < 1e-6
