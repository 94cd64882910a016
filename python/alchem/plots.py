"""Figures of a fit: learning curves (``alchem-train``) and parity plots
(``alchem-eval``), with matplotlib's file-only Agg backend.

Every number a figure writes is also returned (and written as JSON by the callers),
so tests and scripts read them without parsing images.
"""

import csv
import math
import os

import numpy as np

from .io import atomic_write

# the units alchem-eval prints (values are converted from eV and Å by these factors)
PARITY_UNITS = {
    "energy": ("energy per atom", "eV/atom", "meV/atom"),
    "forces": ("force components", "eV/Å", "meV/Å"),
    "stress": ("stress components", "GPa", "meV/Å³"),
}
EV_PER_A3_IN_GPA = 160.21766208


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    pyplot().close(figure)


def error_statistics(errors: np.ndarray) -> dict[str, float]:
    """RMSE and MAE of ``errors`` (any shape)."""
    errors = np.asarray(errors, dtype=float).reshape(-1)
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
    }


def parity_plot(
    path: str,
    reference: dict[str, np.ndarray],
    predicted: dict[str, np.ndarray],
    force_symbols: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Predicted against reference, one panel per target, written to ``path``.

    ``reference`` and ``predicted`` hold, in eV and Å, ``energy`` per atom
    [n_structures], ``forces`` components [n_atoms, 3] and ``stress`` Voigt
    components [n_structures, 6] (any may be missing); ``force_symbols`` colours the
    force points by element. Returns the RMSE and MAE written on each panel, in the
    units alchem-eval prints.
    """
    plt = pyplot()
    names = [n for n in PARITY_UNITS if n in reference and len(reference[n]) > 0]
    statistics: dict[str, dict[str, float]] = {}
    figure, axes = plt.subplots(
        1, max(1, len(names)), figsize=(4.6 * max(1, len(names)), 4.8)
    )
    axes = np.atleast_1d(axes)
    for axis, name in zip(axes, names):
        title, axis_unit, error_unit = PARITY_UNITS[name]
        factor = EV_PER_A3_IN_GPA if name == "stress" else 1.0
        x = np.asarray(reference[name], dtype=float) * factor
        y = np.asarray(predicted[name], dtype=float) * factor
        errors = (np.asarray(predicted[name]) - np.asarray(reference[name])) * 1000
        statistics[name] = {**error_statistics(errors), "unit": error_unit}
        if name == "forces" and force_symbols is not None:
            for symbol in sorted(set(force_symbols.tolist())):
                mask = force_symbols == symbol
                axis.scatter(
                    x[mask].reshape(-1), y[mask].reshape(-1), s=4, alpha=0.5,
                    label=symbol,
                )  # fmt: skip
            axis.legend(loc="lower right", markerscale=3, fontsize=8, title="element")
        else:
            axis.scatter(x.reshape(-1), y.reshape(-1), s=8, alpha=0.6)
        low = float(min(x.min(), y.min()))
        high = float(max(x.max(), y.max()))
        margin = 0.05 * (high - low or 1.0)
        limits = (low - margin, high + margin)
        axis.plot(limits, limits, color="black", linewidth=0.8)
        axis.set_xlim(limits)
        axis.set_ylim(limits)
        axis.set_aspect("equal")
        axis.set_title(title)
        axis.set_xlabel(f"reference ({axis_unit})")
        axis.set_ylabel(f"predicted ({axis_unit})")
        axis.text(
            0.04,
            0.96,
            f"RMSE {statistics[name]['rmse']:.3f} {error_unit}\n"
            f"MAE  {statistics[name]['mae']:.3f} {error_unit}",
            transform=axis.transAxes,
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    figure.tight_layout()
    save_figure(figure, path)
    return statistics


def read_metrics_csv(path: str) -> dict[str, list[float]]:
    """Columns of a run folder's metrics.csv; empty cells (epochs not logged) are nan."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                number = float(value) if value not in ("", None) else math.nan
            except ValueError:
                number = math.nan
            columns.setdefault(key, []).append(number)
    return columns


def learning_curve(run_dir: str) -> str | None:
    """``learning_curve.png`` in ``run_dir`` from its metrics.csv: training and
    validation energy and force RMSE and the learning rate against epoch (log
    scales). Returns the path, None while metrics.csv has no logged row yet."""
    metrics_path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(metrics_path):
        return None
    columns = read_metrics_csv(metrics_path)
    epochs = np.asarray(columns.get("epoch", []))
    if len(epochs) == 0:
        return None
    plt = pyplot()
    panels = [
        ("energy_rmse", "energy RMSE (meV/atom)"),
        ("forces_rmse", "force RMSE (meV/Å)"),
    ]
    panels = [p for p in panels if _has_values(columns, f"validation_{p[0]}")]
    figure, axes = plt.subplots(
        1, len(panels) + 1, figsize=(4.4 * (len(panels) + 1), 3.8)
    )
    axes = np.atleast_1d(axes)
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis, (metric, label) in zip(axes, panels):
        for split, style in (("train", "o-"), ("validation", "s-")):
            values = np.asarray(columns.get(f"{split}_{metric}", []), dtype=float)
            if len(values) == len(epochs):
                mask = np.isfinite(values) & (values > 0)
                axis.plot(epochs[mask], values[mask], style, markersize=3, label=split)
        axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.legend(fontsize=8)
        axis.grid(True, which="both", alpha=0.3)
    rate = np.asarray(columns.get("learning_rate", []), dtype=float)
    axes[-1].plot(epochs, rate, color="tab:green")
    axes[-1].set_yscale("log")
    axes[-1].set_xlabel("epoch")
    axes[-1].set_ylabel("learning rate")
    axes[-1].grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path = os.path.join(run_dir, "learning_curve.png")
    save_figure(figure, path)
    return path


def _has_values(columns: dict[str, list[float]], key: str) -> bool:
    return any(math.isfinite(v) for v in columns.get(key, []))


def calibration_plot(path: str, panels: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Actual |error| against predicted sigma, log-log, one panel per target
    (``energy``: total energies, eV; ``forces``: components, eV/Å), with the lines
    |error| = sigma, 2 sigma, 3 sigma: a calibrated model has 68 % of its points
    below the first."""
    plt = pyplot()
    names = {"energy": "total energy (eV)", "forces": "force components (eV/Å)"}
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False
    )
    for axis, (name, (sigma, error)) in zip(axes[0], panels.items()):
        sigma = np.asarray(sigma, float)
        error = np.asarray(error, float)
        shown = (sigma > 0) & (error > 0)
        axis.scatter(sigma[shown], error[shown], s=4, alpha=0.4, color="tab:blue")
        # x: the sigmas' range; y: every error shown (small ones far below)
        left, right = sigma[shown].min() / 2, sigma[shown].max() * 2
        line = np.geomspace(left, right, 10)
        for factor, style in ((1, "-"), (2, "--"), (3, ":")):
            axis.plot(line, factor * line, "k" + style, lw=1, label=f"{factor} σ")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(left, right)
        axis.set_ylim(
            min(error[shown].min(), left) / 2, max(error[shown].max(), 3 * right)
        )
        axis.set_xlabel(f"predicted σ, {names[name]}")
        axis.set_ylabel(f"|error|, {names[name]}")
        axis.legend(loc="upper left")
    figure.tight_layout()
    save_figure(figure, path)
