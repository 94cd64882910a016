"""`fix atom/swap` with `pair_style alchemical ... swap_cache yes` (the default).

During the Monte Carlo trials the pair style evaluates the energy only, and when
only atom types changed since the previous evaluation only the owned atoms with a
changed atom within the cutoff (lammps-plugin/pair_alchemical_swap.cpp). Each test
runs the same hybrid MD + Monte Carlo input twice, with `swap_cache yes` and with
`swap_cache no` (every trial a whole evaluation with forces, as before), and asks
for the same run: every trial's energy on every rank to 1e-10 eV
(`swap_trace`), the same accepted trials, the same thermo output, and the
same final types, positions and forces. The plugin's summary line says how many
trials were evaluated locally, so a run that silently took the full path fails.
"""

import re
from pathlib import Path

import ase
import numpy as np
import pytest
from lammps_support import (
    SYMBOLS,
    ModelSpec,
    export_model,
    fcc_alloy,
    plugin_built,
    read_thermo,
    run_lammps,
    write_data,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

NUMBERS = [28, 29, 46, 78]  # Ni Cu Pd Pt: a 4-element alloy
TOLERANCE = 1e-10  # eV, every trial's energy of every rank
CANONICAL_COLUMNS = "step pe ke f_s1[1] f_s1[2] f_s2[1] f_s2[2]"
SEMI_GRAND_COLUMNS = "step pe ke f_s1[1] f_s1[2]"
SUMMARY = re.compile(
    r"fix atom/swap on rank 0: (\d+) energy evaluations, (\d+) local"
    r"(?: \(([\d.]+) owned atoms)?"
)

# 10 Monte Carlo cycles (steps 1, 6, ..., 46) of 2 x 50 trials: 1000 trials
CANONICAL = """
fix s1 all atom/swap 5 50 29 {temperature} ke yes types 1 2
fix s2 all atom/swap 5 50 31 {temperature} ke yes types 3 4
"""
# one fix: 100 trials per cycle, each atom to any of the 4 elements at
# chemical potentials mu (eV, per atom type)
SEMI_GRAND = """
fix s1 all atom/swap 5 100 29 {temperature} semi-grand yes types 1 2 3 4 &
    mu 0.0 0.15 -0.1 0.05
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("swap-models")
    specs = {
        "full": ModelSpec(types=NUMBERS),
        "other": ModelSpec(types=NUMBERS, cutoff=4.6),
        "half": ModelSpec(types=NUMBERS, full_list=False),
        # reads each atom's energy from the pairs where it is the second atom
        "second": ModelSpec(types=NUMBERS, center_on_second=True),
        "total-only": ModelSpec(types=NUMBERS, per_atom=False),
        "two-layers": ModelSpec(types=NUMBERS, layers=2, cutoff=4.0),
    }
    return {name: export_model(folder / f"{name}.pt", s) for name, s in specs.items()}


def _alloy(vacuum: bool = False, numbers: list[int] = NUMBERS) -> ase.Atoms:
    """108 atoms of a random rattled fcc alloy (Ni-Cu-Pd-Pt); ``vacuum``: in the
    lower half of a box twice as long in x, so that some of 4 ranks own no atom."""
    atoms = fcc_alloy((3, 3, 3), 3.7, numbers, seed=5, rattle=0.05)
    if vacuum:
        atoms.cell[0, 0] *= 2.0
    return atoms


def _script(
    model: str,
    cache: str,
    moves: str = CANONICAL,
    temperature: float = 800.0,
    change: str = "",
    steps: int = 50,
    processors: str = "",
    columns: str = CANONICAL_COLUMNS,
    numbers: list[int] = NUMBERS,
) -> str:
    elements = " ".join(SYMBOLS[z] for z in numbers)
    second = ""
    if change:
        # a second hybrid run after a command that changes the system
        second = f"{change}\nrun {steps}\n"
    return f"""
units metal
atom_style atomic
{processors}
read_data alloy.data
pair_style alchemical {model} swap_cache {cache} swap_trace trace
pair_coeff * * {elements}
velocity all create 600 4928 dist gaussian
fix md all nve
timestep 0.001
{moves.format(temperature=temperature)}
thermo_style custom {columns}
thermo_modify format float %.17g norm no
thermo 5
run {steps}
{second}
write_dump all custom final.dump id type x y z fx fy fz modify sort id &
    format float %.17g
"""


def _run(
    directory: Path,
    script: str,
    nprocs: int,
    vacuum: bool = False,
    columns: str = CANONICAL_COLUMNS,
    numbers: list[int] = NUMBERS,
) -> dict:
    directory.mkdir(parents=True)
    write_data(directory / "alloy.data", _alloy(vacuum, numbers), numbers)
    run_lammps(directory, script, nprocs=nprocs)
    log = (directory / "log.lammps").read_text()
    # swap_trace: <prefix>.<rank>, one file per pair_style command and rank
    traces = {
        path.name: np.loadtxt(path, ndmin=2)
        for path in sorted(directory.glob("trace*"))
    }
    final = np.loadtxt(directory / "final.dump", skiprows=9)
    return {
        "log": log,
        "thermo": np.array(read_thermo(log, columns)),
        "traces": traces,
        "final": final,
        "summary": SUMMARY.findall(log),
    }


def _compare(cached: dict, full: dict) -> None:
    """The same run, trial by trial."""
    assert cached["traces"].keys() == full["traces"].keys()
    for rank, trace in cached["traces"].items():
        reference = full["traces"][rank]
        assert trace.shape == reference.shape, rank
        assert np.array_equal(trace[:, 0], reference[:, 0])  # steps
        difference = np.abs(trace[:, 1] - reference[:, 1])
        assert difference.max() < TOLERANCE, (rank, difference.max())
    # potential and kinetic energies, trials and accepted trials (f_s*[1], [2])
    # at every 5th step
    assert cached["thermo"].shape == full["thermo"].shape
    energies = np.abs(cached["thermo"][:, 1:3] - full["thermo"][:, 1:3])
    assert energies.max() < TOLERANCE
    assert np.array_equal(cached["thermo"][:, 3:], full["thermo"][:, 3:])
    # the same types at the end, positions and forces of MD after the trials
    assert np.array_equal(cached["final"][:, :2], full["final"][:, :2])
    assert np.abs(cached["final"][:, 2:] - full["final"][:, 2:]).max() < TOLERANCE


# 4 ranks oversubscribe 2 cores, each trial's communication waits: fewer trials
@pytest.mark.parametrize("nprocs, steps", [(1, 50), (2, 50), (4, 10)])
def test_canonical_swaps_exact(tmp_path, models, nprocs, steps):
    """1000 swaps on a 4-element alloy (200 on 4 ranks, some owning no atom): the
    local update gives every trial the energy of a whole evaluation, so both runs
    accept the same trials."""
    vacuum = nprocs == 4
    processors = "processors 4 1 1" if vacuum else ""
    results = {
        cache: _run(
            tmp_path / cache,
            _script(models["full"], cache, processors=processors, steps=steps),
            nprocs,
            vacuum,
        )
        for cache in ("yes", "no")
    }
    _compare(results["yes"], results["no"])
    cycles = len(range(1, steps, 5))  # steps 1, 6, 11, ...
    trials = 2 * 50 * cycles
    thermo = results["yes"]["thermo"][-1]
    assert thermo[3] + thermo[5] == trials
    accepted = (thermo[4] + thermo[6]) / trials
    assert 0.1 < accepted < 0.9, accepted  # both outcomes, many times
    # rank 0 evaluated every trial locally, after one whole (energy-only)
    # evaluation per cycle and fix
    total, local, atoms = results["yes"]["summary"][0]
    assert (int(total), int(local)) == (trials + 2 * cycles, trials)
    assert 0 < float(atoms) < 108
    assert results["no"]["summary"] == []


@pytest.mark.parametrize("nprocs", [1, 2])
def test_semi_grand_exact(tmp_path, models, nprocs):
    """`semi-grand yes`: one atom changes element per trial, at fixed chemical
    potential differences."""
    columns = SEMI_GRAND_COLUMNS
    results = {
        cache: _run(
            tmp_path / cache,
            _script(
                models["full"],
                cache,
                moves=SEMI_GRAND,
                temperature=1500.0,
                columns=columns,
            ),
            nprocs,
            columns=columns,
        )
        for cache in ("yes", "no")
    }
    _compare(results["yes"], results["no"])
    thermo = results["yes"]["thermo"][-1]
    assert thermo[3] == 1000
    assert 0.1 < thermo[4] / 1000 < 0.9, thermo[4]
    total, local, _ = results["yes"]["summary"][0]
    assert (int(total), int(local)) == (1010, 1000)
    # the composition changed
    initial = np.bincount([NUMBERS.index(z) + 1 for z in _alloy().numbers], minlength=5)
    final = np.bincount(results["yes"]["final"][:, 1].astype(int), minlength=5)
    assert not np.array_equal(initial, final)


@pytest.mark.parametrize("nprocs", [1, 2])
def test_trained_models_exact(tmp_path, trained, nprocs):
    """This project's exported models (both architectures, Cu/Ni/Pt): a trial's
    small system holds the affected atoms first, so the model evaluates them on
    one slice of its pairs, as it does a chunk of owned atoms."""
    numbers = [28, 29, 78]
    moves = """
fix s1 all atom/swap 5 50 29 {temperature} ke yes types 1 2
fix s2 all atom/swap 5 50 31 {temperature} ke yes types 2 3
"""
    results = {}
    for cache in ("yes", "no"):
        script = _script(
            trained["model"], cache, moves=moves, steps=20, numbers=numbers
        )
        results[cache] = _run(tmp_path / cache, script, nprocs, numbers=numbers)
    _compare(results["yes"], results["no"])
    total, local, _ = results["yes"]["summary"][0]
    assert (int(total), int(local)) == (408, 400)
    thermo = results["yes"]["thermo"][-1]
    assert 0.05 < (thermo[4] + thermo[6]) / 400 < 0.95


@pytest.mark.parametrize(
    "model, local",
    [
        ("half", True),  # pairs once: each pair touching a changed atom's neighbours
        ("second", True),  # energies from the reverse pairs of a full list
        ("total-only", False),  # no per-atom energies: forward passes of all atoms
        ("two-layers", False),  # message passing: forward passes of all atoms
    ],
)
def test_model_kinds_exact(tmp_path, models, model, local):
    results = {
        cache: _run(tmp_path / cache, _script(models[model], cache, steps=10), 1)
        for cache in ("yes", "no")
    }
    _compare(results["yes"], results["no"])
    total, n_local, _ = results["yes"]["summary"][0]
    assert int(total) == 204  # 2 cycles of 2 x 50 trials
    assert int(n_local) == (200 if local else 0)


@pytest.mark.parametrize(
    "change",
    [
        "displace_atoms all random 0.05 0.05 0.05 8123 units box",
        "change_box all x scale 1.01 y scale 0.99 remap units box",
        "set type 1 type/fraction 3 0.5 7741",
        "pair_style alchemical {other} swap_cache {cache} swap_trace trace-2\n"
        "pair_coeff * * Ni Cu Pd Pt",
    ],
    ids=["displace_atoms", "change_box", "set type", "pair_style"],
)
def test_cache_invalidated(tmp_path, models, change):
    """A command between two hybrid runs that moves atoms, changes the box, sets
    types or loads another model: the trials after it see the new system."""
    results = {}
    for cache in ("yes", "no"):
        command = change.format(other=models["other"], cache=cache)
        script = _script(models["full"], cache, change=command, steps=10)
        results[cache] = _run(tmp_path / cache, script, 1)
    _compare(results["yes"], results["no"])
    # two runs of 200 trials, each evaluated locally after its cycle's first one
    summaries = results["yes"]["summary"]
    assert [(int(t), int(n)) for t, n, _ in summaries] == [(204, 200), (204, 200)]
    # the change changed the energy (rows: steps 0-10 of the first run, 10-20 of
    # the second)
    thermo = results["yes"]["thermo"]
    assert thermo[2, 0] == thermo[3, 0] == 10
    assert abs(thermo[3, 1] - thermo[2, 1]) > 1e-3


def test_swap_cache_keyword(tmp_path, models):
    """`swap_cache` takes LAMMPS' booleans; anything else is LAMMPS' own error."""
    write_data(tmp_path / "alloy.data", _alloy(), NUMBERS)
    script = _script(models["full"], "maybe", steps=0)
    result = run_lammps(tmp_path, script, check=False)
    assert result.returncode != 0
    assert (
        "Expected boolean parameter instead of 'maybe'" in result.stdout + result.stderr
    )
    log = (tmp_path / "log.lammps").read_text()
    assert "Traceback" not in log
