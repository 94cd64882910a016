"""The crystals ``alchem-validate`` computes properties of: pure elements in fcc, bcc
or hcp, and ordered alloys on the 4-site cubic fcc cell (A3B: L1_2, AB: L1_0)."""

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, reference_states
from ase.formula import Formula

from ..errors import ConfigError

LATTICES = ("fcc", "bcc", "hcp")
IDEAL_C_OVER_A = float(np.sqrt(8.0 / 3.0))


@dataclass
class CrystalSystem:
    """A crystal to validate: ``name`` (e.g. ``Cu-fcc``, ``Cu3Pt-L12``), its lattice,
    and the symbols of its conventional cell in ASE's site order."""

    name: str
    lattice: str  # fcc, bcc, hcp, or the alloy's structure (L12, L10, fcc4)
    symbols: list[str]
    guess_a: float  # Å, starting lattice constant

    @property
    def is_element(self) -> bool:
        return len(set(self.symbols)) == 1

    @property
    def is_cubic(self) -> bool:
        return self.lattice != "hcp"

    def cell(self, a: float, c_over_a: float = IDEAL_C_OVER_A) -> Atoms:
        """The conventional cell (hcp: the 2-atom cell) at lattice constant ``a``."""
        if self.lattice == "hcp":
            return bulk(self.symbols[0], "hcp", a=a, c=a * c_over_a)
        if self.lattice == "bcc":
            return bulk(self.symbols[0], "bcc", a=a, cubic=True)
        atoms = bulk("X", "fcc", a=a, cubic=True)
        atoms.set_chemical_symbols(self.symbols)
        return atoms


def element_system(element: str, lattice: str | None) -> CrystalSystem:
    """``element`` in ``lattice`` (default: its ground state if fcc, bcc or hcp,
    else fcc), with ASE's tabulated lattice constant as a start."""
    if element not in atomic_numbers:
        raise ConfigError(f"--elements: unknown element '{element}'")
    state = reference_states[atomic_numbers[element]] or {}
    natural = state.get("symmetry")
    if lattice is None:
        lattice = natural if natural in LATTICES else "fcc"
    if lattice not in LATTICES:
        raise ConfigError(
            f"--lattice: unknown lattice '{lattice}' (allowed: {', '.join(LATTICES)})"
        )
    guess = _guess_lattice_constant(element, lattice)
    count = {"fcc": 4, "bcc": 2, "hcp": 2}[lattice]
    return CrystalSystem(f"{element}-{lattice}", lattice, [element] * count, guess)


def _guess_lattice_constant(element: str, lattice: str) -> float:
    """From the element's tabulated structure, at the same volume per atom."""
    state = reference_states[atomic_numbers[element]] or {}
    symmetry, a = state.get("symmetry"), state.get("a")
    volume = None
    if symmetry == "fcc" and a:
        volume = a**3 / 4
    elif symmetry == "bcc" and a:
        volume = a**3 / 2
    elif symmetry == "hcp" and a:
        volume = np.sqrt(3) / 2 * a**2 * state.get("c/a", IDEAL_C_OVER_A) * a / 2
    if volume is None:  # no tabulated crystal: a metallic guess of 2.6 Å bonds
        volume = 2.6**3 / np.sqrt(2)
    if lattice == "fcc":
        return float((4 * volume) ** (1 / 3))
    if lattice == "bcc":
        return float((2 * volume) ** (1 / 3))
    return float((2 * volume / (np.sqrt(3) / 2 * IDEAL_C_OVER_A)) ** (1 / 3))


def alloy_system(formula: str) -> CrystalSystem:
    """An ordered alloy on the 4-site cubic fcc cell from a formula of 2 or 4 atoms
    (``CuNi``: L1_0, ``Cu3Pt``: L1_2, ``Cu2NiPt``)."""
    try:
        counts = Formula(formula).count()
    except ValueError:
        counts = {}
    if not counts or any(symbol not in atomic_numbers for symbol in counts):
        raise ConfigError(f"--alloys: '{formula}' is not a chemical formula")
    total = sum(counts.values())
    if total not in (2, 4) or len(counts) < 2:
        raise ConfigError(
            f"--alloys: '{formula}' must have 2 or 4 atoms of at least 2 elements "
            "(ordered on the 4-site fcc cell: AB, A3B, A2BC)"
        )
    counts = {symbol: n * 4 // total for symbol, n in counts.items()}
    # sites (0,0,0), (0,.5,.5), (.5,0,.5), (.5,.5,0) filled in the order 0, 3, 1, 2
    # from the rarest element: A3B is L1_2 (B on the corners), AB is L1_0
    order = sorted(counts, key=lambda symbol: (counts[symbol], symbol))
    flat = [symbol for symbol in order for _ in range(counts[symbol])]
    symbols = [""] * 4
    for site, symbol in zip((0, 3, 1, 2), flat):
        symbols[site] = symbol
    shape = sorted(counts.values())
    structure = {(2, 2): "L10", (1, 3): "L12"}.get(tuple(shape), "fcc4")
    guess = float(
        np.mean([_guess_lattice_constant(symbol, "fcc") for symbol in symbols])
    )
    name = Formula.from_list(symbols).reduce()[0].format("metal")
    return CrystalSystem(f"{name}-{structure}", structure, symbols, guess)
