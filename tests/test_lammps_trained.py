"""This project's trained models (SOAP-BPNN, Alchemical Model; `trained` fixture of
conftest: 4 epochs on EMT Cu/Ni/Pt) in LAMMPS against ASE, with their TorchScript
extensions (sphericart-torch) loaded from the `extensions/` folder beside model.pt.
"""

import os
import shutil
import subprocess
import zipfile

import ase
import pytest
from conftest import BIN
from lammps_support import (
    ase_single_point,
    energy_factor,
    fcc_alloy,
    lammps_finite_differences,
    lammps_single_point,
    lower_triangular,
    plugin_built,
    relative_error,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

ELEMENTS = [28, 29, 78]  # Ni Cu Pt, as in the training data


def _check(lammps, reference, units: str = "metal", tolerance: float = 1e-8) -> None:
    factor = energy_factor(units)
    assert relative_error(lammps.energy * factor, reference.energy) < tolerance
    assert relative_error(lammps.energies * factor, reference.energies) < tolerance
    assert relative_error(lammps.forces * factor, reference.forces) < tolerance
    assert relative_error(lammps.virial * factor, reference.virial) < tolerance
    assert relative_error(lammps.virial_sum * factor, reference.virial) < tolerance


def _extensions(trained) -> str | None:
    folder = os.path.join(trained["dir"], "extensions")
    return folder if os.path.isdir(folder) else None


def test_small_cell(trained, tmp_path):
    """4 atoms in a 3.6 A cell, cutoff 4.5 A: many periodic images of each atom."""
    atoms = fcc_alloy((1, 1, 1), 3.6, [28, 29, 78], seed=41)
    lammps = lammps_single_point(tmp_path, atoms, trained["model"], ELEMENTS)
    if _extensions(trained) is not None:
        assert f"extensions from {_extensions(trained)}" in lammps.log
    _check(lammps, ase_single_point(atoms, trained["model"], _extensions(trained)))


def test_forces_are_energy_derivatives(trained, tmp_path):
    """LAMMPS' forces and virial against central differences of its own energy
    (h = 1e-4 A): agreement with ASE alone would not catch a model whose
    gradients are wrong in both (e.g. a custom op without autograd in C++)."""
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=44)
    fd = lammps_finite_differences(tmp_path, atoms, trained["model"], ELEMENTS, [0, 9])
    assert relative_error(fd.numeric_forces, fd.forces) < 1e-6
    assert relative_error(fd.numeric_virial, fd.virial) < 1e-6


def test_triclinic_real_units_and_mpi(trained, tmp_path):
    base = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=42)
    atoms = ase.Atoms(
        numbers=base.numbers,
        scaled_positions=base.get_scaled_positions(),
        cell=lower_triangular(10.8, 10.8, 10.8, 4.8, -4.2, 5.0),
        pbc=True,
    )
    reference = ase_single_point(atoms, trained["model"], _extensions(trained))
    serial = lammps_single_point(
        tmp_path / "np1", atoms, trained["model"], ELEMENTS, units="real"
    )
    _check(serial, reference, "real")
    parallel = lammps_single_point(
        tmp_path / "np2", atoms, trained["model"], ELEMENTS, units="real", nprocs=2
    )
    assert relative_error(parallel.energy, serial.energy) < 1e-10
    assert relative_error(parallel.forces, serial.forces) < 1e-10
    assert relative_error(parallel.virial, serial.virial) < 1e-10


def test_extensions_keyword(trained, tmp_path):
    """model.pt alone in another folder, its extensions named explicitly."""
    if _extensions(trained) is None:
        pytest.skip(
            f"the {trained['architecture']} model uses no TorchScript extension"
        )
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(trained["model"], folder / "model.pt")
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=43)
    lammps = lammps_single_point(
        tmp_path / "run",
        atoms,
        folder / "model.pt",
        ELEMENTS,
        pair_options=f"extensions {_extensions(trained)}",
    )
    assert f"extensions from {_extensions(trained)}" in lammps.log
    _check(lammps, ase_single_point(atoms, trained["model"], _extensions(trained)))


def test_cpu_kernel_in_lammps(trained, tmp_path):
    """The exported models call alchem::power_spectrum (the CPU kernel the pair
    style links), so every test above runs it; the same
    checkpoint exported on the model's torch operations (`--torch-only`)
    gives the same energies, forces and virials in LAMMPS, on 1 and 2 ranks."""
    assert "ops.alchem.power_spectrum" in _code(trained["model"])
    torch_ops = str(tmp_path / "torch-ops.pt")
    subprocess.run(
        [os.path.join(BIN, "alchem-export"), trained["checkpoint"], "-o", torch_ops]
        + ["--torch-only"],
        check=True,
        capture_output=True,
    )
    assert "ops.alchem.power_spectrum" not in _code(torch_ops)
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=45)
    for nprocs in (1, 2):
        kernel = lammps_single_point(
            tmp_path / f"kernel{nprocs}",
            atoms,
            trained["model"],
            ELEMENTS,
            nprocs=nprocs,
        )
        reference = lammps_single_point(
            tmp_path / f"torch{nprocs}", atoms, torch_ops, ELEMENTS, nprocs=nprocs
        )
        _check(kernel, reference, tolerance=1e-10)


def _code(model: str) -> str:
    """The TorchScript code stored in an exported model."""
    with zipfile.ZipFile(model) as archive:
        return "".join(
            archive.read(name).decode()
            for name in archive.namelist()
            if "/code/" in name and name.endswith(".py")
        )
