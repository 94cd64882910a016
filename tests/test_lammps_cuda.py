"""`device cuda`: run only where torch sees a GPU (skipped otherwise).

The plugin uses the torch it was built against; with a CUDA build of torch (see
docs/install.md) and a GPU these check that model and inputs move to the GPU and
give the CPU results, serial and with two ranks sharing the GPU(s).
"""

import pytest
import torch
from lammps_support import (
    ModelSpec,
    ase_single_point,
    export_model,
    fcc_alloy,
    lammps_global_point,
    lammps_single_point,
    plugin_built,
    relative_error,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU for torch"),
]

ELEMENTS = [28, 29, 78]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cuda")
    return {
        "float64": export_model(folder / "f64.pt", ModelSpec()),
        "float32": export_model(folder / "f32.pt", ModelSpec(dtype="float32")),
    }


@pytest.mark.parametrize("nprocs", [1, 2])
def test_cuda_matches_cpu(models, tmp_path, nprocs):
    atoms = fcc_alloy((4, 4, 4), 3.6, ELEMENTS, seed=31)
    gpu = lammps_single_point(
        tmp_path / "gpu",
        atoms,
        models["float64"],
        ELEMENTS,
        nprocs=nprocs,
        pair_options="device cuda",
    )
    assert "device cuda:0" in gpu.log
    reference = ase_single_point(atoms, models["float64"])
    assert relative_error(gpu.energy, reference.energy) < 1e-8
    assert relative_error(gpu.energies, reference.energies) < 1e-8
    assert relative_error(gpu.forces, reference.forces) < 1e-8
    assert relative_error(gpu.virial, reference.virial) < 1e-8


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("nprocs", [1, 2])
def test_cuda_without_per_atom_computes(models, tmp_path, dtype, nprocs):
    """No per-atom virial asked: the pair gradients are summed per atom on the GPU
    (the path of MD runs), against ASE on the CPU."""
    atoms = fcc_alloy((4, 4, 4), 3.6, ELEMENTS, seed=34)
    atoms.rattle(0.05, seed=5)
    gpu = lammps_global_point(
        tmp_path,
        atoms,
        models[dtype],
        ELEMENTS,
        nprocs=nprocs,
        pair_options="device cuda",
    )
    reference = ase_single_point(atoms, models[dtype])
    tolerance = {"float64": (1e-8, 1e-8), "float32": (1e-5, 5e-5)}[dtype]
    assert relative_error(gpu.energy, reference.energy) < tolerance[0]
    assert relative_error(gpu.virial, reference.virial) < tolerance[0]
    assert relative_error(gpu.forces, reference.forces) < tolerance[1]


def test_cuda_float32(models, tmp_path):
    """Same tolerances as the CPU float32 test (see test_lammps_ase)."""
    atoms = fcc_alloy((4, 4, 4), 3.6, ELEMENTS, seed=32)
    gpu = lammps_single_point(
        tmp_path, atoms, models["float32"], ELEMENTS, pair_options="device cuda:0"
    )
    reference = ase_single_point(atoms, models["float32"])
    assert relative_error(gpu.energy, reference.energy) < 1e-5
    assert relative_error(gpu.forces, reference.forces) < 5e-5


def test_default_device_is_cuda(models, tmp_path):
    """The model lists cuda first among its devices: it is the default."""
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=33)
    result = lammps_single_point(tmp_path, atoms, models["float64"], ELEMENTS)
    assert "device cuda" in result.log
    # on a GPU the owned atoms go to the model at once unless `chunk N` is given
    assert "chunk all" in result.log
