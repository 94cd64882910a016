"""Alchemical Model vs SOAP-BPNN on generated EMT alloys of 2, 4 and 7 elements.

    .venv/bin/python benchmarks/alchemical_study.py [--seconds 150] [--train 80]

For every element count: the same generated data (rattled, strained 32-atom fcc
cells labelled by ASE's EMT, a separate validation file), both architectures trained
by ``alchem-train`` for the same wall time, float64, one thread each, the two runs of
a pair side by side so that they share the machine's load. At 7 elements the
Alchemical Model is also trained with num_pseudo_species 1, 2 and 8, and with the
``le`` basis. Reported (CSV and Markdown in benchmarks/results/):

- parameter count of every model, and its growth with the number of elements;
- validation energy and force RMSE of the model with the best validation loss among
  the epochs that ended within the common wall time (the shorter run of a pair);
- evaluation speed of the exported model through metatomic-ase's
  MetatomicCalculator (energy + forces, one thread): structures per second on the
  32-atom validation cells, and microseconds per atom on a 256-atom cell.

The training budget is fixed in wall-clock seconds, not epochs: both runs of a pair
start together and are stopped after ``--seconds``; the comparison is read from
metrics.csv (validation metrics of every epoch) at the common time, the earlier of
the two runs' last completed epochs, and the model exported for the speed measurement is the
best one of the newest checkpoint. Other loads on the machine slow both runs of a
pair alike.
"""

import argparse
import copy
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
RESULTS = os.path.join(HERE, "results")

ELEMENTS = {
    2: ("Cu", "Ni"),
    4: ("Cu", "Ni", "Pd", "Pt"),
    7: ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"),
}
TRAINING = {
    "batch_size": 8,
    "learning_rate": 0.001,
    "log_interval": 100000,
    "checkpoint_interval": 1,
    "scheduler_patience": 10,
    "early_stopping_patience": 50,
}


def job(name: str, architecture: str, n_elements: int, model: dict | None = None):
    return {
        "name": name,
        "architecture": architecture,
        "elements": n_elements,
        "model": model or {},
    }


def pairs(element_counts: list[int], pseudo: list[int]) -> list[list[dict]]:
    """Runs that share the machine (each with one thread)."""
    slots = [
        [
            job(f"soap_bpnn-{n}", "soap_bpnn", n),
            job(f"alchemical-{n}", "alchemical_model", n),
        ]
        for n in element_counts
    ]
    extra = [
        job(
            f"alchemical-7-K{k}",
            "alchemical_model",
            7,
            {"soap": {"num_pseudo_species": k}},
        )
        for k in pseudo
        if k != 4
    ]
    extra.append(
        job(
            "alchemical-7-le",
            "alchemical_model",
            7,
            {"soap": {"radial_basis_type": "le"}},
        )
    )
    extra.append(
        job(
            "alchemical-7-percentre",
            "alchemical_model",
            7,
            {"soap": {"contract_center_species": False}},
        )
    )
    for start in range(0, len(extra), 2):
        slots.append(extra[start : start + 2])
    return slots


def named_job(name: str) -> dict:
    """soap_bpnn-N, alchemical-N, alchemical-N-K<k>, -le or -percentre."""
    parts = name.split("-")
    n = int(parts[1])
    if parts[0] == "soap_bpnn":
        return job(name, "soap_bpnn", n)
    soap: dict = {}
    for extra in parts[2:]:
        if extra.startswith("K"):
            soap["num_pseudo_species"] = int(extra[1:])
        elif extra == "le":
            soap["radial_basis_type"] = "le"
        elif extra == "percentre":
            soap["contract_center_species"] = False
        else:
            raise ValueError(f"unknown run {name}")
    return job(name, "alchemical_model", n, {"soap": soap} if soap else None)


def write_data(folder: str, n_elements: int, n_train: int, n_validation: int) -> None:
    from alchem.data.emt import write_emt_dataset

    os.makedirs(folder, exist_ok=True)
    elements = ELEMENTS[n_elements]
    train = os.path.join(folder, "train.xyz")
    if not os.path.exists(train):
        write_emt_dataset(train, n_train, elements=elements, seed=100 + n_elements)
        write_emt_dataset(
            os.path.join(folder, "validation.xyz"),
            n_validation,
            elements=elements,
            seed=200 + n_elements,
        )
        # a 256-atom cell for the per-atom speed
        write_emt_dataset(
            os.path.join(folder, "large.xyz"),
            1,
            elements=elements,
            repeat=(4, 4, 4),
            seed=300 + n_elements,
        )


