"""Physical properties of a crystal from any ASE calculator.

Equation of state with ASE's ``EquationOfState`` (Birch-Murnaghan), elastic constants
by central finite strains of the stress, vacancy and surface energies with relaxed
positions (ASE's BFGS), phonon frequencies with ASE's ``Phonons`` (finite
displacements) and an NVT Langevin run for stability. Energies in eV, lengths in Å,
moduli in GPa, surface energies in J/m², frequencies in THz.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms, units
from ase.build import bcc100, bcc111, fcc100, fcc111, hcp0001
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from ..errors import ConfigError
from .systems import IDEAL_C_OVER_A, CrystalSystem

if TYPE_CHECKING:
    from ase.md.langevin import Langevin

CalculatorFactory = Callable[[], object]
J_PER_M2 = units.J / units.m**2  # eV/Å² in J/m²: divide by this


@dataclass
class Settings:
    eos_points: int = 7
    eos_strain: float = 0.02  # largest relative change of the lattice constant
    elastic_strain: float = 0.005
    supercell: int = 3  # repeats of the conventional cell (vacancy, MD)
    slab_layers: int = 6
    vacuum: float = 8.0  # Å on each side of a slab
    fmax: float = 0.01  # eV/Å, relaxations
    phonon_supercell: int = 4  # repeats of the primitive cell
    md_temperature: float = 300.0  # K
    md_steps: int = 200
    md_timestep: float = 2.0  # fs
    min_distance: float = 1.5  # Å, closer atoms flag an unstable run
    max_energy_drift: float = 0.5  # eV/atom of potential energy over the run
    max_pressure: float = 50.0  # GPa
    seed: int = 0


def _energy(atoms: Atoms, make: CalculatorFactory) -> float:
    atoms.calc = make()
    return float(atoms.get_potential_energy())


def _relax_positions(atoms: Atoms, make: CalculatorFactory, fmax: float) -> int:
    """Relax positions at fixed cell; returns the optimizer's steps."""
    atoms.calc = make()
    if len(atoms) == 1 or np.abs(atoms.get_forces()).max() < fmax:
        return 0
    optimizer = BFGS(atoms, logfile=None)
    optimizer.run(fmax=fmax, steps=300)
    return optimizer.get_number_of_steps()


@dataclass
class EquationOfStateResult:
    lattice_constant: float  # Å (hcp: a)
    c_over_a: float  # hcp only (IDEAL_C_OVER_A otherwise)
    bulk_modulus: float  # GPa
    volume_per_atom: float  # Å³
    energy_per_atom: float  # eV, at the fitted volume
    volumes: list[float]  # Å³/atom, the points fitted
    energies: list[float]  # eV/atom


def equation_of_state(
    system: CrystalSystem, make: CalculatorFactory, settings: Settings
) -> EquationOfStateResult:
    """Birch-Murnaghan fit of E(V) around the equilibrium volume.

    Cubic cells are scaled uniformly (their symmetry keeps the atoms in place); hcp
    first relaxes its cell shape (c/a) and positions, then is scaled uniformly. A
    first fit around the starting guess centres a second one on its minimum.
    """
    a, c_over_a = system.guess_a, IDEAL_C_OVER_A
    if system.lattice == "hcp":
        atoms = system.cell(a)
        atoms.calc = make()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=200)
        a = float(atoms.cell.cellpar()[0])
        c_over_a = float(atoms.cell.cellpar()[2] / a)
    scales = np.linspace(
        1 - settings.eos_strain, 1 + settings.eos_strain, settings.eos_points
    )
    for _ in range(8):
        volumes, energies = [], []
        for scale in scales:
            atoms = system.cell(a * scale, c_over_a)
            energies.append(_energy(atoms, make) / len(atoms))
            volumes.append(atoms.get_volume() / len(atoms))
        lowest = int(np.argmin(energies))
        if lowest in (0, len(scales) - 1):  # the minimum is outside: move to it
            a *= scales[lowest]
            continue
        v0, e0, b0 = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
        shift = (v0 / (system.cell(a, c_over_a).get_volume() / len(atoms))) ** (1 / 3)
        a *= shift
        if abs(shift - 1) < settings.eos_strain / 4:  # the fit was centred
            break
    else:
        raise ConfigError(
            f"{system.name}: no energy minimum found near a = {a:.3f} Å "
            f"(last energies {', '.join(f'{e:.4f}' for e in energies)} eV/atom)"
        )
    equilibrium = system.cell(a, c_over_a)
    return EquationOfStateResult(
        lattice_constant=float(a),
        c_over_a=c_over_a,
        bulk_modulus=float(b0 / units.GPa),
        volume_per_atom=float(v0),
        energy_per_atom=_energy(equilibrium, make) / len(equilibrium),
        volumes=[float(v) for v in volumes],
        energies=[float(e) for e in energies],
    )


