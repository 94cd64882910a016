"""Per-structure targets: bulk cells with stress, slabs and clusters without, DFT-style
key names, in any file order; bad numbers in the data; numbers as people write them."""

import os

import ase.io
import numpy as np
import pytest
import torch
import yaml
from alchem.data import collate, read_structures
from alchem.data.emt import generate_emt_structures
from alchem.errors import ConfigError
from alchem.options import _expand_dataset, expand_options, load_yaml
from alchem.training import (
    References,
    load_checkpoint,
    loss_function,
    metrics,
)
from ase.build import fcc111
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from conftest import SMALL_HYPERS, run_cli

DFT_KEYS = {"key": "dft_energy", "forces": "REF_forces", "stress": "dft_stress"}


def _label(atoms, with_stress: bool):
    """EMT labels under DFT-style names (info/arrays, no calculator)."""
    atoms.calc = EMT()
    atoms.info["dft_energy"] = atoms.get_potential_energy()
    atoms.arrays["REF_forces"] = atoms.get_forces()
    if with_stress:
        atoms.info["dft_stress"] = atoms.get_stress()
    atoms.calc = None
    return atoms


def mixed_frames(seed: int = 0) -> list:
    """12 bulk cells (stress), 4 'p p f' slabs and a cluster (no stress); the first
    structure is a slab, the third the cluster."""
    rng = np.random.default_rng(seed)
    bulk = [
        _label(a, True)
        for a in generate_emt_structures(12, elements=("Cu", "Ni"), seed=seed + 1)
    ]
    slabs = []
    for _ in range(4):
        slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
        slab.pbc = (True, True, False)
        slab.info.clear()  # adsorbate_info: extxyz cannot write it
        slab.symbols[int(rng.integers(len(slab)))] = "Ni"
        slab.positions += rng.normal(0.0, 0.05, slab.positions.shape)
        slabs.append(_label(slab, False))
    cluster = Octahedron("Cu", 3)
    cluster.center()
    cluster.positions += rng.normal(0.0, 0.05, cluster.positions.shape)
    cluster = _label(cluster, False)
    return [slabs[0], bulk[0], cluster, bulk[1], slabs[1], *bulk[2:], *slabs[2:]]


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    frames = mixed_frames()
    ase.io.write(folder / "mixed.xyz", frames[:13], format="extxyz")
    ase.io.write(folder / "val.xyz", frames[13:], format="extxyz")  # slabs first
    periodic_first = sorted(frames, key=lambda atoms: not all(atoms.pbc))
    ase.io.write(folder / "bulk_first.xyz", periodic_first, format="extxyz")
    return folder


def minimal_options(path, **training_set) -> str:
    """The options a user writes: DFT key names, numbers written 5e-4."""
    text = f"""\
architecture:
  name: soap_bpnn
  model: {yaml.safe_dump(SMALL_HYPERS["soap_bpnn"], default_flow_style=True).strip()}
  training: {{num_epochs: 1, batch_size: 4, learning_rate: 5e-4, log_interval: 1}}
training_set:
  systems: mixed.xyz
  targets:
    energy: {yaml.safe_dump(training_set or DFT_KEYS, default_flow_style=True).strip()}
validation_set: val.xyz
"""
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_mixed_dataset_trains_stress_on_the_periodic_structures_only(mixed_dir):
    folder = mixed_dir
    minimal_options(folder / "options.yaml")
    result = run_cli(
        "alchem-train", "options.yaml", "--run-dir", "run", cwd=str(folder)
    )
    # 13 training structures: 2 slabs, the cluster, 10 bulk cells with stress; the
    # validation file (a path) reads the same DFT keys: 2 bulk cells, 2 slabs
    assert "training_set: 13 structures; energy 13, forces 13, stress 10" in (
        result.stdout
    )
    assert "validation_set: 4 structures; energy 4, forces 4, stress 2" in (
        result.stdout
    )
    expanded = yaml.safe_load(open(folder / "run" / "options.yaml"))
    assert expanded["architecture"]["training"]["learning_rate"] == 5e-4
    assert expanded["validation_set"]["targets"]["energy"]["key"] == "dft_energy"
    rows = open(folder / "run" / "metrics.csv").read().splitlines()
    header, last = (
        rows[0].split(","),
        dict(zip(rows[0].split(","), rows[-1].split(","))),
    )
    assert "validation_stress_rmse" in header
    assert np.isfinite(float(last["validation_stress_rmse"]))
    assert np.isfinite(float(last["train_stress_rmse"]))

    # the stress of the bulk cells was trained: without it the weights differ
    minimal_options(folder / "no_stress.yaml", **{**DFT_KEYS, "stress": False})
    result = run_cli(
        "alchem-train",
        "no_stress.yaml",
        "-o",
        "no_stress.pt",
        "--run-dir",
        "run_no_stress",
        cwd=str(folder),
    )
    assert "training_set: 13 structures; energy 13, forces 13, stress 0" in (
        result.stdout
    )
    with_stress = load_checkpoint(str(folder / "model.ckpt"))["model_state"]
    without = load_checkpoint(str(folder / "no_stress.ckpt"))["model_state"]
    changed = [
        k
        for k, v in with_stress.items()
        if v.is_floating_point() and not torch.equal(v, without[k])
    ]
    assert changed


