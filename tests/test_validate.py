"""alchem-validate through the real CLI: a hand-written Morse model against ASE's
MorsePotential (exact), trained models against EMT, references from files, and
bad input."""

import itertools
import json
import os

import matplotlib.image
import numpy as np
import pytest
import yaml
from ase import units
from ase.calculators.morse import fcut
from conftest import run_cli
from morse_model import save_morse_model
from scipy.optimize import minimize_scalar

# Morse parameters of copper (Girifalco and Weizer 1959) with a short smooth cutoff
# (3.7-4.9 Å) to keep the test fast
MORSE = {"epsilon": 0.3429, "r0": 2.866, "rho0": 3.894, "rcut1": 1.3, "rcut2": 1.7}
MORSE_KWARGS = "{" + ", ".join(f"{k}: {v}" for k, v in MORSE.items()) + "}"
FAST = ["--supercell", "2", "--md-steps", "20"]


@pytest.fixture(scope="module")
def morse_model(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("morse") / "morse.pt")
    save_morse_model(path, 29, **MORSE)
    return path


def _pair(r: np.ndarray) -> np.ndarray:
    expf = np.exp(MORSE["rho0"] * (1.0 - r / MORSE["r0"]))
    cutoff = fcut(r, MORSE["rcut1"] * MORSE["r0"], MORSE["rcut2"] * MORSE["r0"])
    return MORSE["epsilon"] * expf * (expf - 2.0) * cutoff


def _fcc_vectors(a: float, cutoff: float) -> np.ndarray:
    n = int(np.ceil(2 * cutoff / a)) + 1
    grid = np.array(list(itertools.product(range(-n, n + 1), repeat=3)))
    grid = grid[(grid.sum(axis=1) % 2 == 0) & np.any(grid != 0, axis=1)]
    vectors = grid * a / 2
    return vectors[np.linalg.norm(vectors, axis=1) < cutoff]


def morse_fcc_by_lattice_sums() -> dict[str, float]:
    """The known values: lattice sums over fcc neighbours of the pair potential.

    Equilibrium at the minimum of E(a) = 1/2 sum phi(R); B = V d2E/dV2 there;
    C_ijkl = 1/(2V) sum (phi'' - phi'/R) R_i R_j R_k R_l / R^2 (no pressure terms at
    equilibrium), so C44 = C12 (Cauchy).
    """
    cutoff = MORSE["rcut2"] * MORSE["r0"]

    def energy(a: float) -> float:
        return 0.5 * _pair(np.linalg.norm(_fcc_vectors(a, cutoff), axis=1)).sum()

    nearest = np.sqrt(2) * MORSE["r0"]
    a0 = minimize_scalar(
        energy, bounds=(0.9 * nearest, 1.1 * nearest), method="bounded",
        options={"xatol": 1e-10},
    ).x  # fmt: skip
    volume = a0**3 / 4
    step = 1e-4 * volume

    def energy_of_volume(v: float) -> float:
        return energy((4 * v) ** (1 / 3))

    curvature = (
        energy_of_volume(volume + step)
        - 2 * energy_of_volume(volume)
        + energy_of_volume(volume - step)
    ) / step**2
    vectors = _fcc_vectors(a0, cutoff)
    r = np.linalg.norm(vectors, axis=1)
    h = 1e-5
    first = (_pair(r + h) - _pair(r - h)) / (2 * h)
    second = (_pair(r + h) - 2 * _pair(r) + _pair(r - h)) / h**2
    weight = (second - first / r) / r**2 / (2 * volume) / units.GPa
    x, y = vectors[:, 0], vectors[:, 1]
    return {
        "lattice_constant": a0,
        "bulk_modulus": volume * curvature / units.GPa,
        "C11": float((weight * x**4).sum()),
        "C12": float((weight * x**2 * y**2).sum()),
        "energy_per_atom": energy(a0),
    }


