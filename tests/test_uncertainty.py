"""Uncertainty (alchem.uncertainty, LLPR): the last-layer features, the fit, the
exported outputs, the options and alchem-uncertainty."""

import dataclasses
import json
import math
import os
import shutil

import ase.io
import numpy as np
import pytest
import torch
from alchem.data import DatasetInfo, collate, read_structures, structure_from_atoms
from alchem.data.emt import write_emt_dataset
from alchem.errors import ConfigError
from alchem.model import predict
from alchem.options import expand_options
from alchem.training import build_model, model_from_checkpoint
from alchem.uncertainty import atom_sigma, fit_uncertainty, structure_sigma
from alchem.uncertainty.llpr import (
    ensemble_force_spread,
    force_rows,
    inverse_square_root,
)
from alchem.uncertainty.posterior import projected_sigma, square_root
from conftest import SMALL_HYPERS, run_cli, write_options
from metatomic.torch import ModelOutput

TYPES = [28, 29, 78]
ALCHEMICAL = SMALL_HYPERS["alchemical_model"]
PER_CENTRE = {
    "soap": {**ALCHEMICAL["soap"], "contract_center_species": False},
    "bpnn": ALCHEMICAL["bpnn"],
}
# (architecture, hyperparameters)
MODELS = {
    "soap_bpnn": ("soap_bpnn", SMALL_HYPERS["soap_bpnn"]),
    "alchemical": ("alchemical_model", ALCHEMICAL),
    "alchemical_per_centre": ("alchemical_model", PER_CENTRE),
    # a SOAP-BPNN with a pair potential (off by default)
    "soap_bpnn_pair": (
        "soap_bpnn",
        {**SMALL_HYPERS["soap_bpnn"], "pair_potential": {"basis_size": 8}},
    ),
}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("uncertainty") / "train.xyz"
    write_emt_dataset(str(path), 3, elements=("Cu", "Ni", "Pt"), seed=2)
    return str(path)


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("labelled") / "data.xyz")
    write_emt_dataset(path, 14, elements=("Cu", "Ni", "Pt"), seed=21)
    return path


@pytest.fixture(scope="module")
def structures(labelled_file):
    """14 labelled structures (energies, forces), read as training reads them."""
    path = labelled_file
    options = expand_options(
        {"architecture": {"name": "soap_bpnn"}, "training_set": path}, "test.yaml"
    )
    return read_structures(options["training_set"], 4.5, "test")


def make(data_file: str, name: str, **top):
    architecture, hypers = MODELS[name]
    options = expand_options(
        {
            "base_precision": 64,
            "architecture": {"name": architecture, "model": hypers},
            "training_set": data_file,
            **top,
        },
        "test.yaml",
    )
    torch.manual_seed(0)
    info = DatasetInfo(atomic_types=TYPES, mean_num_neighbors=30.0)
    model = build_model(options, info)
    model.composition.copy_(torch.tensor([-1.0, -2.0, -3.0]))
    model.energy_scale.fill_(0.7)
    return model


def perturb_last_layer(model, delta: torch.Tensor) -> None:
    """Add ``delta`` (laid out as the features: per group, weights then bias) to
    the last layer of every network (its first output)."""
    architecture = model.architecture
    blocks = delta.reshape(-1, architecture.last_layer_size)
    with torch.no_grad():
        if hasattr(architecture, "networks"):
            for index, network in enumerate(architecture.networks):
                network[-1].weight[0] += blocks[index, :-1]
                network[-1].bias[0] += blocks[index, -1]
        else:
            last = architecture.head_layers[-1]
            last.weight[:, :, 0] += blocks[:, :-1]
            last.bias[:, 0] += blocks[:, -1]


