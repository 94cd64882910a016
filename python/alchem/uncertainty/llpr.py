"""Fit and calibrate LLPR on a trained model (see the package's docstring)."""

import logging
import math

import torch

from ..data import Structure, collate
from ..errors import ConfigError
from ..model import EnergyModel, predict
from .posterior import structure_sigma

LOG = logging.getLogger("alchem")

ENSEMBLE_SEED = 20240  # the ensemble is the same for the same model and data
# varsigma^2 of ``regularizer: auto``, relative to the mean eigenvalue of the
# precision: a numerical floor only, so that an environment unlike all training
# environments (a direction the training atoms never took) keeps a large sigma;
# choosing it by the validation likelihood instead picked near-isotropic
# covariances, whose sigma follows the size of the features, not their novelty
AUTO_REGULARIZER = 1e-8


def fit_uncertainty(
    model: EnergyModel,
    train: list[Structure],
    validation: list[Structure],
    ensemble_size: int = 16,
    regularizer: float | str = "auto",
    batch_size: int = 8,
) -> dict:
    """Fit the posterior on ``train``, calibrate it on ``validation``, and store it
    in the model's uncertainty buffers. Returns what was fitted (JSON-ready).

    The precision has one row per training atom (its last-layer features f_i),
    as if each atom's energy were observed: P = mean_i f_i f_i^T. An atom whose
    features point where no training atom's did gets a large sigma_i; the rows of
    the structures' total energies alone (sums of f_i) leave the differences
    between atoms unconstrained, and gave surface atoms of a model trained on bulk
    the same sigma as bulk atoms. alpha^2 is then the maximum-likelihood scale of
    the validation energy errors: C = alpha^2 (P + varsigma^2 I)^-1, with
    varsigma^2 = ``regularizer`` x the mean eigenvalue of P (``auto``: 1e-8)."""
    if ensemble_size < 2 or ensemble_size % 2:
        raise ConfigError(
            f"uncertainty.ensemble_size must be even and at least 2 (the members "
            f"come in pairs theta +- delta), got {ensemble_size}"
        )
    if model.n_last_layer_features == 0:
        raise ConfigError(
            "uncertainty needs a last layer with an input: the architecture has no "
            "hidden layer (bpnn.num_hidden_layers / bpnn.hidden_sizes)"
        )
    dtype = model.composition.dtype
    train = [s for s in train if s.energy is not None]
    calibration = [s for s in validation if s.energy is not None]
    if len(train) == 0:
        raise ConfigError("uncertainty: no training structure has an energy")
    if len(calibration) < 2:
        raise ConfigError(
            "uncertainty is calibrated on the validation set's energies, and it has "
            f"{len(calibration)} structure(s) with an energy: give validation_set "
            "(a fraction or a file) with at least 2"
        )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        precision = _atom_precision(model, train, batch_size, dtype)
        validation_summed, errors = _summed_features(
            model, calibration, batch_size, dtype
        )
    eigenvalues, eigenvectors = torch.linalg.eigh(precision)
    eigenvalues = torch.clamp(eigenvalues, min=0.0)
    relative = AUTO_REGULARIZER if regularizer == "auto" else float(regularizer)
    varsigma2 = relative * max(float(eigenvalues.mean()), 1e-300)
    variance = (
        (validation_summed @ eigenvectors) ** 2 / (eigenvalues + varsigma2)
    ).sum(1)
    alpha2 = max(float((errors**2 / torch.clamp(variance, min=1e-300)).mean()), 1e-300)
    root = eigenvectors * torch.sqrt(alpha2 / (eigenvalues + varsigma2))  # C = R R^T
    covariance = root @ root.T
    # antithetic pairs (z, -z): the ensemble's mean is the model itself, exactly
    generator = torch.Generator().manual_seed(ENSEMBLE_SEED)
    half = torch.randn(
        (root.shape[1], ensemble_size // 2), generator=generator, dtype=torch.float64
    )
    draws = torch.cat([half, -half], dim=1)
    device = model.composition.device
    model.uncertainty_covariance = covariance.to(device, dtype)
    model.uncertainty_ensemble = (root @ draws).to(device, dtype)
    model.uncertainty_force_factor = torch.ones((), device=device, dtype=dtype)
    force_factor = _force_factor(model, calibration, batch_size, dtype)
    model.uncertainty_force_factor.fill_(force_factor)
    model.train(was_training)
    sigma = structure_sigma(validation_summed, covariance)
    within = float((errors.abs() <= sigma).double().mean())
    summary = {
        "method": "llpr",
        "ensemble_size": ensemble_size,
        "alpha2": float(alpha2),
        "regularizer": relative,
        "force_factor": force_factor,
        "validation": {
            "structures": len(calibration),
            "energy_within_1_sigma": within,
        },
    }
    LOG.info(
        "uncertainty (LLPR): alpha^2 %.4g, regularizer %.3g, force factor %.4g; "
        "validation energies within 1 sigma: %.0f %%",
        alpha2,
        relative,
        force_factor,
        100 * within,
    )
    return summary


def _atom_precision(
    model: EnergyModel, structures: list[Structure], batch_size: int, dtype
) -> torch.Tensor:
    """mean_i f_i f_i^T over the atoms of ``structures`` [D, D] (float64)."""
    device = model.composition.device
    n_features = model.n_last_layer_features
    total = torch.zeros((n_features, n_features), dtype=torch.float64)
    n_atoms = 0
    for start in range(0, len(structures), batch_size):
        batch = collate(structures[start : start + batch_size]).to(device, dtype)
        out = predict(model, batch, forces=False, virial=False, with_features=True)
        features = out["atomic_features"].double().cpu()
        total += features.T @ features
        n_atoms += features.shape[0]
    return total / n_atoms


def _summed_features(
    model: EnergyModel, structures: list[Structure], batch_size: int, dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer features summed per structure [N, D] and the energy errors [N]
    (prediction - reference), float64 on the CPU."""
    device = model.composition.device
    features, errors = [], []
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        batch = collate(chunk).to(device, dtype)
        out = predict(model, batch, forces=False, virial=False, with_features=True)
        features.append(out["features"].double().cpu())
        reference = torch.tensor([s.energy for s in chunk], dtype=torch.float64)
        errors.append(out["energy"].double().cpu() - reference)
    return torch.cat(features), torch.cat(errors)


def _force_factor(
    model: EnergyModel, structures: list[Structure], batch_size: int, dtype
) -> float:
    """kappa with kappa^2 = mean(error^2 / spread^2) over the validation force
    components (the maximum-likelihood scale), spread^2 the ensemble's mean
    square force offset; 1 without forces."""
    structures = [s for s in structures if s.forces is not None]
    device = model.composition.device
    ratios = []
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        batch = collate(chunk).to(device, dtype)
        out = predict(model, batch, forces=True, virial=False, with_features=True)
        spread = ensemble_force_spread(out["features"], out["positions"], model)
        error = out["forces"].detach().double().cpu() - batch.forces.double().cpu()
        spread = spread.double().cpu()
        kept = spread > 1e-12 * float(spread.mean())
        ratios.append((error[kept] ** 2) / spread[kept])
    if not ratios or sum(r.numel() for r in ratios) == 0:
        return 1.0
    return math.sqrt(float(torch.cat(ratios).mean()))


def ensemble_force_spread(
    features: torch.Tensor, positions: torch.Tensor, model: EnergyModel
) -> torch.Tensor:
    """mean_m (F_m - F)^2 per force component [atoms, 3] (uncalibrated), F_m the
    forces of ensemble member m, from ``features`` summed per structure with the
    graph to ``positions``."""
    offsets = (features @ model.uncertainty_ensemble).sum(dim=0)  # [M]
    total = torch.zeros_like(positions)
    for member in range(offsets.shape[0]):
        (gradient,) = torch.autograd.grad(
            offsets[member], positions, retain_graph=member < offsets.shape[0] - 1
        )
        total = total + gradient.detach() ** 2
    return total / offsets.shape[0]
