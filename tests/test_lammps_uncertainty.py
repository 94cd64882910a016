"""The model's energy uncertainty in LAMMPS MD (`pair_style alchemical ...
uncertainty N`, lammps-plugin/pair_alchemical_uncertainty.cpp): per-atom sigma
through `fix pair`, the global values through `compute pair`, the deviation file,
the threshold's warn and stop, against ASE (metatomic-ase) on the same model.pt,
on 1 and 2 MPI ranks. Models: the `trained` fixture of conftest (4 epochs on EMT
Cu/Ni/Pt, float64) given uncertainty by `alchem-uncertainty`."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from lammps_support import (
    SYMBOLS,
    fcc_alloy,
    plugin_built,
    relative_error,
    run_lammps,
    write_data,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

ELEMENTS = [28, 29, 78]  # Ni Cu Pt, as in the training data
GLOBALS = "c_unc[1] c_unc[2] c_unc[3] c_unc[4]"  # max, total, min, mean


@pytest.fixture(scope="module")
def uncertain(trained, tmp_path_factory) -> dict:
    """A copy of a trained checkpoint given uncertainty by alchem-uncertainty."""
    folder = tmp_path_factory.mktemp(f"lammps-uncertain-{trained['architecture']}")
    shutil.copy(trained["checkpoint"], folder / "model.ckpt")
    run_cli("alchem-uncertainty", "model.ckpt", "--ensemble-size", "8", cwd=str(folder))
    extensions = folder / "extensions"
    return {
        **trained,
        "model": str(folder / "model.pt"),
        "extensions": str(extensions) if extensions.is_dir() else None,
    }


def _structure(directory: Path, repeat=(3, 3, 3), seed: int = 5):
    directory.mkdir(parents=True, exist_ok=True)
    atoms = fcc_alloy(repeat, 3.6, ELEMENTS, seed=seed)
    write_data(directory / "structure.data", atoms, ELEMENTS)
    return atoms


def _script(model: str, pair_options: str, body: str, before: str = "") -> str:
    return f"""
units metal
atom_style atomic
boundary p p p
{before}
read_data structure.data
pair_style alchemical {model} {pair_options}
pair_coeff * * {" ".join(SYMBOLS[z] for z in ELEMENTS)}
compute unc all pair alchemical
thermo_style custom step pe {GLOBALS}
thermo_modify format float %.17g norm no
{body}
"""


def _md(every: int, steps: int, dump: str = "") -> str:
    """NVE from 900 K, the per-atom sigma (fix pair) and forces dumped on the
    steps that are multiples of ``every``."""
    return f"""