@pytest.mark.parametrize("name", list(MODELS))
def test_energies_are_linear_in_the_last_layer_through_the_features(
    data_file, structures, name
):
    """E(theta + delta) - E(theta) = f . delta per atom: the features are exactly
    the last layer's inputs (with 1 for its bias), scaled by the energy scale
    (then the pair features, where the model has a pair potential)."""
    model = make(data_file, name).eval()
    batch = collate(structures[:3]).to("cpu", torch.float64)
    plain = predict(model, batch, forces=False, virial=False)
    out = predict(model, batch, forces=False, virial=False, with_features=True)
    n_last = model.n_last_layer_features
    assert out["atomic_features"].shape == (
        batch.numbers.shape[0],
        model.n_uncertainty_features,
    )
    features = out["atomic_features"][:, :n_last]
    torch.testing.assert_close(
        out["atomic_energies"], plain["atomic_energies"], rtol=0, atol=1e-13
    )
    delta = torch.randn(model.n_last_layer_features, dtype=torch.float64) * 0.1
    perturb_last_layer(model, delta)
    changed = predict(model, batch, forces=False, virial=False)["atomic_energies"]
    change = (changed - plain["atomic_energies"]).detach()
    assert float(change.abs().max()) > 1e-3  # the perturbation does something
    torch.testing.assert_close(change, features.detach() @ delta, rtol=0, atol=1e-12)
    # and per structure: the summed features
    summed = out["features"].detach()[:, :n_last] @ delta
    energy_change = predict(model, batch, forces=False, virial=False)["energy"]
    torch.testing.assert_close(
        energy_change.detach() - plain["energy"].detach(), summed, rtol=0, atol=1e-11
    )


def test_fit_is_the_llpr_posterior_calibrated_on_validation(data_file, structures):
    """C = alpha^2 (P + varsigma^2 I)^-1 with P = mean_i f_i f_i^T over the
    training atoms, varsigma^2 = regularizer x mean eigenvalue of P, and alpha^2
    the maximum-likelihood mean of err^2 / (s (P + varsigma^2)^-1 s) over the
    validation structures; computed here independently."""
    model = make(data_file, "soap_bpnn").eval()
    train, validation = structures[:10], structures[10:]
    summary = fit_uncertainty(
        model, train, validation, ensemble_size=4, regularizer=1e-3
    )

    def features(chunk):
        batch = collate(chunk).to("cpu", torch.float64)
        out = predict(model, batch, forces=False, virial=False, with_features=True)
        energies = torch.tensor([s.energy for s in chunk], dtype=torch.float64)
        errors = out["energy"].detach() - energies
        return out["atomic_features"].detach(), out["features"].detach(), errors

    atoms, _, _ = features(train)
    _, s_val, errors = features(validation)
    precision = atoms.T @ atoms / atoms.shape[0]
    varsigma2 = 1e-3 * float(torch.linalg.eigvalsh(precision).clamp(min=0).mean())
    inverse = torch.linalg.inv(
        precision + varsigma2 * torch.eye(atoms.shape[1], dtype=torch.float64)
    )
    q = ((s_val @ inverse) * s_val).sum(1)
    alpha2 = float((errors**2 / q).mean())
    assert summary["alpha2"] == pytest.approx(alpha2, rel=1e-8)
    torch.testing.assert_close(
        model.uncertainty_covariance, alpha2 * inverse, rtol=1e-7, atol=1e-14
    )
    sigma = structure_sigma(s_val, model.uncertainty_covariance)
    within = float((errors.abs() <= sigma).double().mean())
    assert summary["validation"]["energy_within_1_sigma"] == pytest.approx(within)
    assert model.has_uncertainty


def test_sigma_grows_for_an_atom_unlike_the_training_atoms(data_file, structures):
    """The atom-resolved precision: an atom whose features leave the span of
    the training atoms' gets a sigma far above theirs."""
    model = make(data_file, "alchemical").eval()
    fit_uncertainty(model, structures[:10], structures[10:], ensemble_size=4)
    batch = collate(structures[:10]).to("cpu", torch.float64)
    seen = predict(model, batch, False, False, with_features=True)["atomic_features"]
    seen = seen.detach()
    covariance = model.uncertainty_covariance
    typical = float(atom_sigma(seen, covariance).median())
    _, _, vectors = torch.linalg.svd(seen, full_matrices=True)
    unseen = vectors[-1] * seen.norm(dim=1).median()  # least-populated direction
    assert float(atom_sigma(unseen.unsqueeze(0), covariance)) > 10 * typical


