"""Cost of the uncertainty in LAMMPS MD: `pair_style alchemical ... uncertainty N`
against the same MD without it, as ratios measured in this one script.

Run (from the repository root, after ``make plugin``; about 10 minutes on 2 cores):

    .venv/bin/python benchmarks/lammps_uncertainty.py [--atoms 2048] [--rounds 3]

What it does, in benchmarks/work/lammps_uncertainty/ (scratch, not committed):

1. Trains each architecture (SOAP-BPNN, Alchemical Model) at its default
   hyperparameters, float64, for one epoch on 20 generated EMT structures of Cu, Ni
   and Pt, with ``uncertainty: {method: llpr, ensemble_size: 8}`` (fitted after the
   epoch): model.pt has the uncertainty outputs. One epoch makes a valid model; the
   cost per step does not depend on the weights.
2. Writes a cubic fcc alloy of ``--atoms`` atoms (a = 3.6 Angstrom, Ni Cu Pt at
   random, seed 0).
3. For each model, NVE MD from 600 K (one MPI rank, one torch thread), after an
   untimed warm-up run: the plugin's defaults (``none``), ``uncertainty 10
   uncertainty_file dev.txt`` and ``uncertainty 1 uncertainty_file dev.txt``. The
   three run one after the other in each of ``--rounds`` rounds (so that a change
   of the machine's load touches all three), the fastest of each is kept; time per
   step = LAMMPS' Loop time / steps. Ratios: time per step over that of ``none``.

Writes benchmarks/results/lammps_uncertainty.csv and lammps_uncertainty.md.
"""

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
WORK = os.path.join(ROOT, "benchmarks", "work", "lammps_uncertainty")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
ARCHITECTURES = {"soap_bpnn": "SOAP-BPNN", "alchemical_model": "Alchemical Model"}
ELEMENTS = ("Ni", "Cu", "Pt")
LATTICE = 3.6
# timed steps per run, multiples of 10 (a rough 2048-atom cost: about 50 and 300 ms)
STEPS = {"soap_bpnn": 60, "alchemical_model": 20}
CONFIGS = {
    "none": "",
    "uncertainty 10": "uncertainty 10 uncertainty_file dev.txt",
    "uncertainty 1": "uncertainty 1 uncertainty_file dev.txt",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train(architecture: str) -> str:
    """model.pt of ``architecture`` with uncertainty, trained once."""
    folder = os.path.join(WORK, architecture)
    model = os.path.join(folder, "model.pt")
    if os.path.exists(model):
        return model
    from alchem.data.emt import write_emt_dataset

    os.makedirs(folder, exist_ok=True)
    write_emt_dataset(os.path.join(folder, "train.xyz"), 20, elements=ELEMENTS, seed=0)
    options = {
        "seed": 0,
        "base_precision": 64,
        "architecture": {"name": architecture, "training": {"num_epochs": 1}},
        "training_set": "train.xyz",
        "validation_set": 0.2,
        "uncertainty": {"method": "llpr", "ensemble_size": 8},
    }
    with open(os.path.join(folder, "options.yaml"), "w") as handle:
        json.dump(options, handle)
    log(f"training {architecture}, 1 epoch, with uncertainty")
    with open(os.path.join(folder, "train.log"), "w") as out:
        subprocess.run(
            [os.path.join(BIN, "alchem-train"), "options.yaml", "--run-dir", "run"],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return model


def write_structure(atoms: int) -> str:
    n = round((atoms / 4) ** (1 / 3))
    if 4 * n**3 != atoms:
        raise SystemExit(f"--atoms {atoms}: expected 4 n^3 atoms (e.g. 2048, 4000)")
    path = os.path.join(WORK, f"fcc{atoms}.data")
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    positions = (cells.reshape(-1, 1, 3) + basis).reshape(-1, 3) * LATTICE
    types = np.random.default_rng(0).integers(1, len(ELEMENTS) + 1, len(positions))
    lines = [f"random fcc alloy, a = {LATTICE}", "", f"{len(positions)} atoms"]
    lines += [f"{len(ELEMENTS)} atom types", ""]
    lines += [f"0 {n * LATTICE} {axis}lo {axis}hi" for axis in "xyz"]
    lines += [
        "",
        "Masses",
        "",
        "1 58.69",
        "2 63.55",
        "3 195.08",
        "",
        "Atoms # atomic",
        "",
    ]
    for i, (t, p) in enumerate(zip(types, positions, strict=True)):
        lines.append(f"{i + 1} {t} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def time_per_step(
    model: str, data: str, options: str, steps: int, folder: str
) -> float:
    """Seconds per MD step (Loop time of the timed run / steps)."""
    os.makedirs(folder, exist_ok=True)
    script = f"""
units metal
atom_style atomic
boundary p p p
read_data {data}
pair_style alchemical {model} {options}
pair_coeff * * {" ".join(ELEMENTS)}
velocity all create 600 1 loop geom
fix nve all nve
thermo 10
run 2
run {steps}
"""
    with open(os.path.join(folder, "in.lammps"), "w") as handle:
        handle.write(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [os.path.join(BIN, "lmp"), "-in", "in.lammps", "-log", "log.lammps", "-nocite"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"lmp failed in {folder}:\n{result.stdout[-3000:]}")
    loops = re.findall(r"Loop time of ([0-9.e+-]+) on", result.stdout)
    return float(loops[-1]) / steps


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [
                x.split(":", 1)[1].strip() for x in handle if x.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    data = write_structure(args.atoms)
    rows = []
    for architecture, name in ARCHITECTURES.items():
        model = train(architecture)
        times: dict[str, list[float]] = {config: [] for config in CONFIGS}
        for r in range(args.rounds):
            for config, options in CONFIGS.items():
                folder = os.path.join(
                    WORK, "runs", architecture, config.replace(" ", "-")
                )
                seconds = time_per_step(
                    model, data, options, STEPS[architecture], folder
                )
                times[config].append(seconds)
                log(f"{name}, {config}, round {r + 1}: {1e3 * seconds:.2f} ms/step")
        base = min(times["none"])
        for config in CONFIGS:
            best = min(times[config])
            rows.append(
                {
                    "model": name,
                    "atoms": args.atoms,
                    "config": config,
                    "steps": STEPS[architecture],
                    "ms_per_step": round(1e3 * best, 3),
                    "all_ms_per_step": " ".join(
                        f"{1e3 * t:.2f}" for t in times[config]
                    ),
                    "ratio": round(best / base, 4),
                }
            )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "lammps_uncertainty.csv"), "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Cost of the uncertainty in LAMMPS MD",
        "",
        f"Machine: {machine()}; shared with other jobs. `benchmarks/lammps_uncertainty.py "
        f"--atoms {args.atoms} --rounds {args.rounds}`: NVE MD of {args.atoms} atoms "
        "(fcc Ni/Cu/Pt), one MPI rank, one torch thread, float64 models at default "
        "hyperparameters (1 epoch, LLPR with an ensemble of 8); fastest of the rounds, "
        "ratio = time per step over that of the same model without `uncertainty`.",
        "",
        "| model | pair_style keywords | ms per step | ratio | all rounds (ms) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        options = CONFIGS[row["config"]] or "(none)"
        lines.append(
            f"| {row['model']} | `{options}` | {row['ms_per_step']} | {row['ratio']:.3f} "
            f"| {row['all_ms_per_step']} |"
        )
    with open(os.path.join(RESULTS, "lammps_uncertainty.md"), "w") as out:
        out.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