def read(folder, name: str, **energy):
    section = _expand_dataset(
        {"systems": name, "targets": {"energy": energy or DFT_KEYS}},
        "options.yaml",
        "training_set",
        str(folder),
    )
    return read_structures(section, cutoff=4.5, where="options.yaml: training_set")


def test_any_file_order_gives_stress_to_the_periodic_structures(mixed_dir):
    for name in ("mixed.xyz", "bulk_first.xyz"):
        structures = read(mixed_dir, name)
        frames = ase.io.read(mixed_dir / name, ":")
        has_stress = [s.virial is not None for s in structures]
        assert has_stress == [bool(all(a.pbc)) for a in frames]
        assert all(s.forces is not None for s in structures)
        assert has_stress[0] is (name == "bulk_first.xyz")


def test_loss_and_metrics_ignore_the_stress_of_structures_without_it(mixed_dir):
    structures = read(mixed_dir, "mixed.xyz")[:4]  # slab, bulk, cluster, bulk
    batch = collate(structures)
    assert batch.has_virial.tolist() == [False, True, False, True]
    prediction = {
        "energy": batch.energy + 0.1,
        "forces": batch.forces + 0.01,
        "virial": batch.virial.clone(),
    }
    targets = {"energy": True, "forces": True, "virial": True}
    weights = {"energy": 1.0, "forces": 1.0, "stress": 1.0}
    loss = loss_function(prediction, batch, targets, weights, False)
    # any virial predicted for the slab and the cluster changes nothing
    prediction["virial"][[0, 2]] += 100.0
    assert loss_function(prediction, batch, targets, weights, False) == loss
    reference = References.of_batch(batch)
    values = metrics(prediction, reference, targets)
    assert values["stress_rmse"] == 0.0
    # the bulk cells' stress does count, averaged over those two cells only
    prediction["virial"][1] += 1.0
    changed = loss_function(prediction, batch, targets, weights, False)
    n_atoms = float(batch.n_atoms[1])
    assert float(changed - loss) == pytest.approx(1.0 / n_atoms**2 / 2)


def test_explicit_stress_key_found_nowhere_is_an_error(mixed_dir):
    (mixed_dir / "typo.yaml").write_text(
        open(minimal_options(mixed_dir / "typo.yaml"))
        .read()
        .replace("dft_stress", "dft_stres")
    )
    result = run_cli("alchem-train", "typo.yaml", cwd=str(mixed_dir), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip()
    ] and "targets.energy.stress: key 'dft_stres' not found in any structure" in (
        result.stderr
    )


@pytest.mark.parametrize(
    "number, value",
    [
        ("1e-3", 1e-3),
        ("5e-4", 5e-4),
        ("1E-3", 1e-3),
        ("2.5e-3", 2.5e-3),
        ("0.01", 0.01),
    ],
)
def test_numbers_as_people_write_them(tmp_path, number, value):
    generate = generate_emt_structures(3, elements=("Cu",), seed=1)
    ase.io.write(tmp_path / "train.xyz", generate)
    (tmp_path / "o.yaml").write_text(
        "architecture:\n  name: soap_bpnn\n"
        f"  training: {{learning_rate: {number}, scheduler_factor: 5e-1}}\n"
        "training_set: train.xyz\n"
        "validation_set: 4e-1\n"
    )
    options = expand_options(
        load_yaml(str(tmp_path / "o.yaml")), "o.yaml", str(tmp_path)
    )
    assert options["architecture"]["training"]["learning_rate"] == value
    assert options["architecture"]["training"]["scheduler_factor"] == 0.5
    assert options["validation_set"] == 0.4