@pytest.mark.parametrize("name", ["alchemical", "soap_bpnn_pair"])
def test_pair_features_reproduce_the_pair_energy(data_file, structures, name):
    """The pair features p_i (after the last layer's): atom i's pair energy is
    p_i . the pair weights (flattened), so E(weights) - E(0) = p_i . weights per
    atom, to rounding, and per structure the pair term alone
    (pair_energies_and_forces); only the blocks of atom i's element's pairs are
    non-zero."""
    from alchem.pair_potential import pair_energies_and_forces

    model = make(data_file, name).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.pair.weights.copy_(
            torch.randn(model.pair.weights.shape, generator=generator)
        )
    weights = model.pair.weights.detach().double().reshape(-1).clone()
    batch = collate(structures[:3]).to("cpu", torch.float64)
    out = predict(model, batch, forces=False, virial=False, with_features=True)
    n_last = model.n_last_layer_features
    pair_features = out["atomic_features"].detach()[:, n_last:]
    assert pair_features.shape[1] == model.n_pair_features > 0
    with torch.no_grad():
        model.pair.weights.zero_()
    without = predict(model, batch, forces=False, virial=False)["atomic_energies"]
    pair_energies = (out["atomic_energies"] - without).detach()
    assert float(pair_energies.abs().max()) > 1.0
    torch.testing.assert_close(
        pair_features @ weights, pair_energies, rtol=0, atol=1e-12
    )
    with torch.no_grad():
        model.pair.weights.copy_(weights.reshape(model.pair.weights.shape))
    first_species = model.type_to_index[structures[0].numbers]
    energy, _ = pair_energies_and_forces(model.pair, structures[0], first_species)
    first = pair_features[: len(structures[0].numbers)]
    assert float(first.sum(0) @ weights) == pytest.approx(energy, rel=1e-13, abs=1e-12)
    # the blocks: pair (a, b) holds atom i's values only where a_i is a or b
    n_types, size = len(TYPES), model.pair.basis_size
    species = model.type_to_index[batch.numbers]
    blocks = pair_features.reshape(len(species), -1, size)
    index = model.pair.pair_index.reshape(n_types, n_types)
    for element in range(n_types):
        own = torch.zeros(blocks.shape[1], dtype=torch.bool)
        own[index[element]] = True
        atoms = species == element
        assert float(blocks[atoms][:, ~own].abs().max()) == 0.0
        assert float(blocks[atoms][:, own].abs().max()) > 0.0


@pytest.mark.parametrize("name", ["alchemical", "soap_bpnn_pair"])
def test_pair_weights_raise_sigma_at_unseen_distances(
    data_file, labelled_file, structures, name
):
    """An atom moved to 1.8 Å from a neighbour (training: 2.2 Å and more) gets an
    energy sigma many times the training atoms': the pair weights' posterior
    knows that no training pair was that close. The posterior of the last layer
    alone (fitted the same way, here) sees far less of it."""
    from alchem.uncertainty.llpr import likelihood_scale

    model = make(data_file, name).eval()
    train, validation = structures[:10], structures[10:]
    fit_uncertainty(model, train, validation, ensemble_size=4)
    n_last = model.n_last_layer_features

    def features(chunk):
        batch = collate(chunk).to("cpu", torch.float64)
        return predict(model, batch, False, False, with_features=True)

    seen = features(train)["atomic_features"].detach()
    shortest = np.inf
    for frame in ase.io.read(labelled_file, ":10"):
        distances = frame.get_all_distances(mic=True)
        np.fill_diagonal(distances, np.inf)
        shortest = min(shortest, distances.min())
    assert shortest > 2.1
    atoms = ase.io.read(labelled_file, "10")
    distances = atoms.get_all_distances(mic=True)
    np.fill_diagonal(distances, np.inf)
    neighbor = int(np.argmin(distances[1]))
    vector = atoms.get_distance(1, neighbor, mic=True, vector=True)
    atoms.positions[1] += vector * (1.0 - 1.8 / np.linalg.norm(vector))
    moved = features([structure_from_atoms(atoms, model.cutoff)])["atomic_features"]
    moved = moved.detach()[1:2]
    covariance = model.uncertainty_covariance
    ratio = float(atom_sigma(moved, covariance) / atom_sigma(seen, covariance).median())
    # the last layer's posterior alone
    out = features(validation)
    errors = out["energy"].detach() - torch.tensor([s.energy for s in validation])
    root = inverse_square_root(seen[:, :n_last].T @ seen[:, :n_last] / len(seen), 1e-8)
    alpha2 = likelihood_scale(out["features"].detach()[:, :n_last] @ root, errors)
    last = alpha2 * root @ root.T
    last_ratio = float(
        atom_sigma(moved[:, :n_last], last)
        / atom_sigma(seen[:, :n_last], last).median()
    )
    assert ratio > 20.0
    assert ratio > 3.0 * last_ratio, (ratio, last_ratio)


