"""Cost of metatomic-ase's per-atom uncertainty warning in ASE: forces of one
structure with ``load_calculator(model, uncertainty_threshold=0.1)`` (the per-atom
sigma computed beside every energy) against ``uncertainty_threshold=None``, rounds
interleaved, as a ratio of median times; and ``get_uncertainty`` (sigmas, the
ensemble's energies and forces) against a plain forces call.

    python benchmarks/ase_uncertainty_cost.py model.pt [--repeat 4] [--rounds 7]
"""

import argparse
import time
import warnings

import numpy as np
from alchem.calculator import load_calculator
from ase.build import bulk


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument(
        "--repeat", type=int, default=4, help="fcc cubic cells per side"
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(args.repeat)
    rng = np.random.default_rng(0)
    symbols = rng.choice(["Cu", "Ni"], size=len(atoms))
    atoms.set_chemical_symbols(list(symbols))
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    calculators = {
        "none": load_calculator(args.model, uncertainty_threshold=None),
        "warn": load_calculator(args.model, uncertainty_threshold=0.1),
    }

    def forces(calculator) -> None:
        calculator.calculate(atoms, ["energy", "forces"], ["positions"])

    times: dict[str, list[float]] = {"none": [], "warn": [], "get_uncertainty": []}
    for name in ("none", "warn"):
        forces(calculators[name])  # warm up
    for _ in range(args.rounds):
        for name, calculator in calculators.items():
            times[name].append(timed(lambda c=calculator: forces(c)))
        times["get_uncertainty"].append(
            timed(lambda: calculators["none"].get_uncertainty(atoms))
        )
    median = {name: float(np.median(values)) for name, values in times.items()}
    print(f"{len(atoms)} atoms, {args.model}: median s per call {median}")
    print(f"warning (threshold 0.1) / none: {median['warn'] / median['none']:.3f}")
    print(
        "get_uncertainty (with ensemble forces) / plain forces: "
        f"{median['get_uncertainty'] / median['none']:.2f}"
    )


if __name__ == "__main__":
    main()
