"""Uncertainty through ASE (alchem.calculator.get_uncertainty) and alchem-eval's
calibration report, on a small SOAP-BPNN given LLPR by alchem-uncertainty."""

import json
import os
import shutil

import ase.io
import numpy as np
import pytest
import torch
from alchem.calculator import load_calculator
from alchem.data import collate, structure_from_atoms
from alchem.model import predict
from alchem.training import model_from_checkpoint
from alchem.uncertainty.llpr import ensemble_force_spread
from alchem.uncertainty.posterior import projected_sigma, square_root
from conftest import run_cli, write_options

ENSEMBLE = 8
# the module fixture trains a model (about 40 s on 2 cores); each test takes seconds
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(emt_dir, tmp_path_factory) -> dict:
    """plain.pt (no uncertainty) and model.pt (LLPR) of the same trained weights."""
    folder = tmp_path_factory.mktemp("uncertainty-ase")
    os.symlink(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
    write_options(str(folder / "options.yaml"), "soap_bpnn")
    run_cli("alchem-train", "options.yaml", "--run-dir", "run", cwd=str(folder))
    shutil.copy(folder / "model.pt", folder / "plain.pt")
    run_cli(
        "alchem-uncertainty", "model.ckpt", "--ensemble-size", str(ENSEMBLE),
        cwd=str(folder),
    )  # fmt: skip
    return {
        "dir": str(folder),
        "model": str(folder / "model.pt"),
        "plain": str(folder / "plain.pt"),
        "checkpoint": str(folder / "model.ckpt"),
        "test": os.path.join(emt_dir, "test.xyz"),
    }


@pytest.fixture(scope="module")
def calculator(models):
    return load_calculator(models["model"], uncertainty_threshold=None)


def test_ensemble_mean_is_the_model(models, calculator):
    atoms = ase.io.read(models["test"], 0)
    atoms.calc = calculator
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    result = calculator.get_uncertainty(atoms)
    assert result.energy_ensemble.shape == (ENSEMBLE,)
    assert result.forces_ensemble.shape == (ENSEMBLE, len(atoms), 3)
    assert result.energy_ensemble.mean() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(result.forces_ensemble.mean(0), forces, atol=1e-10)
    assert result.energy_ensemble.std() > 0
    assert np.all(result.force_sigma > 0)


def test_ensemble_forces_are_minus_the_gradient_of_its_energies(models, calculator):
    """Central finite differences of each member's energy, three coordinates."""
    atoms = ase.io.read(models["test"], 1)
    result = calculator.get_uncertainty(atoms)
    step = 1e-4
    for atom, axis in ((0, 0), (5, 1), (11, 2)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * step
            energies.append(
                calculator.get_uncertainty(moved, forces=False).energy_ensemble
            )
        numeric = -(energies[0] - energies[1]) / (2 * step)
        np.testing.assert_allclose(
            result.forces_ensemble[:, atom, axis], numeric, atol=1e-6
        )


def test_sigmas_equal_a_direct_evaluation_of_the_model(models, calculator):
    """Per-atom and total energy sigma, and the calibrated force sigma, against
    the checkpoint's model (alchem.uncertainty on its features)."""
    atoms = ase.io.read(models["test"], 2)
    result = calculator.get_uncertainty(atoms)
    model, _ = model_from_checkpoint(models["checkpoint"])
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to(
        "cpu", torch.float64
    )
    direct = predict(model, batch, True, False, with_features=True)
    root = square_root(model.uncertainty_covariance)
    atom = projected_sigma(direct["atomic_features"].detach(), root).numpy()
    np.testing.assert_allclose(result.atom_sigma, atom, rtol=1e-8)
    total = float(projected_sigma(direct["features"].detach(), root))
    assert result.energy_sigma == pytest.approx(total, rel=1e-8)
    kappa = float(model.uncertainty_force_factor)
    assert result.force_factor == pytest.approx(kappa, rel=1e-12)
    spread = ensemble_force_spread(direct["features"], direct["positions"], model)
    np.testing.assert_allclose(
        result.force_sigma, kappa * np.sqrt(spread.numpy()), rtol=1e-8
    )


def test_plain_energies_and_forces_are_unchanged(models, calculator):
    """The same weights without uncertainty, with uncertainty (after a
    get_uncertainty call) and with the per-atom sigma computed beside every energy
    (uncertainty_threshold set) give the same energy and forces."""
    atoms = ase.io.read(models["test"], 3)
    results = []
    for calc in (
        load_calculator(models["plain"]),
        calculator,
        load_calculator(models["model"], uncertainty_threshold=1e6),
    ):
        atoms.calc = calc
        calc.get_uncertainty(atoms) if calc is calculator else None
        results.append((atoms.get_potential_energy(), atoms.get_forces().copy()))
    for energy, forces in results[1:]:
        assert energy == pytest.approx(results[0][0], abs=1e-12)
        np.testing.assert_allclose(forces, results[0][1], atol=1e-12, rtol=0)


def test_a_model_without_uncertainty_says_how_to_add_it(models):
    calculator = load_calculator(models["plain"])
    with pytest.raises(ValueError, match="has no uncertainty: add it with alchem"):
        calculator.get_uncertainty(ase.io.read(models["test"], 0))
    out = run_cli("alchem-eval", "plain.pt", models["test"], cwd=models["dir"])
    assert "calibration" not in out.stdout


def _ranks(values) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def test_alchem_eval_reports_calibration(models, calculator, tmp_path):
    out = run_cli(
        "alchem-eval", models["model"], models["test"], "-o",
        str(tmp_path / "predictions.xyz"), cwd=str(tmp_path),
    ).stdout  # fmt: skip
    report = json.loads((tmp_path / "calibration.json").read_text())
    assert (tmp_path / "calibration.png").stat().st_size > 10_000

    # the same numbers from the calculator and the references, computed here
    energy_ratio, force_ratio, rmse, rms_sigma, atom_sigma = [], [], [], [], []
    for atoms in ase.io.read(models["test"], ":"):
        reference_energy = atoms.get_potential_energy()
        reference_forces = atoms.get_forces()
        atoms.calc = calculator
        result = calculator.get_uncertainty(atoms)
        error = atoms.get_forces() - reference_forces
        energy_ratio.append(
            abs(atoms.get_potential_energy() - reference_energy) / result.energy_sigma
        )
        force_ratio.extend((np.abs(error) / result.force_sigma).reshape(-1))
        rmse.append(np.sqrt(np.mean(error**2)))
        rms_sigma.append(np.sqrt(np.mean(result.force_sigma**2)))
        atom_sigma.append(np.mean(result.atom_sigma))
    for k in (1, 2, 3):
        expected = np.mean(np.asarray(energy_ratio) <= k)
        assert report["energy"]["within"][str(k)] == pytest.approx(expected)
        expected = np.mean(np.asarray(force_ratio) <= k)
        assert report["forces"]["within"][str(k)] == pytest.approx(expected)
    assert report["forces"]["components"] == len(force_ratio)
    for key, sigma in (
        ("spearman_force_sigma", rms_sigma),
        ("spearman_atom_energy_sigma", atom_sigma),
    ):  # no ties among these floats: Pearson of the ranks
        rho = np.corrcoef(_ranks(sigma), _ranks(rmse))[0, 1]
        assert report["forces"][key] == pytest.approx(rho, abs=1e-12)
    within = " / ".join(
        f"{100 * report['forces']['within'][k]:.1f}" for k in ("1", "2", "3")
    )
    assert f"calibration: forces within 1/2/3 sigma {within} %" in out
    assert "Spearman rho" in out
    predictions = ase.io.read(tmp_path / "predictions.xyz", 0)
    assert predictions.info["energy_sigma"] > 0
    assert predictions.arrays["forces_sigma"].shape == (len(predictions), 3)


class CountedBackward(torch.autograd.Function):
    """The identity, counting the backward passes that reach it."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        CountedBackward.calls += 1
        return grad


@pytest.mark.parametrize("paired", [True, False])
def test_ensemble_forces_take_half_the_backward_passes(paired):
    """Antithetic members (E + o_m, E - o_m): M/2 + 1 backward passes give every
    member's gradient; an ensemble that is not paired gets one per member. Both
    equal each member's own gradient."""
    from alchem.calculator import ensemble_gradients

    generator = torch.Generator().manual_seed(0)
    positions = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    positions.requires_grad_(True)
    directions = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    if not paired:
        directions = torch.cat([directions, torch.randn_like(directions)])

    def members(x):
        energy = (x**2).sum() + torch.sin(x).sum()
        offsets = (directions * torch.cos(x)).sum(dim=(1, 2))
        if paired:
            return torch.cat([energy + offsets, energy - offsets])
        return energy + offsets

    energies = members(positions)
    expected = torch.stack(
        [torch.autograd.grad(e, positions, retain_graph=True)[0] for e in energies]
    )
    CountedBackward.calls = 0
    gradients = ensemble_gradients(members(CountedBackward.apply(positions)), positions)
    assert CountedBackward.calls == (4 + 1 if paired else 8)
    torch.testing.assert_close(gradients, expected, rtol=0, atol=1e-12)
