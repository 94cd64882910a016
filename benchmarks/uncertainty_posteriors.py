"""The choices of the force-aware posterior (docs/uncertainty.md), measured on a
model of ``benchmarks/uncertainty_calibration.py``: its folder's model.ckpt, data
split and test sets, with the posteriors computed here from the last-layer
features and the force rows (alchem.uncertainty.llpr).

- energies: the energy-only precision P (what the model uses) against P plus the
  force rows, w P_F with w relative to the traces (tr P / tr P_F);
- forces: the exact force sigma sqrt(g C_F g) against the model's ensemble
  (kappa x its spread), and what each test set's per-structure ranking could be at
  best: Spearman's rho against errors drawn from the exact sigma (independent
  Gaussian components, 1000 draws, median); other per-structure scores (the
  median and the largest per-atom force sigma), other regularizers, and what
  varies between structures;
- the ensemble's energies: the median of their spread over the energy sigma, with
  the energy rows in C_F (as fitted) and with the force rows alone;
- the fit's time (one thread) against the energy posterior alone.

    python benchmarks/uncertainty_posteriors.py benchmarks/work/uncertainty/soap_bpnn
"""

import argparse
import dataclasses
import logging
import os
import time

import numpy as np
import torch
from alchem.data import read_structures
from alchem.options import expand_options
from alchem.training import load_datasets, model_from_checkpoint
from alchem.uncertainty.llpr import (
    fit_uncertainty,
    force_rows,
    inverse_square_root,
    likelihood_scale,
)
from scipy.stats import spearmanr

RELATIVE = 1e-8  # regularizer: auto
TEST_SETS = ("test", "test-large", "mixed")


def collect(model, structures: list) -> list[dict]:
    """Per structure: atom features f [n, D], force rows g [3n, D], energy error,
    force errors [3n] (float64 numpy)."""
    result = []
    for start in range(0, len(structures), 8):
        chunk = structures[start : start + 8]
        rows, out = force_rows(model, chunk, torch.float64)
        features = out["atomic_features"].detach()
        force_errors = (out["forces"].detach() - out["batch_forces"]).numpy()
        energy = out["energy"].detach().numpy()
        first = 0
        for index, structure in enumerate(chunk):
            atoms = slice(first, first + len(structure.numbers))
            first = atoms.stop
            result.append(
                {
                    "f": features[atoms].numpy(),
                    "g": rows[atoms].reshape(-1, rows.shape[-1]).numpy(),
                    "energy_error": float(energy[index] - structure.energy),
                    "energy_per_atom": structure.energy / len(structure.numbers),
                    "force_errors": force_errors[atoms].reshape(-1),
                }
            )
    return result


def variance(rows: np.ndarray, root: np.ndarray) -> np.ndarray:
    return ((rows @ root) ** 2).sum(1)


def scaled_root(
    precision: np.ndarray, rows: np.ndarray, errors: np.ndarray, relative=RELATIVE
) -> tuple[np.ndarray, float]:
    """(sqrt(alpha^2) A, alpha^2), alpha^2 the maximum likelihood of ``errors``."""
    root = inverse_square_root(torch.from_numpy(precision), relative)
    alpha2 = likelihood_scale(torch.from_numpy(rows) @ root, torch.from_numpy(errors))
    return np.sqrt(alpha2) * root.numpy(), alpha2


def energy_line(name: str, sets: dict, root: np.ndarray) -> str:
    parts = []
    for test in TEST_SETS:
        rows = sets[test]
        summed = np.array([r["f"].sum(0) for r in rows])
        sigma = np.sqrt(variance(summed, root))
        errors = np.abs([r["energy_error"] for r in rows])
        atom = [np.mean(np.sqrt(variance(r["f"], root))) for r in rows]
        rmse = [np.sqrt(np.mean(r["force_errors"] ** 2)) for r in rows]
        parts.append(
            f"{100 * np.mean(errors <= sigma):5.1f} % / {spearmanr(atom, rmse)[0]:5.2f}"
        )
    return f"{name:38s}" + " | ".join(parts)


