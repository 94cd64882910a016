"""Adding an element to a trained Alchemical Model: fine-tuning against from scratch.

    .venv/bin/python benchmarks/new_element.py [--epochs 20] [--base-epochs 30]
        [--base-structures 30] [--sizes 4,8,16]

An Alchemical Model is trained by ``alchem-train`` on generated EMT alloys of Cu, Ni
and Pd (rattled, strained 8-atom fcc cells, 2x1x1 cubic: small, so that the
study takes minutes). Pt is then added with
``alchem-train --fine-tune base.ckpt`` on N Cu/Ni/Pd/Pt structures, and, for
comparison, the same architecture is trained from scratch on the same N structures
for the same number of epochs. Both are evaluated on 30 held-out Cu/Ni/Pd/Pt
structures (energy RMSE per atom, force RMSE), and the fine-tuned models also on
30 held-out Cu/Ni/Pd structures (what the base model knew). Results:
benchmarks/results/new_element.csv and .md.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
RESULTS = os.path.join(HERE, "results")

MODEL = {
    "soap": {
        "cutoff": 4.5,
        "basis_cutoff_power_spectrum": 100,
        "num_pseudo_species": 3,
    },
    "bpnn": {"hidden_sizes": [32, 32]},
}


def options(path: str, training_set: str, epochs: int, learning_rate: float) -> None:
    document = {
        "seed": 1,
        "architecture": {
            "name": "alchemical_model",
            "model": MODEL,
            "training": {
                "num_epochs": epochs,
                "batch_size": 4,
                "learning_rate": learning_rate,
                "log_interval": epochs,
                "checkpoint_interval": 10**6,
            },
        },
        "training_set": training_set,
        "validation_set": 0.2,
    }
    with open(path, "w") as handle:
        yaml.safe_dump(document, handle)


def train(folder: str, name: str, *extra: str) -> float:
    started = time.perf_counter()
    command = [os.path.join(BIN, "alchem-train"), f"{name}.yaml", "-o", f"{name}.pt"]
    command += ["--run-dir", f"run-{name}", *extra]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return time.perf_counter() - started


def test_errors(checkpoint: str, path: str) -> tuple[float, float]:
    """Energy (meV/atom) and force (meV/Å) RMSE of the checkpoint's best model."""
    import torch
    from alchem.data import read_structures
    from alchem.training import (
        References,
        evaluate,
        metrics,
        model_from_checkpoint,
        precision,
    )

    model, opts = model_from_checkpoint(checkpoint)
    section = {
        "systems": {"read_from": path, "reader": None, "length_unit": "angstrom"},
        "targets": opts["training_set"]["targets"],
    }
    cutoff = float(opts["architecture"]["model"]["soap"]["cutoff"])
    structures = read_structures(section, cutoff, path)
    targets = {"energy": True, "forces": True, "virial": False}
    predictions = evaluate(
        model, structures, targets, 8, precision(opts), torch.device("cpu")
    )
    values = metrics(predictions, References.of(structures), targets)
    return values["energy_rmse"], values["forces_rmse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--base-structures", type=int, default=30)
    parser.add_argument("--sizes", default="4,8,16")
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=0.001,
        help="a fresh Adam moves every weight by about this much per step: smaller "
        "than from scratch, so that a few structures do not undo the base training",
    )
    parser.add_argument(
        "--folder", default=None, help="work here; a base.ckpt already there is reused"
    )
    parser.add_argument(
        "--replay",
        type=int,
        default=0,
        help="also train both arms on the first N structures of the base set",
    )
    parser.add_argument("--name", default="new_element", help="results file name")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    from alchem.data.emt import write_emt_dataset

    folder = args.folder or tempfile.mkdtemp(prefix="alchem-new-element-")
    os.makedirs(folder, exist_ok=True)
    reuse = os.path.isfile(f"{folder}/base.ckpt")
    old, new = ("Cu", "Ni", "Pd"), ("Cu", "Ni", "Pd", "Pt")
    cells = {"repeat": (2, 1, 1)}
    write_emt_dataset(
        f"{folder}/base.xyz", args.base_structures, elements=old, seed=1, **cells
    )
    write_emt_dataset(
        f"{folder}/pool.xyz", 4 * max(sizes), elements=new, seed=2, **cells
    )
    write_emt_dataset(f"{folder}/test-pt.xyz", 30, elements=new, seed=3, **cells)
    write_emt_dataset(f"{folder}/test-old.xyz", 30, elements=old, seed=4, **cells)
    import ase.io

    # the fine-tuning structures all contain Pt (8-atom cells may have none)
    pool = [a for a in ase.io.read(f"{folder}/pool.xyz", ":") if 78 in a.numbers]
    assert len(pool) >= max(sizes)

    options(f"{folder}/base.yaml", "base.xyz", args.base_epochs, args.learning_rate)
    seconds = 0.0 if reuse else train(folder, "base")
    base_errors = test_errors(f"{folder}/base.ckpt", f"{folder}/test-old.xyz")
    print(
        f"base (Cu Ni Pd, {args.base_structures} structures): {seconds:.0f} s, "
        f"Cu/Ni/Pd test E {base_errors[0]:.2f} meV/atom, F {base_errors[1]:.1f} meV/Å"
    )

    rows = []
    for n in sizes:
        replayed = ase.io.read(f"{folder}/base.xyz", f":{args.replay}")
        ase.io.write(f"{folder}/pt-{n}.xyz", pool[:n] + replayed)
        for mode in ("fine-tune", "scratch"):
            name = f"{mode}-{n}"
            if mode == "fine-tune":
                rate, extra = args.fine_tune_learning_rate, ("--fine-tune", "base.ckpt")
            else:
                rate, extra = args.learning_rate, ()
            options(f"{folder}/{name}.yaml", f"pt-{n}.xyz", args.epochs, rate)
            seconds = train(folder, name, *extra)
            energy, forces = test_errors(
                f"{folder}/{name}.ckpt", f"{folder}/test-pt.xyz"
            )
            row = {
                "structures_with_pt": n,
                "replayed_base_structures": args.replay,
                "start": mode,
                "epochs": args.epochs,
                "learning_rate": rate,
                "seconds": round(seconds, 1),
                "pt_test_energy_rmse": round(energy, 2),
                "pt_test_forces_rmse": round(forces, 1),
                "old_test_energy_rmse": "",
                "old_test_forces_rmse": "",
            }
            if mode == "fine-tune":
                old_energy, old_forces = test_errors(
                    f"{folder}/{name}.ckpt", f"{folder}/test-old.xyz"
                )
                row["old_test_energy_rmse"] = round(old_energy, 2)
                row["old_test_forces_rmse"] = round(old_forces, 1)
            print(row, flush=True)
            rows.append(row)

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.name}.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Base: Cu/Ni/Pd, {args.base_structures} structures, {args.base_epochs} "
        f"epochs, learning rate {args.learning_rate}; fine-tuning (learning rate "
        f"{args.fine_tune_learning_rate}) and from scratch (learning rate "
        f"{args.learning_rate}): {args.epochs} epochs each, on the structures with "
        f"Pt and the first {args.replay} of the base set; "
        f"its Cu/Ni/Pd test errors: E {base_errors[0]:.2f} meV/atom, "
        f"F {base_errors[1]:.1f} meV/Å.",
        "",
        "| structures with Pt | start | Cu/Ni/Pd/Pt test E (meV/atom) | F (meV/Å) "
        "| Cu/Ni/Pd test E (meV/atom) | F (meV/Å) | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['structures_with_pt']} | {row['start']} | "
            f"{row['pt_test_energy_rmse']} | {row['pt_test_forces_rmse']} | "
            f"{row['old_test_energy_rmse']} | {row['old_test_forces_rmse']} | "
            f"{row['seconds']} |"
        )
    with open(os.path.join(RESULTS, f"{args.name}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
