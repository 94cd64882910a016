"""Molecular dynamics with `pair_style alchemical`: energy conservation, forces
between neighbor-list rebuilds, NPT, the example input and the demo step."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from lammps_support import (
    ModelSpec,
    ase_single_point,
    export_model,
    fcc_alloy,
    plugin_built,
    read_thermo,
    relative_error,
    run_lammps,
    write_data,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

ELEMENTS = [28, 29, 78]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "in.alchemical"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return export_model(tmp_path_factory.mktemp("md") / "model.pt", ModelSpec())


def _md_script(
    model: str, fixes: str, steps: int, timestep: float, extra: str = ""
) -> str:
    return f"""
units metal
atom_style atomic
boundary p p p
read_data structure.data
pair_style alchemical {model}
pair_coeff * * Ni Cu Pt
{extra}
velocity all create 800 4928 mom yes rot yes dist gaussian
timestep {timestep}
{fixes}
thermo 20
thermo_style custom step time temp pe ke etotal press vol
thermo_modify format float %.15g norm no
run {steps}
"""


def test_nve_conserves_energy(model, tmp_path):
    """2000 velocity-Verlet steps of 1 fs (2 ps) from 800 K, 108 atoms.

    With a smooth potential (energy and force go to zero at the cutoff) Verlet has
    no secular drift: the total energy fluctuates with an amplitude ~ dt^2 (here
    ~2e-6 eV/atom) and a straight-line fit over 2 ps resolves drifts down to about
    that amplitude per ps. Bounds: |drift| < 2e-5 eV/atom/ps (measured 3e-6, a
    missing ghost force or a pair dropped inside the cutoff gives orders of
    magnitude more) and every frame within 5e-5 eV/atom of the first.
    """
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=9, rattle=0.0)
    write_data(tmp_path / "structure.data", atoms, ELEMENTS)
    run_lammps(tmp_path, _md_script(model, "fix nve all nve", 2000, 0.001))
    log = (tmp_path / "log.lammps").read_text()
    rows = np.array(read_thermo(log, "step time temp pe ke etotal press vol"))
    assert rows.shape[0] == 101 and rows[-1, 0] == 2000
    time = rows[:, 1]
    total = rows[:, 5] / len(atoms)
    drift = np.polyfit(time, total, 1)[0]
    assert abs(drift) < 2e-5, f"drift {drift:.2e} eV/atom/ps"
    assert np.abs(total - total[0]).max() < 5e-5
    # it was not a trivial run: potential energy moved a lot
    assert np.ptp(rows[:, 3]) / len(atoms) > 1e-2
    assert "Neighbor list builds = 0" not in log


def test_forces_between_neighbor_rebuilds(model, tmp_path):
    """Atoms move while LAMMPS keeps its list (`every 50 check no`): pairs that
    enter or leave the cutoff must be picked up at every step. The last frame
    must still match ASE on the same positions."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=10, rattle=0.05)
    write_data(tmp_path / "structure.data", atoms, ELEMENTS)
    extra = "neighbor 2.0 bin\nneigh_modify every 50 delay 0 check no"
    dump = (
        "dump last all custom 40 frames.dump id type x y z fx fy fz\n"
        "dump_modify last format float %.17g sort id"
    )
    script = _md_script(model, f"fix nve all nve\n{dump}", 40, 0.002, extra)
    run_lammps(
        tmp_path, script.replace("velocity all create 800", "velocity all create 2000")
    )
    log = (tmp_path / "log.lammps").read_text()
    assert "Neighbor list builds = 0" in log

    lines = (tmp_path / "frames.dump").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")]
    first = np.array(
        [
            [float(v) for v in line.split()]
            for line in lines[starts[0] + 1 :][: len(atoms)]
        ]
    )
    last = np.array(
        [[float(v) for v in line.split()] for line in lines[starts[-1] + 1 :]]
    )
    # atoms moved by a fair part of the skin
    assert np.abs(last[:, 2:5] - first[:, 2:5]).max() > 0.2
    moved = atoms.copy()
    moved.positions = last[:, 2:5]
    reference = ase_single_point(moved, model)
    assert relative_error(last[:, 5:8], reference.forces) < 1e-8


def test_npt_relaxes_a_stretched_box(model, tmp_path):
    """The virial drives NPT: this model's equilibrium lattice constant is well
    below 3.6 A, so a 3.6 A box is under tension and shrinks at zero pressure."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=11, rattle=0.02)
    write_data(tmp_path / "structure.data", atoms, ELEMENTS)
    fixes = "fix npt all npt temp 300 300 0.1 iso 0.0 0.0 0.5"
    run_lammps(tmp_path, _md_script(model, fixes, 400, 0.002))
    rows = np.array(
        read_thermo(
            (tmp_path / "log.lammps").read_text(),
            "step time temp pe ke etotal press vol",
        )
    )
    pressure, volume = rows[:, 6], rows[:, 7]
    assert pressure[0] < -1e4  # bar: under tension
    assert volume[-1] < 0.9 * volume[0]
    assert abs(pressure[-10:].mean()) < abs(pressure[0]) / 3


def test_example_input(model, tmp_path):
    """examples/lammps/in.alchemical with its own random alloy (4 types, here
    Ni Cu Pt Cu) and with a data file."""
    shutil.copy(EXAMPLE, tmp_path / "in.alchemical")
    script = (tmp_path / "in.alchemical").read_text()
    header = f'variable model index {model}\nvariable elements index "Ni Cu Pt Cu"\n'
    header += "variable steps index 20\n"
    result = run_lammps(tmp_path, header + script)
    assert "building a random 6x6x6 fcc alloy" in result.stdout
    assert "Loop time of" in result.stdout and "with 864 atoms" in result.stdout
    assert (tmp_path / "first_frame.dump").is_file()

    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=13)
    write_data(tmp_path / "alloy.data", atoms, ELEMENTS)
    header = f'variable model index {model}\nvariable elements index "Ni Cu Pt"\n'
    header += "variable steps index 20\nvariable data index alloy.data\n"
    result = run_lammps(tmp_path, header + script)
    assert "with 32 atoms" in result.stdout


def test_demo_md(model, tmp_path):
    """The `make demo` step: MD through the example and the first frame vs ASE."""
    from alchem.demo import demo_md

    shutil.copy(model, tmp_path / "model.pt")
    result = demo_md(str(tmp_path), steps=20)
    assert result["energy_difference"] < 1e-8 * abs(result["energy"])
    assert result["force_difference"] < 1e-8
    assert result["us_per_atom_step"] > 0
