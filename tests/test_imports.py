"""No import circle in python/alchem: data flows one way (options -> data ->
features -> model -> training -> export -> engines).

The graph holds every import of an alchem module by another, at the top of a file or
inside a function, read from the source with ``ast``; a module importing from its
own parent packages is no edge (Python initialises those first anyway).
"""

import ast
import graphlib
import json
import subprocess
import sys
from pathlib import Path

import alchem

PACKAGE = Path(alchem.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The alchem modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:  # a submodule, else a name defined in base
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    modules = set()
    for target in found:
        while target and target not in MODULES:  # alchem.x.y.name -> alchem.x.y
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            modules.add(target)
    return modules


def import_graph() -> dict[str, set[str]]:
    return {name: imported(name, path) for name, path in MODULES.items()}


def test_the_graph_sees_the_modules():
    graph = import_graph()
    assert "alchem.training.loop" in graph and "alchem.lammps" in graph
    assert "alchem.training.checkpoints" in graph["alchem.training.loop"]
    assert "alchem.model" in graph["alchem.training.build"]


def test_no_import_circle():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as error:
        circle = " -> ".join(error.args[1])
        raise AssertionError(f"import circle: {circle}") from None


def test_a_circle_is_found():
    """The check fails on a circle (here one added to the real graph)."""
    graph = import_graph()
    graph["alchem.model"] = graph["alchem.model"] | {"alchem.training.loop"}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        assert "alchem.model" in error.args[1]
    else:
        raise AssertionError("the circle was not found")


def test_lammps_entry_point_stays_cheap():
    """``alchem.lammps`` runs at every ``lmp`` start: it imports neither torch nor
    the demo nor the engines."""
    code = (
        "import json, sys, alchem.lammps; "
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('alchem'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "torch" not in loaded
    assert set(loaded) <= {"alchem", "alchem.lammps", "alchem.native"}, loaded
