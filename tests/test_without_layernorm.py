"""Models trained without LayerNorm (SOAP-BPNN ``bpnn.layernorm: false``, Alchemical
Model ``soap.normalize: false``) export and give the numbers of the in-memory model
through ASE (alchem.calculator) and LAMMPS, on the CPU kernel and on the torch
operations (``alchem-export --torch-only``).

Training and export run as subprocesses, i.e. in fresh processes: TorchScript
resolved ``isinstance(..., torch.nn.LayerNorm)`` only in a process that had already
scripted a LayerNorm, so exporting a SOAP-BPNN without one failed there.
"""

import os

import numpy as np
import pytest
import torch
from alchem.calculator import load_calculator
from alchem.data import DatasetInfo, collate, structure_from_atoms
from alchem.data.emt import write_emt_dataset
from alchem.model import predict
from alchem.options import expand_options
from alchem.training import build_model, model_from_checkpoint
from conftest import ARCHITECTURES, SMALL_HYPERS, run_cli, write_options
from lammps_support import fcc_alloy, lammps_single_point, plugin_built

ELEMENTS = [28, 29, 78]  # Ni Cu Pt, as in the training data
# (architecture, section, option) that turns the LayerNorm off
WITHOUT_LAYERNORM = [
    case
    for case in [
        ("soap_bpnn", "bpnn", "layernorm"),
        ("alchemical_model", "soap", "normalize"),
    ]
    if case[0] in ARCHITECTURES
]


def small_hypers(section: str, option: str, architecture: str, value: bool) -> dict:
    hypers = {key: dict(value) for key, value in SMALL_HYPERS[architecture].items()}
    hypers[section][option] = value
    return hypers


def in_memory(model, atoms, use_kernel: bool) -> dict[str, np.ndarray]:
    """Energy, per-atom energies, forces and virial (eV, eV/A) of the model in this
    process, on the CPU kernel or on the torch operations."""
    model.architecture.use_backend("kernel" if use_kernel else "torch")
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to(
        "cpu", torch.float64
    )
    out = predict(model, batch, forces=True, virial=True)
    return {
        "energy": out["energy"].detach().numpy()[0],
        "energies": out["atomic_energies"].detach().numpy(),
        "forces": out["forces"].detach().numpy(),
        "virial": out["virial"].detach().numpy()[0],
    }


def through_ase(model_path: str, atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = load_calculator(model_path, device="cpu")
    return {
        "energy": atoms.get_potential_energy(),
        "energies": atoms.get_potential_energies(),
        "forces": atoms.get_forces(),
        "virial": -atoms.get_stress(voigt=False) * atoms.get_volume(),
    }


def assert_same(actual: dict, expected: dict, what: str, tolerance: float) -> None:
    for key, value in expected.items():
        scale = max(float(np.max(np.abs(value))), 1e-300)
        error = float(np.max(np.abs(np.asarray(actual[key]) - value))) / scale
        assert error < tolerance, f"{what}: {key} differs by {error:.2e} (relative)"


@pytest.mark.slow
@pytest.mark.skipif(
    not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
)
@pytest.mark.parametrize("architecture,section,option", WITHOUT_LAYERNORM)
def test_model_without_layernorm_exports_and_runs(
    architecture, section, option, tmp_path
):
    # 10 structures, 2 epochs: the second epoch's train() follows an eval()
    write_emt_dataset(
        str(tmp_path / "train.xyz"), 10, elements=("Cu", "Ni", "Pt"), seed=11
    )
    write_options(
        str(tmp_path / "options.yaml"),
        architecture,
        model=small_hypers(section, option, architecture, False),
        training={"num_epochs": 2},
    )
    run_cli("alchem-train", "options.yaml", "--run-dir", "run", cwd=str(tmp_path))
    (tmp_path / "torch").mkdir()
    run_cli(
        "alchem-export",
        "model.ckpt",
        "-o",
        "torch/model.pt",
        "--torch-only",
        cwd=str(tmp_path),
    )

    model, _ = model_from_checkpoint(str(tmp_path / "model.ckpt"))
    for key, value in model.state_dict().items():  # no LayerNorm parameters
        assert "layernorm" not in key or value.numel() == 0, key
        assert "cache" not in key, key  # eval()'s inference cache is no parameter
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=45)
    kernel = in_memory(model, atoms, use_kernel=True)
    torch_operations = in_memory(model, atoms, use_kernel=False)
    assert np.abs(kernel["forces"]).max() > 1e-4  # forces are not trivially zero
    assert_same(kernel, torch_operations, "kernel against torch operations", 1e-12)

    # alchem-train's model.pt runs on the CPU kernel, the --torch-only export not
    assert_same(
        through_ase(str(tmp_path / "model.pt"), atoms), kernel, "model.pt", 1e-10
    )
    assert_same(
        through_ase(str(tmp_path / "torch" / "model.pt"), atoms),
        torch_operations,
        "--torch-only",
        1e-10,
    )
    assert not os.path.exists(tmp_path / "torch" / "extensions")

    lammps = lammps_single_point(
        tmp_path / "lammps", atoms, str(tmp_path / "model.pt"), ELEMENTS
    )
    assert "extensions from" in lammps.log
    assert_same(
        {
            "energy": lammps.energy,
            "energies": lammps.energies,
            "forces": lammps.forces,
            "virial": lammps.virial,
        },
        kernel,
        "LAMMPS",
        1e-8,
    )


@pytest.mark.parametrize("architecture,section,option", WITHOUT_LAYERNORM)
def test_layernorm_parameters_keep_their_names(architecture, section, option, emt_dir):
    """Checkpoints of models with LayerNorm keep loading: its parameters keep the
    state-dict keys they were saved under, and the model still scripts."""
    options = expand_options(
        {
            "architecture": {
                "name": architecture,
                "model": small_hypers(section, option, architecture, True),
            },
            "training_set": f"{emt_dir}/train.xyz",
        },
        "test",
    )
    model = build_model(options, DatasetInfo(ELEMENTS, 30.0))
    expected = {
        "soap_bpnn": {"architecture.layernorm.weight", "architecture.layernorm.bias"},
        "alchemical_model": {
            "architecture.layernorm_weight",
            "architecture.layernorm_bias",
        },
    }[architecture]
    state = model.state_dict()
    assert expected <= set(state)
    assert all(state[key].numel() > 0 for key in expected)
    torch.jit.script(model.architecture.eval())