def options_for(run: dict, data: str, epochs: int) -> dict:
    return {
        "seed": 0,
        "base_precision": 64,
        "architecture": {
            "name": run["architecture"],
            "model": copy.deepcopy(run["model"]),
            "training": {**TRAINING, "num_epochs": epochs},
        },
        "training_set": os.path.join(data, "train.xyz"),
        "validation_set": os.path.join(data, "validation.xyz"),
    }


def train_pair(slot: list[dict], work: str, seconds: float) -> None:
    """Train the runs of a slot side by side for ``seconds`` of wall time each.

    Every run gets an unreachable epoch count and a checkpoint every epoch (only the
    newest is kept); at the budget the runs are stopped and the newest checkpoint's
    best model (lowest validation loss so far) is exported.
    """
    processes = []
    for run in slot:
        folder = os.path.join(work, run["name"])
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        data = os.path.join(work, f"data-{run['elements']}")
        with open(os.path.join(folder, "options.yaml"), "w") as handle:
            yaml.safe_dump(options_for(run, data, 100000), handle)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = open(os.path.join(folder, "stdout.log"), "w")
        command = [
            os.path.join(BIN, "alchem-train"),
            "options.yaml",
            "--run-dir",
            "run",
        ]
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=log)
        processes.append((run, folder, process))
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        time.sleep(1.0)
        for _, folder, _ in processes:
            _keep_newest_checkpoint(folder)
        if all(p.poll() is not None for _, _, p in processes):
            break
    for run, folder, process in processes:
        if process.poll() is None:
            process.terminate()
        process.wait()
        newest = _keep_newest_checkpoint(folder)
        if newest is None:
            raise RuntimeError(f"{run['name']}: no checkpoint; see {folder}/stdout.log")
        _export(newest, folder)


