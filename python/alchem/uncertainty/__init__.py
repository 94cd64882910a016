"""Uncertainty of a trained model: LLPR on its last layers, no retraining.

LLPR (last-layer prediction rigidity; Bigi, Chong, Ceriotti and Grasselli, Mach.
Learn.: Sci. Technol. 5, 045018 (2024)) treats the last layer of each network as a
linear model on fixed per-atom features f_i (``EnergyModel.atomic_energies_and_
features``): an atom's energy is f_i . theta, a structure's s . theta with
s = sum_i f_i. Here the weights' precision has one row per training atom,
P = mean_i f_i f_i^T (atom-resolved, as local prediction rigidity looks at atoms),
and C = alpha^2 (P + varsigma^2 I)^-1 with alpha^2 calibrated on the validation
energies (llpr.py says why not the structures' rows alone). Then

- sigma_i = sqrt(f_i C f_i): an atom's energy uncertainty (eV);
- sigma_E = sqrt(s C s): a structure's (or any group of atoms');
- delta_m ~ N(0, C), m = 1..M in antithetic pairs: an ensemble of last layers,
  whose energies E + s . delta_m and forces (by autograd) spread as the posterior
  says; a force factor kappa, fitted on the validation forces, calibrates that
  spread.

Modules: ``posterior`` (the formulas above, also used by the exported model),
``llpr`` (the fit and calibration), ``apply`` (options, checkpoints, commands).
"""

from .llpr import fit_uncertainty
from .posterior import atom_sigma, ensemble_offsets, structure_sigma

__all__ = ["atom_sigma", "ensemble_offsets", "fit_uncertainty", "structure_sigma"]
