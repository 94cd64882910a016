"""``alchem-eval model.pt data.xyz``: errors of an exported model, and predictions."""

import argparse
import os
from typing import TYPE_CHECKING

import numpy as np

from .common import add_version

if TYPE_CHECKING:
    from ase import Atoms

    from ..evaluation import EvaluationRecord


def evaluate_main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    import ase.io

    from ..errors import ConfigError
    from ..evaluation import EvaluationRecord, write_evaluation_outputs
    from ..io import atomic_write

    calculator = _load_model(args.model, args.device)
    frames = _read_frames(args.data)
    _check_elements(frames, calculator, args.data)
    _warn_missing_references(frames, args)

    errors: dict[str, list[np.ndarray]] = {"energy": [], "forces": [], "stress": []}
    predicted_frames = []
    record = EvaluationRecord()  # errors.csv, parity.png
    calibration = _calibration_record(calculator)  # None without uncertainty
    for index, atoms in enumerate(frames):
        predicted_frames.append(
            _evaluate_structure(
                atoms, index, calculator, args, errors, record, calibration
            )
        )
    print(f"{len(frames)} structures from {args.data}")
    _print_errors(errors)
    atomic_write(
        args.output, lambda tmp: ase.io.write(tmp, predicted_frames, format="extxyz")
    )
    print(f"predictions written to {args.output}")
    folder = os.path.dirname(os.path.abspath(args.output))
    write_evaluation_outputs(record, folder, per_element=args.per_element)
    if calibration is not None:
        _write_calibration(calibration, folder)
    if not any(errors.values()):
        raise ConfigError(
            f"{args.data}: nothing to compare: no structure has the reference keys "
            f"{_wanted_keys(args)} (keys found: {_found_keys(frames)}); name them "
            "with --energy-key, --forces-key, --stress-key"
        )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alchem-eval",
        description="Evaluate an exported model on a structure file: print RMSE "
        "and MAE for every target present, write predictions as extxyz",
    )
    parser.add_argument("model", help="exported model (model.pt, not a .ckpt)")
    parser.add_argument(
        "data", help="structure file with reference labels, any format ASE reads"
    )
    parser.add_argument(
        "-o",
        "--output",
        default="predictions.xyz",
        help="extxyz with the predictions (energy, forces, stress) and the "
        "references beside them (ref_energy, ref_forces, ref_stress) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--energy-key",
        default="energy",
        metavar="KEY",
        help="reference energy (eV) in the data file: atoms.info, arrays or "
        "calculator results (default: %(default)s)",
    )
    parser.add_argument(
        "--forces-key",
        default="forces",
        metavar="KEY",
        help="reference forces (eV/Å) (default: %(default)s)",
    )
    parser.add_argument(
        "--stress-key",
        default="stress",
        metavar="KEY",
        help="reference stress (eV/Å³; 6 Voigt or 9 components), compared on "
        "structures periodic in all directions (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N (default: the first the model supports that "
        "torch sees)",
    )
    parser.add_argument(
        "--per-element", action="store_true", help="print force errors per element"
    )
    add_version(parser)
    return parser


