"""Print pyproject.toml's [build-system] requires, quoted for a shell (Makefile)."""

import shlex
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the copy pip vendors
    from pip._vendor import tomli as tomllib

path = Path(__file__).resolve().parents[1] / "pyproject.toml"
requires = tomllib.loads(path.read_text())["build-system"]["requires"]
print(" ".join(shlex.quote(r) for r in requires))
