"""Exported models are self-describing metatomic models: they declare the operator
library they call, carry it in ``extensions/``, and load in processes that never
import alchem; ``alchem-export --torch-only`` needs no extension at all; version
mismatches between the compiled libraries and torch, or between a model and the
operator library, give one clear message."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from alchem import native, ops
from conftest import run_cli, write_options
from lammps_support import fcc_alloy, lammps_single_point, plugin_built, run_lammps

ELEMENTS = [28, 29, 78]

pytestmark = [
    pytest.mark.slow,  # trains models of both architectures
    pytest.mark.skipif(
        not ops.load(), reason="libalchem_ops.so is not built (make plugin)"
    ),
]

# Runs in a fresh interpreter: metatomic-ase alone, as another engine would.
PLAIN_METATOMIC = r"""
import json, sys
import ase.io
from metatomic.torch import load_atomistic_model
from metatomic_ase import MetatomicCalculator

model, extensions, structures = sys.argv[1], sys.argv[2] or None, sys.argv[3]
load_atomistic_model(model, extensions_directory=extensions)
results = []
for atoms in ase.io.read(structures, ":3"):
    atoms.calc = MetatomicCalculator(model, extensions_directory=extensions)
    results.append({
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces().tolist(),
        "stress": atoms.get_stress().tolist(),
    })
assert not [m for m in sys.modules if m.split(".")[0] == "alchem"]
print(json.dumps(results))
"""


def plain_metatomic(model: str, extensions: str | None, structures: str) -> list:
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_METATOMIC, model, extensions or "", structures],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ALCHEM_PLUGIN_DIR"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def alchem_calculator(model: str, structures: str) -> list:
    import ase.io
    from alchem.calculator import load_calculator

    results = []
    for atoms in ase.io.read(structures, ":3"):
        atoms.calc = load_calculator(model)
        results.append(
            {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces(),
                "stress": atoms.get_stress(),
            }
        )
    return results


def assert_same(first: list, second: list, tolerance: float) -> None:
    for a, b in zip(first, second, strict=True):
        for key in ("energy", "forces", "stress"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tolerance)


def extra_file(model: str, name: str) -> str:
    with zipfile.ZipFile(model) as archive:
        path = next(n for n in archive.namelist() if n.endswith(f"/extra/{name}"))
        return archive.read(path).decode()


@pytest.fixture(scope="module", params=["float64", "float32"])
def models(request, emt_dir, tmp_path_factory) -> dict:
    """A small trained model of each architecture, in float64 and float32."""
    precision = 64 if request.param == "float64" else 32
    result = {}
    for architecture in ("soap_bpnn", "alchemical_model"):
        folder = tmp_path_factory.mktemp(f"{architecture}-{request.param}")
        os.symlink(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
        write_options(
            str(folder / "options.yaml"),
            architecture,
            base_precision=precision,
            training={"num_epochs": 2},
        )
        run_cli("alchem-train", "options.yaml", "--run-dir", "run", cwd=str(folder))
        result[architecture] = folder
    result["precision"] = request.param
    return result


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["soap_bpnn", "alchemical_model"])
def test_model_declares_its_extension_and_loads_without_alchem(
    models, architecture, emt_dir
):
    """The model records libalchem_ops.so as a metatomic extension, a copy lies in
    extensions/ beside it, no temporary path is recorded, and plain metatomic-ase
    in a process that never imports alchem gives alchem.calculator's numbers."""
    folder = models[architecture]
    model = str(folder / "model.pt")
    extensions = json.loads(extra_file(model, "extensions"))
    assert [e["name"] for e in extensions] == ["alchem_ops"]
    assert extensions[0]["path"] == "alchem/lib/libalchem_ops.so"
    copy = folder / "extensions" / extensions[0]["path"]
    assert copy.is_file()
    assert ".tmp" not in extra_file(model, "export-metadata")
    structures = os.path.join(emt_dir, "test.xyz")
    plain = plain_metatomic(model, str(folder / "extensions"), structures)
    assert_same(plain, alchem_calculator(model, structures), 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["soap_bpnn", "alchemical_model"])
