"""Training on a GPU and running the trained models there (ASE and LAMMPS).

Runs only where torch sees a CUDA device (skipped otherwise). The same options are
trained once with ``device: cpu`` and once with ``device: cuda``: float64 and the same
seed give the same model up to the order of floating-point sums, so the two runs
must agree to round-off, and the GPU-trained ``model.pt`` must give the same numbers
on CPU and GPU, through ASE and through ``pair_style alchemical ... device cuda``.
"""

import csv
import os

import numpy as np
import pytest
import torch
from alchem.training import load_checkpoint
from conftest import ARCHITECTURES, run_cli, write_options
from lammps_support import (
    ase_single_point,
    fcc_alloy,
    lammps_single_point,
    plugin_built,
    relative_error,
)

pytestmark = [
    pytest.mark.slow,  # trains models of both architectures
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU for torch"),
]

ELEMENTS = [28, 29, 78]  # Ni Cu Pt, as in the training data


@pytest.fixture(scope="module", params=ARCHITECTURES)
def cpu_and_gpu(request, emt_dir, tmp_path_factory) -> dict:
    """The same 3-epoch training run on CPU and on the GPU."""
    folder = tmp_path_factory.mktemp(f"cuda-{request.param}")
    os.symlink(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
    runs = {}
    for device in ("cpu", "cuda"):
        write_options(
            str(folder / f"{device}.yaml"),
            request.param,
            device=device,
            training={"num_epochs": 3},
        )
        result = run_cli(
            "alchem-train",
            f"{device}.yaml",
            "-o",
            f"{device}.pt",
            "--run-dir",
            device,
            cwd=str(folder),
        )
        runs[device] = {
            "model": str(folder / f"{device}.pt"),
            "checkpoint": str(folder / f"{device}.ckpt"),
            "metrics": list(csv.DictReader(open(folder / device / "metrics.csv"))),
            "log": result.stdout + result.stderr,
        }
    return runs


def test_gpu_training_follows_the_cpu_run(cpu_and_gpu):
    cpu, gpu = cpu_and_gpu["cpu"], cpu_and_gpu["cuda"]
    assert len(cpu["metrics"]) == len(gpu["metrics"]) == 3
    for on_cpu, on_gpu in zip(cpu["metrics"], gpu["metrics"]):
        for column in ("train_loss", "validation_loss", "validation_forces_rmse"):
            assert float(on_gpu[column]) == pytest.approx(
                float(on_cpu[column]), rel=1e-8
            ), column
    cpu_state = load_checkpoint(cpu["checkpoint"])["model_state"]
    gpu_state = load_checkpoint(gpu["checkpoint"])["model_state"]
    for key, value in cpu_state.items():
        torch.testing.assert_close(gpu_state[key], value, rtol=1e-8, atol=1e-10)


def test_gpu_model_through_ase_on_cpu_and_gpu(cpu_and_gpu):
    from alchem import ops
    from metatomic_ase import MetatomicCalculator

    ops.load()  # the models call alchem::power_spectrum (CPU kernel)

    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=51)
    results = {}
    for device in ("cpu", "cuda"):
        calculated = atoms.copy()
        calculated.calc = MetatomicCalculator(
            cpu_and_gpu["cuda"]["model"], device=device, check_consistency=True
        )
        results[device] = (
            calculated.get_potential_energy(),
            calculated.get_forces(),
            calculated.get_stress(),
        )
    for on_cpu, on_gpu in zip(results["cpu"], results["cuda"]):
        assert relative_error(on_gpu, on_cpu) < 1e-10


@pytest.mark.skipif(
    not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
)
@pytest.mark.parametrize("nprocs", [1, 2])
def test_gpu_model_in_lammps_on_gpu(cpu_and_gpu, tmp_path, nprocs):
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=52)
    model = cpu_and_gpu["cuda"]["model"]
    lammps = lammps_single_point(
        tmp_path, atoms, model, ELEMENTS, nprocs=nprocs, pair_options="device cuda"
    )
    assert "device cuda:0" in lammps.log
    reference = ase_single_point(atoms, model)
    assert relative_error(lammps.energy, reference.energy) < 1e-8
    assert relative_error(lammps.energies, reference.energies) < 1e-8
    assert relative_error(lammps.forces, reference.forces) < 1e-8
    assert relative_error(lammps.virial, reference.virial) < 1e-8
    assert np.isfinite(lammps.forces).all()
