"""MD speed on a GPU: ``pair_style alchemical ... device cuda`` against SNAP on the
machine's CPU cores and against ASE MD on the same GPU.

Set-up: a CUDA build of torch in the environment of ``python`` (docs/install.md,
"GPU"), the project installed in it and the plugin built against that torch
(``make plugin TORCH_CONSTRAINTS=``). Run from the repository root:

    python benchmarks/gpu_md.py [--sizes 2048 16384 55296] [--snap-ranks 1 16]

It reuses benchmarks/lammps_md.py's models (trained for one epoch at default
hyperparameters, float64 weights also exported as float32), structures (cubic fcc
alloys, 7 atom types at random) and LAMMPS inputs (benchmarks/lammps/in.md, NVE from
300 K, 2 fs). Times, in the same script: the models in LAMMPS on the GPU (1 rank,
``device cuda``), SNAP Cu (2J = 8) in LAMMPS on 1 and on all CPU cores (MPI), and the
same model.pt in ASE MD (VelocityVerlet, metatomic-ase on the GPU). microseconds per
atom per step = Loop time / steps / atoms * 1e6 (wall). Writes
benchmarks/results/gpu_md.csv and .md.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lammps_md as md  # noqa: E402

# the environment this script runs in (the CUDA one), not the project's .venv
md.BIN = os.path.dirname(sys.executable)

MODELS = {
    md.AM32: ("am-f32.pt", md.SEVEN),
    md.AM64: ("am-f64.pt", md.SEVEN),
    md.SB32: ("sb2-f32.pt", md.SB2_ELEMENTS),
    md.SB64: ("sb2-f64.pt", md.SB2_ELEMENTS),
}


def lammps(work: str, potential: str, data: str, steps: int, ranks: int = 1) -> dict:
    """``lammps_md.run_lammps`` (same input, timing, profile and process usage, 3
    warm-up steps), a failure kept as the row's ``error``."""
    try:
        row = md.run_lammps(
            work, potential, data, ranks, 3, steps, md.potentials_folder(), 600
        )
    except RuntimeError as error:
        lines = str(error).strip().splitlines()
        reason = next((x for x in lines if x.startswith("ERROR")), lines[-1])
        return {"error": reason[-300:]}
    return {k: v for k, v in row.items() if k not in ("engine", "potential")}


def ase_worker(model: str, data: str, elements: str, steps: int) -> None:
    """Prints one JSON line: wall seconds of ``steps`` VelocityVerlet steps."""
    import numpy as np
    from alchem.calculator import load_calculator
    from ase import units
    from ase.io import read
    from ase.md.verlet import VelocityVerlet

    atoms = read(data, format="lammps-data", atom_style="atomic")
    symbols = elements.split()
    atoms.set_chemical_symbols([symbols[t - 1] for t in atoms.arrays["type"]])
    atoms.set_masses([63.5] * len(atoms))
    atoms.calc = load_calculator(model, device="cuda")
    rng = np.random.default_rng(4928459)
    velocities = rng.normal(size=(len(atoms), 3)) * np.sqrt(
        300.0 * units.kB / atoms.get_masses()[:, None]
    )
    atoms.set_velocities(velocities - velocities.mean(axis=0))
    dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
    dynamics.run(3)
    wall = time.perf_counter()
    dynamics.run(steps)
    wall = time.perf_counter() - wall
    print(json.dumps({"seconds": wall, "atoms": len(atoms)}))


def ase(model: str, data: str, elements: str, steps: int) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--ase-worker", model, data, elements, str(steps)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1][-300:]}
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "seconds": measured["seconds"],
        "steps": steps,
        "atoms": measured["atoms"],
        "ranks": 1,
        "us_per_atom_step": measured["seconds"] / steps / measured["atoms"] * 1e6,
    }


def describe_machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{gpu}, {os.cpu_count()} CPU cores ({platform.processor() or 'x86_64'}); "
        f"torch {torch.__version__}"
    )


def report(rows: list[dict], machine: str, command: str) -> str:
    lines = [
        "# MD speed on a GPU (benchmarks/gpu_md.py)",
        "",
        f"Machine: {machine}. Command: `{command}`.",
        "",
        "µs per atom per step (wall, Loop time); models on the GPU (1 MPI rank), "
        "SNAP on CPU cores (one rank per core).",
        "",
        "| potential | engine | atoms | ranks | steps | µs/atom/step | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        value = row.get("us_per_atom_step")
        lines.append(
            f"| {row['potential']} | {row['engine']} | {row['atoms']} | "
            f"{row.get('ranks', '')} | {row.get('steps', '')} | "
            f"{'' if value is None else f'{value:.3g}'} | {row.get('error', '')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ase-worker":
        model, data, elements, steps = sys.argv[2:6]
        ase_worker(model, data, elements, int(steps))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(HERE, "work", "gpu_md"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384, 55296])
    parser.add_argument(
        "--snap-ranks", type=int, nargs="*", default=[1, os.cpu_count()]
    )
    parser.add_argument("--ase-sizes", type=int, nargs="*", default=[2048, 16384])
    parser.add_argument("--only", default="", help="models whose name contains this")
    parser.add_argument(
        "--options", default="", help="more pair_style keywords, e.g. 'chunk all'"
    )
    parser.add_argument("--output", default=os.path.join(HERE, "results", "gpu_md"))
    args = parser.parse_args()
    args.work = os.path.abspath(args.work)  # LAMMPS runs in it, data paths stay valid
    os.makedirs(args.work, exist_ok=True)

    md.train(args.work, "am", "alchemical_model", md.SEVEN.replace(" ", ","))
    md.train(args.work, "sb2", "soap_bpnn", "Cu,Ni")
    data = md.write_structures(args.work, sorted(set(args.sizes + args.ase_sizes)))

    rows = []

    def add(potential: str, engine: str, atoms: int, row: dict) -> None:
        row = {"potential": potential, "engine": engine, "atoms": atoms, **row}
        md.log(json.dumps(row))
        rows.append(row)

    for atoms in args.sizes:
        for ranks in args.snap_ranks:
            steps = max(3, round(3.0 / (120e-6 * atoms / ranks)))
            add(
                md.SNAP,
                "lammps cpu",
                atoms,
                lammps(args.work, md.SNAP, data[atoms], steps, ranks),
            )
        for name, (model, elements) in MODELS.items():
            if args.only not in name:
                continue
            label = f"{name} {args.options}".strip()
            md.POTENTIALS[label] = ("pair.alchemical", elements, model, {})
            md.PAIR_OPTIONS[label] = f"device cuda {args.options}".strip()
            steps = 20 if atoms <= 20000 else 10
            add(
                label,
                "lammps cuda",
                atoms,
                lammps(args.work, label, data[atoms], steps),
            )
            if atoms in args.ase_sizes:
                add(
                    name,
                    "ase cuda",
                    atoms,
                    ase(os.path.join(args.work, model), data[atoms], elements, steps),
                )

    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    columns = sorted(
        {key for row in rows for key in row},
        key=lambda k: (k not in ("potential", "engine", "atoms"), k),
    )
    with open(args.output + ".csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    command = "python benchmarks/gpu_md.py " + " ".join(sys.argv[1:])
    with open(args.output + ".md", "w") as handle:
        handle.write(report(rows, describe_machine(), command.strip()))
    md.log(f"wrote {args.output}.csv and .md")


if __name__ == "__main__":
    main()
