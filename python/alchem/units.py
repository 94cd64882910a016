"""Unit conversion to the internal units (eV, Angstrom) through ``ase.units``."""

import ase.units

from .errors import ConfigError

# Values are "how many internal units (eV or Angstrom) one of this unit is".
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "mev": 1e-3,
    "kcal/mol": ase.units.kcal / ase.units.mol,
    "kj/mol": ase.units.kJ / ase.units.mol,
    "hartree": ase.units.Hartree,
    "ha": ase.units.Hartree,
    "ry": ase.units.Rydberg,
    "rydberg": ase.units.Rydberg,
}

LENGTH_UNITS: dict[str, float] = {
    "angstrom": 1.0,
    "a": 1.0,
    "bohr": ase.units.Bohr,
    "nm": ase.units.nm,
    "nanometer": ase.units.nm,
}


def energy_factor(unit: str, where: str) -> float:
    """Factor converting ``unit`` to eV; ``where`` names the option for errors."""
    return _lookup(unit, ENERGY_UNITS, where, "energy")


def length_factor(unit: str, where: str) -> float:
    """Factor converting ``unit`` to Angstrom; ``where`` names the option for errors."""
    return _lookup(unit, LENGTH_UNITS, where, "length")


def _lookup(unit: str, table: dict[str, float], where: str, kind: str) -> float:
    try:
        return table[unit.lower()]
    except (KeyError, AttributeError):
        allowed = ", ".join(sorted({k for k in table if len(k) > 2}))
        raise ConfigError(
            f"{where}: unknown {kind} unit {unit!r}; allowed: {allowed}"
        ) from None
