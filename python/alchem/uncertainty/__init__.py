"""Uncertainty of a trained model: LLPR on its last layers, no retraining.

LLPR (last-layer prediction rigidity; Bigi, Chong, Ceriotti and Grasselli, Mach.
Learn.: Sci. Technol. 5, 045018 (2024)) treats the last layer of each network as a
linear model on fixed per-atom features f_i (``EnergyModel.atomic_energies_and_
features``): a structure's energy is s . theta with s = sum_i f_i. Its weights'
posterior covariance is C = alpha^2 (S^T S + varsigma^2 I)^-1 over the training
structures' s, with alpha^2 and varsigma^2 calibrated on the validation energies.
Then

- sigma_i = sqrt(f_i C f_i): an atom's energy uncertainty (eV);
- sigma_E = sqrt(s C s): a structure's (or any group of atoms');
- delta_m ~ N(0, C), m = 1..M: an ensemble of last layers, whose energies
  E + s . delta_m and forces (by autograd) spread as the posterior says; a force
  factor kappa, fitted on the validation forces, calibrates that spread.

Modules: ``posterior`` (the formulas above, also used by the exported model),
``llpr`` (the fit and calibration), ``apply`` (options, checkpoints, commands).
"""

from .llpr import fit_uncertainty
from .posterior import atom_sigma, ensemble_offsets, structure_sigma

__all__ = ["atom_sigma", "ensemble_offsets", "fit_uncertainty", "structure_sigma"]
