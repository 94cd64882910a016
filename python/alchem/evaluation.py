"""What ``alchem-eval`` writes besides its RMSE lines: ``errors.csv`` (one row per
structure), ``parity.png`` and ``parity.json`` (the numbers written on the figure),
the worst structures on screen and force errors per element (``--per-element``)."""

import csv
import io
import json
import os

import numpy as np

from .io import atomic_write_text
from .plots import error_statistics, parity_plot


class EvaluationRecord:
    """Reference and predicted values of every structure, in eV and Å."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.reference: dict[str, list[np.ndarray]] = {"energy": [], "forces": []}
        self.predicted: dict[str, list[np.ndarray]] = {"energy": [], "forces": []}
        self.reference["stress"], self.predicted["stress"] = [], []
        self.force_symbols: list[np.ndarray] = []

    def add(self, atoms, reference: dict, result: dict) -> None:
        """One structure: ``reference`` and ``result`` as alchem-eval builds them."""
        n_atoms = len(atoms)
        row: dict = {
            "index": len(self.rows),
            "formula": atoms.get_chemical_formula(),
            "n_atoms": n_atoms,
            "energy_error": "",
            "forces_rmse": "",
        }
        if "energy" in reference:
            self.reference["energy"].append(reference["energy"] / n_atoms)
            self.predicted["energy"].append(result["energy"] / n_atoms)
            row["energy_error"] = 1000 * (result["energy"] - reference["energy"])
            row["energy_error"] /= n_atoms
        if "forces" in reference:
            error = np.asarray(result["forces"]) - np.asarray(reference["forces"])
            self.reference["forces"].append(np.asarray(reference["forces"]))
            self.predicted["forces"].append(np.asarray(result["forces"]))
            self.force_symbols.append(np.asarray(atoms.get_chemical_symbols()))
            row["forces_rmse"] = 1000 * float(np.sqrt(np.mean(error**2)))
        if "stress" in reference and "stress" in result:
            self.reference["stress"].append(np.asarray(reference["stress"]))
            self.predicted["stress"].append(np.asarray(result["stress"]))
        self.rows.append(row)

    def _stacked(self, values: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        stacked = {}
        for name, parts in values.items():
            if parts:
                stacked[name] = (
                    np.concatenate(parts)
                    if name == "forces"
                    else np.stack([np.asarray(p) for p in parts])
                )
        return stacked

    def write_errors_csv(self, path: str) -> None:
        """index, formula, n_atoms, energy error (meV/atom), force RMSE (meV/Å)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "index",
                "formula",
                "n_atoms",
                "energy_error_meV_per_atom",
                "forces_rmse_meV_per_A",
            ]
        )
        for row in self.rows:
            writer.writerow(
                [
                    row["index"],
                    row["formula"],
                    row["n_atoms"],
                    _number(row["energy_error"]),
                    _number(row["forces_rmse"]),
                ]
            )
        atomic_write_text(path, buffer.getvalue())

    def write_parity(self, path: str) -> dict:
        """parity.png at ``path`` and its numbers beside it (same name, .json)."""
        symbols = np.concatenate(self.force_symbols) if self.force_symbols else None
        statistics = parity_plot(
            path,
            self._stacked(self.reference),
            self._stacked(self.predicted),
            force_symbols=symbols,
        )
        atomic_write_text(
            os.path.splitext(path)[0] + ".json", json.dumps(statistics, indent=2) + "\n"
        )
        return statistics

    def worst(self, count: int) -> list[dict]:
        """The structures with the largest force RMSE (energy error without forces)."""

        def badness(row: dict) -> float:
            if row["forces_rmse"] != "":
                return row["forces_rmse"]
            if row["energy_error"] != "":
                return abs(row["energy_error"])
            return -1.0

        ranked = sorted(self.rows, key=badness, reverse=True)
        return [row for row in ranked[:count] if badness(row) >= 0]

    def print_worst(self, count: int = 5) -> None:
        rows = self.worst(count)
        if not rows:
            return
        print(
            f"worst {len(rows)} structures (force RMSE meV/Å, energy error meV/atom):"
        )
        for row in rows:
            print(
                f"  #{row['index']:<5d} {row['formula']:<16s} {row['n_atoms']:5d} atoms"
                f"  F {_text(row['forces_rmse'], '.1f'):>8s}"
                f"  E {_text(row['energy_error'], '+.2f'):>8s}"
            )

    def per_element_forces(self) -> dict[str, dict[str, float]]:
        """Force RMSE and MAE (meV/Å) and atom count for each element."""
        if not self.force_symbols:
            return {}
        symbols = np.concatenate(self.force_symbols)
        errors = np.concatenate(self.predicted["forces"]) - np.concatenate(
            self.reference["forces"]
        )
        table = {}
        for symbol in sorted(set(symbols.tolist())):
            mask = symbols == symbol
            table[symbol] = {
                **error_statistics(errors[mask] * 1000),
                "atoms": int(mask.sum()),
            }
        return table

    def print_per_element(self) -> None:
        table = self.per_element_forces()
        if not table:
            print("no reference forces: no errors per element")
            return
        print("forces per element:")
        for symbol, values in table.items():
            print(
                f"  {symbol:<3s} RMSE {values['rmse']:10.3f}  MAE {values['mae']:10.3f}"
                f"  meV/Å  ({values['atoms']} atoms)"
            )


def _number(value) -> str:
    return "" if value == "" else f"{value:.6g}"


def _text(value, spec: str) -> str:
    return "-" if value == "" else format(value, spec)


def write_evaluation_outputs(
    record: EvaluationRecord, folder: str, per_element: bool, worst: int = 5
) -> None:
    """Everything above for one alchem-eval run, the files in ``folder``."""
    errors_path = os.path.join(folder, "errors.csv")
    parity_path = os.path.join(folder, "parity.png")
    record.print_worst(worst)
    if per_element:
        record.print_per_element()
    record.write_errors_csv(errors_path)
    print(f"errors per structure written to {errors_path}")
    if any(record.reference.values()):
        record.write_parity(parity_path)
        print(f"parity plot written to {parity_path}")
