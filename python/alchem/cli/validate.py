"""``alchem-validate model.pt --reference ase.calculators.emt:EMT``: physical
properties of a model against a reference."""

import argparse
import os
import time
from typing import TYPE_CHECKING

from .common import add_version

if TYPE_CHECKING:
    from ..validate.properties import Settings


def validate_main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from ..calculator import load_calculator
    from ..errors import ConfigError
    from ..validate.references import load_reference
    from ..validate.report import table_lines, write_report
    from ..validate.run import validate_systems

    groups, settings = checked_settings(args)
    if not os.path.isfile(args.model):
        raise ConfigError(f"{args.model}: model file not found")
    reference = load_reference(args.reference, _kwargs(args.reference_kwargs))
    calculator = load_calculator(args.model, device=args.device)
    systems = systems_to_validate(
        calculator, args.model, args.elements, args.lattice, args.alloys
    )

    started = time.perf_counter()
    results = validate_systems(
        systems,
        lambda: calculator,
        reference,
        settings,
        groups,
        progress=lambda text: print(f"... {text}", flush=True),
    )
    header = {
        "model": args.model,
        "reference": args.reference,
        "settings": vars(settings),
    }
    paths = write_report(results, header, args.output)
    print()
    print("\n".join(table_lines(results)))
    print_md_stability(results)
    print(
        f"\nvalidation written to {paths['markdown']} and {paths['json']}; figures: "
        f"{paths['eos']}, {paths['errors']} ({time.perf_counter() - started:.0f} s)"
    )


def parser() -> argparse.ArgumentParser:
    from ..validate.properties import Settings
    from ..validate.run import GROUPS

    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="alchem-validate",
        description="Lattice constant, bulk modulus, elastic constants, vacancy and "
        "surface energies, phonon frequencies and an MD stability run of a model, "
        "against a reference; writes validation.md, validation.json and figures",
    )
    parser.add_argument("model", help="exported model (model.pt)")
    parser.add_argument(
        "--reference",
        required=True,
        help="module:Class of an ASE calculator (e.g. ase.calculators.emt:EMT), "
        "another model.pt, or a .yaml/.json of values ({system: {property: value}})",
    )
    parser.add_argument(
        "--reference-kwargs",
        default=None,
        help="keyword arguments of the reference calculator, as a YAML mapping "
        "(e.g. '{epsilon: 0.34, r0: 2.87}')",
    )
    parser.add_argument(
        "--elements",
        default=None,
        help="comma-separated elements (default: every element of the model)",
    )
    parser.add_argument(
        "--lattice",
        default=None,
        help="fcc, bcc or hcp for every element, or per element as Cu:fcc,Fe:bcc "
        "(default: the element's ground state if one of those, else fcc)",
    )
    parser.add_argument(
        "--alloys",
        default="",
        help="comma-separated ordered fcc alloys of 2 or 4 atoms: CuNi (L1_0), "
        "Cu3Pt (L1_2), Cu2NiPt",
    )
    parser.add_argument(
        "--properties",
        default=",".join(GROUPS),
        help=f"which to compute, comma-separated (default: {','.join(GROUPS)})",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="validation",
        help="folder of validation.md, validation.json and the figures "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--supercell",
        type=int,
        default=defaults.supercell,
        help="conventional cells per axis for the vacancy and MD (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=defaults.md_temperature,
        help="K, MD stability run (default: %(default)s)",
    )
    parser.add_argument(
        "--md-steps",
        type=int,
        default=defaults.md_steps,
        help="MD stability steps (default: %(default)s)",
    )
    parser.add_argument(
        "--timestep",
        type=float,
        default=defaults.md_timestep,
        help="fs (default: %(default)s)",
    )
    parser.add_argument(
        "--min-distance",
        type=float,
        default=defaults.min_distance,
        help="Å: atoms closer than this flag the MD run (default: %(default)s)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    add_version(parser)
    return parser


def checked_settings(args: argparse.Namespace) -> tuple[tuple[str, ...], "Settings"]:
    """The property groups and MD settings asked for, each value checked."""
    from ..errors import ConfigError
    from ..validate.properties import Settings
    from ..validate.run import GROUPS

    groups = tuple(g.strip() for g in args.properties.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ConfigError(
            f"--properties: unknown '{unknown[0]}' (allowed: {', '.join(GROUPS)})"
        )
    for name, value, low in (
        ("--supercell", args.supercell, 1),
        ("--md-steps", args.md_steps, 1),  # no MD: leave md out of --properties
    ):
        if value < low:
            raise ConfigError(f"{name} {value}: must be an integer >= {low}")
    for name, value in (
        ("--temperature", args.temperature),
        ("--timestep", args.timestep),
        ("--min-distance", args.min_distance),
    ):
        if not value > 0:
            raise ConfigError(f"{name} {value}: must be > 0")
    settings = Settings(
        supercell=args.supercell,
        md_temperature=args.temperature,
        md_steps=args.md_steps,
        md_timestep=args.timestep,
        min_distance=args.min_distance,
    )
    return groups, settings


def print_md_stability(results: dict) -> None:
    """One line per system: stable, or why not."""
    for system, content in results.items():
        md = content.get("md")
        if md:
            state = (
                "stable" if md["stable"] else "UNSTABLE: " + "; ".join(md["reasons"])
            )
            print(
                f"MD {system}: {state} ({md['steps']} steps at {md['temperature']:.0f}"
                f" K, shortest distance {md['min_distance']:.2f} Å)"
            )


def systems_to_validate(calculator, model_path, elements, lattice, alloys) -> list:
    """The crystals asked for, every element checked against the model's."""
    from ase.data import chemical_symbols

    from ..errors import ConfigError
    from ..validate.systems import alloy_system, element_system

    known = [
        chemical_symbols[z] for z in calculator.model().capabilities().atomic_types
    ]
    names = known if elements is None else [e.strip() for e in elements.split(",")]
    lattices = _lattices(lattice, names)
    systems = [element_system(name, lattices.get(name)) for name in names if name]
    systems += [alloy_system(f.strip()) for f in alloys.split(",") if f.strip()]
    for system in systems:
        missing = sorted(set(system.symbols) - set(known))
        if missing:
            raise ConfigError(
                f"{model_path}: the model has no {', '.join(missing)} (needed by "
                f"{system.name}); its elements: {', '.join(known)}"
            )
    if not systems:
        raise ConfigError("nothing to validate: give --elements or --alloys")
    return systems


def _kwargs(text: str | None) -> dict:
    import yaml

    from ..errors import ConfigError

    if text is None:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"--reference-kwargs '{text}': expected a YAML mapping, e.g. "
            "'{epsilon: 0.34, r0: 2.87}'"
        )
    return value


def _lattices(spec: str | None, names: list[str]) -> dict[str, str]:
    from ..errors import ConfigError

    if spec is None:
        return {}
    if ":" not in spec:
        return {name: spec for name in names}
    lattices = {}
    for item in spec.split(","):
        element, _, lattice = item.partition(":")
        if not lattice:
            raise ConfigError(
                f"--lattice: '{item}' should be ELEMENT:LATTICE (e.g. Fe:bcc)"
            )
        lattices[element.strip()] = lattice.strip()
    return lattices


def main(argv: list[str] | None = None) -> None:
    from .common import run

    run(lambda: validate_main(argv))


if __name__ == "__main__":
    main()