def elastic_constants(
    system: CrystalSystem,
    eos: EquationOfStateResult,
    make: CalculatorFactory,
    settings: Settings,
) -> dict[str, float]:
    """C_ij (GPa) as central differences of the stress over +-``elastic_strain``
    in each Voigt component, positions relaxed in each strained cell.

    Cubic cells give C11, C12, C44 (averaged over the equivalent components); hcp
    gives C11, C12, C13, C33, C44.
    """
    reference = system.cell(eos.lattice_constant, eos.c_over_a)
    delta = settings.elastic_strain
    matrix = np.zeros((6, 6))
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]  # Voigt order
    for column, (i, j) in enumerate(pairs):
        stresses = []
        for sign in (1.0, -1.0):
            strain = np.zeros((3, 3))
            # engineering shear strain: gamma_ij = 2 eps_ij = delta
            strain[i, j] = strain[j, i] = sign * (delta if i == j else delta / 2)
            atoms = reference.copy()
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            _relax_positions(atoms, make, settings.fmax / 10)
            stresses.append(atoms.get_stress(voigt=True))
        matrix[:, column] = (stresses[0] - stresses[1]) / (2 * delta) / units.GPa
    matrix = 0.5 * (matrix + matrix.T)
    if system.is_cubic:
        return {
            "C11": float(np.mean(np.diag(matrix)[:3])),
            "C12": float(np.mean([matrix[0, 1], matrix[0, 2], matrix[1, 2]])),
            "C44": float(np.mean(np.diag(matrix)[3:])),
        }
    return {
        "C11": float(0.5 * (matrix[0, 0] + matrix[1, 1])),
        "C12": float(matrix[0, 1]),
        "C13": float(0.5 * (matrix[0, 2] + matrix[1, 2])),
        "C33": float(matrix[2, 2]),
        "C44": float(0.5 * (matrix[3, 3] + matrix[4, 4])),
    }


def vacancy_formation_energy(
    system: CrystalSystem,
    eos: EquationOfStateResult,
    make: CalculatorFactory,
    settings: Settings,
) -> float:
    """E(N-1, positions relaxed) - (N-1)/N E(N) in a supercell at the equilibrium
    volume (eV)."""
    perfect = system.cell(eos.lattice_constant, eos.c_over_a).repeat(settings.supercell)
    n_atoms = len(perfect)
    energy_perfect = _energy(perfect.copy(), make)
    defect = perfect.copy()
    del defect[0]
    _relax_positions(defect, make, settings.fmax)
    return float(
        defect.get_potential_energy() - (n_atoms - 1) / n_atoms * energy_perfect
    )


SURFACES = {
    "fcc": {"100": fcc100, "111": fcc111},
    "bcc": {"100": bcc100, "111": bcc111},
    "hcp": {"0001": hcp0001},
}


def surface_energies(
    system: CrystalSystem,
    eos: EquationOfStateResult,
    make: CalculatorFactory,
    settings: Settings,
) -> dict[str, float]:
    """(E_slab - N e_bulk) / 2A (J/m²) for the system's low-index surfaces, slab
    positions relaxed, periodic in all directions with ``vacuum`` Å on each side."""
    result = {}
    for miller, build in SURFACES.get(system.lattice, {}).items():
        kwargs = {"a": eos.lattice_constant}
        if system.lattice == "hcp":
            kwargs["c"] = eos.lattice_constant * eos.c_over_a
        slab = build(
            system.symbols[0],
            size=(1, 1, settings.slab_layers),
            vacuum=settings.vacuum,
            periodic=True,
            **kwargs,
        )
        _relax_positions(slab, make, settings.fmax)
        cell = slab.cell.array
        area = float(np.linalg.norm(np.cross(cell[0], cell[1])))
        excess = slab.get_potential_energy() - len(slab) * eos.energy_per_atom
        result[miller] = float(excess / (2 * area) / J_PER_M2)
    return result


PHONON_POINTS = {
    "fcc": {"X": [0.5, 0.0, 0.5], "L": [0.5, 0.5, 0.5]},
    "bcc": {"H": [0.5, -0.5, 0.5], "N": [0.0, 0.0, 0.5]},
    "hcp": {"M": [0.5, 0.0, 0.0], "K": [1 / 3, 1 / 3, 0.0]},
}
THZ = units._hplanck / units._e * 1e12  # eV per THz


