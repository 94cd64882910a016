"""``alchem-eval model.pt data.xyz``: errors of an exported model, and predictions."""

import argparse

import numpy as np


def evaluate_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="alchem-eval",
        description="Evaluate an exported model on a structure file: print RMSE "
        "and MAE for every target present, write predictions as extxyz",
    )
    parser.add_argument("model")
    parser.add_argument("data", help="any structure file ASE reads")
    parser.add_argument("-o", "--output", default="predictions.xyz")
    parser.add_argument("--energy-key", default="energy")
    parser.add_argument("--forces-key", default="forces")
    parser.add_argument("--stress-key", default="stress")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..calculator import load_calculator
    from ..errors import ConfigError
    from ..io import atomic_write

    calculator = load_calculator(args.model, device=args.device)
    try:
        frames = ase.io.read(args.data, index=":")
    except Exception as error:
        raise ConfigError(f"{args.data}: cannot read ({error})") from None

    errors: dict[str, list[np.ndarray]] = {"energy": [], "forces": [], "stress": []}
    predicted_frames = []
    for atoms in frames:
        reference = _reference(atoms, args)
        atoms = atoms.copy()
        atoms.calc = calculator
        result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if np.all(atoms.pbc):
            result["stress"] = atoms.get_stress()
        if "energy" in reference:
            errors["energy"].append(
                np.array([(result["energy"] - reference["energy"]) / len(atoms)])
            )
        for key in ("forces", "stress"):
            if key in reference and key in result:
                errors[key].append((result[key] - reference[key]).reshape(-1))
        atoms.calc = SinglePointCalculator(atoms, **result)
        predicted_frames.append(atoms)

    units = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}
    print(f"{len(frames)} structures from {args.data}")
    for key, chunks in errors.items():
        if chunks:
            values = np.concatenate(chunks) * 1000
            rmse = float(np.sqrt(np.mean(values**2)))
            mae = float(np.mean(np.abs(values)))
            print(f"{key:7s} RMSE {rmse:10.3f}  MAE {mae:10.3f}  {units[key]}")
    atomic_write(
        args.output, lambda tmp: ase.io.write(tmp, predicted_frames, format="extxyz")
    )
    print(f"predictions written to {args.output}")


def _reference(atoms, args) -> dict:
    found = {}
    sources = [atoms.info, atoms.arrays]
    if atoms.calc is not None:
        sources.append(atoms.calc.results)
    for name, key in (
        ("energy", args.energy_key),
        ("forces", args.forces_key),
        ("stress", args.stress_key),
    ):
        for source in sources:
            if key in source:
                value = np.asarray(source[key], dtype=float)
                if name == "stress" and value.size == 9:
                    m = value.reshape(3, 3)
                    value = np.array(
                        [m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]]
                    )
                found[name] = value if name != "energy" else float(value.reshape(-1)[0])
                break
    return found


def main(argv: list[str] | None = None) -> None:
    from .common import run

    run(lambda: evaluate_main(argv))


if __name__ == "__main__":
    main()
