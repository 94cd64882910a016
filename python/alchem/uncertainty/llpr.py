"""Fit and calibrate LLPR on a trained model (see the package's docstring)."""

import logging
import math
from collections.abc import Iterator

import torch

from ..data import Structure, collate
from ..errors import ConfigError
from ..model import EnergyModel, edge_vectors, predict
from .posterior import structure_sigma

LOG = logging.getLogger("alchem")

ENSEMBLE_SEED = 20240  # the ensemble is the same for the same model and data
# the validation's force rows serve two scales (the force-only posterior's, then
# C_F's): kept in memory up to this many numbers (float64, 256 MiB), computed
# again for larger validation sets (each pass: one backward pass per feature)
VALIDATION_ROWS_KEPT = 2**25
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
    ensemble_size: int = 64,
    regularizer: float | str = "auto",
    batch_size: int = 8,
) -> dict:
    """Fit the posteriors on ``train``, calibrate them on ``validation``, and store
    them in the model's uncertainty buffers. Returns what was fitted (JSON-ready).

    Energies: one precision row per training atom (its last-layer features f_i),
    P = mean_i f_i f_i^T, and C = alpha^2 (P + varsigma^2 I)^-1 with alpha^2 the
    maximum-likelihood scale of the validation energy errors (the buffer
    ``uncertainty_covariance``). The rows of the structures' total energies alone
    (sums of f_i) leave the differences between atoms unconstrained, and gave
    surface atoms of a model trained on bulk the same sigma as bulk atoms.

    Forces (``_force_posterior``): C_F from the force rows, calibrated on the
    validation forces; the ensemble is drawn from it. Without validation forces
    it is drawn from C. varsigma^2 = ``regularizer`` x the mean eigenvalue of each
    precision (``auto``: 1e-8)."""
    train, calibration = _checked_data(model, train, validation, ensemble_size)
    dtype = model.composition.dtype
    was_training = model.training
    model.eval()
    with torch.no_grad():
        precision = _atom_precision(model, train, batch_size, dtype)
        validation_summed, errors = _summed_features(
            model, calibration, batch_size, dtype
        )
    relative = AUTO_REGULARIZER if regularizer == "auto" else float(regularizer)
    inverse_root = inverse_square_root(precision, relative)
    alpha2 = likelihood_scale(validation_summed @ inverse_root, errors)
    root = math.sqrt(alpha2) * inverse_root  # C = R R^T
    covariance = root @ root.T
    # antithetic pairs (z, -z): the ensemble's mean is the model itself, exactly
    generator = torch.Generator().manual_seed(ENSEMBLE_SEED)
    half = torch.randn(
        (root.shape[1], ensemble_size // 2), generator=generator, dtype=torch.float64
    )
    draws = torch.cat([half, -half], dim=1)
    forces = _force_posterior(
        model, train, calibration, precision, alpha2, relative, draws, batch_size
    )
    ensemble = root @ draws if forces is None else forces["root"] @ draws
    device = model.composition.device
    model.uncertainty_covariance = covariance.to(device, dtype)
    model.uncertainty_ensemble = ensemble.to(device, dtype)
    force_factor = 1.0 if forces is None else forces["force_factor"]
    model.uncertainty_force_factor = torch.full((), force_factor, dtype=dtype).to(
        device
    )
    model.train(was_training)
    sigma = structure_sigma(validation_summed, covariance)
    within = float((errors.abs() <= sigma).double().mean())
    return _summary(ensemble_size, alpha2, relative, len(calibration), within, forces)


def _checked_data(
    model: EnergyModel,
    train: list[Structure],
    validation: list[Structure],
    ensemble_size: int,
) -> tuple[list[Structure], list[Structure]]:
    """The training and validation structures with energies; a ConfigError where
    the fit can not be done."""
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
    return train, calibration


def _summary(
    ensemble_size: int,
    alpha2: float,
    relative: float,
    n_validation: int,
    within: float,
    forces: dict | None,
) -> dict:
    """What was fitted (JSON-ready; the exported model's metadata), logged."""
    summary = {
        "method": "llpr",
        "ensemble_size": ensemble_size,
        "alpha2": float(alpha2),
        "regularizer": relative,
        "ensemble_from": "energies" if forces is None else "forces",
        "force_factor": 1.0 if forces is None else forces["force_factor"],
        "validation": {
            "structures": n_validation,
            "energy_within_1_sigma": within,
        },
    }
    if forces is not None:
        summary["force_alpha2"] = forces["alpha2"]
        summary["energy_weight"] = forces["energy_weight"]
        summary["validation"]["force_components"] = forces["components"]
        summary["validation"]["forces_within_1_sigma"] = forces["within"]
    LOG.info(
        "uncertainty (LLPR): alpha^2 %.4g, regularizer %.3g, ensemble from the %s "
        "posterior, force factor %.4g; validation energies within 1 sigma: %.0f %%%s",
        alpha2,
        relative,
        summary["ensemble_from"][:-1],
        summary["force_factor"],
        100 * within,
        "" if forces is None else f", force components {100 * forces['within']:.0f} %",
    )
    return summary


def inverse_square_root(precision: torch.Tensor, relative: float) -> torch.Tensor:
    """A with A A^T = (P + varsigma^2 I)^-1, varsigma^2 = ``relative`` x the mean
    eigenvalue of P (float64; eigenvectors scaled)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(precision.double())
    eigenvalues = torch.clamp(eigenvalues, min=0.0)
    varsigma2 = relative * max(float(eigenvalues.mean()), 1e-300)
    return eigenvectors / torch.sqrt(eigenvalues + varsigma2)


def likelihood_scale(projected: torch.Tensor, errors: torch.Tensor) -> float:
    """alpha^2 maximizing the Gaussian likelihood of ``errors`` [n] with variances
    alpha^2 |x A|^2, ``projected`` = x A [n, D]: mean(error^2 / |x A|^2)."""
    variance = (projected**2).sum(1)
    return max(float((errors**2 / torch.clamp(variance, min=1e-300)).mean()), 1e-300)


def _atom_precision(
    model: EnergyModel, structures: list[Structure], batch_size: int, dtype
) -> torch.Tensor:
    """mean_i f_i f_i^T over the atoms of ``structures`` [D, D] (float64; D the
    last layers' features and the pair potential's)."""
    device = model.composition.device
    n_features = model.n_uncertainty_features
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
    """Features (last layers', pair potential's) summed per structure [N, D] and
    the energy errors [N]
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


def _force_posterior(
    model: EnergyModel,
    train: list[Structure],
    validation: list[Structure],
    energy_precision: torch.Tensor,
    energy_alpha2: float,
    relative: float,
    draws: torch.Tensor,
    batch_size: int,
) -> dict | None:
    """The force covariance C_F = alpha_F^2 A A^T, A A^T = (P_F + lambda P +
    varsigma^2 I)^-1 (None without validation forces).

    A force component is -g . theta with g = d(sum_i f_i)/d r_{j,alpha} (one row
    per component, ``force_rows``); P_F = mean g g^T over the training
    components. The energy rows, weighted by lambda = alpha_F0^2 / alpha^2 (the
    ratio of the scales the force-only and energy-only posteriors take on the
    validation set: their precisions add), pin the directions no force sees: a
    last layer's bias shifts every atom's energy and no force, and with the force
    rows alone the ensemble's energies spread 10^3-10^4 times their sigma.
    alpha_F^2: the maximum likelihood on the validation force components. The
    force factor kappa then calibrates the finite ensemble drawn from C_F
    (``draws``) on the same components (1 for an infinite ensemble)."""
    validation = [s for s in validation if s.forces is not None]
    if not validation:
        LOG.warning(
            "uncertainty: the validation set has no forces; the ensemble is drawn "
            "from the energy posterior and its forces are not calibrated"
        )
        return None
    dtype = model.composition.dtype
    force_precision = torch.zeros_like(energy_precision)
    n_rows = 0
    for rows, _ in _force_row_batches(model, train, batch_size, dtype):
        force_precision += rows.T @ rows
        n_rows += rows.shape[0]
    force_precision /= max(n_rows, 1)

    n_numbers = 3 * sum(len(s.numbers) for s in validation) * len(force_precision)
    if n_numbers <= VALIDATION_ROWS_KEPT:
        kept = list(_force_row_batches(model, validation, batch_size, dtype))
        batches = lambda: kept  # noqa: E731
    else:
        batches = lambda: _force_row_batches(  # noqa: E731
            model, validation, batch_size, dtype
        )

    def ratios(inverse_root: torch.Tensor, with_draws: bool) -> list[torch.Tensor]:
        """error^2 / |g A|^2 (and / mean_m (g A z_m)^2) per validation component."""
        exact, sampled = [], []
        for rows, errors in batches():
            projected = rows @ inverse_root
            variance = (projected**2).sum(1)
            kept = variance > 1e-300
            exact.append(errors[kept] ** 2 / variance[kept])
            if with_draws:
                spread = ((projected[kept] @ draws) ** 2).mean(1)
                sampled.append(errors[kept] ** 2 / spread)
        return [torch.cat(exact)] + ([torch.cat(sampled)] if with_draws else [])

    (alone,) = ratios(inverse_square_root(force_precision, relative), False)
    weight = float(alone.mean()) / energy_alpha2
    inverse_root = inverse_square_root(
        force_precision + weight * energy_precision, relative
    )
    exact, sampled = ratios(inverse_root, True)
    alpha2 = max(float(exact.mean()), 1e-300)
    return {
        "root": math.sqrt(alpha2) * inverse_root,
        "alpha2": alpha2,
        "energy_weight": weight,
        "force_factor": math.sqrt(float(sampled.mean()) / alpha2),
        "components": int(exact.numel()),
        "within": float((exact <= alpha2).double().mean()),
    }


def force_rows(
    model: EnergyModel, structures: list[Structure], dtype
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """g_{j,alpha} = d(sum_i f_i)/d r_{j,alpha}, the sum over the atoms of atom j's
    structure, [atoms, 3, D + n_pairs x basis_size]: one backward pass per
    last-layer feature (the architectures' custom operators do not vectorize over
    torch.func), the pair features' analytically (``pair_force_rows``); and
    predict's output (forces, features) for ``structures`` as one batch."""
    batch = collate(structures).to(model.composition.device, dtype)
    out = predict(model, batch, forces=True, virial=False, with_features=True)
    summed, positions = out["features"], out["positions"]
    n_features = model.n_last_layer_features
    rows = positions.new_zeros(positions.shape + (summed.shape[1],))
    for feature in range(n_features):
        (gradient,) = torch.autograd.grad(
            summed[:, feature].sum(),
            positions,
            retain_graph=feature < n_features - 1,
            allow_unused=True,
        )
        if gradient is not None:  # None: the feature does not depend on positions
            rows[..., feature] = gradient
    if model.n_pair_features > 0:
        with torch.no_grad():
            rows[..., n_features:] = pair_force_rows(model, batch, positions)
    out["batch_forces"] = batch.forces
    return rows.detach(), out


def pair_force_rows(model: EnergyModel, batch, positions: torch.Tensor) -> torch.Tensor:
    """d(sum_i p_i)/d r_{j,alpha} of the pair features p_i (the model's
    ``pair.features``) summed over each structure, [atoms, 3, n_pairs x
    basis_size], from the batch's full edge list: each edge e = (i, j) holds
    1/2 b(r_e) in its pair's block, and dr_e/dr_j = u_e = -dr_e/dr_i, so
    1/2 b'(r_e) u_e goes to atom j's rows and its negative to atom i's (the
    slopes of ``pair.basis_slope``; no backward pass)."""
    pair = model.pair
    n_pairs, size = pair.weights.shape
    centers, neighbors = batch.centers, batch.neighbors
    vectors = edge_vectors(
        positions, centers, neighbors, batch.shifts, batch.cells[batch.edge_structure]
    ).detach()
    n_atoms = positions.shape[0]
    rows = positions.new_zeros((n_atoms * 3 * n_pairs, size))
    if centers.shape[0] == 0:
        return rows.reshape(n_atoms, 3, n_pairs * size)
    distances = torch.linalg.norm(vectors, dim=1)
    units = vectors / distances.clamp(min=1e-12).unsqueeze(1)
    slopes = 0.5 * pair.basis_slope(distances).to(rows.dtype)  # [edges, size]
    block = pair.rows(model.type_to_index[batch.numbers], centers, neighbors)
    for axis in range(3):
        push = slopes * units[:, axis : axis + 1]
        rows = rows.index_add(0, (neighbors * 3 + axis) * n_pairs + block, push)
        rows = rows.index_add(0, (centers * 3 + axis) * n_pairs + block, -push)
    return rows.reshape(n_atoms, 3, n_pairs * size)


def _force_row_batches(
    model: EnergyModel, structures: list[Structure], batch_size: int, dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(rows [components, D], force errors [components]) per batch of
    ``structures``, float64 on the CPU; the errors are empty without forces."""
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        rows, out = force_rows(model, chunk, dtype)
        rows = rows.double().cpu().reshape(-1, rows.shape[-1])
        if all(s.forces is not None for s in chunk):
            errors = out["forces"].detach() - out["batch_forces"]
            yield rows, errors.double().cpu().reshape(-1)
        else:
            yield rows, rows.new_zeros(0)


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
