"""A model this project did not train: metatrain's SOAP-BPNN (`mtt train`, float32,
sphericart-torch through torch-spex) in LAMMPS, against ASE and finite differences.

metatrain is not a dependency: the test runs where an `mtt` executable is found
(`$ALCHEM_MTT`, next to this Python, or on PATH), e.g. a separate benchmark venv
made with `pip install -c constraints.txt "metatrain[soap-bpnn]"`; skipped
otherwise.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lammps_support import (
    ase_single_point,
    fcc_alloy,
    lammps_finite_differences,
    lammps_single_point,
    plugin_built,
    relative_error,
)


def _mtt() -> str | None:
    candidates = [
        os.environ.get("ALCHEM_MTT", ""),
        str(Path(sys.executable).parent / "mtt"),
        shutil.which("mtt") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
    pytest.mark.skipif(_mtt() is None, reason="metatrain (mtt) not installed"),
]

ELEMENTS = [28, 29, 78]

OPTIONS = """
seed: 42
architecture:
  name: soap_bpnn
  model:
    soap: {max_angular: 3, max_radial: 4, cutoff: {radius: 4.5}}
    bpnn: {num_neurons_per_layer: 16}
  training: {num_epochs: 2, batch_size: 4, log_interval: 1}
training_set:
  systems: {read_from: train.xyz}
  targets:
    energy: {key: energy, unit: eV}
validation_set: 0.2
test_set: 0.0
"""


@pytest.fixture(scope="module")
def metatrain_model(emt_dir, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("metatrain")
    shutil.copy(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
    (folder / "options.yaml").write_text(OPTIONS)
    result = subprocess.run(
        [_mtt(), "train", "options.yaml", "-o", "model.pt"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"model": str(folder / "model.pt"), "extensions": str(folder / "extensions")}


def test_metatrain_soap_bpnn(metatrain_model, tmp_path):
    """float32 model: same tolerances as test_lammps_ase.test_float32_model."""
    # sphericart's own (Python) autograd for the ASE reference
    pytest.importorskip("sphericart.torch")
    model = metatrain_model["model"]
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=51)
    reference = ase_single_point(atoms, model, metatrain_model["extensions"])
    for nprocs in (1, 2):
        lammps = lammps_single_point(
            tmp_path / f"np{nprocs}", atoms, model, ELEMENTS, nprocs=nprocs
        )
        assert "dtype float32" in lammps.log
        assert relative_error(lammps.energy, reference.energy) < 1e-5
        assert relative_error(lammps.energies, reference.energies) < 1e-5
        assert relative_error(lammps.forces, reference.forces) < 5e-5
        assert relative_error(lammps.virial, reference.virial) < 1e-5


def test_metatrain_forces_are_energy_derivatives(metatrain_model, tmp_path):
    """float32 energies (~1e-5 eV resolution on ~100 eV) need a larger step: h =
    1e-2 A, whose h^2 error and float32 noise stay below 2e-3 of the largest force
    (measured 6e-4); forces missing sphericart's gradient were 9 % off."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=52)
    fd = lammps_finite_differences(
        tmp_path, atoms, metatrain_model["model"], ELEMENTS, [0, 5, 11], h=1e-2
    )
    assert relative_error(fd.numeric_forces, fd.forces) < 2e-3
    assert np.abs(fd.forces).max() > 1e-2


EVAL_OPTIONS = """
systems: {read_from: test.xyz}
targets:
  energy: {key: energy, unit: eV}
"""


def test_mtt_eval_of_an_alchem_model(trained, tmp_path):
    """metatrain's `mtt eval`, another metatomic engine, evaluates an alchem model
    with the extensions folder written beside it; its energies equal alchem's."""
    import ase.io
    from alchem.calculator import load_calculator

    folder = Path(trained["dir"])
    shutil.copy(os.path.join(folder, "train.xyz"), tmp_path / "test.xyz")
    (tmp_path / "eval.yaml").write_text(EVAL_OPTIONS)
    result = subprocess.run(
        [_mtt(), "eval", trained["model"], "eval.yaml"]
        + ["-e", str(folder / "extensions"), "-o", "predictions.xyz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    predicted = ase.io.read(tmp_path / "predictions.xyz", ":")
    structures = ase.io.read(tmp_path / "test.xyz", ":")
    calculator = load_calculator(trained["model"])
    for atoms, mtt_atoms in zip(structures, predicted, strict=True):
        atoms.calc = calculator
        mtt_energy = mtt_atoms.info.get("energy", None)
        if mtt_energy is None:
            mtt_energy = mtt_atoms.get_potential_energy()
        assert abs(float(mtt_energy) - atoms.get_potential_energy()) < 1e-8