def rms(sigma: np.ndarray) -> float:
    return float(np.sqrt(np.mean(sigma**2)))


def atom_norms(sigma: np.ndarray) -> np.ndarray:
    return np.sqrt((sigma.reshape(-1, 3) ** 2).sum(1))


def force_line(name: str, sets: dict, sigma_of, score=rms) -> str:
    """Components within 1 sigma and rho (force RMSE vs ``score`` of each
    structure's component sigmas), per test set."""
    parts = []
    for test in TEST_SETS:
        rows = sets[test]
        sigmas = [sigma_of(r["g"]) for r in rows]
        ratio = np.concatenate([np.abs(r["force_errors"]) for r in rows])
        ratio = ratio / np.concatenate(sigmas)
        scores = [score(s) for s in sigmas]
        rmse = [np.sqrt(np.mean(r["force_errors"] ** 2)) for r in rows]
        parts.append(
            f"{100 * np.mean(ratio <= 1):5.1f} % / {spearmanr(scores, rmse)[0]:5.2f}"
        )
    return f"{name:38s}" + " | ".join(parts)


def best_ranking(sets: dict, root: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    parts = []
    for test in TEST_SETS:
        sigmas = [np.sqrt(variance(r["g"], root)) for r in sets[test]]
        rms = [np.sqrt(np.mean(s**2)) for s in sigmas]
        draws = [
            spearmanr(rms, [np.sqrt(np.mean((s * rng.standard_normal(s.shape)) ** 2))
                            for s in sigmas])[0]
            for _ in range(1000)
        ]  # fmt: skip
        parts.append(f"{'':9s}{np.median(draws):5.2f}")
    return f"{'best rho (errors drawn from C_F)':38s}" + " | ".join(parts)


def spread_line(sets: dict, root: np.ndarray) -> str:
    """What varies between structures: the coefficients of variation of the exact
    RMS force sigma and of the force RMSE, and the RMSE's rho with the reference
    energy per atom."""
    parts = []
    for test in TEST_SETS:
        rows = sets[test]
        sigma = np.array([rms(np.sqrt(variance(r["g"], root))) for r in rows])
        rmse = np.array([rms(r["force_errors"]) for r in rows])
        energy = [r["energy_per_atom"] for r in rows]
        parts.append(
            f"{np.std(sigma) / np.mean(sigma):.2f} {np.std(rmse) / np.mean(rmse):.2f}"
            f" {spearmanr(energy, rmse)[0]:5.2f}"
        )
    return f"{'cv sigma, cv RMSE, rho(E/atom, RMSE)':38s}" + " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder of uncertainty_calibration.py")
    os.chdir(parser.parse_args().folder)
    torch.set_num_threads(1)
    model, options = model_from_checkpoint("model.ckpt")
    data = load_datasets(options, "model.ckpt")
    sets = {"train": collect(model, data.train)}
    sets["validation"] = collect(model, data.validation)
    for test in TEST_SETS:
        section = expand_options(
            {"architecture": {"name": "soap_bpnn"}, "training_set": f"{test}.xyz"},
            "posteriors",
        )["training_set"]
        sets[test] = collect(model, read_structures(section, model.cutoff, test))

    atoms = np.concatenate([r["f"] for r in sets["train"]])
    components = np.concatenate([r["g"] for r in sets["train"]])
    energy_precision = atoms.T @ atoms / len(atoms)
    force_precision = components.T @ components / len(components)
    validation = sets["validation"]
    summed = np.array([r["f"].sum(0) for r in validation])
    energy_errors = np.array([r["energy_error"] for r in validation])
    rows = np.concatenate([r["g"] for r in validation])
    force_errors = np.concatenate([r["force_errors"] for r in validation])

    header = " | ".join(f"{t:>16s}" for t in TEST_SETS)
    print(f"energies within 1 sigma / rho (mean atom sigma)  {header}")
    energy_root, energy_alpha2 = scaled_root(energy_precision, summed, energy_errors)
    print(energy_line("P (energy rows only)", sets, energy_root))
    trace = np.trace(energy_precision) / np.trace(force_precision)
    for weight in (0.01, 1.0, 100.0):
        precision = energy_precision + weight * trace * force_precision
        root, _ = scaled_root(precision, summed, energy_errors)
        print(energy_line(f"P + {weight:g} (trace ratio) P_F", sets, root))

    alone, alone_alpha2 = scaled_root(force_precision, rows, force_errors)
    weight = alone_alpha2 / energy_alpha2  # lambda, as llpr._force_posterior
    fitted = options.get("uncertainty_fit", {}).get("energy_weight")
    print(f"lambda {weight:.4g} (the model's fit: {fitted})")
    print(f"\nforces within 1 sigma / rho (RMS force sigma)    {header}")
    force_root, _ = scaled_root(
        force_precision + weight * energy_precision, rows, force_errors
    )
    print(force_line("C_F, exact", sets, lambda g: np.sqrt(variance(g, force_root))))
    ensemble = model.uncertainty_ensemble.double().numpy()
    kappa = float(model.uncertainty_force_factor)
    size = ensemble.shape[1]
    print(
        force_line(
            f"model's ensemble ({size}), kappa {kappa:.3f}",
            sets,
            lambda g: kappa * np.sqrt(np.mean((g @ ensemble) ** 2, axis=1)),
        )
    )
    print(best_ranking(sets, force_root))
    exact = lambda g: np.sqrt(variance(g, force_root))  # noqa: E731
    for name, score in (
        ("median atom", lambda s: np.median(atom_norms(s))),
        ("largest atom", lambda s: np.max(atom_norms(s))),
    ):
        print(force_line(f"C_F exact, {name} force sigma", sets, exact, score))
    for relative in (1e-6, 1e-4, 1e-2):
        root, _ = scaled_root(
            force_precision + weight * energy_precision, rows, force_errors, relative
        )
        sigma_of = lambda g, root=root: np.sqrt(variance(g, root))  # noqa: E731
        print(force_line(f"C_F exact, regularizer {relative:g}", sets, sigma_of))
    print(spread_line(sets, force_root))

    print("\nensemble energies: median spread / energy sigma, per test set")
    for name, root in (("C_F (as fitted)", force_root), ("force rows alone", alone)):
        ratios = []
        for test in TEST_SETS:
            summed_test = np.array([r["f"].sum(0) for r in sets[test]])
            spread = np.sqrt(variance(summed_test, root))
            ratios.append(
                np.median(spread / np.sqrt(variance(summed_test, energy_root)))
            )
        print(f"{name:38s}" + " | ".join(f"{r:16.3g}" for r in ratios))
    logging.getLogger("alchem").setLevel(logging.ERROR)  # the fits' log lines
    print("\n" + fit_cost(model, data))


def fit_cost(model, data, rounds: int = 3) -> str:
    """Seconds of ``fit_uncertainty`` (16 members), fastest of ``rounds``
    interleaved: in full, and with the validation forces removed (the energy
    posterior alone: its peer)."""
    energies_only = [dataclasses.replace(s, forces=None) for s in data.validation]
    times = {"full": [], "energy posterior only": []}
    for _ in range(rounds):
        for name, validation in (
            ("full", data.validation),
            ("energy posterior only", energies_only),
        ):
            start = time.perf_counter()
            fit_uncertainty(model, data.train, validation, ensemble_size=16)
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    ratio = best["full"] / best["energy posterior only"]
    return (
        f"fit: {best['full']:.2f} s, energy posterior only "
        f"{best['energy posterior only']:.2f} s ({ratio:.1f}x; fastest of {rounds})"
    )


if __name__ == "__main__":
    main()
