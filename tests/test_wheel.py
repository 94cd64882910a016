"""The package as a user installs it: a wheel built from the checkout, installed
into a fresh virtual environment with no source tree and no `make`, runs a
trained model in LAMMPS (1 and 2 ranks, the plugin found through the entry point)
equal to ASE, and through plain metatomic-ase."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs with the fresh environment's Python, in a folder outside the source tree.
CHECK = r"""
import json, os, subprocess, sys
import ase.build
import ase.io
import numpy as np

import alchem
from alchem.calculator import load_calculator
from metatomic_ase import MetatomicCalculator


assert "site-packages" in alchem.__file__, alchem.__file__
bin_dir = os.path.dirname(sys.executable)
# an orthogonal cell, which LAMMPS keeps unrotated: forces compare directly
atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
rng = np.random.default_rng(5)
symbols = ["Ni", "Cu", "Pt"]
atoms.symbols = rng.choice(symbols, size=len(atoms))
atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
ase.io.write("structure.data", atoms, format="lammps-data", specorder=symbols, masses=True)
atoms.calc = load_calculator("model.pt")
energy, forces = atoms.get_potential_energy(), atoms.get_forces()

plain = atoms.copy()
plain.calc = MetatomicCalculator("model.pt", extensions_directory="extensions")
assert abs(plain.get_potential_energy() - energy) < 1e-10
assert np.abs(plain.get_forces() - forces).max() < 1e-10

script = f'''units metal
atom_style atomic
read_data structure.data
pair_style alchemical model.pt
pair_coeff * * {" ".join(symbols)}
thermo_style custom step pe
thermo_modify format float %.17g
dump forces all custom 1 forces.dump id fx fy fz
dump_modify forces format float %.17g sort id
run 0
'''
open("in.lammps", "w").write(script)
for ranks in (1, 2):
    command = [os.path.join(bin_dir, "lmp"), "-in", "in.lammps", "-nocite"]
    if ranks > 1:
        command = [os.path.join(bin_dir, "mpirun"), "-np", str(ranks), *command]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout.splitlines()
    row = log[next(i for i, l in enumerate(log) if l.split()[:2] == ["Step", "PotEng"]) + 1]
    lines = open("forces.dump").read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("ITEM: ATOMS")) + 1
    lammps_forces = np.array([[float(v) for v in l.split()[1:]] for l in lines[start:]])
    print(json.dumps({
        "ranks": ranks,
        "energy": abs(float(row.split()[1]) - energy),
        "forces": float(np.abs(lammps_forces - forces).max()),
    }))
"""


@pytest.mark.slow
def test_wheel_in_fresh_environment(trained, tmp_path):
    if trained["architecture"] != "alchemical_model":
        pytest.skip("the wheel is the same for both architectures: one is enough")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--quiet", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        env=dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2"),
    )
    (wheel,) = dist.glob("alchem-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for library in ("alchemicalplugin.so", "alchemical_pair.so", "libalchem_ops.so"):
        assert f"alchem/lib/{library}" in names
    assert not any(name.endswith((".cpp", ".h")) for name in names)

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet"]
        + ["-c", str(ROOT / "constraints.txt"), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained["model"], run / "model.pt")
    shutil.copytree(Path(trained["model"]).parent / "extensions", run / "extensions")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALCHEM_", "PYTHON"))
    }
    result = subprocess.run(
        [str(python), "-c", CHECK], cwd=run, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")
    ]
    assert [row["ranks"] for row in rows] == [1, 2]
    for row in rows:
        assert row["energy"] < 1e-10 and row["forces"] < 1e-10, row

    # the core package runs models but trains neither architecture: it says which
    # extra to install, and that extra makes training work
    shutil.copy(Path(trained["dir"]) / "train.xyz", run / "train.xyz")
    options = "architecture: {name: alchemical_model, training: {num_epochs: 1}}\n"
    (run / "options.yaml").write_text(options + "training_set: train.xyz\n")
    train = [str(venv / "bin" / "alchem-train"), "options.yaml", "-o", "new.pt"]
    train += ["--run-dir", "out"]
    refused = subprocess.run(train, cwd=run, capture_output=True, text=True, env=env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert 'pip install "alchem[alchemical-model]"' in refused.stderr
    extra = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet"]
        + ["-c", str(ROOT / "constraints.txt"), f"{wheel}[alchemical-model]"],
        capture_output=True,
        text=True,
    )
    assert extra.returncode == 0, extra.stderr[-3000:]
    trained_here = subprocess.run(
        train, cwd=run, capture_output=True, text=True, env=env
    )
    assert trained_here.returncode == 0, trained_here.stderr[-3000:]
    assert (run / "new.pt").is_file()
