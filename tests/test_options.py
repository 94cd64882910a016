"""Every bad option gives one clear message, exit status 2 and no traceback."""

import os

import pytest
import yaml
from alchem.data.emt import write_emt_dataset
from conftest import run_cli


def options(**changes) -> dict:
    base = {
        "architecture": {"name": "soap_bpnn", "training": {"num_epochs": 1}},
        "training_set": "train.xyz",
        "validation_set": 0.2,
    }
    base.update(changes)
    return base


CASES = [
    (
        "unknown key with a suggestion",
        options(architecture={"name": "soap_bpnn", "model": {"soap": {"cutof": 4.0}}}),
        ["architecture.model.soap.cutof", "did you mean 'cutoff'"],
    ),
    (
        "unknown top-level key",
        {**options(), "trainig_set": "x.xyz"},
        ["unknown key 'trainig_set'", "did you mean 'training_set'"],
    ),
    (
        "wrong type",
        options(architecture={"name": "soap_bpnn", "training": {"batch_size": "big"}}),
        ["architecture.training.batch_size must be an integer", "'big'"],
    ),
    (
        "value out of range",
        options(architecture={"name": "soap_bpnn", "model": {"soap": {"cutoff": -1}}}),
        ["architecture.model.soap.cutoff must be > 0"],
    ),
    (
        "fraction out of range",
        options(validation_set=1.5),
        ["validation_set", "between 0 and 1"],
    ),
    (
        "unknown architecture",
        options(architecture={"name": "soap_bpn"}),
        ["unknown architecture 'soap_bpn'", "soap_bpnn"],
    ),
    (
        "missing data file",
        options(training_set="missing.xyz"),
        ["training_set.systems.read_from: file not found", "missing.xyz"],
    ),
    (
        "key missing from the data file",
        options(
            training_set={
                "systems": "train.xyz",
                "targets": {"energy": {"forces": {"key": "my_forces"}}},
            }
        ),
        ["training_set.targets.energy.forces", "'my_forces' not found"],
    ),
    (
        "energy key missing from the data file",
        options(training_set={"systems": "train.xyz", "targets": {"energy": "U0"}}),
        ["energy key 'U0' not found"],
    ),
    (
        "unknown unit",
        options(
            training_set={
                "systems": "train.xyz",
                "targets": {"energy": {"unit": "eV/K"}},
            }
        ),
        ["training_set.targets.energy.unit", "unknown energy unit 'eV/K'", "kcal/mol"],
    ),
    (
        "element in validation absent from training",
        options(validation_set="other.xyz"),
        ["validation_set contains elements absent from the training set: Au"],
    ),
    (
        "bad precision",
        options(base_precision=16),
        ["base_precision must be 32 or 64"],
    ),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("options")
    write_emt_dataset(str(path / "train.xyz"), 5, elements=("Cu", "Ni"), seed=1)
    write_emt_dataset(str(path / "other.xyz"), 2, elements=("Au",), seed=2)
    return path


@pytest.mark.parametrize("name, content, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_options_are_reported_cleanly(name, content, expected, folder):
    path = folder / "options.yaml"
    path.write_text(yaml.safe_dump(content))
    result = run_cli("alchem-train", "options.yaml", cwd=str(folder), check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("error: options.yaml")
    for fragment in expected:
        assert fragment in message
    assert not os.path.exists(folder / "model.pt")


def test_missing_options_file(folder):
    result = run_cli("alchem-train", "nope.yaml", cwd=str(folder), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: nope.yaml: options file not found"


def test_missing_restart_checkpoint(folder):
    (folder / "ok.yaml").write_text(yaml.safe_dump(options()))
    result = run_cli(
        "alchem-train",
        "ok.yaml",
        "--restart",
        "gone.ckpt",
        cwd=str(folder),
        check=False,
    )
    assert result.returncode == 2
    assert "gone.ckpt: checkpoint not found" in result.stderr


def test_experimental_name_and_defaults_are_accepted():
    from alchem.options import _expand_architecture

    expanded = _expand_architecture(
        {"name": "experimental.soap_bpnn", "model": {"soap": {"max_radial": 3}}}, "x"
    )
    assert expanded["name"] == "soap_bpnn"
    soap = expanded["model"]["soap"]
    assert (
        soap["max_radial"] == 3 and soap["max_angular"] == 6 and soap["cutoff"] == 5.0
    )
    assert soap["radial_scaling"] == {
        "Willatt2018": {"rate": 1.0, "scale": 2.0, "exponent": 7.0}
    }
    training = expanded["training"]
    assert training["batch_size"] == 8 and training["scheduler_factor"] == 0.8


@pytest.mark.parametrize(
    "name, given, expected",
    [
        ("soap_bpnn", None, 64),
        ("alchemical_model", None, 32),
        ("alchemical_model", 64, 64),
        ("soap_bpnn", 32, 32),
    ],
)
def test_base_precision_defaults_to_the_architectures(tmp_path, name, given, expected):
    """Without base_precision each architecture trains in its DEFAULT_PRECISION
    (the Alchemical Model: float32, its training kernel's fast case); a given
    value wins, and the expanded options record the resolved one."""
    from alchem.options import expand_options

    write_emt_dataset(str(tmp_path / "train.xyz"), 2, elements=("Cu", "Ni"), seed=1)
    user = options(architecture={"name": name})
    if given is not None:
        user["base_precision"] = given
    expanded = expand_options(user, "o.yaml", str(tmp_path))
    assert expanded["base_precision"] == expected
