"""Warren-Cowley short-range order of the first neighbour shell.

    python sro.py sro-600.dump sro-1200.dump --elements Cu Ni Pd Pt -o sro

reads every frame of each file (LAMMPS dumps with `id type x y z`, whose types
are named by --elements in order, or any file ASE reads, which names its
elements), and writes <output>.csv (one row per file and pair of elements) and
<output>.png (a bar per pair of elements, one colour per file).

alpha_ij = 1 - p_ij / c_j, where p_ij is the fraction of j atoms among the first
neighbours of the i atoms (all frames together) and c_j the concentration of j
(symmetric: alpha_ij = alpha_ji). 0 for a random alloy, negative when i and j
prefer each other as neighbours (-1/3 for Cu-Au in L1_2 Cu3Au), positive up to 1
when they avoid each other. The first shell: neighbours closer than the middle of
the first two fcc shells, (1 + 1/sqrt(2)) a / 2, with the lattice parameter
a = (4 V / N)^(1/3) of each frame (fcc).
"""

import argparse
import csv
import itertools
import os

import ase.io
import numpy as np
from ase.neighborlist import neighbor_list


def read_frames(path: str, elements: list[str]) -> list:
    """Every frame of ``path``; LAMMPS dumps get the symbols of their types."""
    if path.endswith(".dump"):
        frames = ase.io.read(path, index=":", format="lammps-dump-text")
        for atoms in frames:
            types = atoms.get_array("type") if "type" in atoms.arrays else atoms.numbers
            atoms.set_chemical_symbols([elements[t - 1] for t in types])
        return frames
    return ase.io.read(path, index=":")


def warren_cowley(frames: list, elements: list[str]) -> np.ndarray:
    """alpha[i, j] of the first fcc shell over all frames."""
    index = {symbol: k for k, symbol in enumerate(elements)}
    n = len(elements)
    pairs = np.zeros((n, n))
    counts = np.zeros(n)
    for atoms in frames:
        lattice = (4.0 * atoms.get_volume() / len(atoms)) ** (1.0 / 3.0)
        cutoff = 0.5 * (1.0 + 1.0 / np.sqrt(2.0)) * lattice
        kinds = np.array([index[s] for s in atoms.get_chemical_symbols()])
        first, second = neighbor_list("ij", atoms, cutoff)
        np.add.at(pairs, (kinds[first], kinds[second]), 1.0)
        counts += np.bincount(kinds, minlength=n)
    concentration = counts / counts.sum()
    probability = pairs / pairs.sum(axis=1, keepdims=True)
    return 1.0 - probability / concentration[None, :]


def plot(results: dict[str, np.ndarray], elements: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(itertools.combinations_with_replacement(range(len(elements)), 2))
    labels = [f"{elements[i]}-{elements[j]}" for i, j in pairs]
    width = 0.8 / len(results)
    figure, axes = plt.subplots(figsize=(7.5, 3.6))
    for k, (name, alpha) in enumerate(results.items()):
        x = np.arange(len(pairs)) + (k - (len(results) - 1) / 2) * width
        axes.bar(x, [alpha[i, j] for i, j in pairs], width, label=name)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(pairs)), labels)
    axes.set_ylabel(r"Warren-Cowley $\alpha_{ij}$, first shell")
    axes.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="LAMMPS dumps or files ASE reads")
    parser.add_argument("--elements", nargs="+", default=["Cu", "Ni", "Pd", "Pt"])
    parser.add_argument("--labels", nargs="+", help="one per file (default: names)")
    parser.add_argument("-o", "--output", default="sro")
    args = parser.parse_args()
    labels = args.labels or [
        os.path.splitext(os.path.basename(f))[0] for f in args.files
    ]
    if len(labels) != len(args.files):
        parser.error("--labels needs one label per file")

    results = {}
    for label, path in zip(labels, args.files, strict=True):
        results[label] = warren_cowley(read_frames(path, args.elements), args.elements)
    with open(f"{args.output}.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "i", "j", "alpha"])
        for label, alpha in results.items():
            for i, j in itertools.combinations_with_replacement(
                range(len(args.elements)), 2
            ):
                writer.writerow(
                    [label, args.elements[i], args.elements[j], f"{alpha[i, j]:.4f}"]
                )
    plot(results, args.elements, f"{args.output}.png")
    for label, alpha in results.items():
        print(
            f"{label}: "
            + ", ".join(
                f"{args.elements[i]}-{args.elements[j]} {alpha[i, j]:+.3f}"
                for i, j in itertools.combinations_with_replacement(
                    range(len(args.elements)), 2
                )
            )
        )


if __name__ == "__main__":
    main()