@pytest.mark.slow
def test_morse_model_against_ase_morse_is_exact(morse_model, tmp_path):
    result = run_cli(
        "alchem-validate", morse_model,
        "--reference", "ase.calculators.morse:MorsePotential",
        "--reference-kwargs", MORSE_KWARGS, "-o", "out", *FAST,
        cwd=str(tmp_path),
    )  # fmt: skip
    assert "| Cu-fcc | lattice_constant |" in result.stdout
    document = json.load(open(tmp_path / "out" / "validation.json"))
    properties = document["systems"]["Cu-fcc"]["properties"]
    expected = {
        "lattice_constant", "bulk_modulus", "C11", "C12", "C44",
        "vacancy_formation_energy", "surface_energy_100", "surface_energy_111",
        "phonon_X_max", "phonon_L_max",
    }  # fmt: skip
    assert set(properties) == expected
    for name, entry in properties.items():
        # the same function through metatomic (torch autograd) and ASE (numpy)
        assert abs(entry["relative_error"]) < 1e-7, (name, entry)
        assert entry["model"] == pytest.approx(entry["reference"], rel=1e-7)

    known = morse_fcc_by_lattice_sums()
    value = {name: entry["model"] for name, entry in properties.items()}
    assert value["lattice_constant"] == pytest.approx(
        known["lattice_constant"], rel=2e-5
    )
    # finite strains of +-0.5 % measure the local curvature...
    assert value["C11"] == pytest.approx(known["C11"], rel=5e-3)
    assert value["C12"] == pytest.approx(known["C12"], rel=5e-3)
    assert value["C44"] == pytest.approx(known["C12"], rel=5e-3)  # Cauchy
    # ... the Birch-Murnaghan fit over +-6 % in volume an average one: 1.9 % above
    # the exact curvature for this potential, whose cutoff acts on the third shell
    assert value["bulk_modulus"] == pytest.approx(known["bulk_modulus"], rel=0.03)
    # a pair potential's unrelaxed vacancy costs -E/atom; relaxation lowers it a bit
    cohesive = -known["energy_per_atom"]
    assert 0.95 * cohesive < value["vacancy_formation_energy"] <= cohesive
    md = document["systems"]["Cu-fcc"]["md"]
    assert md["stable"] and md["steps"] == 20 and md["min_distance"] > 2.0

    markdown = open(tmp_path / "out" / "validation.md").read()
    assert "| Cu-fcc | C44 |" in markdown and "eos.png" in markdown
    for figure in ("eos.png", "relative_errors.png"):
        image = matplotlib.image.imread(str(tmp_path / "out" / figure))
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image.std() > 0.05  # not blank


@pytest.mark.slow
def test_values_file_as_reference(morse_model, tmp_path):
    """A YAML of values, and an earlier run's validation.json, as references."""
    with open(tmp_path / "ref.yaml", "w") as handle:
        yaml.safe_dump(
            {"Cu-fcc": {"lattice_constant": 4.0, "bulk_modulus": 60}}, handle
        )
    run_cli(
        "alchem-validate", morse_model, "--reference", "ref.yaml",
        "--properties", "eos", "-o", "first", cwd=str(tmp_path),
    )  # fmt: skip
    first = json.load(open(tmp_path / "first" / "validation.json"))
    entry = first["systems"]["Cu-fcc"]["properties"]["lattice_constant"]
    assert entry["reference"] == 4.0
    assert entry["relative_error"] == pytest.approx((entry["model"] - 4.0) / 4.0)
    assert entry["within_target"] is False  # 3 % off
    assert first["systems"]["Cu-fcc"]["md"] is None  # not asked
    run_cli(
        "alchem-validate", morse_model, "--reference", "first/validation.json",
        "--properties", "eos", "-o", "second", cwd=str(tmp_path),
    )  # fmt: skip
    second = json.load(open(tmp_path / "second" / "validation.json"))
    for entry in second["systems"]["Cu-fcc"]["properties"].values():
        assert entry["relative_error"] == 0.0


