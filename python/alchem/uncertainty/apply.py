"""Uncertainty on a model from its options: after training, or on a checkpoint."""

import logging

from ..errors import ConfigError
from ..model import EnergyModel
from .llpr import fit_uncertainty

LOG = logging.getLogger("alchem")


def fit_from_options(
    model: EnergyModel, train: list, validation: list, options: dict
) -> dict | None:
    """Fit what ``options["uncertainty"]`` asks for (None for method none) and
    record it in ``options["uncertainty_fit"]`` (the exported model's metadata)."""
    settings = options.get("uncertainty") or {}
    if settings.get("method", "none") == "none":
        options.pop("uncertainty_fit", None)
        return None
    batch_size = int(options["architecture"]["training"]["batch_size"])
    summary = fit_uncertainty(
        model,
        train,
        validation,
        ensemble_size=int(settings["ensemble_size"]),
        regularizer=settings["regularizer"],
        batch_size=batch_size,
    )
    options["uncertainty_fit"] = summary
    return summary


def require_uncertainty(model: EnergyModel, path: str) -> None:
    """A clear error where uncertainty is asked of a model without it."""
    if not model.has_uncertainty:
        raise ConfigError(
            f"{path} has no uncertainty: add it to its checkpoint with "
            "`alchem-uncertainty model.ckpt` (or train with `uncertainty: {method: "
            "llpr}` in the options file)"
        )
