"""How well a model's predicted sigma matches its actual errors on a labelled
test set (``alchem-eval`` on a model with uncertainty).

- coverage: the fraction of errors within 1, 2 and 3 sigma (a calibrated Gaussian
  gives 68.3, 95.4 and 99.7 %): total energies per structure against the energy
  sigma, force components against the calibrated force sigma;
- ranking: Spearman's rho between each structure's force RMSE and its RMS force
  sigma, and its mean per-atom energy sigma (does a larger sigma mean a larger
  error?).
"""

import numpy as np

GAUSSIAN_COVERAGE = {1: 0.6827, 2: 0.9545, 3: 0.9973}


def coverage(errors: np.ndarray, sigmas: np.ndarray) -> dict[int, float]:
    """Fraction of |error| <= k sigma for k = 1, 2, 3 (any shapes, matching)."""
    ratio = np.abs(np.asarray(errors, float)).reshape(-1)
    ratio = ratio / np.asarray(sigmas, float).reshape(-1)
    return {k: float(np.mean(ratio <= k)) for k in (1, 2, 3)}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (scipy); NaN with fewer than 3 points."""
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan")
    return float(spearmanr(x, y).statistic)


class CalibrationRecord:
    """Errors and sigmas of each structure of a test set, eV and Å."""

    def __init__(self) -> None:
        self.energy_error: list[float] = []  # predicted - reference, total energy
        self.energy_sigma: list[float] = []
        self.force_errors: list[np.ndarray] = []  # [atoms, 3] per structure
        self.force_sigmas: list[np.ndarray] = []
        self.mean_atom_sigma: list[float] = []  # per structure with forces

    def add(self, uncertainty, reference: dict, result: dict) -> None:
        """One structure: ``uncertainty`` from ``calculator.get_uncertainty``."""
        if "energy" in reference:
            self.energy_error.append(result["energy"] - reference["energy"])
            self.energy_sigma.append(uncertainty.energy_sigma)
        if "forces" in reference and uncertainty.force_sigma is not None:
            error = np.asarray(result["forces"]) - np.asarray(reference["forces"])
            self.force_errors.append(error)
            self.force_sigmas.append(np.asarray(uncertainty.force_sigma))
            self.mean_atom_sigma.append(float(np.mean(uncertainty.atom_sigma)))

    def summary(self) -> dict:
        """The numbers alchem-eval prints and writes to calibration.json."""
        report: dict = {"gaussian": {str(k): v for k, v in GAUSSIAN_COVERAGE.items()}}
        if self.energy_error:
            report["energy"] = {
                "structures": len(self.energy_error),
                "within": _keys(coverage(self.energy_error, self.energy_sigma)),
            }
        if self.force_errors:
            rmse = [float(np.sqrt(np.mean(e**2))) for e in self.force_errors]
            rms_sigma = [float(np.sqrt(np.mean(s**2))) for s in self.force_sigmas]
            report["forces"] = {
                "components": int(sum(e.size for e in self.force_errors)),
                "within": _keys(
                    coverage(
                        np.concatenate([e.reshape(-1) for e in self.force_errors]),
                        np.concatenate([s.reshape(-1) for s in self.force_sigmas]),
                    )
                ),
                "spearman_force_sigma": spearman(rms_sigma, rmse),
                "spearman_atom_energy_sigma": spearman(self.mean_atom_sigma, rmse),
                "structures": len(rmse),
            }
        return report

    def print_summary(self, report: dict) -> None:
        if "energy" in report:
            within = report["energy"]["within"]
            print(
                "calibration: energies within 1/2/3 sigma "
                f"{_percent(within)}  ({report['energy']['structures']} structures; "
                "Gaussian: 68/95/99.7 %)"
            )
        if "forces" in report:
            forces = report["forces"]
            print(
                "calibration: forces within 1/2/3 sigma "
                f"{_percent(forces['within'])}  ({forces['components']} components)"
            )
            print(
                "calibration: Spearman rho, force RMSE per structure vs RMS force "
                f"sigma {forces['spearman_force_sigma']:.3f}, vs mean atom energy "
                f"sigma {forces['spearman_atom_energy_sigma']:.3f}  "
                f"({forces['structures']} structures)"
            )

    def plot_data(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(sigma, |error|) of each panel of the error/sigma plot."""
        data = {}
        if self.energy_error:
            data["energy"] = (
                np.asarray(self.energy_sigma),
                np.abs(np.asarray(self.energy_error)),
            )
        if self.force_errors:
            data["forces"] = (
                np.concatenate([s.reshape(-1) for s in self.force_sigmas]),
                np.abs(np.concatenate([e.reshape(-1) for e in self.force_errors])),
            )
        return data


def _keys(within: dict[int, float]) -> dict[str, float]:
    return {str(k): v for k, v in within.items()}


def _percent(within: dict[str, float]) -> str:
    return " / ".join(f"{100 * within[k]:.1f}" for k in ("1", "2", "3")) + " %"
