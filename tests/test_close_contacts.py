"""Close contacts: the exported model records the shortest distance of each element
pair in its training data; ASE and LAMMPS warn once, with a count, below 0.9 x it."""

import json
import os
import warnings

import ase.io
import numpy as np
import pytest
from alchem.calculator import load_calculator
from alchem.contacts import MARGIN, METADATA_KEY
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list
from conftest import run_cli, write_options
from lammps_support import fcc_alloy, plugin_built, run_lammps, write_data

pytestmark = pytest.mark.slow  # trains models (alchem-train) in its fixtures

ELEMENTS = [28, 29, 78]  # Ni Cu Pt


@pytest.fixture(scope="module")
def model(emt_dir, tmp_path_factory) -> str:
    """SOAP-BPNN trained on the whole of train.xyz (validation: test.xyz)."""
    folder = tmp_path_factory.mktemp("contacts")
    for name in ("train.xyz", "test.xyz"):
        os.symlink(os.path.join(emt_dir, name), folder / name)
    write_options(
        str(folder / "o.yaml"),
        "soap_bpnn",
        validation_set="test.xyz",
        training={"num_epochs": 1},
    )
    run_cli("alchem-train", "o.yaml", "--run-dir", "run", cwd=str(folder))
    return str(folder / "model.pt")


def test_model_records_the_shortest_distance_per_element_pair(model, emt_dir):
    calculator = load_calculator(model)
    recorded = json.loads(calculator._model.metadata().extra[METADATA_KEY])
    expected: dict[str, float] = {}
    for atoms in ase.io.read(os.path.join(emt_dir, "train.xyz"), ":"):
        i, j, d = neighbor_list("ijd", atoms, 4.5)
        for a, b, distance in zip(atoms.numbers[i], atoms.numbers[j], d, strict=True):
            low, high = sorted((int(a), int(b)))
            key = f"{chemical_symbols[low]}-{chemical_symbols[high]}"
            expected[key] = min(expected.get(key, np.inf), float(distance))
    assert (
        sorted(recorded)
        == sorted(expected)
        == [
            "Cu-Cu",
            "Cu-Pt",
            "Ni-Cu",
            "Ni-Ni",
            "Ni-Pt",
            "Pt-Pt",
        ]
    )
    for key, value in expected.items():
        assert recorded[key] == pytest.approx(value, abs=1e-4), key


def _close_pair(atoms: ase.Atoms, distance: float) -> ase.Atoms:
    """atoms with atom 1 moved to ``distance`` Å from atom 0 (along x)."""
    atoms = atoms.copy()
    atoms.positions[1] = atoms.positions[0] + [distance, 0.0, 0.0]
    return atoms


