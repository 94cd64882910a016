"""Built-in reference data: random fcc alloys of ASE's EMT metals.

Rattled and strained cells labelled by ASE's EMT calculator with energy, forces and
stress, written as extxyz. This is the demo's data and the tests' data.
"""

import argparse

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
# EMT's own fcc lattice constants, for a lattice parameter that follows Vegard's law
LATTICE = {
    "Al": 4.05,
    "Cu": 3.61,
    "Ag": 4.09,
    "Au": 4.08,
    "Ni": 3.52,
    "Pd": 3.89,
    "Pt": 3.92,
}


def emt_labelled(atoms):
    """``atoms`` with EMT's energy, forces and stress frozen into it."""
    atoms.calc = EMT()
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def generate_emt_structures(
    n_structures: int,
    elements: tuple[str, ...] = EMT_ELEMENTS,
    repeat: tuple[int, int, int] = (2, 2, 2),
    rattle: float = 0.1,
    strain: float = 0.03,
    seed: int = 0,
) -> list:
    """Random fcc alloys, rattled (Å, Gaussian sigma) and strained (max |e_ij|)."""
    for element in elements:
        if element not in EMT_ELEMENTS:
            raise ValueError(f"EMT has no parameters for {element}; use {EMT_ELEMENTS}")
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_structures):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        symbols = rng.choice(elements, size=len(atoms))
        a = float(np.mean([LATTICE[s] for s in symbols]))
        atoms.set_cell(np.eye(3) * a * np.array(repeat), scale_atoms=False)
        atoms.set_scaled_positions(
            bulk("Cu", "fcc", a=1.0, cubic=True).repeat(repeat).get_scaled_positions()
        )
        atoms.set_chemical_symbols(list(symbols))
        deformation = np.eye(3) + rng.uniform(-strain, strain, (3, 3))
        deformation = 0.5 * (deformation + deformation.T)
        atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        atoms.wrap()
        frames.append(emt_labelled(atoms))
    return frames


def write_emt_dataset(path: str, n_structures: int, **kwargs) -> None:
    from ..io import atomic_write

    frames = generate_emt_structures(n_structures, **kwargs)
    atomic_write(path, lambda tmp: ase.io.write(tmp, frames, format="extxyz"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write random EMT fcc alloys as extxyz"
    )
    parser.add_argument("output", help="extxyz file to write")
    parser.add_argument("-n", "--structures", type=int, default=100)
    parser.add_argument("--elements", default=",".join(EMT_ELEMENTS))
    parser.add_argument(
        "--repeat", type=int, default=2, help="fcc cubic cells per axis"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_emt_dataset(
        args.output,
        args.structures,
        elements=tuple(args.elements.split(",")),
        repeat=(args.repeat,) * 3,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
