"""Bad input found by a machine: hypothesis generates options files and structures;
each either works or gives a clear error (ConfigError for files, ValueError from the
calculator), never another exception or a hang (the deadline)."""

import math
import os

import ase
import ase.io
import numpy as np
import pytest
import yaml
from alchem.calculator import load_calculator
from alchem.data import DatasetInfo, read_structures
from alchem.errors import ConfigError
from alchem.export import export_model
from alchem.options import expand_options, load_yaml
from alchem.training import build_model
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=100,
    deadline=5000,  # ms per example: a hang fails the test
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: no flaky suite
)
SMALL_MODEL = {
    "soap": {"cutoff": 4.0, "max_radial": 2, "max_angular": 1},
    "bpnn": {"num_neurons_per_layer": 8},
}
VALID = {
    "seed": 1,
    "architecture": {
        "name": "soap_bpnn",
        "model": SMALL_MODEL,
        "training": {"num_epochs": 2, "learning_rate": 0.001},
    },
    "training_set": "train.xyz",
    "validation_set": 0.1,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("properties")
    atoms = ase.Atoms("CuNi", positions=[[0, 0, 0], [2.5, 0, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    ase.io.write(folder / "train.xyz", atoms)
    return folder


# ------------------------------------------------------------------ options files
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["train.xyz", "cpu", "cuda", "soap_bpnn", "eV", "1e-3", ""]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)
# the key paths of a valid file, where a random value goes
PATHS = [
    ("seed",),
    ("base_precision",),
    ("device",),
    ("architecture",),
    ("architecture", "name"),
    ("architecture", "model"),
    ("architecture", "model", "soap"),
    ("architecture", "model", "soap", "cutoff"),
    ("architecture", "model", "bpnn", "num_neurons_per_layer"),
    ("architecture", "training"),
    ("architecture", "training", "num_epochs"),
    ("architecture", "training", "learning_rate"),
    ("architecture", "training", "loss_weights"),
    ("training_set",),
    ("training_set", "systems"),
    ("training_set", "targets"),
    ("training_set", "targets", "energy", "forces"),
    ("validation_set",),
    ("test_set",),
    ("unknown_key",),
]


def _set(options: dict, path: tuple, value) -> dict:
    node = options
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return options


def _expand(user, folder) -> None:
    """expand_options works or raises ConfigError: nothing else."""
    try:
        expand_options(user, "o.yaml", str(folder))
    except ConfigError as error:
        assert str(error).startswith("o.yaml") and "\n" not in str(error), str(error)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_options_with_random_values(folder, changes):
    import copy

    user = copy.deepcopy(VALID)
    for path, value in changes:
        _set(user, path, value)
    _expand(user, folder)


@SETTINGS
@given(st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_options_with_random_keys(folder, user):
    _expand(user, folder)


@SETTINGS
@given(
    st.one_of(
        st.text(max_size=60),
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
        values.map(yaml.safe_dump),
    )
)
def test_random_options_file_text(folder, text):
    """Any file content: a mapping, or one ConfigError naming the file."""
    path = folder / "random.yaml"
    path.write_text(text)
    try:
        user = load_yaml(str(path))
    except ConfigError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error), str(error)
        return
    _expand(user, folder)


# --------------------------------------------------------------------- structures
SPECIAL = [math.nan, math.inf, -math.inf, 1e6, -1e6, 1e-9]
cell_sizes = st.sampled_from([3.6, 10.0, 0.0, 1e-3, 0.3, 2.0, 1e4, 1e6])


def _rarely(values: list) -> st.SearchStrategy:
    """None (nothing special) most of the time, else one of ``values``."""
    return st.sampled_from([None] * 4 + values)


@st.composite
def structures(draw) -> ase.Atoms:
    n = draw(st.sampled_from([1, 2, 3, 4, 2, 3, 0]))  # an empty one sometimes
    coordinates = st.floats(-8.0, 8.0, allow_nan=False)
    positions = np.array(
        [[draw(coordinates) for _ in range(3)] for _ in range(n)], dtype=float
    ).reshape(n, 3)
    # hypothesis likes equal numbers: apart unless made coincident below
    positions += np.arange(n)[:, None] * np.array([1.9, 1.1, 0.7])
    special = draw(_rarely(SPECIAL))
    if n and special is not None:  # NaN, inf, far away or (almost) at the origin
        positions[draw(st.integers(0, n - 1)), draw(st.integers(0, 2))] = special
    if n >= 2 and draw(_rarely([True])):
        positions[1] = positions[0]  # coincident atoms
    size = draw(cell_sizes)
    cell = np.diag([size, size, draw(cell_sizes)])
    if draw(st.booleans()):
        cell[1, 0] = draw(st.sampled_from([0.5, -1.0, 1e3]))  # a tilted cell
    pbc = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    numbers = draw(st.lists(st.sampled_from([28, 29]), min_size=n, max_size=n))
    return ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)


labels = st.tuples(st.floats(-10.0, 10.0), _rarely([math.nan, math.inf])).map(
    lambda drawn: drawn[0] if drawn[1] is None else drawn[1]
)


@SETTINGS
@given(structures(), labels, labels)
def test_reading_random_structures(folder, atoms, energy, force):
    """Empty, one atom, no neighbours, coincident atoms, huge and tiny cells, NaN
    and inf in positions or labels, mixed periodicity: read, or one ConfigError
    naming the structure."""
    forces = np.full((len(atoms), 3), force)
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    path = folder / "structures.xyz"
    ase.io.write(path, atoms, format="extxyz")
    options = expand_options(
        {**VALID, "training_set": str(path)}, "o.yaml", str(folder)
    )
    where = "o.yaml: training_set"
    try:
        (structure,) = read_structures(options["training_set"], 4.0, where)
    except ConfigError as error:
        assert str(error).startswith(f"{where}: {path}"), str(error)
        reason = str(error).split(f"{path}")[-1].split(": ", 1)[-1]
        event(f"refused: {' '.join(reason.split()[:4])}")
        return
    event("read")
    assert len(structure.numbers) == len(atoms) > 0
    assert np.isfinite(structure.energy)
    assert structure.positions.isfinite().all()


@pytest.fixture(scope="module")
def calculator(folder):
    options = expand_options(VALID, "o.yaml", str(folder))
    model = build_model(options, DatasetInfo([28, 29], 8.0)).eval()
    path = os.path.join(folder, "tiny.pt")
    export_model(model, options, path)
    return load_calculator(path)


@SETTINGS
@given(structures())
def test_calculator_on_random_structures(calculator, atoms):
    """Finite energy and forces, or one ValueError that says what is wrong."""
    atoms.calc = calculator
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    except ValueError as error:
        message = str(error)
        assert "\n" not in message and message, message
        event(f"refused: {message.split(' ')[0]} {message.split(' ')[1]}")
        return
    event("evaluated")
    assert np.isfinite(energy)
    assert np.all(np.isfinite(forces))


def test_calculator_on_a_slab_without_third_vector(calculator):
    """Mixed periodicity as ASE writes slabs: pbc T T F with a zero third vector is
    a valid structure, not a 'too thin' cell."""
    atoms = ase.Atoms(
        "CuNi",
        positions=[[0, 0, 0], [1.8, 1.8, 0.5]],
        cell=[[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]],
        pbc=[True, True, False],
    )
    atoms.calc = calculator
    assert np.isfinite(atoms.get_potential_energy())