def _export(checkpoint: str, folder: str) -> None:
    subprocess.run(
        [os.path.join(BIN, "alchem-export"), checkpoint, "-o", "model.pt"],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def _keep_newest_checkpoint(folder: str) -> str | None:
    run_dir = os.path.join(folder, "run")
    if not os.path.isdir(run_dir):
        return None
    found = []
    for name in os.listdir(run_dir):
        if name.startswith("epoch_") and name.endswith(".ckpt"):
            found.append((int(name[len("epoch_") : -len(".ckpt")]), name))
    found.sort()
    for _, name in found[:-1]:
        os.remove(os.path.join(run_dir, name))
    return os.path.join(run_dir, found[-1][1]) if found else None


def read_metrics(folder: str) -> list[dict]:
    with open(os.path.join(folder, "run", "metrics.csv")) as handle:
        return list(csv.DictReader(handle))


def at_time(rows: list[dict], limit: float) -> dict:
    """The best-validation-loss epoch among those finished within ``limit`` s."""
    within = [r for r in rows if float(r["elapsed"]) <= limit + 1e-9] or rows[:1]
    best = min(within, key=lambda r: float(r["validation_loss"]))
    return {
        "epochs": len(within),
        "energy_rmse": float(best["validation_energy_rmse"]),
        "forces_rmse": float(best["validation_forces_rmse"]),
    }


def count_parameters(run: dict, data: str) -> int:
    from alchem.data import DatasetInfo
    from alchem.options import expand_options
    from alchem.training import build_model

    options = expand_options(options_for(run, data, 1), "study")
    types = sorted(_numbers(ELEMENTS[run["elements"]]))
    info = DatasetInfo(atomic_types=types, mean_num_neighbors=40.0)
    model = build_model(options, info)
    return sum(p.numel() for p in model.parameters())


def _numbers(symbols):
    from ase.data import atomic_numbers

    return [atomic_numbers[s] for s in symbols]


def speed(folder: str, data: str) -> tuple[float, float]:
    """(structures/s on the validation cells, µs/atom on a 256-atom cell)."""
    code = f"""
import time, torch, ase.io
torch.set_num_threads(1)
from alchem.calculator import load_calculator
calc = load_calculator({os.path.join(folder, "model.pt")!r})
frames = ase.io.read({os.path.join(data, "validation.xyz")!r}, ":")
large = ase.io.read({os.path.join(data, "large.xyz")!r})
def run(atoms):
    atoms = atoms.copy(); calc.reset(); atoms.calc = calc
    atoms.get_potential_energy(); atoms.get_forces()
for _ in range(3):
    run(frames[0]); run(large)
start = time.perf_counter()
for atoms in frames:
    run(atoms)
per_structure = (time.perf_counter() - start) / len(frames)
best = 1e9
for _ in range(3):
    start = time.perf_counter(); run(large); best = min(best, time.perf_counter() - start)
print(1.0 / per_structure, best / len(large) * 1e6)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    rate, per_atom = out.stdout.split()[-2:]
    return float(rate), float(per_atom)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="training budget")
    parser.add_argument("--train", type=int, default=80, help="training structures")
    parser.add_argument("--validation", type=int, default=20)
    parser.add_argument("--elements", default="2,4,7")
    parser.add_argument("--pseudo", default="1,2,4,8", help="K values at 7 elements")
    parser.add_argument(
        "--work",
        default=os.path.join(tempfile.gettempdir(), "alchem-alchemical-study"),
        help="folder for the data and the runs (reused: data is generated once)",
    )
    parser.add_argument("--output", default=os.path.join(RESULTS, "alchemical_study"))
    parser.add_argument(
        "--pairs",
        default=None,
        help="instead of the full study, e.g. 'soap_bpnn-7,alchemical-7-percentre'"
        " (';' between slots)",
    )
    parser.add_argument(
        "--skip-training",
        action="store_true",
        help="reuse the runs in --work: re-export them and measure again",
    )
    args = parser.parse_args(argv)

    element_counts = [int(n) for n in args.elements.split(",")]
    pseudo = [int(k) for k in args.pseudo.split(",")]
    started = time.perf_counter()
    for n in sorted(set(element_counts) | {7}):
        write_data(os.path.join(args.work, f"data-{n}"), n, args.train, args.validation)

    if args.pairs:
        slots = [
            [named_job(name) for name in slot.split(",")]
            for slot in args.pairs.split(";")
        ]
    else:
        slots = pairs(element_counts, pseudo)
    results = []
    for slot in slots:
        print("training " + " | ".join(r["name"] for r in slot), flush=True)
        if args.skip_training:
            for run in slot:  # re-export with the current code, keep the metrics
                folder = os.path.join(args.work, run["name"])
                _export(_keep_newest_checkpoint(folder), folder)
        else:
            train_pair(slot, args.work, args.seconds)
        rows = {
            r["name"]: read_metrics(os.path.join(args.work, r["name"])) for r in slot
        }
        common = min(float(v[-1]["elapsed"]) for v in rows.values())
        for run in slot:
            folder = os.path.join(args.work, run["name"])
            data = os.path.join(args.work, f"data-{run['elements']}")
            metrics = at_time(rows[run["name"]], common)
            rate, per_atom = speed(folder, data)
            result = {
                "name": run["name"],
                "architecture": run["architecture"],
                "elements": run["elements"],
                "num_pseudo_species": run["model"]
                .get("soap", {})
                .get(
                    "num_pseudo_species",
                    4 if run["architecture"] != "soap_bpnn" else "",
                ),
                "radial_basis": run["model"]
                .get("soap", {})
                .get("radial_basis_type", "")
                or ("physical" if run["architecture"] != "soap_bpnn" else "-"),
                "parameters": count_parameters(run, data),
                "common_seconds": round(common, 1),
                "epochs_within": metrics["epochs"],
                "epochs_run": len(rows[run["name"]]),
                "seconds_per_epoch": round(
                    float(rows[run["name"]][-1]["elapsed"]) / len(rows[run["name"]]), 2
                ),
                "val_energy_rmse_meV_atom": round(metrics["energy_rmse"], 2),
                "val_forces_rmse_meV_A": round(metrics["forces_rmse"], 1),
                "structures_per_s": round(rate, 1),
                "us_per_atom_256": round(per_atom, 1),
            }
            results.append(result)
            print("  " + ", ".join(f"{k}={v}" for k, v in result.items()), flush=True)

    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output + ".csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    write_markdown(args, results, time.perf_counter() - started, argv)
    print(f"wrote {args.output}.csv and .md", flush=True)


def write_markdown(args, results: list[dict], total: float, argv=None) -> None:
    columns = [
        ("name", "run"),
        ("elements", "elements"),
        ("num_pseudo_species", "K"),
        ("radial_basis", "basis"),
        ("parameters", "parameters"),
        ("common_seconds", "budget (s)"),
        ("epochs_within", "epochs"),
        ("val_energy_rmse_meV_atom", "val E RMSE (meV/atom)"),
        ("val_forces_rmse_meV_A", "val F RMSE (meV/Å)"),
        ("structures_per_s", "structures/s (32 atoms)"),
        ("us_per_atom_256", "µs/atom (256 atoms)"),
    ]
    lines = [
        "# Alchemical Model vs SOAP-BPNN on EMT alloys",
        "",
        "Command: `.venv/bin/python benchmarks/alchemical_study.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + f"` ({total / 60:.1f} min).",
        "",
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for result in results:
        lines.append("| " + " | ".join(str(result[key]) for key, _ in columns) + " |")
    with open(args.output + ".md", "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