def test_auto_regularizer_and_the_ensemble(data_file, structures):
    """``auto`` is 1e-8 (relative); the ensemble's offsets are antithetic (mean
    exactly zero). Their spread: test_ensemble_force_spread_is_the_force_posterior
    and, without validation forces, test_without_validation_forces_..."""
    model = make(data_file, "alchemical").eval()
    summary = fit_uncertainty(model, structures[:10], structures[10:], ensemble_size=8)
    assert summary["regularizer"] == 1e-8
    ensemble = model.uncertainty_ensemble
    assert ensemble.shape == (model.n_uncertainty_features, 8)
    torch.testing.assert_close(
        ensemble.sum(1),
        torch.zeros(ensemble.shape[0], dtype=ensemble.dtype),
        rtol=0,
        atol=1e-9 * float(ensemble.abs().max()),
    )


def test_ensemble_forces_match_finite_differences(data_file, structures):
    """The ensemble's force spread (autograd, per member) against central
    differences of the members' energy offsets."""
    model = make(data_file, "soap_bpnn").eval()
    fit_uncertainty(model, structures[:10], structures[10:], ensemble_size=4)
    structure = structures[0]
    batch = collate([structure]).to("cpu", torch.float64)
    out = predict(model, batch, forces=True, virial=False, with_features=True)
    spread = ensemble_force_spread(out["features"], out["positions"], model)

    def offsets(positions: torch.Tensor) -> torch.Tensor:
        moved = collate([structure]).to("cpu", torch.float64)
        moved.positions = positions
        features = predict(model, moved, False, False, with_features=True)["features"]
        return (features @ model.uncertainty_ensemble).detach()[0]

    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = batch.positions.clone(), batch.positions.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        forces = -(offsets(plus) - offsets(minus)) / (2 * h)  # [M]
        assert float(spread[atom, axis]) == pytest.approx(
            float((forces**2).mean()), rel=1e-5
        )


@pytest.mark.parametrize("name", ["soap_bpnn", "alchemical", "soap_bpnn_pair"])
def test_force_rows_are_the_gradients_of_the_summed_features(
    data_file, structures, name
):
    """g_{j,alpha} = d(sum_i f_i)/d r_{j,alpha} against central differences of the
    summed features, two structures in one batch (each row its own structure's);
    the pair features' rows are analytic (pair_force_rows)."""
    model = make(data_file, name).eval()
    chunk = structures[:2]
    rows, _ = force_rows(model, chunk, torch.float64)
    n_first = len(chunk[0].numbers)
    assert rows.shape == (
        n_first + len(chunk[1].numbers),
        3,
        model.n_uncertainty_features,
    )

    def summed(positions: torch.Tensor) -> torch.Tensor:
        moved = collate(chunk).to("cpu", torch.float64)
        moved.positions = positions
        return predict(model, moved, False, False, with_features=True)["features"]

    batch = collate(chunk).to("cpu", torch.float64)
    h = 1e-5
    for atom, axis in [(0, 0), (2, 1), (n_first + 1, 2)]:
        plus, minus = batch.positions.clone(), batch.positions.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        difference = (summed(plus) - summed(minus)).detach() / (2 * h)
        structure = int(atom >= n_first)
        assert float(difference[1 - structure].abs().max()) < 1e-9
        torch.testing.assert_close(
            rows[atom, axis], difference[structure], rtol=1e-5, atol=1e-8
        )
    assert float(rows.abs().max()) > 1e-3
    if model.n_pair_features > 0:
        assert float(rows[..., model.n_last_layer_features :].abs().max()) > 1e-3


def _rows_and_errors(model, chunk):
    rows, out = force_rows(model, chunk, torch.float64)
    errors = out["forces"].detach() - out["batch_forces"]
    return rows.reshape(-1, rows.shape[-1]), errors.reshape(-1)


def _energy_rows(model, chunk):
    batch = collate(chunk).to("cpu", torch.float64)
    out = predict(model, batch, False, False, with_features=True)
    energies = torch.tensor([s.energy for s in chunk], dtype=torch.float64)
    atoms = out["atomic_features"].detach()
    return atoms, out["features"].detach(), out["energy"].detach() - energies


