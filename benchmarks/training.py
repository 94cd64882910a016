"""Training speed, peak memory and accuracy against metatrain's soap_bpnn, same data.

Set-up (once): ``benchmarks/setup-env.sh`` (the project plus metatrain[soap-bpnn] in
``benchmarks/.venv``). Run:

    benchmarks/.venv/bin/python benchmarks/training.py [--data emt] [--structures 100]
        [--epochs 20] [--rounds 2]
    benchmarks/.venv/bin/python benchmarks/training.py --data many_elements \
        --structures 48 --validation 8 --epochs 3 --rounds 2    # ~25 min at load 1

Data (``--data``), the same files for every model:

- ``emt`` (default): a generated EMT alloy file of ``--structures`` structures (4
  elements, Cu/Ni/Pd/Pt, 32-atom cells); each tool draws its own 10 % validation
  split from it;
- ``many_elements``: the first ``--structures`` structures of
  benchmarks/many_elements/data/train.xyz (18 elements, MEAM-labelled random alloys of
  3-8 elements, 32-54 atoms; made by its generate.py if missing) and the first
  ``--validation`` structures (default a tenth of ``--structures``) of its
  validation.xyz. Both tools take their atomic types from the data.

Every model trains with its default hyperparameters, batch size 8, float64 and the
same number of threads (``--threads``, default 1: with more threads than free cores,
OpenMP's busy-waiting makes both tools 10-30x slower, so on a shared machine one
thread is the only comparable setting). Reported per model: seconds per epoch
(training time since the end of set-up divided by the epochs, validation included,
for both tools), peak resident memory of the training process (``ru_maxrss`` from
``wait4``: torch, the data and the model included) and that peak divided by the
atoms of one batch (8 times the training set's mean atoms per structure), and the
validation force RMSE after equal wall time (the shortest run's training time; the
best validation RMSE of the epochs each run finished before that time). Rounds
alternate the order of the tools (odd rounds metatrain first, even rounds alchem
first); the load average is recorded before and after each run. Writes
benchmarks/results/training.{csv,md} (``emt``) or training_<elements>.{csv,md}
(``many_elements``: training_18).
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
MANY_ELEMENTS = os.path.join(HERE, "many_elements")
BATCH_SIZE = 8
# metatrain reads its copy of each data file: NaN stress where a structure has none
MTT_PREFIX = "mtt_"


THREADS = 1
LOADS: list[str] = []


def run(command: list[str], cwd: str, log: str) -> float:
    """Runs ``command`` in ``cwd``, output into ``log``: its peak resident MB."""
    environment = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[name] = str(THREADS)
    before = os.getloadavg()[0]
    with open(os.path.join(cwd, log), "w") as handle:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=environment
        )
        # wait4, not Popen.wait: the child's own resource usage (peak RSS in KB)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    label = f"{os.path.basename(cwd)}/{log}"
    LOADS.append(f"{label}: {before:.1f} -> {os.getloadavg()[0]:.1f}")
    return usage.ru_maxrss / 1024


def metatrain_set(path: str) -> dict:
    return {
        "systems": {"read_from": path, "length_unit": "angstrom"},
        "targets": {
            "energy": {
                "key": "energy",
                "unit": "eV",
                "forces": {"key": "forces"},
                "stress": {"key": "stress"},
            }
        },
    }


def metatrain_copy(folder: str, name: str) -> None:
    """``mtt_<name>``: the same structures, with a NaN stress on those that have
    none (surface slabs). metatrain reads stress for all structures of a file or for
    none (it drops the stress of the whole file, with a warning, if one lacks it),
    and its loss and metrics skip NaN targets; alchem reads stress per structure
    and trains on the same labels from the file as it is."""
    import ase.io
    import numpy as np

    frames = ase.io.read(os.path.join(folder, name), ":")
    for atoms in frames:
        if "stress" not in atoms.calc.results:
            atoms.calc.results["stress"] = np.full(6, np.nan)
    path = os.path.join(folder, MTT_PREFIX + name)
    ase.io.write(path, frames, format="extxyz")


def metatrain(
    folder: str, epochs: int, validation: str | float
) -> tuple[list[tuple[float, float]], float]:
    """(seconds since the first epoch line, validation force RMSE meV/Å) per epoch,
    and the peak resident MB."""
    options = {
        "seed": 1,
        "base_precision": 64,
        "architecture": {
            "name": "soap_bpnn",
            "training": {
                "batch_size": BATCH_SIZE,
                "num_epochs": epochs,
                "log_interval": 1,
            },
        },
        "training_set": metatrain_set(MTT_PREFIX + "train.xyz"),
        "validation_set": (
            validation
            if isinstance(validation, float)
            else metatrain_set(MTT_PREFIX + validation)
        ),
        "test_set": 0.0,
    }
    with open(os.path.join(folder, "mtt.yaml"), "w") as handle:
        yaml.safe_dump(options, handle)
    peak = run(
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
    return points, peak


def alchem(
    folder: str, epochs: int, architecture: str, validation: str | float
) -> tuple[list[tuple[float, float]], float]:
    options = {
        "seed": 1,
        "architecture": {
            "name": architecture,
            "training": {
                "batch_size": BATCH_SIZE,
                "num_epochs": epochs,
                "log_interval": epochs,
            },
        },
        "training_set": "train.xyz",
        "validation_set": validation,
    }
    name = f"{architecture}.yaml"
    with open(os.path.join(folder, name), "w") as handle:
        yaml.safe_dump(options, handle)
    peak = run(
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
    curve = [(float(r["elapsed"]), float(r["validation_forces_rmse"])) for r in rows]
    return curve, peak


def one_round(
    folder: str,
    epochs: int,
    architectures: list[str],
    validation: str | float,
    alchem_first: bool,
) -> tuple[list[dict], float]:
    """metatrain and alchem (in either order) in ``folder``: one row per model,
    metatrain's first, with equal wall time."""
    curves: dict[str, list[tuple[float, float]]] = {}
    walls: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def run_metatrain() -> None:
        started = time.perf_counter()
        name = "metatrain soap_bpnn"
        curves[name], peaks[name] = metatrain(folder, epochs, validation)
        walls[name] = time.perf_counter() - started

    def run_alchem() -> None:
        for architecture in architectures:
            started = time.perf_counter()
            name = f"alchem {architecture}"
            curves[name], peaks[name] = alchem(folder, epochs, architecture, validation)
            walls[name] = time.perf_counter() - started

    for step in (
        (run_alchem, run_metatrain) if alchem_first else (run_metatrain, run_alchem)
    ):
        step()
    curves = {"metatrain soap_bpnn": curves.pop("metatrain soap_bpnn"), **curves}

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
                "peak_rss_mb": round(peaks[name]),
                "val_force_rmse_at_equal_time": round(min(within), 1) if within else "",
                "val_force_rmse_final": round(min(f for _, f in curve), 1),
            }
        )
    reference = rows[0]["seconds_per_epoch"]
    for row in rows:
        row["speedup_vs_metatrain"] = round(reference / row["seconds_per_epoch"], 2)
    return rows, budget


