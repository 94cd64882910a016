"""``alchem-lammps --plugin-path``: where the LAMMPS plugin is, to load it by hand.

In this environment's ``lmp`` the plugin loads by itself; elsewhere use
``plugin load $(alchem-lammps --plugin-path)`` in the input, or
``export LAMMPS_PLUGIN_PATH=$(alchem-lammps --plugin-dir)``.
"""

import argparse
import sys

from .common import add_version


def lammps_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="alchem-lammps",
        description="Locate the LAMMPS plugin providing `pair_style alchemical`.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--plugin-path",
        action="store_true",
        help="print the path of alchemicalplugin.so (for `plugin load <path>`)",
    )
    group.add_argument(
        "--plugin-dir",
        action="store_true",
        help="print the folder holding it (for LAMMPS_PLUGIN_PATH)",
    )
    add_version(parser)
    args = parser.parse_args(argv)

    from ..lammps import plugin_directory, plugin_path

    try:
        path = plugin_path()
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(plugin_directory() if args.plugin_dir else path)
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(lammps_main(argv))


if __name__ == "__main__":
    main()