def test_force_posterior_is_the_likelihood_maximum(data_file, structures):
    """C_F = alpha_F^2 (P_F + lambda P + varsigma^2 I)^-1, computed here
    independently: P_F = mean g g^T over the training force components, lambda =
    alpha_F0^2 / alpha^2 (the force-only and energy-only scales), alpha_F^2 the
    maximum of the validation force components' Gaussian likelihood (it drops on
    either side); the ensemble is drawn from it."""
    model = make(data_file, "alchemical").eval()
    train, validation = structures[:6], structures[10:]
    summary = fit_uncertainty(model, train, validation, ensemble_size=4)
    assert summary["ensemble_from"] == "forces"

    def inverse(precision):
        varsigma2 = 1e-8 * float(torch.linalg.eigvalsh(precision).clamp(min=0).mean())
        identity = torch.eye(precision.shape[0], dtype=torch.float64)
        return torch.linalg.inv(precision + varsigma2 * identity)

    train_rows, _ = _rows_and_errors(model, train)
    atoms, _, _ = _energy_rows(model, train)
    force_precision = train_rows.T @ train_rows / train_rows.shape[0]
    energy_precision = atoms.T @ atoms / atoms.shape[0]
    rows, errors = _rows_and_errors(model, validation)

    def nll(alpha2, inverse_precision):
        variance = alpha2 * ((rows @ inverse_precision) * rows).sum(1)
        return float((errors**2 / variance + torch.log(variance)).mean())

    def best(inverse_precision):
        return float((errors**2 / ((rows @ inverse_precision) * rows).sum(1)).mean())

    weight = best(inverse(force_precision)) / summary["alpha2"]
    assert summary["energy_weight"] == pytest.approx(weight, rel=1e-6)
    inverse_precision = inverse(force_precision + weight * energy_precision)
    alpha2 = summary["force_alpha2"]
    assert alpha2 == pytest.approx(best(inverse_precision), rel=1e-6)
    for factor in (0.9, 1.1):
        assert nll(alpha2 * factor, inverse_precision) > nll(alpha2, inverse_precision)
    # the ensemble: C_F's root times the seeded draws (so C_F, in the mean): the
    # root gives each validation row the variance the inverse gives it. (Not
    # compared element by element: in the directions of the pair weights whose
    # Gaussians no training pair reached the precision is only the regularizer,
    # 1e-8 of its mean eigenvalue, and the two inversions differ by their
    # rounding, condition number x 1e-16, there.)
    root = inverse_square_root(force_precision + weight * energy_precision, 1e-8)
    torch.testing.assert_close(
        ((rows @ root) ** 2).sum(1),
        ((rows @ inverse_precision) * rows).sum(1),
        rtol=1e-6,
        atol=0.0,
    )
    last = model.n_last_layer_features
    torch.testing.assert_close(
        (root @ root.T)[:last, :last],
        inverse_precision[:last, :last],
        rtol=1e-6,
        atol=1e-8 * float(inverse_precision[:last, :last].abs().max()),
    )


def test_validation_rows_kept_or_computed_again_give_the_same_fit(
    data_file, structures, monkeypatch
):
    """The validation's force rows serve two scales: kept in memory (small sets)
    or computed again (above llpr.VALIDATION_ROWS_KEPT), the same posterior."""
    from alchem.uncertainty import llpr

    fits = []
    for limit in (llpr.VALIDATION_ROWS_KEPT, 0):
        monkeypatch.setattr(llpr, "VALIDATION_ROWS_KEPT", limit)
        model = make(data_file, "alchemical").eval()
        summary = fit_uncertainty(model, structures[:4], structures[10:], 4)
        fits.append((summary, model.uncertainty_ensemble.clone()))
    (kept, kept_ensemble), (again, again_ensemble) = fits
    for key in ("force_alpha2", "energy_weight", "force_factor"):
        assert kept[key] == pytest.approx(again[key], rel=1e-12), key
    torch.testing.assert_close(kept_ensemble, again_ensemble, rtol=1e-12, atol=0)


