"""The uncertainty's "Done when" numbers (issue 15), with real trained models.

EMT Cu/Ni: bulk fcc cells (2x2x2 cubic, 32 atoms, random alloys from
alchem.data.emt) run by Langevin MD at 300 K give the training set and a held-out
test set (other seeds); the same cells at 2000 K give a melt and, with 10 Å of
vacuum along z, at 300 K, surface slabs. A model trained with LLPR
(``uncertainty: {method: llpr}``) is evaluated by ``alchem-eval`` on the test set
(calibration) and by ``calculator.get_uncertainty`` on all three (median per-atom
energy sigma and median force-component sigma, out of domain / in domain).

    python benchmarks/uncertainty_calibration.py [--architecture soap_bpnn]
        [--epochs 40] [--work benchmarks/work/uncertainty] [--refit]
        [--ensemble-size 16] [--seed 1] [--cutoff 4.5]

A folder that already has the data and model.pt is evaluated again as it is;
``--refit`` first fits the uncertainty of its model.ckpt again
(``alchem-uncertainty``, the same trained weights), e.g. after a change of the
method or with another ``--ensemble-size``. ``--seed N`` (N != 1) trains another
model on the same data (copied from the seed-1 folder) with that seed (another
initialization and training/validation split) in ``<architecture>-seed<N>``: the
committee that ``uncertainty_posteriors.py --committee`` compares with.
``--cutoff R`` trains with another SOAP cutoff (Å; the switch still starts 1 Å
below it) in ``<architecture>-cutoff<R>``, on the same data.
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys

import ase.io
import numpy as np
import yaml
from alchem.data.emt import emt_labelled, generate_emt_structures
from ase import units
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

BIN = os.path.dirname(sys.executable)
HYPERS = {
    "soap_bpnn": {
        "soap": {"cutoff": 4.5, "max_radial": 6, "max_angular": 4},
        "bpnn": {"num_neurons_per_layer": 32},
    },
    "alchemical_model": {
        "soap": {"cutoff": 4.5, "num_pseudo_species": 2},
        "bpnn": {"hidden_sizes": [32, 32]},
    },
}


def md_frames(cells, temperature, steps, every, seed, vacuum=0.0) -> list:
    """Snapshots (EMT-labelled) of Langevin MD of each cell, after ``every`` steps
    of equilibration, every ``every`` steps."""
    frames = []
    for index, atoms in enumerate(cells):
        atoms = atoms.copy()
        if vacuum:
            cell = atoms.cell.array.copy()
            cell[2, 2] += vacuum
            atoms.set_cell(cell, scale_atoms=False)
        atoms.calc = EMT()
        rng = np.random.default_rng(seed + index)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        dynamics = Langevin(
            atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, rng=rng
        )
        dynamics.run(every)
        for _ in range(steps // every):
            dynamics.run(every)
            frames.append(emt_labelled(atoms.copy()))
    return frames


def write_data(folder: str) -> None:
    cells = lambda n, seed: generate_emt_structures(  # noqa: E731
        n, elements=("Cu", "Ni"), rattle=0.0, strain=0.01, seed=seed
    )
    sets = {
        "train.xyz": md_frames(cells(15, 1), 300, 200, 20, seed=100),
        "test.xyz": md_frames(cells(6, 2), 300, 100, 20, seed=200),
        "test-large.xyz": md_frames(cells(30, 5), 300, 40, 20, seed=500),
        "melt.xyz": md_frames(cells(4, 3), 2000, 1000, 200, seed=300),
        "slab.xyz": md_frames(cells(6, 4), 300, 100, 20, seed=400, vacuum=10.0),
    }
    for name, frames in sets.items():
        ase.io.write(os.path.join(folder, name), frames, format="extxyz")
        print(f"{name}: {len(frames)} frames")
    mixed = [
        ase.io.read(os.path.join(folder, name), ":")
        for name in ("test-large.xyz", "melt.xyz", "slab.xyz")
    ]
    ase.io.write(os.path.join(folder, "mixed.xyz"), sum(mixed, []), format="extxyz")


DATA = ("train", "test", "test-large", "melt", "slab", "mixed")


def train(
    folder: str, architecture: str, epochs: int, ensemble_size: int, seed: int,
    cutoff: float | None,
) -> None:  # fmt: skip
    hypers = copy.deepcopy(HYPERS[architecture])
    if cutoff is not None:
        hypers["soap"]["cutoff"] = cutoff
    options = {
        "seed": seed,
        "architecture": {
            "name": architecture,
            "model": hypers,
            "training": {"num_epochs": epochs, "batch_size": 8},
        },
        "training_set": "train.xyz",
        "validation_set": 0.2,
        "uncertainty": {"method": "llpr", "ensemble_size": ensemble_size},
    }
    with open(os.path.join(folder, "options.yaml"), "w") as handle:
        yaml.safe_dump(options, handle)
    command = [os.path.join(BIN, "alchem-train"), "options.yaml", "--run-dir", "run"]
    subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL)


def median_sigmas(folder: str) -> dict[str, float]:
    from alchem.calculator import load_calculator

    calculator = load_calculator(
        os.path.join(folder, "model.pt"), uncertainty_threshold=None
    )
    medians = {}
    for name in ("test", "melt", "slab"):
        frames = ase.io.read(os.path.join(folder, f"{name}.xyz"), ":")
        results = [calculator.get_uncertainty(atoms) for atoms in frames]
        medians[name] = float(
            np.median(np.concatenate([r.atom_sigma for r in results]))
        )
        medians[f"{name} forces"] = float(np.median([r.force_sigma for r in results]))
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="soap_bpnn", choices=list(HYPERS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--work", default="benchmarks/work/uncertainty")
    parser.add_argument("--ensemble-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1, help="the training's seed")
    parser.add_argument("--cutoff", type=float, help="another SOAP cutoff (Å)")
    parser.add_argument(
        "--refit", action="store_true", help="fit the uncertainty of model.ckpt again"
    )
    args = parser.parse_args()
    first = os.path.join(args.work, args.architecture)
    folder = first if args.seed == 1 else f"{first}-seed{args.seed}"
    if args.cutoff is not None:
        folder += f"-cutoff{args.cutoff:g}"
    os.makedirs(first, exist_ok=True)
    if not os.path.exists(os.path.join(first, "mixed.xyz")):
        write_data(first)
    os.makedirs(folder, exist_ok=True)
    for name in DATA if folder != first else ():
        shutil.copyfile(
            os.path.join(first, f"{name}.xyz"), os.path.join(folder, f"{name}.xyz")
        )
    if not os.path.exists(os.path.join(folder, "model.pt")):
        train(
            folder,
            args.architecture,
            args.epochs,
            args.ensemble_size,
            args.seed,
            args.cutoff,
        )
    elif args.refit:
        fit = subprocess.run(
            [os.path.join(BIN, "alchem-uncertainty"), "model.ckpt",
             "--ensemble-size", str(args.ensemble_size)],
            cwd=folder, check=True, capture_output=True, text=True,
        )  # fmt: skip
        log = (fit.stdout + fit.stderr).splitlines()
        print("\n".join(line for line in log if "LLPR" in line))
    # calibration on the small and large in-domain sets and on both with the out
    # of domain ones (alchem-eval's report, each in its own folder)
    for name in ("test", "test-large", "mixed"):
        evaluation = subprocess.run(
            [os.path.join(BIN, "alchem-eval"), "model.pt", f"{name}.xyz", "-o",
             f"eval-{name}/predictions.xyz"],
            cwd=folder, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        lines = evaluation.splitlines()
        print(f"{name}.xyz:")
        print(
            "\n".join(
                line for line in lines if "RMSE" in line or "calibration:" in line
            )
        )
    medians = median_sigmas(folder)
    print(json.dumps({"median_atom_sigma": medians}, indent=1))
    for name in ("melt", "slab"):
        print(
            f"median per-atom energy sigma {name} / test: "
            f"{medians[name] / medians['test']:.2f}; median force sigma "
            f"{medians[f'{name} forces'] / medians['test forces']:.2f}"
        )


if __name__ == "__main__":
    main()