def test_calculator_warns_once_with_a_count(model, emt_dir):
    atoms = ase.io.read(os.path.join(emt_dir, "test.xyz"), "0")
    calculator = load_calculator(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.calc = calculator
        atoms.get_potential_energy()  # as trained: no warning
        assert calculator.close_contacts == 0
        close = _close_pair(atoms, 0.1)
        close.calc = calculator
        close.get_forces()
        again = _close_pair(atoms, 0.2)
        again.calc = calculator
        again.get_forces()
    messages = [str(w.message) for w in caught if "closer than" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith(
        f"1 atom pair(s) closer than {MARGIN} x the shortest distance"
    )
    assert "at 0.100 Å" in messages[0]
    assert calculator.close_contacts == 2  # one pair in each of the two calls


@pytest.mark.skipif(not plugin_built(), reason="LAMMPS plugin not built")
@pytest.mark.parametrize("nprocs", [1, 2])
def test_pair_style_warns_once_with_a_count(model, tmp_path, nprocs):
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=5, rattle=0.02)
    half = atoms.cell[0, 0] / 2
    # two atoms 0.3 Å apart across the middle of the box: on two ranks with -np 2
    atoms.positions[0] = [half - 0.15, 1.0, 1.0]
    atoms.positions[1] = [half + 0.15, 1.0, 1.0]
    write_data(tmp_path / "close.data", atoms, ELEMENTS)
    write_data(tmp_path / "fine.data", fcc_alloy((3, 3, 3), 3.6, ELEMENTS, 6), ELEMENTS)
    script = """
units metal
atom_style atomic
read_data {data}
pair_style alchemical {model}
pair_coeff * * Ni Cu Pt
run 0
run 0
"""
    fine = run_lammps(
        tmp_path, script.format(data="fine.data", model=model), nprocs=nprocs
    )
    assert "closer than" not in fine.stdout
    result = run_lammps(
        tmp_path, script.format(data="close.data", model=model), nprocs=nprocs
    )
    log = (tmp_path / "log.lammps").read_text()
    warned = [line for line in log.splitlines() if "closer than" in line]
    assert len(warned) == 1, result.stdout
    # the count, from ASE's neighbour list and the distances the model recorded
    table = json.loads(load_calculator(model)._model.metadata().extra[METADATA_KEY])
    i, j, d = neighbor_list("ijd", atoms, 3.0)
    expected = 0
    for a, b, distance in zip(atoms.numbers[i], atoms.numbers[j], d, strict=True):
        low, high = sorted((int(a), int(b)))
        trained = table[f"{chemical_symbols[low]}-{chemical_symbols[high]}"]
        expected += distance < MARGIN * trained
    expected //= 2  # ASE lists each pair twice
    assert expected >= 1
    assert warned[0].startswith(
        f"WARNING: pair_style alchemical: {expected} atom pair(s) closer than 0.9 x "
        "the shortest distance of their elements in the training data at step 0 "
        "(closest: "
    )
    assert "at 0.300, trained down to" in warned[0] and "Warned once" in warned[0]


@pytest.mark.skipif(not plugin_built(), reason="LAMMPS plugin not built")
def test_zbl_recipe_of_the_docs(model, tmp_path):
    """docs/lammps.md: ZBL under the model with hybrid/overlay repels close atoms."""
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=5, rattle=0.02)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    write_data(tmp_path / "close.data", atoms, ELEMENTS)
    zbl = "\n".join(
        f"pair_coeff {a + 1} {b + 1} zbl {ELEMENTS[a]} {ELEMENTS[b]}"
        for a in range(3)
        for b in range(a, 3)
    )
    energies = {}
    for name, pair in (
        ("model", f"pair_style alchemical {model}\npair_coeff * * Ni Cu Pt"),
        (
            "zbl",
            f"pair_style hybrid/overlay alchemical {model} zbl 1.0 1.8\n"
            f"pair_coeff * * alchemical Ni Cu Pt\n{zbl}",
        ),
    ):
        script = f"""
units metal
atom_style atomic
read_data close.data
{pair}
run 0
variable e equal pe
print "energy ${{e}}"
"""
        result = run_lammps(tmp_path, script)
        line = [x for x in result.stdout.splitlines() if x.startswith("energy ")][0]
        energies[name] = float(line.split()[1])
    # Ni/Cu/Pt at 0.3 Å: ZBL adds thousands of eV; the model alone does not
    assert energies["zbl"] - energies["model"] > 1000.0
    assert abs(energies["model"]) < 1000.0


def test_checkpoint_without_shortest_distances_still_loads(model, tmp_path):
    """A checkpoint written before the distances were recorded loads and exports,
    with no distances (so no warnings), instead of failing in load_state_dict."""
    import torch
    from alchem.training import model_from_checkpoint

    checkpoint = model.replace("model.pt", "model.ckpt")
    state = torch.load(checkpoint, weights_only=False)
    for key in ("best_state", "model_state"):
        del state[key]["shortest_distance"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    loaded, _ = model_from_checkpoint(str(old))
    assert torch.isinf(loaded.shortest_distance).all()
    run_cli("alchem-export", str(old), "-o", "old.pt", cwd=str(tmp_path))
    assert (tmp_path / "old.pt").is_file()