def many_elements_data(
    folder: str, structures: int, validation: int
) -> tuple[str, str]:
    """The first structures of the many-element training and validation files."""
    import ase.io

    data = os.path.join(MANY_ELEMENTS, "data")
    if not all(
        os.path.exists(os.path.join(data, name))
        for name in ("train.xyz", "validation.xyz")
    ):
        subprocess.run(
            [sys.executable, os.path.join(MANY_ELEMENTS, "generate.py")], check=True
        )
    for source, count in (("train.xyz", structures), ("validation.xyz", validation)):
        frames = ase.io.read(os.path.join(data, source), f":{count}")
        if len(frames) < count:
            raise SystemExit(
                f"error: {os.path.join(data, source)} has {len(frames)} structures, "
                f"fewer than the {count} asked for"
            )
        ase.io.write(os.path.join(folder, source), frames, format="extxyz")
    summary = (
        f"the first {structures} structures of benchmarks/many_elements/data/train.xyz "
        f"(MEAM, 3-8 elements each), validation: the first {validation} of "
        "validation.xyz"
    )
    return summary, "validation.xyz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("emt", "many_elements"), default="emt")
    parser.add_argument("--structures", type=int, default=100)
    parser.add_argument(
        "--validation",
        type=int,
        default=None,
        help="many_elements: validation structures (default: a tenth of --structures)",
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folder", default=None)
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
    folder = args.folder or os.path.join(HERE, "work", f"training_{args.data}")
    os.makedirs(folder, exist_ok=True)
    import ase.io

    validation: str | float
    if args.data == "emt":
        from alchem.data.emt import write_emt_dataset

        write_emt_dataset(
            os.path.join(folder, "train.xyz"),
            args.structures,
            elements=("Cu", "Ni", "Pd", "Pt"),
            seed=1,
        )
        summary = f"{args.structures} EMT structures (Cu/Ni/Pd/Pt, 32 atoms)"
        validation = 0.1
    else:
        summary, validation = many_elements_data(
            folder, args.structures, args.validation or max(args.structures // 10, 1)
        )
    frames = ase.io.read(os.path.join(folder, "train.xyz"), ":")
    elements = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    # atoms of one batch: the mean over the training file (EMT: all 32-atom cells)
    batch_atoms = BATCH_SIZE * sum(len(atoms) for atoms in frames) / len(frames)

    rows = []
    budgets = []
    for round_index in range(1, args.rounds + 1):
        # rounds alternate the tools' order, so each ratio compares runs made
        # minutes apart under about the same load; other architectures run once
        round_folder = os.path.join(folder, f"round{round_index}")
        if os.path.isdir(round_folder):
            shutil.rmtree(round_folder)
        os.makedirs(round_folder)
        for name in ["train.xyz"] + (
            [validation] if isinstance(validation, str) else []
        ):
            shutil.copy(os.path.join(folder, name), round_folder)
            metatrain_copy(round_folder, name)
        architectures = args.architectures.split(",")
        if round_index > 1:
            architectures = [a for a in architectures if a == "soap_bpnn"]
        round_rows, budget = one_round(
            round_folder,
            args.epochs,
            architectures,
            validation,
            alchem_first=round_index % 2 == 0,
        )
        for row in round_rows:
            row["peak_mb_per_batch_atom"] = round(row["peak_rss_mb"] / batch_atoms, 2)
            rows.append({"round": round_index, "elements": len(elements), **row})
        budgets.append(budget)

    name = "training" if args.data == "emt" else f"training_{len(elements)}"
    write_results(name, rows, budgets, summary, elements, batch_atoms, args.epochs)


def write_results(
    name: str,
    rows: list[dict],
    budgets: list[float],
    summary: str,
    elements: list[str],
    batch_atoms: float,
    epochs: int,
) -> None:
    """``results/<name>.csv`` and ``.md``, written atomically."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.csv")
    with open(path + ".tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
    lines = [
        f"Training on {summary}; {len(elements)} elements ({' '.join(elements)}), "
        f"{batch_atoms:.0f} atoms per batch of {BATCH_SIZE} on average, "
        f"{epochs} epochs, float64, {THREADS} thread(s); equal wall time per round "
        "= " + ", ".join(f"{b:.1f} s" for b in budgets),
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
    path = os.path.join(RESULTS, f"{name}.md")
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
    print(text)


if __name__ == "__main__":
    main()