def test_ensemble_force_spread_is_the_force_posterior(data_file, structures):
    """With 4000 members the ensemble's force spread per component, mean_m
    (g . delta_m)^2, is g C_F g within sampling error (antithetic pairs: 2000
    independent draws, relative sd 3 %; bound 15 %), and the finite-ensemble
    force factor kappa is near 1; validation forces within 1 sigma of C_F."""
    model = make(data_file, "alchemical").eval()
    train, validation = structures[:10], structures[10:]
    summary = fit_uncertainty(model, train, validation, ensemble_size=4000)
    ensemble = model.uncertainty_ensemble.double()
    rows, errors = _rows_and_errors(model, validation)
    sampled = ((rows @ ensemble) ** 2).mean(1)

    train_rows, _ = _rows_and_errors(model, train)
    atoms, _, _ = _energy_rows(model, train)
    precision = train_rows.T @ train_rows / train_rows.shape[0]
    precision = precision + summary["energy_weight"] * atoms.T @ atoms / atoms.shape[0]
    root = math.sqrt(summary["force_alpha2"]) * inverse_square_root(precision, 1e-8)
    exact = ((rows @ root) ** 2).sum(1)
    ratio = sampled / exact
    assert float((ratio - 1).abs().max()) < 0.15, ratio
    assert summary["force_factor"] == pytest.approx(1.0, abs=0.05)
    within = float((errors.abs() <= exact.sqrt()).double().mean())
    assert summary["validation"]["forces_within_1_sigma"] == pytest.approx(within)
    # the energy covariance stays the energy-only posterior
    _, summed, energy_errors = _energy_rows(model, validation)
    sigma = structure_sigma(summed, model.uncertainty_covariance)
    assert summary["validation"]["energy_within_1_sigma"] == pytest.approx(
        float((energy_errors.abs() <= sigma).double().mean())
    )


def test_without_validation_forces_the_ensemble_is_the_energy_posterior(
    data_file, structures
):
    """No validation forces: nothing calibrates C_F, so the ensemble is drawn from
    the energy posterior C, with force factor 1 (and a warning)."""
    model = make(data_file, "soap_bpnn").eval()
    validation = [dataclasses.replace(s, forces=None) for s in structures[10:]]
    summary = fit_uncertainty(model, structures[:10], validation, ensemble_size=4000)
    assert summary["ensemble_from"] == "energies"
    assert summary["force_factor"] == 1.0
    assert "force_alpha2" not in summary
    ensemble = model.uncertainty_ensemble
    empirical = torch.diagonal(ensemble @ ensemble.T) / ensemble.shape[1]
    ratio = empirical / torch.diagonal(model.uncertainty_covariance)
    assert float((ratio - 1).abs().max()) < 0.15, ratio


def test_a_model_without_hidden_layers_says_why(data_file, structures):
    architecture, hypers = MODELS["soap_bpnn"]
    options = expand_options(
        {
            "architecture": {
                "name": architecture,
                "model": {**hypers, "bpnn": {"num_hidden_layers": 0}},
            },
            "training_set": data_file,
        },
        "test.yaml",
    )
    model = build_model(options, DatasetInfo(TYPES, 30.0))
    with pytest.raises(ConfigError, match="hidden layer"):
        fit_uncertainty(model, structures[:4], structures[4:6])


@pytest.mark.parametrize(
    "section, words",
    [
        ({"method": "ensemble"}, "uncertainty.method must be one of none, llpr"),
        (
            {"method": "llpr", "ensemble_size": 7},
            "uncertainty.ensemble_size must be even",
        ),
        ({"method": "llpr", "regularizer": -1}, "uncertainty.regularizer must be auto"),
        ({"method": "llpr", "regulariser": 1}, "regulariser"),
        ("llpr", "uncertainty must be a section"),
    ],
)
def test_bad_uncertainty_options_name_the_key(data_file, section, words):
    with pytest.raises(ConfigError, match=words):
        expand_options(
            {
                "architecture": {"name": "soap_bpnn"},
                "training_set": data_file,
                "uncertainty": section,
            },
            "options.yaml",
        )


def test_default_options_have_no_uncertainty(data_file):
    options = expand_options(
        {"architecture": {"name": "soap_bpnn"}, "training_set": data_file}, "o.yaml"
    )
    assert options["uncertainty"] == {
        "method": "none",
        "ensemble_size": 64,
        "regularizer": "auto",
    }


# ------------------------------------------------------ checkpoints and export


