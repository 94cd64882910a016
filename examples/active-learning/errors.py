"""Errors and uncertainty of models on labelled frames, one line per model.

    python errors.py heldout.xyz model-0.pt model-1.pt

Force RMSE (meV/Å) and energy RMSE (meV/atom) against the labels, and the models'
per-atom energy sigma (meV; mean over atoms, and the mean over frames of each
frame's largest), from the models' energy_uncertainty output.
"""

import argparse
import warnings

import ase.io
import numpy as np
from alchem import selection
from alchem.calculator import load_calculator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", help="labelled extxyz (energy, forces)")
    parser.add_argument("models", nargs="+", help="model.pt files with uncertainty")
    args = parser.parse_args()
    # metatomic-ase warns about every atom above 0.1 eV of sigma; this script
    # reports the sigmas itself
    warnings.filterwarnings("ignore", message="Some of the atomic energy uncertainties")
    frames = ase.io.read(args.frames, ":")
    atoms_count = sum(len(a) for a in frames)
    print(
        f"{len(frames)} frames, {atoms_count} atoms of {args.frames}\n"
        f"{'model':<16} {'F RMSE':>8} {'E RMSE':>8} {'sigma mean':>10} {'sigma max':>10}"
        "\n" + " " * 16 + " (meV/Å) (meV/at)      (meV)      (meV)"
    )
    for path in args.models:
        calculator = load_calculator(path)
        force_errors, energy_errors = [], []
        for atoms in frames:
            reference_forces = atoms.get_forces()
            reference_energy = atoms.get_potential_energy()
            copy = atoms.copy()
            copy.calc = calculator
            force_errors.append((copy.get_forces() - reference_forces).ravel())
            energy_errors.append(
                (copy.get_potential_energy() - reference_energy) / len(atoms)
            )
        sigmas = selection.evaluate_frames(calculator, frames, args.frames)
        force_rmse = np.sqrt(np.mean(np.concatenate(force_errors) ** 2))
        energy_rmse = np.sqrt(np.mean(np.square(energy_errors)))
        sigma_mean = np.mean(np.concatenate([s.atom_sigma for s in sigmas]))
        sigma_max = np.mean([s.atom_sigma.max() for s in sigmas])
        print(
            f"{path:<16} {1e3 * force_rmse:>8.1f} {1e3 * energy_rmse:>8.2f} "
            f"{1e3 * sigma_mean:>10.1f} {1e3 * sigma_max:>10.1f}"
        )


if __name__ == "__main__":
    main()