def _evaluate_structure(
    atoms: "Atoms",
    index: int,
    calculator,
    args: argparse.Namespace,
    errors: dict[str, list[np.ndarray]],
    record: "EvaluationRecord",
    calibration=None,
) -> "Atoms":
    """The model's energy, forces and stress of one structure, with its errors
    added to ``errors`` and ``record``; a copy holding predictions and references."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..errors import ConfigError

    reference = _reference(atoms, args)
    atoms = atoms.copy()
    atoms.calc = calculator
    try:  # what the model can not evaluate (alchem.calculator.check_structure)
        energy = atoms.get_potential_energy()
    except ValueError as error:
        raise ConfigError(f"{args.data}, structure {index}: {error}") from None
    result = {"energy": energy, "forces": atoms.get_forces()}
    if np.all(atoms.pbc):
        result["stress"] = atoms.get_stress()
    if "energy" in reference:
        errors["energy"].append(
            np.array([(result["energy"] - reference["energy"]) / len(atoms)])
        )
    for key in ("forces", "stress"):
        if key in reference and key in result:
            errors[key].append((result[key] - reference[key]).reshape(-1))
    record.add(atoms, reference, result)
    if calibration is not None:  # the model has uncertainty
        uncertainty = calculator.get_uncertainty(atoms, forces="forces" in reference)
        calibration.add(uncertainty, reference, result)
        atoms.info["energy_sigma"] = uncertainty.energy_sigma
        atoms.arrays["energy_sigma_atom"] = uncertainty.atom_sigma
        if uncertainty.force_sigma is not None:
            atoms.arrays["forces_sigma"] = uncertainty.force_sigma
    _keep_references(atoms, reference, args)
    atoms.calc = SinglePointCalculator(atoms, **result)
    return atoms


def _calibration_record(calculator):
    """A CalibrationRecord when the model has uncertainty, else None."""
    from ..calculator import force_factor
    from ..uncertainty.calibration import CalibrationRecord

    try:
        force_factor(calculator)
    except ValueError:
        return None
    return CalibrationRecord()


def _write_calibration(calibration, folder: str) -> None:
    """The calibration lines, calibration.json and the error/sigma plot."""
    import json

    from ..io import atomic_write_text
    from ..plots import calibration_plot

    report = calibration.summary()
    if "energy" not in report and "forces" not in report:
        return
    calibration.print_summary(report)
    atomic_write_text(
        os.path.join(folder, "calibration.json"), json.dumps(report, indent=2) + "\n"
    )
    path = os.path.join(folder, "calibration.png")
    calibration_plot(path, calibration.plot_data())
    print(f"calibration written to {path} and calibration.json")


def _print_errors(errors: dict[str, list[np.ndarray]]) -> None:
    """RMSE and MAE of each target over the structures that have it."""
    units = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}
    for key, chunks in errors.items():
        if chunks:
            values = np.concatenate(chunks) * 1000
            rmse = float(np.sqrt(np.mean(values**2)))
            mae = float(np.mean(np.abs(values)))
            print(
                f"{key:7s} RMSE {rmse:10.3f}  MAE {mae:10.3f}  {units[key]:<8s}  "
                f"({len(chunks)} structures)"
            )


REFERENCE_NAMES = {
    "energy": "ref_energy",
    "forces": "ref_forces",
    "stress": "ref_stress",
}


def _load_model(path: str, device: str | None):
    """The ASE calculator of ``path``; every way of giving the wrong file or device
    is one ConfigError saying what to give instead."""
    import torch

    from ..calculator import load_calculator
    from ..errors import ConfigError
    from ..model_files import require_exported_model

    if device is not None:
        if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ConfigError(
                f"--device {device}: allowed: cpu, cuda, cuda:N (or leave it out)"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device}: this torch sees no CUDA device; use --device cpu "
                "or leave --device out"
            )
    require_exported_model(path)
    try:
        return load_calculator(path, device=device)
    except Exception as error:  # TorchScript and metatomic raise many types
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"{path}: cannot load this model ({type(error).__name__}: {first_line})"
        ) from None


def _read_frames(path: str) -> list:
    import ase.io

    from ..errors import ConfigError

    if not os.path.isfile(path):
        raise ConfigError(f"{path}: data file not found")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as error:  # ASE raises many types for unreadable files
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"{path}: cannot read ({type(error).__name__}: {first_line}); is it "
            "complete and in a format ASE knows from its extension?"
        ) from None
    if not frames:
        raise ConfigError(f"{path}: holds no structures")
    return frames


def _check_elements(frames: list, calculator, path: str) -> None:
    """Every element of the data must be one the model was trained on."""
    from ase.data import chemical_symbols

    from ..errors import ConfigError

    known = {int(z) for z in calculator.model().capabilities().atomic_types}
    names = " ".join(sorted(chemical_symbols[z] for z in known))
    for index, atoms in enumerate(frames):
        unknown = sorted({int(z) for z in atoms.numbers} - known)
        if unknown:
            symbols = ", ".join(chemical_symbols[z] for z in unknown)
            which = "element" if len(unknown) == 1 else "elements"
            verb = "is" if len(unknown) == 1 else "are"
            raise ConfigError(
                f"{path}, structure {index}: {which} {symbols} {verb} not in this "
                f"model ({names})"
            )


def _wanted_keys(args) -> str:
    return ", ".join(
        repr(k) for k in (args.energy_key, args.forces_key, args.stress_key)
    )


def _found_keys(frames: list) -> str:
    from ..data.dataset import available_keys

    keys = sorted({key for atoms in frames for key in available_keys(atoms)})
    return ", ".join(keys) or "none"


def _warn_missing_references(frames: list, args) -> None:
    """A warning for each reference key that no structure has (stress: no periodic
    structure), naming the keys the file has and the option to use."""
    import sys

    references = [_reference(atoms, args) for atoms in frames]
    periodic = any(all(atoms.pbc) for atoms in frames)
    for name, key in (
        ("energy", args.energy_key),
        ("forces", args.forces_key),
        ("stress", args.stress_key),
    ):
        if name == "stress" and not periodic:
            continue
        if not any(name in reference for reference in references):
            print(
                f"warning: {args.data}: no structure has the {name} key {key!r}, "
                f"{name} is not compared (keys found: {_found_keys(frames)}); name "
                f"it with --{name}-key",
                file=sys.stderr,
            )


def _keep_references(atoms, reference: dict, args) -> None:
    """Write the references under their own names (REFERENCE_NAMES) and drop the
    original keys, so the file's energy/forces/stress are the predictions."""
    from ase.stress import voigt_6_to_full_3x3_stress

    for key in (args.energy_key, args.forces_key, args.stress_key):
        atoms.info.pop(key, None)
        if key not in ("numbers", "positions"):
            atoms.arrays.pop(key, None)
    for name, value in reference.items():
        if name == "forces":
            atoms.arrays[REFERENCE_NAMES[name]] = np.asarray(value)
        elif name == "stress":  # 3x3, as ASE writes the predicted stress
            atoms.info[REFERENCE_NAMES[name]] = voigt_6_to_full_3x3_stress(value)
        else:
            atoms.info[REFERENCE_NAMES[name]] = value


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
