"""Shared fixtures: generated EMT data and small trained models (real CLI runs)."""

import os
import subprocess
import sys

import pytest
import yaml
from alchem.architectures import available
from alchem.data.emt import write_emt_dataset

BIN = os.path.dirname(sys.executable)

# Small hyperparameters so a test model trains in seconds; the defaults are
# exercised by the tests that check them.
SMALL_HYPERS = {
    "soap_bpnn": {
        "soap": {"cutoff": 4.5, "max_radial": 4, "max_angular": 3},
        "bpnn": {"num_neurons_per_layer": 16},
    },
    "alchemical_model": {
        "soap": {
            "cutoff": 4.5,
            "basis_cutoff_power_spectrum": 100,
            "num_pseudo_species": 2,
        },
        "bpnn": {"hidden_sizes": [16, 16]},
    },
}

ARCHITECTURES = [name for name in SMALL_HYPERS if name in available()]


def run_cli(*args: str, cwd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the project's commands as a user would."""
    command = [os.path.join(BIN, args[0]), *args[1:]]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def write_options(path: str, architecture: str, **overrides) -> str:
    """An options file training ``architecture`` with the small hyperparameters."""
    # float64: the tests compare engines and ranks to 1e-10 and beyond
    options = {
        "seed": 3,
        "base_precision": 64,
        "architecture": {
            "name": architecture,
            "model": SMALL_HYPERS[architecture],
            "training": {"num_epochs": 4, "batch_size": 4, "log_interval": 1},
        },
        "training_set": "train.xyz",
        "validation_set": 0.2,
    }
    for key, value in overrides.items():
        if key == "training":
            options["architecture"]["training"].update(value)
        elif key == "model":
            options["architecture"]["model"] = value
        else:
            options[key] = value
    with open(path, "w") as handle:
        yaml.safe_dump(options, handle)
    return path


@pytest.fixture(scope="session")
def emt_dir(tmp_path_factory) -> str:
    """A folder with train.xyz: 40 rattled, strained Cu/Ni/Pt fcc cells (EMT labels)."""
    folder = tmp_path_factory.mktemp("emt")
    write_emt_dataset(
        str(folder / "train.xyz"), 40, elements=("Cu", "Ni", "Pt"), seed=11
    )
    write_emt_dataset(str(folder / "test.xyz"), 6, elements=("Cu", "Ni", "Pt"), seed=12)
    return str(folder)


@pytest.fixture(scope="session", params=ARCHITECTURES)
def trained(request, emt_dir, tmp_path_factory) -> dict:
    """A small model of each architecture trained by ``alchem-train`` for 4 epochs."""
    folder = tmp_path_factory.mktemp(f"trained-{request.param}")
    os.symlink(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
    write_options(str(folder / "options.yaml"), request.param)
    result = run_cli(
        "alchem-train", "options.yaml", "--run-dir", "run", cwd=str(folder)
    )
    return {
        "architecture": request.param,
        "dir": str(folder),
        "model": str(folder / "model.pt"),
        "checkpoint": str(folder / "model.ckpt"),
        "log": result.stdout,
    }