velocity all create 900 4928 loop geom
fix nve all nve
fix sig all pair {every} alchemical uncertainty 0
thermo {every}
dump atoms all custom {every} atoms.dump id fx fy fz f_sig {dump}
dump_modify atoms format float %.17g sort id
run {steps}
"""


def _frames(path: Path) -> dict[int, np.ndarray]:
    """Step -> table of a sorted custom dump."""
    lines = path.read_text().splitlines()
    frames: dict[int, np.ndarray] = {}
    i = 0
    while i < len(lines):
        assert lines[i] == "ITEM: TIMESTEP"
        step = int(lines[i + 1])
        n = int(lines[i + 3])
        start = i + 9
        frames[step] = np.array(
            [[float(v) for v in x.split()] for x in lines[start : start + n]]
        )
        assert frames[step].shape[0] == n
        i = start + n
    return frames


def _thermo(log: str) -> dict[int, list[float]]:
    rows: dict[int, list[float]] = {}
    header = False
    for line in log.splitlines():
        parts = line.split()
        if parts[:2] == ["Step", "PotEng"]:
            header = True
            continue
        if header and len(parts) == 6:
            try:
                rows[int(parts[0])] = [float(p) for p in parts[1:]]
            except ValueError:
                header = False
        elif header:
            header = False
    return rows


def _deviation(path: Path) -> tuple[str, np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[0], np.array([[float(v) for v in x.split()] for x in lines[1:]])


def _ase(atoms, uncertain) -> tuple[np.ndarray, float]:
    """Per-atom sigma and the total energy's sigma (norm of the projection) from
    metatomic-ase on the same model.pt."""
    from alchem import ops
    from metatomic.torch import ModelOutput
    from metatomic_ase import MetatomicCalculator

    ops.load()
    calculator = MetatomicCalculator(
        uncertain["model"],
        extensions_directory=uncertain["extensions"],
        device="cpu",
        uncertainty_threshold=None,
    )
    outputs = calculator.run_model(
        atoms,
        {
            "energy_uncertainty": ModelOutput(unit="eV", sample_kind="atom"),
            "alchem::energy_uncertainty_projection": ModelOutput(
                unit="eV", sample_kind="system"
            ),
        },
    )
    sigma = outputs["energy_uncertainty"].block().values.detach().reshape(-1)
    projection = outputs["alchem::energy_uncertainty_projection"].block().values
    total = torch.linalg.vector_norm(projection.detach().reshape(-1))
    return sigma.numpy().astype(float), float(total)


@pytest.mark.parametrize("chunk", ["all", "20"])
def test_sigma_equals_ase(uncertain, tmp_path, chunk):
    """Per-atom sigma (fix pair -> dump) and max, total, min, mean (compute pair)
    against metatomic-ase; with `chunk 20` the 108 atoms go through the model in
    6 evaluations, whose projections are summed."""
    atoms = _structure(tmp_path)
    script = _script(
        uncertain["model"],
        f"uncertainty 1 chunk {chunk}",
        """
fix sig all pair 1 alchemical uncertainty 0
dump atoms all custom 1 atoms.dump id f_sig
dump_modify atoms format float %.17g sort id
run 0
""",
    )
    result = run_lammps(tmp_path, script)
    sigma, total = _ase(atoms, uncertain)
    lammps = _frames(tmp_path / "atoms.dump")[0][:, 1]
    assert relative_error(lammps, sigma) < 1e-8
    row = _thermo((tmp_path / "log.lammps").read_text())[0]
    expected = [sigma.max(), total, sigma.min(), sigma.mean()]
    for value, reference in zip(row[1:], expected, strict=True):
        assert abs(value - reference) < 1e-8 * reference
    assert "uncertainty every 1 steps" in result.stdout


def test_one_and_two_ranks_give_the_same_deviation_file(uncertain, tmp_path):
    """MD with `uncertainty 2`: the deviation file has a header and one row per
    evaluated step (0, 2, 4, 6), columns step, max, min, mean, total, the same on
    1 and 2 MPI ranks, and equal to compute pair's values and fix pair's atoms."""
    results = {}
    for nprocs in (1, 2):
        folder = tmp_path / f"np{nprocs}"
        _structure(folder)
        script = _script(
            uncertain["model"], "uncertainty 2 uncertainty_file dev.txt", _md(2, 6)
        )
        run_lammps(folder, script, nprocs=nprocs)
        header, rows = _deviation(folder / "dev.txt")
        results[nprocs] = (header, rows, _frames(folder / "atoms.dump"))
        thermo = _thermo((folder / "log.lammps").read_text())
        assert header.startswith("#") and header.split()[1:6] == [
            "step",
            "max_atom_sigma",
            "min_atom_sigma",
            "mean_atom_sigma",
            "total_sigma",
        ]
        assert "(energy sigmas in eV" in header
        assert rows[:, 0].tolist() == [0, 2, 4, 6]
        frames = results[nprocs][2]
        for row in rows:
            step = int(row[0])
            sigma = frames[step][:, 4]
            assert np.all(sigma > 0)
            assert row[1] == pytest.approx(sigma.max(), rel=1e-9)
            assert row[2] == pytest.approx(sigma.min(), rel=1e-9)
            assert row[3] == pytest.approx(sigma.mean(), rel=1e-9)
            assert row[1] == pytest.approx(thermo[step][1], rel=1e-9)
            assert row[4] == pytest.approx(thermo[step][2], rel=1e-9)
    one, two = results[1], results[2]
    assert relative_error(two[1], one[1]) < 1e-8
    for step in (0, 2, 4, 6):
        assert relative_error(two[2][step], one[2][step]) < 1e-8


def test_a_rank_without_atoms(uncertain, tmp_path):
    """The atoms in one half of the box, split between 2 ranks along it: rank 1
    owns none, and still joins the reductions; the same as 1 rank and ASE."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=5)
    cell = np.array(atoms.cell)
    cell[0, 0] *= 2
    atoms.set_cell(cell)
    sigma, total = _ase(atoms, uncertain)
    rows = {}
    for nprocs in (1, 2):
        folder = tmp_path / f"np{nprocs}"
        folder.mkdir()
        write_data(folder / "structure.data", atoms, ELEMENTS)
        body = """
fix sig all pair 1 alchemical uncertainty 0
dump atoms all custom 1 atoms.dump id f_sig
dump_modify atoms format float %.17g sort id
run 0
"""
        script = _script(
            uncertain["model"],
            "uncertainty 1 uncertainty_file dev.txt",
            body,
            f"processors {nprocs} 1 1",
        )
        run_lammps(folder, script, nprocs=nprocs)
        assert relative_error(_frames(folder / "atoms.dump")[0][:, 1], sigma) < 1e-8
        rows[nprocs] = _deviation(folder / "dev.txt")[1]
    expected = [0, sigma.max(), sigma.min(), sigma.mean(), total]
    assert relative_error(rows[1][0], expected) < 1e-8
    assert relative_error(rows[2], rows[1]) < 1e-8


