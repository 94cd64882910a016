"""RPATH entries, relative to <site-packages>/alchem/lib, for library folders.

Used by CMakeLists.txt when pip builds the wheel: each folder (torch/lib,
metatensor/lib, ..., and MPICH's <prefix>/lib) is written relative to the
site-packages folder it was found under in the build environment, so that the
installed libraries find the same packages in whatever environment the wheel is
installed into. Prints the entries separated by ';' (a CMake list).
"""

import os
import site
import sys


def site_roots() -> list[str]:
    roots = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    roots += site.getsitepackages()
    return sorted({os.path.realpath(r) for r in roots if os.path.isdir(r)}, key=len)


def relative_entry(folder: str, roots: list[str]) -> str:
    folder = os.path.realpath(folder)
    # the longest site-packages folder holding it, else the one whose prefix
    # (<prefix>/lib/pythonX.Y/site-packages) holds it (MPICH's <prefix>/lib)
    inside = [r for r in roots if folder.startswith(r + os.sep)]
    if not inside:
        inside = [
            r
            for r in roots
            if folder.startswith(os.path.dirname(os.path.dirname(os.path.dirname(r))))
        ]
    if not inside:
        raise SystemExit(f"{folder} is in no site-packages or environment prefix")
    root = max(inside, key=len)
    return "$ORIGIN/../../" + os.path.relpath(folder, root)


if __name__ == "__main__":
    roots = site_roots()
    print(";".join(dict.fromkeys(relative_entry(f, roots) for f in sys.argv[1:])))
