"""The posterior of the last layers' weights applied to features (TorchScript:
the exported model calls these)."""

import torch


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