def test_sets_given_as_paths_inherit_the_training_targets(tmp_path):
    ase.io.write(tmp_path / "a.xyz", generate_emt_structures(2, seed=1))
    user = {
        "architecture": {"name": "soap_bpnn"},
        "training_set": {
            "systems": "a.xyz",
            "targets": {"energy": {"key": "U", "unit": "meV", "stress": False}},
        },
        "validation_set": "a.xyz",
        "test_set": {"systems": "a.xyz", "targets": {"energy": {"key": "E2"}}},
    }
    options = expand_options(user, "o.yaml", str(tmp_path))
    validation = options["validation_set"]["targets"]["energy"]
    assert validation["key"] == "U" and validation["unit"] == "meV"
    assert validation["stress"] is False
    # a set with its own targets keeps them
    assert options["test_set"]["targets"]["energy"]["key"] == "E2"
    assert options["test_set"]["targets"]["energy"]["unit"] == "eV"


BAD_DATA = [
    (
        "NaN force",
        lambda f: f[3].arrays["REF_forces"].__setitem__((2, 1), np.nan),
        "structure 3: REF_forces contains NaN",
    ),
    (
        "NaN energy",
        lambda f: f[2].info.__setitem__("dft_energy", float("nan")),
        "structure 2: dft_energy contains NaN",
    ),
    (
        "inf position",
        lambda f: f[4].positions.__setitem__((0, 0), np.inf),
        "structure 4: positions contains inf",
    ),
    (
        "inf stress",
        lambda f: f[1].info["dft_stress"].__setitem__(0, np.inf),
        "structure 1: dft_stress contains inf",
    ),
    (
        "NaN cell",
        lambda f: f[1].cell.array.__setitem__((0, 0), np.nan),
        "structure 1: cell contains NaN",
    ),
    (
        "zero-volume cell",
        lambda f: f[1].cell.array.__setitem__(2, 0.0),
        "structure 1: periodic (pbc T T T) but its cell has zero volume",
    ),
]


def spoilt(mixed_dir, folder, spoil) -> str:
    frames = ase.io.read(mixed_dir / "mixed.xyz", ":")
    spoil(frames)
    ase.io.write(folder / "mixed.xyz", frames, format="extxyz")
    return str(folder / "mixed.xyz")


@pytest.mark.parametrize(
    "name, spoil, expected", BAD_DATA, ids=[case[0] for case in BAD_DATA]
)
def test_bad_numbers_in_the_data_are_one_error(
    mixed_dir, tmp_path, name, spoil, expected
):
    path = spoilt(mixed_dir, tmp_path, spoil)
    with pytest.raises(ConfigError) as error:
        read(tmp_path, "mixed.xyz")
    message = str(error.value)
    assert message.startswith(f"options.yaml: training_set: {path}, structure ")
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("case", [0, 5], ids=["NaN force", "zero-volume cell"])
def test_bad_numbers_stop_alchem_train_before_training(mixed_dir, tmp_path, case):
    _, spoil, expected = BAD_DATA[case]
    path = spoilt(mixed_dir, tmp_path, spoil)
    os.symlink(mixed_dir / "val.xyz", tmp_path / "val.xyz")
    minimal_options(tmp_path / "options.yaml")
    result = run_cli(
        "alchem-train",
        "options.yaml",
        "--run-dir",
        "run",
        cwd=str(tmp_path),
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"error: options.yaml: training_set: {path}, ")
    assert expected in message
    assert not os.path.exists(tmp_path / "model.pt")


def test_stress_of_a_slab_is_not_used_and_said_so(mixed_dir, tmp_path, caplog):
    frames = ase.io.read(mixed_dir / "mixed.xyz", ":")
    frames[0].info["dft_stress"] = np.ones(6)  # a 'p p f' slab with a stress
    ase.io.write(tmp_path / "mixed.xyz", frames, format="extxyz")
    with caplog.at_level("WARNING", logger="alchem"):
        structures = read(tmp_path, "mixed.xyz")
    assert structures[0].virial is None and structures[1].virial is not None
    assert (
        "the stress of 1 structures not periodic in all directions is not used "
        "(a stress needs the cell volume): structures 0"
    ) in caplog.text
