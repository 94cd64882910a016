"""Every property of every system, for the model and the reference, side by side."""

import math
from dataclasses import asdict

from ..errors import ConfigError
from . import properties as props
from .references import Reference
from .systems import CrystalSystem

GROUPS = ("eos", "elastic", "vacancy", "surface", "phonons", "md")
UNITS = {
    "lattice_constant": "Å",
    "c_over_a": "",
    "bulk_modulus": "GPa",
    "C11": "GPa",
    "C12": "GPa",
    "C13": "GPa",
    "C33": "GPa",
    "C44": "GPa",
    "vacancy_formation_energy": "eV",
    "surface_energy_100": "J/m²",
    "surface_energy_111": "J/m²",
    "surface_energy_0001": "J/m²",
}
# the example's targets (docs/validation.md): relative error, or absolute (eV)
TARGETS = {
    "lattice_constant": ("relative", 0.005),
    "bulk_modulus": ("relative", 0.10),
    "C11": ("relative", 0.15),
    "C12": ("relative", 0.15),
    "C44": ("relative", 0.15),
    "vacancy_formation_energy": ("absolute", 0.1),
}


def unit(name: str) -> str:
    if name.startswith("phonon_"):
        return "THz"
    return UNITS.get(name, "")


def compute(
    system: CrystalSystem,
    make: props.CalculatorFactory,
    settings: props.Settings,
    groups: tuple[str, ...],
    with_md: bool,
) -> tuple[dict[str, float], props.EquationOfStateResult, dict | None]:
    """The properties of ``system`` with one calculator: values, EOS points, MD."""
    eos = props.equation_of_state(system, make, settings)
    values: dict[str, float] = {}
    if "eos" in groups:
        values["lattice_constant"] = eos.lattice_constant
        if system.lattice == "hcp":
            values["c_over_a"] = eos.c_over_a
        values["bulk_modulus"] = eos.bulk_modulus
    if "elastic" in groups:
        values.update(props.elastic_constants(system, eos, make, settings))
    if system.is_element:
        if "vacancy" in groups:
            values["vacancy_formation_energy"] = props.vacancy_formation_energy(
                system, eos, make, settings
            )
        if "surface" in groups:
            for miller, energy in props.surface_energies(
                system, eos, make, settings
            ).items():
                values[f"surface_energy_{miller}"] = energy
        if "phonons" in groups:
            for point, frequency in props.phonon_frequencies(
                system, eos, make, settings
            ).items():
                values[f"phonon_{point}_max"] = frequency
    md = None
    if with_md and "md" in groups:
        md = asdict(props.md_stability(system, eos, make, settings))
    return values, eos, md


def validate_systems(
    systems: list[CrystalSystem],
    make_model: props.CalculatorFactory,
    reference: Reference,
    settings: props.Settings,
    groups: tuple[str, ...] = GROUPS,
    progress=print,
) -> dict:
    """validation.json's content: per system, each property's model value,
    reference value, error and relative error; EOS points; the MD run."""
    if reference.make is not None:
        for system in systems:
            _probe(system, reference)
    results: dict = {}
    for system in systems:
        progress(f"{system.name}: model")
        model_values, model_eos, md = compute(
            system, make_model, settings, groups, with_md=True
        )
        eos_curves = {"model": _curve(model_eos)}
        if reference.make is not None:
            progress(f"{system.name}: reference {reference.label}")
            reference_values, reference_eos, _ = compute(
                system, reference.make, settings, groups, with_md=False
            )
            eos_curves["reference"] = _curve(reference_eos)
        else:
            reference_values = reference.values.get(system.name, {})
        entries = {}
        for name, value in model_values.items():
            entries[name] = _entry(name, value, reference_values.get(name))
        results[system.name] = {
            "lattice": system.lattice,
            "symbols": system.symbols,
            "properties": entries,
            "eos": eos_curves,
            "md": md,
        }
    return results


def _probe(system: CrystalSystem, reference: Reference) -> None:
    """One energy with the reference first: a calculator that cannot do this
    system is one clear line, not a traceback from deep inside a relaxation."""
    atoms = system.cell(system.guess_a)
    try:
        atoms.calc = reference.make()
        atoms.get_potential_energy()
    except Exception as error:  # any calculator's way of saying no
        raise ConfigError(
            f"--reference {reference.label}: cannot compute {system.name} "
            f"({type(error).__name__}: {error})"
        ) from None


def _curve(eos: props.EquationOfStateResult) -> dict:
    return {
        "volume_per_atom": eos.volumes,
        "energy_per_atom": eos.energies,
        "fit_volume_per_atom": eos.volume_per_atom,
        "fit_bulk_modulus": eos.bulk_modulus,
    }


def _entry(name: str, model: float, reference: float | None) -> dict:
    entry: dict = {"unit": unit(name), "model": model, "reference": reference}
    entry["error"] = None if reference is None else model - reference
    entry["relative_error"] = (
        None
        if reference is None or reference == 0
        else (model - reference) / abs(reference)
    )
    target = TARGETS.get(name)
    entry["target"] = None
    entry["within_target"] = None
    if target is not None and reference is not None:
        kind, limit = target
        entry["target"] = {"kind": kind, "limit": limit}
        value = entry["relative_error"] if kind == "relative" else entry["error"]
        entry["within_target"] = value is not None and abs(value) <= limit
    if not math.isfinite(model):
        entry["within_target"] = False if target else None
    return entry
