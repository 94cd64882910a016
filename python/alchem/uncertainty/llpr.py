"""Fit and calibrate LLPR on a trained model (see the package's docstring)."""

import logging
import math

import torch

from ..data import Structure, collate
from ..errors import ConfigError
from ..model import EnergyModel, predict
from .posterior import structure_sigma

LOG = logging.getLogger("alchem")

# varsigma^2 tried by ``regularizer: auto``, relative to the mean eigenvalue of
# S^T S: from nearly none to a prior that dominates the data
REGULARIZER_GRID = [10.0**power for power in range(-12, 3)]
ENSEMBLE_SEED = 20240  # the ensemble is the same for the same model and data


def fit_uncertainty(
    model: EnergyModel,
    train: list[Structure],
    validation: list[Structure],
    ensemble_size: int = 16,
    regularizer: float | str = "auto",
    batch_size: int = 8,
) -> dict:
    """Fit the posterior on ``train``, calibrate it on ``validation``, and store it
    in the model's uncertainty buffers. Returns what was fitted (JSON-ready)."""
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
        summed, _ = _summed_features(model, train, batch_size, dtype)
        validation_summed, errors = _summed_features(
            model, calibration, batch_size, dtype
        )
    eigenvalues, eigenvectors = torch.linalg.eigh(summed.T @ summed)
    eigenvalues = torch.clamp(eigenvalues, min=0.0)
    projected = (validation_summed @ eigenvectors) ** 2
    varsigma2, alpha2 = _calibrate(eigenvalues, projected, errors, regularizer)
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
        "regularizer": float(varsigma2),
        "force_factor": force_factor,
        "validation": {
            "structures": len(calibration),
            "energy_within_1_sigma": within,
        },
    }
    LOG.info(
        "uncertainty (LLPR): alpha^2 %.4g, regularizer %.4g eV^2, force factor %.4g; "
        "validation energies within 1 sigma: %.0f %%",
        alpha2,
        varsigma2,
        force_factor,
        100 * within,
    )
    return summary


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


def _calibrate(
    eigenvalues: torch.Tensor,
    projected: torch.Tensor,
    errors: torch.Tensor,
    regularizer: float | str,
) -> tuple[float, float]:
    """(varsigma^2, alpha^2): alpha^2 by maximum likelihood for each varsigma^2
    and, for ``auto``, the varsigma^2 of the lowest Gaussian negative
    log-likelihood of the validation energy errors."""
    scale = max(float(eigenvalues.mean()), 1e-300)
    if regularizer == "auto":
        candidates = [scale * factor for factor in REGULARIZER_GRID]
    else:
        candidates = [float(regularizer)]
    best = (math.inf, 0.0, 0.0)
    squared = errors**2
    for varsigma2 in candidates:
        variance = (projected / (eigenvalues + varsigma2)).sum(dim=1)  # q_v
        variance = torch.clamp(variance, min=1e-300)
        alpha2 = float((squared / variance).mean())
        alpha2 = max(alpha2, 1e-300)
        nll = 0.5 * float(torch.log(2 * math.pi * alpha2 * variance).mean() + 1.0)
        if nll < best[0]:
            best = (nll, varsigma2, alpha2)
    return best[1], best[2]


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
