"""`mpirun -np 1, 2, 4`: the same energies, forces and virials (1e-10).

Ghost atoms carry forces that LAMMPS sends back to their owners; a mistake there
(double counting, forgotten ghosts, a reshape on an empty domain) shows up only
with several ranks. On 2 cores, 4 ranks oversubscribe (MPICH allows it).
"""

import ase
import numpy as np
import pytest
from lammps_support import (
    ModelSpec,
    ase_single_point,
    export_model,
    fcc_alloy,
    lammps_single_point,
    plugin_built,
    relative_error,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

ELEMENTS = [28, 29, 78]
RANKS = [1, 2, 4]


def half_vacuum() -> ase.Atoms:
    """Atoms in the lower half of a periodic box: with the ranks stacked along x
    (`processors N 1 1`), the upper ranks own no atom at all."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=21)
    atoms.cell[0, 0] *= 2.0
    return atoms


def alloy() -> ase.Atoms:
    return fcc_alloy((4, 4, 4), 3.6, ELEMENTS, seed=22)


def slab() -> ase.Atoms:
    """Mixed boundaries (p p f) under domain decomposition."""
    atoms = fcc_alloy((4, 4, 3), 3.6, ELEMENTS, seed=23)
    atoms.pbc = [True, True, False]
    atoms.cell[2, 2] = 25.0
    atoms.positions[:, 2] += 4.0
    return atoms


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("mpi-models")
    return {
        "full": export_model(folder / "full.pt", ModelSpec()),
        "half": export_model(folder / "half.pt", ModelSpec(full_list=False)),
        "two-layers": export_model(folder / "mp.pt", ModelSpec(layers=2, cutoff=4.0)),
    }


def _check_same(results: dict[int, object], reference) -> None:
    serial = results[1]
    for nprocs, result in results.items():
        assert relative_error(result.energy, serial.energy) < 1e-10, nprocs
        assert relative_error(result.energies, serial.energies) < 1e-10, nprocs
        assert relative_error(result.forces, serial.forces) < 1e-10, nprocs
        assert relative_error(result.virial, serial.virial) < 1e-10, nprocs
        assert relative_error(result.virial_sum, serial.virial) < 1e-10, nprocs
        # and all of them agree with ASE
        assert relative_error(result.forces, reference.forces) < 1e-8, nprocs
        assert relative_error(result.virial, reference.virial) < 1e-8, nprocs


@pytest.mark.parametrize(
    "model, make",
    [("full", alloy), ("half", alloy), ("two-layers", alloy), ("full", slab)],
    ids=["full", "half", "two-layers", "slab-ppf"],
)
def test_ranks_agree(model, make, models, tmp_path):
    atoms = make()
    results = {
        n: lammps_single_point(
            tmp_path / f"np{n}", atoms, models[model], ELEMENTS, nprocs=n
        )
        for n in RANKS
    }
    assert "with 4 MPI tasks" in results[4].log
    _check_same(results, ase_single_point(atoms, models[model]))


def test_ranks_without_atoms(models, tmp_path):
    atoms = half_vacuum()
    results = {}
    for n in RANKS:
        results[n] = lammps_single_point(
            tmp_path / f"np{n}",
            atoms,
            models["full"],
            ELEMENTS,
            nprocs=n,
            before=f"processors {n} 1 1" if n > 1 else "",
        )
    # some ranks really owned nothing: LAMMPS' per-rank atom counts reach 0
    log = results[4].log
    nlocal = next(line for line in log.splitlines() if line.startswith("Nlocal:"))
    assert float(nlocal.split()[-2]) == 0.0, nlocal  # "min" column
    _check_same(results, ase_single_point(atoms, models["full"]))
    assert np.abs(results[1].forces).max() > 0.1
