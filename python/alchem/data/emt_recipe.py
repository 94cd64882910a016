"""Training data that covers what ``alchem-validate`` asks, labelled by ASE's EMT.

For each element: fcc cells over a range of volumes (equation of state), small random
strains (elastic constants), vacancies relaxed and rattled (vacancy formation
energy), (100) and (111) slabs (surface energies) and hot rattled supercells (MD);
then random fcc alloys of all the elements (``alchem.data.emt``). This is the data of
``examples/emt-alloys`` and of ``make demo``.
"""

import argparse

import ase.io
import numpy as np
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from .emt import EMT_ELEMENTS, LATTICE, emt_labelled, generate_emt_structures

# lattice-constant scales of the equation-of-state cells: volumes -12 % .. +12 %,
# wider than alchem-validate's fit (+-6 %)
EOS_SCALES = np.linspace(0.96, 1.04, 9)


def _strained(atoms, strain: np.ndarray):
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return atoms


def _random_strain(rng, amplitude: float) -> np.ndarray:
    strain = rng.uniform(-amplitude, amplitude, (3, 3))
    return 0.5 * (strain + strain.T)


def element_structures(element: str, rng) -> list:
    """The structures of one element (see the module's docstring)."""
    a = LATTICE[element]
    frames = []
    cubic = bulk(element, "fcc", a=a, cubic=True)
    for scale in EOS_SCALES:
        frames.append(_strained(cubic, (scale - 1.0) * np.eye(3)))
    for _ in range(16):
        atoms = _strained(cubic, _random_strain(rng, 0.02))
        atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
        frames.append(atoms)
    supercell = cubic.repeat(2)
    vacancy = supercell.copy()
    del vacancy[0]
    vacancy.calc = EMT()
    BFGS(vacancy, logfile=None).run(fmax=0.01, steps=100)
    frames.append(vacancy.copy())
    for _ in range(4):
        atoms = _strained(vacancy, _random_strain(rng, 0.01))
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    # an isolated vacancy, as alchem-validate computes it (3x3x3, 107 atoms): in
    # the 2x2x2 cell the vacancy's neighbours also see its periodic images
    large = cubic.repeat(3)
    del large[0]
    large.calc = EMT()
    BFGS(large, logfile=None).run(fmax=0.01, steps=100)
    frames.append(large.copy())
    atoms = large.copy()
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    frames.append(atoms)
    for build in (fcc100, fcc111):
        slab = build(element, size=(2, 2, 5), a=a, vacuum=5.0, periodic=True)
        slab.info.pop("adsorbate_info", None)  # a dict extxyz cannot write
        frames.append(slab.copy())
        for _ in range(2):
            atoms = slab.copy()
            atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
            frames.append(atoms)
    for _ in range(10):
        atoms = _strained(supercell, _random_strain(rng, 0.03))
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        frames.append(atoms)
    for atoms in frames:
        atoms.wrap()
    return frames


def generate_recipe_structures(
    elements: tuple[str, ...], n_alloys: int, seed: int = 0
) -> list:
    """Every element's structures, then ``n_alloys`` random alloys, EMT-labelled."""
    for element in elements:
        if element not in EMT_ELEMENTS:
            raise ValueError(f"EMT has no parameters for {element}; use {EMT_ELEMENTS}")
    rng = np.random.default_rng(seed)
    frames = []
    for element in elements:
        frames += [emt_labelled(atoms) for atoms in element_structures(element, rng)]
    if n_alloys > 0 and len(elements) > 1:
        frames += generate_emt_structures(n_alloys, elements=elements, seed=seed + 1000)
    return frames


def write_recipe_dataset(
    path: str, elements: tuple[str, ...], n_alloys: int, seed: int = 0
) -> int:
    """Write the recipe's structures as extxyz; returns how many."""
    from ..io import atomic_write

    frames = generate_recipe_structures(elements, n_alloys, seed)
    atomic_write(path, lambda tmp: ase.io.write(tmp, frames, format="extxyz"))
    return len(frames)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write EMT training data for elastic, vacancy and surface "
        "properties of fcc metals, and random alloys of them, as extxyz"
    )
    parser.add_argument("output", help="extxyz file to write")
    parser.add_argument("--elements", default="Cu,Ni,Pd,Pt")
    parser.add_argument("--alloys", type=int, default=100, help="random alloy cells")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    count = write_recipe_dataset(
        args.output, tuple(args.elements.split(",")), args.alloys, args.seed
    )
    print(f"{count} structures written to {args.output}")


if __name__ == "__main__":
    main()