@pytest.fixture(scope="module")
def uncertain(trained, tmp_path_factory) -> dict:
    """A copy of a trained checkpoint given uncertainty by alchem-uncertainty."""
    folder = tmp_path_factory.mktemp(f"uncertain-{trained['architecture']}")
    shutil.copy(trained["checkpoint"], folder / "model.ckpt")
    result = run_cli(
        "alchem-uncertainty", "model.ckpt", "--ensemble-size", "8", cwd=str(folder)
    )
    return {**trained, "folder": str(folder), "stdout": result.stdout}


def test_alchem_uncertainty_writes_checkpoint_and_model(uncertain):
    from alchem.calculator import load_calculator
    from alchem.training import load_checkpoint

    folder = uncertain["folder"]
    assert "exported model.pt" in uncertain["stdout"]
    state = load_checkpoint(os.path.join(folder, "model.ckpt"))
    assert state["options"]["uncertainty"]["method"] == "llpr"
    assert state["options"]["uncertainty_fit"]["ensemble_size"] == 8
    model, _ = model_from_checkpoint(os.path.join(folder, "model.ckpt"))
    assert model.has_uncertainty

    calculator = load_calculator(os.path.join(folder, "model.pt"))
    outputs = calculator._model.capabilities().outputs
    for name in (
        "energy_uncertainty",
        "energy_ensemble",
        "alchem::energy_uncertainty_projection",
    ):
        assert name in outputs
    extra = calculator._model.metadata().extra
    assert json.loads(extra["alchem.uncertainty"])["method"] == "llpr"
    for path in ("model.pt", "model.ckpt"):
        info = run_cli("alchem-info", path, cwd=folder).stdout
        assert "uncertainty    llpr, ensemble of 8; validation energies" in info
    info = run_cli("alchem-info", uncertain["model"], cwd=folder).stdout
    assert "uncertainty    none" in info


def test_exported_outputs_equal_the_model(uncertain, emt_dir):
    """Per-atom and per-structure sigma, the projection's norm, the ensemble (per
    atom, per structure, its mean) from model.pt against the checkpoint's model;
    the plain energy is unchanged by the uncertainty."""
    from alchem.calculator import load_calculator

    folder = uncertain["folder"]
    atoms = ase.io.read(os.path.join(emt_dir, "test.xyz"), 0)
    calculator = load_calculator(os.path.join(folder, "model.pt"))
    kinds = {
        "energy": "system",
        "energy_uncertainty": "atom",
        "energy_ensemble": "atom",
        "alchem::energy_uncertainty_projection": "system",
    }
    out = calculator.run_model(
        atoms, {k: ModelOutput(sample_kind=v) for k, v in kinds.items()}
    )
    values = {k: v.block().values.detach().double() for k, v in out.items()}
    totals = calculator.run_model(
        atoms,
        {
            "energy_uncertainty": ModelOutput(sample_kind="system"),
            "energy_ensemble": ModelOutput(sample_kind="system"),
        },
    )
    total_sigma = float(totals["energy_uncertainty"].block().values)
    total_ensemble = totals["energy_ensemble"].block().values.detach().double()[0]

    model, _ = model_from_checkpoint(os.path.join(folder, "model.ckpt"))
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to(
        "cpu", torch.float64
    )
    direct = predict(model, batch, False, False, with_features=True)
    # model.pt computes |f R| with C = R R^T (no cancellation in float32); f C f
    # agrees to the conditioning of C
    root = square_root(model.uncertainty_covariance)
    sigma = projected_sigma(direct["atomic_features"].detach(), root)
    torch.testing.assert_close(
        values["energy_uncertainty"][:, 0], sigma, rtol=1e-10, atol=1e-12
    )
    sigma = atom_sigma(direct["atomic_features"], model.uncertainty_covariance)
    torch.testing.assert_close(
        values["energy_uncertainty"][:, 0], sigma.detach(), rtol=1e-7, atol=1e-12
    )
    expected_total = float(projected_sigma(direct["features"].detach(), root))
    assert total_sigma == pytest.approx(expected_total, rel=1e-10)
    direct_total = structure_sigma(direct["features"], model.uncertainty_covariance)
    assert total_sigma == pytest.approx(float(direct_total), rel=1e-8)
    projection = values["alchem::energy_uncertainty_projection"]
    assert float(projection.norm()) == pytest.approx(expected_total, rel=1e-10)
    energy = float(values["energy"])
    assert energy == pytest.approx(float(direct["energy"]), rel=1e-12)
    per_atom = values["energy_ensemble"]
    assert per_atom.shape == (len(atoms), 8)
    torch.testing.assert_close(per_atom.sum(0), total_ensemble, rtol=1e-10, atol=1e-9)
    assert float(total_ensemble.mean()) == pytest.approx(energy, abs=1e-9)
    assert float(total_ensemble.std()) > 0

    # the plain model.pt of the same checkpoint (no uncertainty) gives the same
    # energy and forces
    plain = load_calculator(uncertain["model"])
    for calc in (calculator, plain):
        atoms.calc = calc
        calc.results = {}
    atoms.calc = plain
    e_plain, f_plain = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = calculator
    assert atoms.get_potential_energy() == pytest.approx(e_plain, abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), f_plain, atol=1e-12)


