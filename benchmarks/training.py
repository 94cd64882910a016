"""Training speed and accuracy against metatrain's soap_bpnn, on the same data.

Set-up (once): ``benchmarks/setup-env.sh`` (the project plus metatrain[soap-bpnn] in
``benchmarks/.venv``). Run:

    benchmarks/.venv/bin/python benchmarks/training.py [--structures 100] [--epochs 20]

Every model trains on the same generated EMT alloy file (4 elements, 32-atom cells)
with the same validation split size, batch size 8, float64, default hyperparameters,
and the same number of threads (``--threads``, default 1: with more threads than free
cores, OpenMP's busy-waiting makes both tools 10-30x slower, so on a shared machine
one thread is the only comparable setting). Reported: seconds per epoch (training
time since the end of set-up divided by the epochs, validation included, for both
tools) and validation force RMSE after equal wall time (the shortest run's training
time; the best validation RMSE of the epochs each run finished before that time).
The load average is recorded before and after each run. Writes
benchmarks/results/training.csv and .md.
"""

import argparse
import csv
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
RESULTS = os.path.join(HERE, "results")


THREADS = 1
LOADS: list[str] = []


def run(command: list[str], cwd: str, log: str) -> float:
    environment = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[name] = str(THREADS)
    before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(os.path.join(cwd, log), "w") as handle:
        subprocess.run(
            command,
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=True,
            env=environment,
        )
    label = f"{os.path.basename(cwd)}/{log}"
    LOADS.append(f"{label}: {before:.1f} -> {os.getloadavg()[0]:.1f}")
    return time.perf_counter() - started


def metatrain(folder: str, epochs: int) -> list[tuple[float, float]]:
    """(seconds since the first epoch line, validation force RMSE meV/Å) per epoch."""
    options = {
        "seed": 1,
        "base_precision": 64,
        "architecture": {
            "name": "soap_bpnn",
            "training": {"batch_size": 8, "num_epochs": epochs, "log_interval": 1},
        },
        "training_set": {
            "systems": {"read_from": "train.xyz", "length_unit": "angstrom"},
            "targets": {
                "energy": {
                    "key": "energy",
                    "unit": "eV",
                    "forces": {"key": "forces"},
                    "stress": {"key": "stress"},
                }
            },
        },
        "validation_set": 0.1,
        "test_set": 0.0,
    }
    with open(os.path.join(folder, "mtt.yaml"), "w") as handle:
        yaml.safe_dump(options, handle)
    run(
        [os.path.join(BIN, "mtt"), "train", "mtt.yaml", "-o", "mtt.pt"],
        folder,
        "mtt.log",
    )
    points = []
    pattern = re.compile(
        r"\[(\d+-\d+-\d+ \d+:\d+:\d+)\]\[INFO\] - Epoch:.*validation forces RMSE:\s*([\d.]+)"
    )
    for line in open(os.path.join(folder, "mtt.log")):
        match = pattern.search(line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            points.append((stamp.timestamp(), float(match.group(2))))
    return points


def alchem(folder: str, epochs: int, architecture: str) -> list[tuple[float, float]]:
    options = {
        "seed": 1,
        "architecture": {
            "name": architecture,
            "training": {"batch_size": 8, "num_epochs": epochs, "log_interval": epochs},
        },
        "training_set": "train.xyz",
        "validation_set": 0.1,
    }
    name = f"{architecture}.yaml"
    with open(os.path.join(folder, name), "w") as handle:
        yaml.safe_dump(options, handle)
    run(
        [
            os.path.join(BIN, "alchem-train"),
            name,
            "-o",
            f"{architecture}.pt",
            "--run-dir",
            architecture,
        ],
        folder,
        f"{architecture}.log",
    )
    rows = list(csv.DictReader(open(os.path.join(folder, architecture, "metrics.csv"))))
    return [(float(r["elapsed"]), float(r["validation_forces_rmse"])) for r in rows]


def one_round(
    folder: str, epochs: int, architectures: list[str]
) -> tuple[list[dict], float]:
    """metatrain, then alchem, in ``folder``: one row per model, equal wall time."""
    curves: dict[str, list[tuple[float, float]]] = {}
    walls: dict[str, float] = {}
    started = time.perf_counter()
    curves["metatrain soap_bpnn"] = metatrain(folder, epochs)
    walls["metatrain soap_bpnn"] = time.perf_counter() - started
    for architecture in architectures:
        started = time.perf_counter()
        curves[f"alchem {architecture}"] = alchem(folder, epochs, architecture)
        walls[f"alchem {architecture}"] = time.perf_counter() - started

    # metatrain's log has time stamps per epoch: elapsed since its first epoch line
    first = curves["metatrain soap_bpnn"][0][0]
    step = (curves["metatrain soap_bpnn"][-1][0] - first) / max(
        len(curves["metatrain soap_bpnn"]) - 1, 1
    )
    curves["metatrain soap_bpnn"] = [
        (t - first + step, f) for t, f in curves["metatrain soap_bpnn"]
    ]

    budget = min(curve[-1][0] for curve in curves.values())
    rows = []
    for name, curve in curves.items():
        seconds_per_epoch = curve[-1][0] / len(curve)
        within = [f for t, f in curve if t <= budget + 1e-9]
        rows.append(
            {
                "model": name,
                "epochs": len(curve),
                "seconds_per_epoch": round(seconds_per_epoch, 3),
                "wall_seconds_total": round(walls[name], 1),
                "val_force_rmse_at_equal_time": round(min(within), 1) if within else "",
                "val_force_rmse_final": round(min(f for _, f in curve), 1),
            }
        )
    reference = rows[0]["seconds_per_epoch"]
    for row in rows:
        row["speedup_vs_metatrain"] = round(reference / row["seconds_per_epoch"], 2)
    return rows, budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folder", default=os.path.join(HERE, "work", "training"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--architectures",
        default="soap_bpnn,alchemical_model",
        help="alchem architectures",
    )
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    os.makedirs(args.folder, exist_ok=True)
    from alchem.data.emt import write_emt_dataset

    write_emt_dataset(
        os.path.join(args.folder, "train.xyz"),
        args.structures,
        elements=("Cu", "Ni", "Pd", "Pt"),
        seed=1,
    )
    rows = []
    budgets = []
    for round_index in range(1, args.rounds + 1):
        # rounds alternate the tools, so each ratio compares runs made minutes
        # apart under about the same load; other architectures run once
        folder = os.path.join(args.folder, f"round{round_index}")
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        shutil.copy(os.path.join(args.folder, "train.xyz"), folder)
        architectures = args.architectures.split(",")
        if round_index > 1:
            architectures = [a for a in architectures if a == "soap_bpnn"]
        round_rows, budget = one_round(folder, args.epochs, architectures)
        for row in round_rows:
            rows.append({"round": round_index, **row})
        budgets.append(budget)

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "training.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Training on {args.structures} EMT structures (4 elements, 32 atoms), "
        f"{args.epochs} epochs, batch 8, float64, {THREADS} thread(s); equal wall "
        f"time per round = " + ", ".join(f"{b:.1f} s" for b in budgets),
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; load average before -> after each run: "
        + "; ".join(LOADS),
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "training.md"), "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
