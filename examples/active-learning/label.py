"""Label frames with the reference, here ASE's EMT: energy, forces and stress.

    python label.py selected.extxyz -o labelled.xyz
    python label.py md-2.dump --index 10::10 -o heldout.xyz   # a LAMMPS dump with
                                                              # an element column

With DFT instead, this is the step that runs the DFT code on each frame.
"""

import argparse

import ase.io
from alchem.data.emt import emt_labelled
from alchem.io import atomic_write
from ase import Atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", help="extxyz from alchem-select, or a LAMMPS dump")
    parser.add_argument("-o", "--output", required=True, help="labelled extxyz")
    parser.add_argument("--index", default=":", help="ASE index of the frames")
    args = parser.parse_args()
    frames = ase.io.read(args.frames, args.index)
    # only what the reference needs: no sigma, no MD forces, no model energies
    clean = [
        Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        for a in frames
    ]
    labelled = [emt_labelled(atoms) for atoms in clean]
    atomic_write(args.output, lambda tmp: ase.io.write(tmp, labelled, format="extxyz"))
    print(f"labelled {len(labelled)} frames of {args.frames} with EMT: {args.output}")


if __name__ == "__main__":
    main()