def test_plain_steps_are_unchanged(uncertain, tmp_path):
    """The forces of MD with `uncertainty 3` equal those of MD without it, on
    the steps with and without the uncertainty."""
    body = """
velocity all create 900 4928 loop geom
fix nve all nve
dump atoms all custom 1 atoms.dump id fx fy fz
dump_modify atoms format float %.17g sort id
run 6
"""
    forces = {}
    for name, options in (("plain", ""), ("uncertainty", "uncertainty 3")):
        folder = tmp_path / name
        _structure(folder)
        run_lammps(folder, _script(uncertain["model"], options, body))
        forces[name] = _frames(folder / "atoms.dump")
    assert sorted(forces["plain"]) == list(range(7))
    for step in range(7):
        np.testing.assert_array_equal(
            forces["uncertainty"][step], forces["plain"][step]
        )


def test_fix_pair_trigger_evaluates_on_its_steps(uncertain, tmp_path):
    """`fix pair 3 alchemical uncertainty 1` without the keyword `uncertainty`
    asks for the evaluation on its steps: the same sigma as `uncertainty 3`."""
    sigma = {}
    for name, options, flag in (("trigger", "", 1), ("keyword", "uncertainty 3", 0)):
        folder = tmp_path / name
        _structure(folder)
        body = _md(3, 6).replace(
            "fix sig all pair 3 alchemical uncertainty 0",
            f"fix sig all pair 3 alchemical uncertainty {flag}",
        )
        run_lammps(folder, _script(uncertain["model"], options, body))
        sigma[name] = _frames(folder / "atoms.dump")
    for step in (0, 3, 6):
        assert np.all(sigma["trigger"][step][:, 4] > 0)
        np.testing.assert_array_equal(sigma["trigger"][step], sigma["keyword"][step])


def test_fix_pair_off_the_uncertainty_steps_is_an_error(uncertain, tmp_path):
    _structure(tmp_path)
    script = _script(uncertain["model"], "uncertainty 2", _md(3, 6))
    result = run_lammps(tmp_path, script, check=False)
    assert result.returncode != 0
    assert "fix pair asked for the per-atom uncertainty at step 3" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def _warned(log: str) -> list[tuple[int, int, float]]:
    pattern = (
        r"WARNING: pair_style alchemical: at step (\d+) the energy uncertainty of "
        r"atom (\d+) is ([0-9.e+-]+) eV, above uncertainty_threshold"
    )
    return [(int(s), int(a), float(v)) for s, a, v in re.findall(pattern, log)]