def phonon_frequencies(
    system: CrystalSystem,
    eos: EquationOfStateResult,
    make: CalculatorFactory,
    settings: Settings,
) -> dict[str, float]:
    """The highest phonon frequency (THz) at the zone-boundary points of a pure
    element's primitive cell (ASE's ``Phonons``, finite displacements of 0.01 Å in
    a ``phonon_supercell``-times repeated cell)."""
    from ase.build import bulk
    from ase.phonons import Phonons

    kwargs = {"a": eos.lattice_constant}
    if system.lattice == "hcp":
        kwargs["c"] = eos.lattice_constant * eos.c_over_a
    primitive = bulk(system.symbols[0], system.lattice, **kwargs)
    reciprocal_points = PHONON_POINTS[system.lattice]
    with tempfile.TemporaryDirectory() as folder:
        phonons = Phonons(
            primitive,
            make(),
            supercell=(settings.phonon_supercell,) * 3,
            delta=0.01,
            name=f"{folder}/phonon",
        )
        with _quiet():
            phonons.run()
            phonons.read(acoustic=True)
        kpoints = np.array(list(reciprocal_points.values()))
        energies = phonons.band_structure(kpoints)  # eV [points, modes]
    return {
        name: float(energies[index].max() / THZ)
        for index, name in enumerate(reciprocal_points)
    }


def _quiet():
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())  # Phonons prints every step


@dataclass
class StabilityResult:
    stable: bool
    steps: int
    temperature: float  # K, mean over the run
    min_distance: float  # Å, shortest distance seen
    max_energy_drift: float  # eV/atom, largest |E_pot - E_pot(0)|
    max_pressure: float  # GPa, largest |P|
    reasons: list[str]


def md_stability(
    system: CrystalSystem,
    eos: EquationOfStateResult,
    make: CalculatorFactory,
    settings: Settings,
) -> StabilityResult:
    """NVT Langevin at ``md_temperature`` for ``md_steps`` steps of a supercell at
    the equilibrium volume; unstable when two atoms come closer than
    ``min_distance``, the potential energy drifts by more than
    ``max_energy_drift`` per atom, the pressure exceeds ``max_pressure`` or any
    value is not finite."""
    atoms = system.cell(eos.lattice_constant, eos.c_over_a).repeat(settings.supercell)
    atoms.calc = make()
    dynamics = _langevin(atoms, settings)
    n_atoms = len(atoms)
    start = atoms.get_potential_energy() / n_atoms
    record = {"distance": np.inf, "drift": 0.0, "pressure": 0.0, "temperature": []}
    reasons: list[str] = []

    def check() -> None:
        distances = atoms.get_all_distances(mic=True)
        distances[np.diag_indices(n_atoms)] = np.inf
        energy = atoms.get_potential_energy() / n_atoms
        pressure = -np.mean(atoms.get_stress()[:3]) / units.GPa
        record["distance"] = min(record["distance"], float(distances.min()))
        record["drift"] = max(record["drift"], abs(energy - start))
        record["pressure"] = max(record["pressure"], abs(pressure))
        record["temperature"].append(atoms.get_temperature())
        if not (np.isfinite(energy) and np.isfinite(pressure)):
            reasons.append("energy or pressure not finite")

    steps = 0
    interval = 5
    while steps < settings.md_steps and not reasons:
        chunk = min(interval, settings.md_steps - steps)
        dynamics.run(chunk)
        steps += chunk
        check()
        reasons += _beyond_limits(record, settings)
    return StabilityResult(
        stable=not reasons,
        steps=steps,
        temperature=float(np.mean(record["temperature"])),
        min_distance=record["distance"],
        max_energy_drift=record["drift"],
        max_pressure=record["pressure"],
        reasons=reasons,
    )


def _langevin(atoms: Atoms, settings: Settings) -> "Langevin":
    """Langevin dynamics at ``md_temperature``, velocities drawn from its
    Maxwell-Boltzmann distribution (seeded)."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(settings.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=settings.md_temperature, rng=rng)
    return Langevin(
        atoms,
        timestep=settings.md_timestep * units.fs,
        temperature_K=settings.md_temperature,
        friction=0.02 / units.fs,
        fixcm=False,
        rng=rng,
    )


def _beyond_limits(record: dict, settings: Settings) -> list[str]:
    """What of the run so far makes it unstable (closest distance, energy drift,
    pressure)."""
    reasons = []
    if record["distance"] < settings.min_distance:
        reasons.append(
            f"atoms {record['distance']:.2f} Å apart (< {settings.min_distance} Å)"
        )
    if record["drift"] > settings.max_energy_drift:
        reasons.append(
            f"potential energy drifted {record['drift']:.2f} eV/atom "
            f"(> {settings.max_energy_drift})"
        )
    if record["pressure"] > settings.max_pressure:
        reasons.append(
            f"pressure {record['pressure']:.0f} GPa (> {settings.max_pressure})"
        )
    return reasons