def test_uncertainty_on_a_model_without_it(trained, emt_dir):
    from alchem.calculator import load_calculator

    calculator = load_calculator(trained["model"])
    assert "energy_uncertainty" not in calculator._model.capabilities().outputs


@pytest.mark.slow
def test_training_with_uncertainty_and_fine_tuning_from_it(emt_dir, tmp_path):
    """``uncertainty: {method: llpr}`` in the options: model.pt has it; a
    fine-tuning from that checkpoint trains (the fit does not transfer) and fits
    it again."""
    from alchem.calculator import load_calculator

    os.symlink(os.path.join(emt_dir, "train.xyz"), tmp_path / "train.xyz")
    write_options(
        str(tmp_path / "options.yaml"),
        "soap_bpnn",
        uncertainty={"method": "llpr", "ensemble_size": 4},
        training={"num_epochs": 2},
    )
    result = run_cli(
        "alchem-train", "options.yaml", "--run-dir", "a", cwd=str(tmp_path)
    )
    assert "uncertainty (LLPR)" in result.stdout
    model = load_calculator(str(tmp_path / "model.pt"))._model
    assert "energy_uncertainty" in model.capabilities().outputs
    run_cli(
        "alchem-train",
        "options.yaml",
        "--fine-tune",
        "model.ckpt",
        "-o",
        "tuned.pt",
        "--run-dir",
        "b",
        cwd=str(tmp_path),
    )
    tuned = load_calculator(str(tmp_path / "tuned.pt"))._model
    assert "energy_uncertainty" in tuned.capabilities().outputs


def test_alchem_uncertainty_errors(tmp_path, trained):
    result = run_cli(
        "alchem-uncertainty", "missing.ckpt", cwd=str(tmp_path), check=False
    )
    assert (
        result.returncode == 2 and "missing.ckpt: checkpoint not found" in result.stderr
    )
    shutil.copy(trained["checkpoint"], tmp_path / "model.ckpt")
    result = run_cli(
        "alchem-uncertainty",
        "model.ckpt",
        "--ensemble-size",
        "3",
        cwd=str(tmp_path),
        check=False,
    )
    assert result.returncode == 2
    assert "ensemble_size must be even" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_posterior_without_the_pair_weights_still_exports(uncertain, tmp_path):
    """A model with a pair potential whose posterior covers the last layer only
    (fitted before the pair weights joined it): model.pt's sigma uses the last
    layer's features only, as it did."""
    from alchem.calculator import load_calculator
    from alchem.export import export_model

    model, options = model_from_checkpoint(
        os.path.join(uncertain["folder"], "model.ckpt")
    )
    if model.n_pair_features == 0:
        pytest.skip("the architecture's default has no pair potential")
    last = model.n_last_layer_features
    model.uncertainty_covariance = model.uncertainty_covariance[:last, :last].clone()
    model.uncertainty_ensemble = model.uncertainty_ensemble[:last].clone()
    export_model(model, options, str(tmp_path / "model.pt"))
    calculator = load_calculator(str(tmp_path / "model.pt"))
    atoms = ase.io.read(os.path.join(uncertain["dir"], "train.xyz"), 0)
    out = calculator.run_model(
        atoms, {"energy_uncertainty": ModelOutput(sample_kind="atom")}
    )
    sigma = out["energy_uncertainty"].block().values.detach().double()[:, 0]
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to(
        "cpu", torch.float64
    )
    features = predict(model, batch, False, False, with_features=True)
    features = features["atomic_features"].detach()[:, :last]
    root = square_root(model.uncertainty_covariance)
    torch.testing.assert_close(
        sigma, projected_sigma(features, root), rtol=1e-10, atol=1e-12
    )
