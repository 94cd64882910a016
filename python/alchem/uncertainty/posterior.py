"""The posterior of the last layers' weights applied to features (TorchScript:
the exported model calls these)."""

import torch

# the outputs a model.pt with uncertainty has (alchem.export writes them)
UNCERTAINTY_OUTPUTS = (
    "energy_uncertainty",
    "energy_ensemble",
    "alchem::energy_uncertainty_projection",
)


def atom_sigma(features: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """sqrt(f_i C f_i) for each row f_i of ``features`` [n, D]: [n] (eV)."""
    variance = ((features @ covariance) * features).sum(dim=1)
    return torch.sqrt(torch.clamp(variance, min=0.0))


def structure_sigma(summed: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """The same for features summed over each structure's atoms [n_systems, D]."""
    return atom_sigma(summed, covariance)


def ensemble_offsets(features: torch.Tensor, ensemble: torch.Tensor) -> torch.Tensor:
    """Energy offsets of the ensemble's members: f_i . delta_m, [n, M] (eV)."""
    return features @ ensemble


def projected_sigma(features: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """|f_i R| for each row: sqrt(f_i C f_i) with C = R R^T (``square_root``),
    computed without cancellation."""
    return torch.linalg.vector_norm(features @ root, dim=1)


def square_root(covariance: torch.Tensor) -> torch.Tensor:
    """R with C = R R^T (eigenvectors scaled by the square roots of the
    eigenvalues, computed in float64); empty for an empty C."""
    covariance = covariance.double()
    if covariance.numel() == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(covariance)
    return vectors * torch.sqrt(torch.clamp(values, min=0.0))