def test_torch_only_export(models, architecture, emt_dir, tmp_path):
    """`alchem-export --torch-only`: no extension declared or written, loads in
    plain metatomic with no extensions folder, and matches the kernel export (1e-10
    in float64; float32 to its rounding)."""
    folder = models[architecture]
    output = tmp_path / "portable.pt"
    run_cli(
        "alchem-export",
        str(folder / "model.ckpt"),
        "-o",
        str(output),
        "--torch-only",
        cwd=str(tmp_path),
    )
    assert json.loads(extra_file(str(output), "extensions")) == []
    assert not (tmp_path / "extensions").exists()
    structures = os.path.join(emt_dir, "test.xyz")
    portable = plain_metatomic(str(output), None, structures)
    kernel = alchem_calculator(str(folder / "model.pt"), structures)
    tolerance = 1e-10 if models["precision"] == "float64" else 2e-4
    assert_same(portable, kernel, tolerance)


def _tampered_schema(model: str, target: Path) -> None:
    """A copy of ``model`` that claims another signature of the operator."""
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("/extra/model-metadata"):
                metadata = json.loads(data)
                metadata["extra"]["alchem.ops_schema"] += " # from a future build"
                metadata["extra"]["alchem.version"] = "9.9.9"
                data = json.dumps(metadata).encode()
            copy.writestr(item, data)


def test_model_needing_another_operator_schema(trained, tmp_path):
    """A model exported by another alchem whose operator signature differs: one
    line naming both versions and what to do, in alchem-eval and in LAMMPS."""
    model = tmp_path / "model.pt"
    _tampered_schema(trained["model"], model)
    shutil.copytree(
        Path(trained["model"]).parent / "extensions", tmp_path / "extensions"
    )
    result = run_cli(
        "alchem-eval",
        str(model),
        os.path.join(Path(trained["dir"]), "train.xyz"),
        cwd=str(tmp_path),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "alchem 9.9.9" in message and "alchem-export" in message
    if plugin_built():
        atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=3)
        with pytest.raises(AssertionError) as error:
            lammps_single_point(tmp_path / "lmp", atoms, str(model), ELEMENTS)
        assert "alchem 9.9.9" in str(error.value)
        assert "--torch-only" in str(error.value)


def _library_copy(tmp_path: Path, torch_version: str) -> Path:
    """The compiled libraries in a site-packages-like folder whose torch is
    ``torch_version`` (torch/version.py beside alchem/lib)."""
    site = tmp_path / "site-packages"
    folder = site / "alchem" / "lib"
    shutil.copytree(native.library_directory(), folder)
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text(f"__version__ = '{torch_version}'\n")
    info = json.loads((folder / "build-info.json").read_text())
    assert info["layout"] == "site-packages"
    return folder


def test_libraries_built_against_another_torch(tmp_path):
    """Libraries whose build-info.json names another torch than the installed one:
    Python warns (naming both versions and the rebuild command) and keeps models
    on their torch operations."""
    import torch

    folder = _library_copy(tmp_path, torch.__version__)
    info = json.loads((folder / "build-info.json").read_text())
    info["torch"] = "2.99.0"
    (folder / "build-info.json").write_text(json.dumps(info))
    script = "from alchem import ops; print('enabled', ops.kernel_enabled())"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, ALCHEM_PLUGIN_DIR=str(folder)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "enabled False" in result.stdout
    assert (
        "torch 2.99.0" in result.stderr
        and f"torch {torch.__version__}" in result.stderr
    )
    assert "pip install --no-build-isolation" in result.stderr


@pytest.mark.skipif(not plugin_built(), reason="LAMMPS plugin not built")
def test_plugin_built_against_another_torch(tmp_path):
    """`plugin load` of a plugin built against torch X in an environment with torch
    Y: one error naming both and the rebuild command, not a crash."""
    folder = _library_copy(tmp_path, "2.99.1")
    run = tmp_path / "run"
    run.mkdir()
    script = f"plugin load {folder / 'alchemicalplugin.so'}\n"
    result = run_lammps(run, script, check=False)
    text = result.stdout + result.stderr
    assert "built against torch" in text and "torch 2.99.1 is installed" in text
    assert "pip install --no-build-isolation" in text
