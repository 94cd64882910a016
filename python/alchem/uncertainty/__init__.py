"""Uncertainty of a trained model: LLPR on its last layers, no retraining.

LLPR (last-layer prediction rigidity; Bigi, Chong, Ceriotti and Grasselli, Mach.
Learn.: Sci. Technol. 5, 045018 (2024)) treats the last layer of each network as a
linear model on fixed per-atom features f_i (``EnergyModel.atomic_energies_and_
features``): an atom's energy is f_i . theta, a structure's s . theta with
s = sum_i f_i. Where the model has a pair potential (linear in its weights too),
theta also holds the pair weights and f_i the atom's pair features (half of each
of its edges' basis values, in its element pair's block): a pair distance the
training never saw raises sigma, which the network's last layer alone may not. Here the weights' precision has one row per training atom,
P = mean_i f_i f_i^T (atom-resolved, as local prediction rigidity looks at atoms),
and C = alpha^2 (P + varsigma^2 I)^-1 with alpha^2 calibrated on the validation
energies (llpr.py says why not the structures' rows alone). Then

- sigma_i = sqrt(f_i C f_i): an atom's energy uncertainty (eV);
- sigma_E = sqrt(s C s): a structure's (or any group of atoms');
- the force covariance C_F = alpha_F^2 (P_F + lambda P + varsigma^2 I)^-1: a force
  component is -g . theta with g = d(sum_i f_i)/d r_{j,alpha}, P_F = mean g g^T
  over the training force components, alpha_F^2 calibrated on the validation
  forces (llpr.py says why the energy rows, weighted by lambda, stay in it);
- delta_m ~ N(0, C_F), m = 1..M in antithetic pairs: an ensemble of last layers,
  whose forces (by autograd through E + s . delta_m) spread as C_F says; a force
  factor kappa, fitted on the validation forces, corrects the finite ensemble's
  spread (without validation forces: drawn from C, kappa 1).

Modules: ``posterior`` (the formulas above, also used by the exported model),
``llpr`` (the fit and calibration), ``apply`` (options, checkpoints, commands).
"""

from .llpr import fit_uncertainty
from .posterior import atom_sigma, ensemble_offsets, structure_sigma

__all__ = ["atom_sigma", "ensemble_offsets", "fit_uncertainty", "structure_sigma"]