def test_threshold_warns_and_stops(uncertain, tmp_path):
    """warn: one warning per evaluated step naming step, atom and sigma, the run
    goes on. stop: the first step above the threshold ends the run with an error
    naming step and atom, a non-zero exit, and the dump written before it intact
    (every frame as in the run that went on)."""
    warn = tmp_path / "warn"
    atoms = _structure(warn)
    script = _script(
        uncertain["model"],
        "uncertainty 1 uncertainty_file dev.txt uncertainty_threshold 1e-6",
        _md(1, 12),
    )
    result = run_lammps(warn, script)
    warnings = _warned(result.stdout)
    _, rows = _deviation(warn / "dev.txt")
    assert [w[0] for w in warnings] == list(range(13))
    frames = _frames(warn / "atoms.dump")
    for step, tag, sigma in warnings:
        table = frames[step]
        assert table[np.argmax(table[:, 4]), 0] == tag
        assert sigma == pytest.approx(rows[step, 1], rel=1e-5)
    sigma, _ = _ase(atoms, uncertain)
    assert warnings[0][1] == int(np.argmax(sigma)) + 1  # tags are 1..N in order

    # 4 steps without a threshold, then a pair style that stops below the
    # sigma of step 4: the next run ends as it evaluates step 4
    stop_step = 4
    threshold = float(0.5 * rows[:, 1].min())
    stop = tmp_path / "stop"
    _structure(stop)
    body = _md(1, stop_step) + (
        f"pair_style alchemical {uncertain['model']} uncertainty 1 "
        f"uncertainty_threshold {threshold!r} uncertainty_action stop\n"
        f"pair_coeff * * {' '.join(SYMBOLS[z] for z in ELEMENTS)}\n"
        "run 8\n"
    )
    result = run_lammps(
        stop, _script(uncertain["model"], "uncertainty 1", body), check=False
    )
    assert result.returncode != 0
    message = (
        f"ERROR: pair_style alchemical: at step {stop_step} the energy uncertainty of "
        f"atom {warnings[stop_step][1]} is"
    )
    assert message in result.stdout
    assert "uncertainty_action stop" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    written = _frames(stop / "atoms.dump")
    assert sorted(written) == list(range(stop_step + 1))
    for step in written:
        np.testing.assert_array_equal(written[step], frames[step])


def test_model_without_uncertainty(trained, tmp_path):
    """`uncertainty N` (or fix pair's uncertainty) on a model without it: one
    error naming the model and how to add uncertainty."""
    _structure(tmp_path)
    for options, body in (
        ("uncertainty 10", "run 0"),
        ("", "fix sig all pair 1 alchemical uncertainty 1\nrun 0"),
    ):
        script = (
            _script(trained["model"], options, body)
            .replace("compute unc all pair alchemical", "")
            .replace(f" {GLOBALS}", "")
        )
        result = run_lammps(tmp_path, script, check=False)
        assert result.returncode != 0
        errors = [x for x in result.stdout.splitlines() if x.startswith("ERROR")]
        assert len(errors) == 1, result.stdout[-2000:]
        assert trained["model"] in errors[0]
        assert "`alchem-uncertainty model.ckpt`" in errors[0]


@pytest.mark.parametrize(
    "options, words",
    [
        ("uncertainty -1", "invalid value '-1' for keyword 'uncertainty'"),
        ("uncertainty 2 uncertainty_action maybe", "expected warn or stop"),
        (
            "uncertainty 2 uncertainty_threshold 0",
            "expected a per-atom energy sigma > 0",
        ),
        ("uncertainty_file dev.txt", "need `uncertainty N` with N >= 1"),
        ("uncertainty 2 uncertainty_action stop", "needs uncertainty_threshold"),
        (
            "uncertainty 2 uncertainty_file no/such/dir/dev.txt",
            "cannot write uncertainty_file",
        ),
    ],
)
def test_bad_uncertainty_keywords(uncertain, tmp_path, options, words):
    _structure(tmp_path)
    result = run_lammps(
        tmp_path, _script(uncertain["model"], options, "run 0"), check=False
    )
    assert result.returncode != 0
    assert words in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "no")
