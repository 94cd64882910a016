"""The figures and tables of a fit: learning_curve.png (alchem-train), parity.png,
errors.csv, worst structures and --per-element (alchem-eval)."""

import csv
import json
import os
import re

import ase.io
import matplotlib.image
import numpy as np
import pytest
from alchem.plots import read_metrics_csv
from conftest import run_cli

pytestmark = pytest.mark.slow  # trains models (alchem-train) in its fixtures


def _image(path: str) -> np.ndarray:
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 0.05  # not blank
    return image


def test_learning_curve_written_with_the_run(trained):
    run = os.path.join(trained["dir"], "run")
    _image(os.path.join(run, "learning_curve.png"))
    columns = read_metrics_csv(os.path.join(run, "metrics.csv"))
    # what the figure plots: 4 epochs, both splits' errors logged every epoch
    assert columns["epoch"] == [1.0, 2.0, 3.0, 4.0]
    for split in ("train", "validation"):
        for metric in ("energy_rmse", "forces_rmse"):
            assert all(np.isfinite(columns[f"{split}_{metric}"]))
    assert all(rate > 0 for rate in columns["learning_rate"])


@pytest.fixture(scope="module")
def evaluated(trained, emt_dir, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp(f"eval-{trained['architecture']}")
    result = run_cli(
        "alchem-eval", trained["model"], os.path.join(emt_dir, "test.xyz"),
        "-o", "out/predictions.xyz", "--per-element", cwd=str(folder),
    )  # fmt: skip
    return {"dir": str(folder / "out"), "stdout": result.stdout}


def test_parity_numbers_are_alchem_evals(evaluated):
    printed = {}
    for name, rmse, mae in re.findall(
        r"^(energy|forces|stress)\s+RMSE\s+([\d.]+)\s+MAE\s+([\d.]+)",
        evaluated["stdout"],
        flags=re.MULTILINE,
    ):
        printed[name] = (float(rmse), float(mae))
    assert set(printed) == {"energy", "forces", "stress"}
    # the numbers written on the panels, kept beside the figure
    written = json.load(open(os.path.join(evaluated["dir"], "parity.json")))
    for name, (rmse, mae) in printed.items():
        assert round(written[name]["rmse"], 3) == pytest.approx(rmse, abs=1e-9)
        assert round(written[name]["mae"], 3) == pytest.approx(mae, abs=1e-9)
    _image(os.path.join(evaluated["dir"], "parity.png"))


def test_errors_csv_one_row_per_structure(evaluated, emt_dir):
    reference = ase.io.read(os.path.join(emt_dir, "test.xyz"), ":")
    predicted = ase.io.read(os.path.join(evaluated["dir"], "predictions.xyz"), ":")
    with open(os.path.join(evaluated["dir"], "errors.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(reference)
    for row, ref, pred in zip(rows, reference, predicted):
        assert row["formula"] == ref.get_chemical_formula()
        assert int(row["n_atoms"]) == len(ref)
        energy_error = (
            (pred.get_potential_energy() - ref.get_potential_energy()) / len(ref) * 1000
        )
        assert float(row["energy_error_meV_per_atom"]) == pytest.approx(
            energy_error, rel=1e-5
        )
        force_rmse = np.sqrt(np.mean((pred.get_forces() - ref.get_forces()) ** 2))
        assert float(row["forces_rmse_meV_per_A"]) == pytest.approx(
            force_rmse * 1000, rel=1e-5
        )
    # the worst structure on screen is the row with the largest force RMSE
    worst = max(rows, key=lambda row: float(row["forces_rmse_meV_per_A"]))
    listing = evaluated["stdout"].split("worst")[1].splitlines()[1]
    assert listing.split()[0] == f"#{worst['index']}"


def test_per_element_force_errors(evaluated, emt_dir):
    reference = ase.io.read(os.path.join(emt_dir, "test.xyz"), ":")
    predicted = ase.io.read(os.path.join(evaluated["dir"], "predictions.xyz"), ":")
    symbols = np.concatenate([atoms.get_chemical_symbols() for atoms in reference])
    errors = np.concatenate(
        [p.get_forces() - r.get_forces() for p, r in zip(predicted, reference)]
    )
    lines = re.findall(
        r"^  (\w+)\s+RMSE\s+([\d.]+)\s+MAE\s+([\d.]+)\s+meV/Å\s+\((\d+) atoms\)",
        evaluated["stdout"],
        flags=re.MULTILINE,
    )
    assert {line[0] for line in lines} == set(symbols.tolist())
    for symbol, rmse, mae, count in lines:
        mask = symbols == symbol
        assert int(count) == mask.sum()
        assert float(rmse) == pytest.approx(
            1000 * np.sqrt(np.mean(errors[mask] ** 2)), abs=1e-3
        )
        assert float(mae) == pytest.approx(
            1000 * np.mean(np.abs(errors[mask])), abs=1e-3
        )