@pytest.mark.parametrize(
    "number, name, cauchy",
    [(26, "Fe-bcc", ("C12", "C44")), (12, "Mg-hcp", ("C13", "C44"))],
)
def test_bcc_and_hcp_morse_exact(tmp_path, number, name, cauchy):
    """bcc and hcp (c/a relaxed) through the same Morse model and calculator."""
    model = str(tmp_path / "morse.pt")
    save_morse_model(model, number, **MORSE)
    run_cli(
        "alchem-validate", model,
        "--reference", "ase.calculators.morse:MorsePotential",
        "--reference-kwargs", MORSE_KWARGS, "--supercell", "2",
        "--properties", "eos,elastic,surface,phonons", "-o", "out",
        cwd=str(tmp_path),
    )  # fmt: skip
    document = json.load(open(tmp_path / "out" / "validation.json"))
    properties = document["systems"][name]["properties"]
    for entry in properties.values():
        assert abs(entry["relative_error"]) < 1e-7
    # central pair forces at zero stress: the Cauchy relations
    first, second = (properties[c]["model"] for c in cauchy)
    assert first == pytest.approx(second, rel=2e-3)


def test_model_file_as_reference(morse_model, tmp_path):
    """A second model.pt (here the same one): every error exactly 0."""
    run_cli(
        "alchem-validate", morse_model, "--reference", morse_model,
        "--properties", "eos,elastic", "-o", "out", cwd=str(tmp_path),
    )  # fmt: skip
    document = json.load(open(tmp_path / "out" / "validation.json"))
    properties = document["systems"]["Cu-fcc"]["properties"]
    assert set(properties) == {"lattice_constant", "bulk_modulus", "C11", "C12", "C44"}
    for entry in properties.values():
        assert entry["error"] == 0.0 and entry["within_target"] is True


@pytest.mark.slow  # needs the trained models
def test_trained_model_against_emt(trained, tmp_path):
    """Any exported model against any ASE calculator: EMT's own Cu and a CuNi
    alloy, the model's values finite and compared."""
    run_cli(
        "alchem-validate", trained["model"], "--reference", "ase.calculators.emt:EMT",
        "--elements", "Cu", "--alloys", "CuNi", "--properties", "eos,elastic,md",
        "--md-steps", "10", "--supercell", "2", "-o", "out", cwd=str(tmp_path),
    )  # fmt: skip
    document = json.load(open(tmp_path / "out" / "validation.json"))
    assert set(document["systems"]) == {"Cu-fcc", "CuNi-L10"}
    copper = document["systems"]["Cu-fcc"]["properties"]
    # EMT's copper (ASE's EMT parameters): a = 3.59 Å, B = 134 GPa
    assert copper["lattice_constant"]["reference"] == pytest.approx(3.59, abs=0.005)
    assert copper["bulk_modulus"]["reference"] == pytest.approx(134.4, rel=0.01)
    for system in document["systems"].values():
        assert set(system["properties"]) == {
            "lattice_constant", "bulk_modulus", "C11", "C12", "C44",
        }  # fmt: skip
        for entry in system["properties"].values():
            assert np.isfinite(entry["model"]) and np.isfinite(entry["reference"])
        assert system["md"]["steps"] == 10


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--reference", "ase.calculators.nothere:X"], "cannot import module"),
        (["--reference", "ase.calculators.emt:Nothing"], "has no class 'Nothing'"),
        (["--reference", "emt"], "not understood; give an ASE calculator"),
        (["--elements", "Ni"], "the model has no Ni"),
        (["--alloys", "CuNi3Pd"], "must have 2 or 4 atoms"),
        (["--properties", "eos,magic"], "unknown 'magic'"),
    ],
)
def test_bad_input_is_one_line(morse_model, tmp_path, arguments, message):
    if "--reference" not in arguments:
        arguments = [*arguments, "--reference", "ase.calculators.emt:EMT"]
    result = run_cli(
        "alchem-validate", morse_model, *arguments, cwd=str(tmp_path), check=False
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_reference_that_cannot_do_the_element(tmp_path):
    """EMT has no parameters for iron: one line naming the reference and system."""
    model = str(tmp_path / "iron.pt")
    save_morse_model(model, 26, **MORSE)
    result = run_cli(
        "alchem-validate", model, "--reference", "ase.calculators.emt:EMT",
        "--properties", "eos", cwd=str(tmp_path), check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ase.calculators.emt:EMT: cannot compute Fe-bcc" in result.stderr
    assert not os.path.exists(tmp_path / "validation" / "validation.json")
