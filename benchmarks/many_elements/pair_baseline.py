"""What a pair potential alone reaches on the many-element data.

    .venv/bin/python benchmarks/many_elements/pair_baseline.py [--train 300 1000 3000]

For each training-set size: the model's own pair potential and composition
energies (alchem.pair_potential, the Alchemical Model's default 16 Gaussians per
element pair), fitted by ridge regression to the training energies and forces
exactly as alchem-train does before its first epoch, with no network, and their
energy and force RMSE on the training subset, the validation set and the test
set. Also the composition baseline alone. Prints a table and writes
results/pair_baseline.csv.
"""

import argparse
import csv
import os
import time

import torch
from alchem.data import dataset_info, read_structures
from alchem.model import fit_composition_and_scale
from alchem.options import expand_options
from alchem.pair_potential import pair_energies_and_forces
from alchem.training import build_model

HERE = os.path.dirname(os.path.abspath(__file__))


def read(path: str, options: dict):
    section = dict(
        options["training_set"],
        systems=dict(options["training_set"]["systems"], read_from=path),
    )
    return read_structures(section, 5.0, path)


def errors(model, structures, pairs: bool) -> tuple[float, float]:
    """Energy (meV/atom) and force-component (meV/Å) RMSE of composition (+ pairs)."""
    energy_errors, force_errors = [], []
    for structure in structures:
        species = model.type_to_index[structure.numbers]
        energy, forces = pair_energies_and_forces(model.pair, structure, species)
        if not pairs:
            energy, forces = 0.0, torch.zeros_like(forces)
        energy += float(model.composition[species].sum())
        energy_errors.append((energy - structure.energy) / len(species))
        force_errors.append((forces - structure.forces).reshape(-1))
    energy_rmse = torch.tensor(energy_errors).pow(2).mean().sqrt()
    force_rmse = torch.cat(force_errors).pow(2).mean().sqrt()
    return 1000 * float(energy_rmse), 1000 * float(force_rmse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--data", default=os.path.join(HERE, "data"))
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    train_file = os.path.join(args.data, "train.xyz")
    options = expand_options(
        {"architecture": {"name": "alchemical_model"}, "training_set": train_file},
        "pair_baseline",
    )
    everything = read(train_file, options)
    validation = read(os.path.join(args.data, "validation.xyz"), options)
    test = read(os.path.join(args.data, "test.xyz"), options)
    rows = []
    for count in args.train:
        train = everything[:count]
        for pairs in (False, True):
            options["architecture"]["model"]["pair_potential"]["basis_size"] = (
                16 if pairs else 0
            )
            model = build_model(options, dataset_info(train))
            started = time.time()
            fit_composition_and_scale(model, train)
            seconds = time.time() - started
            row = {
                "model": "composition + pairs" if pairs else "composition",
                "train": count,
                "fit_seconds": round(seconds, 1),
            }
            for name, structures in (
                ("train", train),
                ("validation", validation),
                ("test", test),
            ):
                energy, force = errors(model, structures, pairs)
                row[f"{name}_energy_rmse"] = round(energy, 1)
                row[f"{name}_forces_rmse"] = round(force, 1)
            print(row, flush=True)
            rows.append(row)
            write_csv(os.path.join(args.results, "pair_baseline.csv"), rows)


def write_csv(path: str, rows: list[dict]) -> None:
    """After every row (the 3000-structure fit takes minutes): atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
