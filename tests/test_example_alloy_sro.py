"""examples/alloy-sro/sro.py, the Warren-Cowley analysis of the short-range-order
example, run as a user runs it, on structures whose parameters are known."""

import csv
import os
import subprocess
import sys

import ase.build
import ase.io
import numpy as np
import pytest

SCRIPT = os.path.join(
    os.path.dirname(__file__), "..", "examples", "alloy-sro", "sro.py"
)


def _run(tmp_path, *args: str) -> dict[tuple[str, str, str], float]:
    result = subprocess.run(
        [sys.executable, SCRIPT, *args, "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").stat().st_size > 0
    with open(tmp_path / "out.csv") as handle:
        return {
            (row["file"], row["i"], row["j"]): float(row["alpha"])
            for row in csv.DictReader(handle)
        }


def l12(a: float = 3.7) -> ase.Atoms:
    """L1_2 Cu3Au: Au on the cube corners, Cu on the face centres; a 3x3x3 cell."""
    atoms = ase.build.bulk("Cu", "fcc", a=a, cubic=True)
    atoms.symbols[0] = "Au"  # (0, 0, 0) of the 4-atom cubic cell
    return atoms.repeat((3, 3, 3))


def test_ordered_compound(tmp_path):
    """Each Au has 12 Cu neighbours, each Cu 8 Cu and 4 Au: alpha(Cu-Au) = 1 -
    (4/12) / (1/4) = -1/3, alpha(Au-Au) = 1, alpha(Cu-Cu) = 1 - (8/12) / (3/4) = 1/9,
    also with the atoms displaced and over several frames."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        atoms = l12()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    ase.io.write(tmp_path / "l12.xyz", frames)
    alpha = _run(tmp_path, "l12.xyz", "--elements", "Cu", "Au", "--labels", "L12")
    assert alpha[("L12", "Cu", "Au")] == pytest.approx(-1 / 3, abs=1e-4)
    assert alpha[("L12", "Au", "Au")] == pytest.approx(1.0, abs=1e-4)
    assert alpha[("L12", "Cu", "Cu")] == pytest.approx(1 / 9, abs=1e-4)


def test_lammps_dump_types(tmp_path):
    """A LAMMPS dump names its elements by type (--elements in type order); a
    random alloy of many frames has every alpha near 0."""
    rng = np.random.default_rng(1)
    lines = []
    for step in range(20):
        atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True).repeat((4, 4, 4))
        types = rng.integers(1, 5, len(atoms))
        length = atoms.cell[0, 0]
        lines += [
            "ITEM: TIMESTEP",
            str(step),
            "ITEM: NUMBER OF ATOMS",
            str(len(atoms)),
            "ITEM: BOX BOUNDS pp pp pp",
            *[f"0 {length}"] * 3,
            "ITEM: ATOMS id type x y z",
        ]
        lines += [
            f"{i + 1} {t} {x:.6f} {y:.6f} {z:.6f}"
            for i, (t, (x, y, z)) in enumerate(zip(types, atoms.positions, strict=True))
        ]
    (tmp_path / "random.dump").write_text("\n".join(lines) + "\n")
    alpha = _run(tmp_path, "random.dump", "--elements", "Cu", "Ni", "Pd", "Pt")
    assert len(alpha) == 10  # pairs of 4 elements
    assert max(abs(value) for value in alpha.values()) < 0.05
    assert {key[1] for key in alpha} == {"Cu", "Ni", "Pd", "Pt"}
