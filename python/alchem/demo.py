"""``make demo``: the whole story on generated EMT data.

Generate data (examples/emt-validated: pure elements over volumes and strains, with
vacancies and surfaces, and random alloys) -> train -> export -> evaluate (parity
plot) -> (when the LAMMPS plugin is built) run MD in LAMMPS with ``pair_style
alchemical`` and compare its first frame with ASE -> validate the physics against
EMT. Everything is written to ``demo/``.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "emt-validated", "options.yaml")
LAMMPS_INPUT = os.path.join(ROOT, "examples", "lammps", "in.alchemical")
ELEMENTS = ("Cu", "Ni")
ALLOY_CELLS = 40  # random alloys of 32 atoms besides the pure-element structures


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def command(*args: str, cwd: str) -> None:
    binary = os.path.join(os.path.dirname(sys.executable), args[0])
    subprocess.run([binary, *args[1:]], cwd=cwd, check=True)


def main() -> None:
    folder = os.path.join(os.getcwd(), "demo")
    os.makedirs(folder, exist_ok=True)
    started = time.perf_counter()

    from .data.emt import write_emt_dataset
    from .data.emt_recipe import write_recipe_dataset

    step(
        f"1. EMT reference data: {', '.join(ELEMENTS)} (volumes, strains, vacancies, "
        "surfaces) and random alloys -> demo/*.xyz"
    )
    write_recipe_dataset(
        os.path.join(folder, "train.xyz"), ELEMENTS, ALLOY_CELLS, seed=1
    )
    write_emt_dataset(os.path.join(folder, "test.xyz"), 20, elements=ELEMENTS, seed=2)
    shutil.copy(EXAMPLE, os.path.join(folder, "options.yaml"))

    step("2. alchem-train options.yaml (SOAP-BPNN) -> demo/model.pt")
    command("alchem-train", "options.yaml", "--run-dir", "run", cwd=folder)

    step("3. alchem-eval model.pt test.xyz (through ASE / metatomic-ase) -> parity.png")
    command("alchem-eval", "model.pt", "test.xyz", "-o", "predictions.xyz", cwd=folder)

    step("4. LAMMPS MD with pair_style alchemical, first frame against ASE")
    demo_md(folder)

    step("5. alchem-validate model.pt against EMT, the reference of the data")
    command(
        "alchem-validate", "model.pt", "--reference", "ase.calculators.emt:EMT",
        "-o", "validation", cwd=folder,
    )  # fmt: skip

    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; files in {folder}"
    )
    print("figures:")
    for path in (
        "run/learning_curve.png",
        "parity.png",
        "validation/eos.png",
        "validation/relative_errors.png",
    ):
        print(f"  {os.path.join(folder, path)}")
    print(f"validation table: {os.path.join(folder, 'validation', 'validation.md')}")


def demo_md(folder: str, steps: int = 200, nprocs: int = 1) -> dict[str, float]:
    """Short MD of ``folder/model.pt`` in LAMMPS (``examples/lammps/in.alchemical``)
    and its first frame next to ASE (metatomic-ase) on the same positions.

    Writes ``folder/lammps/``; returns the largest energy and force differences
    and the MD speed. Prints and returns nothing if the plugin is not built.
    """
    from .calculator import load_calculator
    from .lammps import plugin_path

    try:
        plugin_path()
    except FileNotFoundError as error:
        print(f"skipping the LAMMPS run: {error}")
        return {}

    model = os.path.abspath(os.path.join(folder, "model.pt"))
    calculator = load_calculator(model)
    numbers = sorted(int(z) for z in calculator.model().capabilities().atomic_types)
    atoms = random_alloy(numbers)
    run = Path(folder) / "lammps"
    log = run_lammps(run, atoms, model, numbers, steps, nprocs)
    differences = compare_first_frame(run / "first_frame.dump", atoms, calculator)
    return {**differences, "us_per_atom_step": md_speed(log, run)}


def random_alloy(numbers: list[int]):
    """A random 5x5x5 fcc alloy of these elements at their mean lattice constant."""
    import ase.build
    import numpy as np
    from ase.data import chemical_symbols, reference_states

    lattice = np.mean(
        [
            reference_states[z]["a"]
            for z in numbers
            if reference_states[z] and reference_states[z].get("symmetry") == "fcc"
        ]
        or [3.7]
    )
    symbol = chemical_symbols[numbers[0]]
    atoms = ase.build.bulk(symbol, "fcc", a=lattice, cubic=True).repeat((5, 5, 5))
    rng = np.random.default_rng(7)
    atoms.numbers = rng.choice(numbers, size=len(atoms))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.wrap()
    return atoms


def run_lammps(
    run: Path, atoms, model: str, numbers: list[int], steps: int, nprocs: int
) -> str:
    """``lmp -in examples/lammps/in.alchemical`` on ``atoms`` in ``run``; its log."""
    import ase.io
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[z] for z in numbers]
    run.mkdir(parents=True, exist_ok=True)
    ase.io.write(
        run / "alloy.data",
        atoms,
        format="lammps-data",
        specorder=symbols,
        masses=True,
        atom_style="atomic",
    )
    bin_dir = os.path.dirname(sys.executable)
    command = [os.path.join(bin_dir, "lmp"), "-in", LAMMPS_INPUT, "-log", "log.lammps"]
    variables = {
        "model": model,
        "data": "alloy.data",
        "elements": " ".join(symbols),
        "steps": str(steps),
    }
    for name, value in variables.items():
        command += ["-var", name, value]
    if nprocs > 1:
        command = [os.path.join(bin_dir, "mpirun"), "-np", str(nprocs), *command]
    printable = " ".join(f'"{c}"' if " " in c else c for c in command)
    print(f"$ cd {run} && {printable}", flush=True)
    result = subprocess.run(command, cwd=run, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"LAMMPS failed ({result.returncode}), see {run / 'log.lammps'}:\n"
            + result.stdout[-3000:]
        )
    return (run / "log.lammps").read_text()


def compare_first_frame(dump: Path, atoms, calculator) -> dict[str, float]:
    """LAMMPS' energy and forces of the dumped frame next to ASE's; prints both."""
    import numpy as np
    from ase.data import chemical_symbols

    positions, forces, energies = read_dump(dump)
    frame = atoms.copy()
    frame.positions = positions
    frame.calc = calculator
    ase_energy = frame.get_potential_energy()
    ase_forces = frame.get_forces()
    lammps_energy = float(np.sum(energies))

    elements = "-".join(chemical_symbols[z] for z in sorted(set(frame.numbers)))
    print(f"\nfirst frame, {len(frame)} atoms ({elements}), energies in eV")
    print(f"{'':>10} {'LAMMPS':>22} {'ASE':>22} {'difference':>12}")
    print(
        f"{'energy':>10} {lammps_energy:22.12f} {ase_energy:22.12f} "
        f"{lammps_energy - ase_energy:12.2e}"
    )
    print("forces (eV/A) of the first atoms:")
    for i in range(4):
        for d, axis in enumerate("xyz"):
            name = f"{chemical_symbols[frame.numbers[i]]}{i} F{axis}"
            a, b = forces[i, d], ase_forces[i, d]
            print(f"{name:>10} {a:22.12f} {b:22.12f} {a - b:12.2e}")
    force_error = float(np.max(np.abs(forces - ase_forces)))
    print(f"largest force difference over all atoms: {force_error:.2e} eV/A")
    return {
        "energy_difference": abs(lammps_energy - ase_energy),
        "energy": ase_energy,
        "force_difference": force_error,
    }


def read_dump(path: Path) -> tuple:
    """(positions, forces, per-atom energies) of a dump sorted by atom id."""
    import numpy as np

    lines = path.read_text().splitlines()
    start = (
        next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    )
    table = np.array([[float(v) for v in line.split()] for line in lines[start:]])
    return table[:, 2:5], table[:, 5:8], table[:, 8]


def md_speed(log: str, run: Path) -> float:
    """Microseconds per atom and step of the MD in a LAMMPS log; prints it."""
    loop = [line for line in log.splitlines() if line.startswith("Loop time of")][-1]
    words = loop.split()
    seconds, ranks, n_steps, n_atoms = (
        float(words[3]),
        int(words[5]),
        int(words[8]),
        int(words[-2]),
    )
    speed = seconds / (n_steps * n_atoms) * 1e6
    print(
        f"MD: {n_steps} steps of {n_atoms} atoms on {ranks} rank(s) in {seconds:.2f} s "
        f"= {speed:.1f} us/atom/step; thermo in {run / 'log.lammps'}"
    )
    return speed


if __name__ == "__main__":
    main()
