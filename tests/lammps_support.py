"""Helpers for the LAMMPS plugin tests: a hand-written metatomic model, structures,
LAMMPS inputs and runs (the real ``lmp``, as a subprocess), and the ASE reference.

The model here was not trained by this project: it is a smooth pair + embedding
potential written directly against metatomic's ``ModelInterface``, so the plugin
is checked as a generic metatomic engine.
"""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional  # noqa: UP035 (TorchScript)

import ase
import numpy as np
import torch
from alchem.export import declared_libraries
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
    unit_conversion_factor,
)

BIN = Path(sys.executable).parent
LMP = BIN / "lmp"
MPIRUN = BIN / "mpirun"

# LAMMPS' conversion of (virial / volume) to its pressure unit, from update.cpp
NKTV2P = {"metal": 1.6021765e6, "real": 68568.415}
ENERGY_UNIT = {"metal": "eV", "real": "kcal/mol"}
MASSES = {
    13: 26.98,
    28: 58.69,
    29: 63.55,
    46: 106.42,
    47: 107.87,
    78: 195.08,
    79: 196.97,
}
SYMBOLS = {13: "Al", 28: "Ni", 29: "Cu", 46: "Pd", 47: "Ag", 78: "Pt", 79: "Au"}


# --------------------------------------------------------------------------- model
class PairEmbedding(torch.nn.Module):
    """E_i = 1/2 sum_j V(r_ij) + F(rho_i), rho_i = sum_j phi_j(r_ij).

    V is a Morse potential shifted so that energy and force vanish at the cutoff
    (LAMMPS' morse/smooth/linear), phi a smooth density (1 - r/rc)^3 and F(rho) =
    -A (sqrt(1 + rho) - 1). All parameters depend on the elements.

    ``layers=2`` adds a message-passing term: E_i += c sum_j phi(r_ij) rho_j, so the
    interaction range is twice the cutoff. ``full_list=False`` uses a half list.
    The model works internally in eV and Angstrom; ``length_scale`` and
    ``energy_scale`` convert from/to the units it declares.
    """

    def __init__(
        self,
        types: list[int],
        cutoff: float,
        embedding: bool,
        full_list: bool,
        layers: int,
        length_scale: float,
        energy_scale: float,
        fail: bool = False,
        center_on_second: bool = False,
        require_sorted: bool = False,
        nan_below: float = 0.0,
    ) -> None:
        super().__init__()
        self.fail = fail
        self.nan_below = nan_below
        self.center_on_second = center_on_second
        self.require_sorted = require_sorted
        n = len(types)
        index = torch.full((max(types) + 1,), -1, dtype=torch.long)
        for i, t in enumerate(types):
            index[t] = i
        self.register_buffer("type_index", index)
        generator = torch.Generator().manual_seed(1234)

        def uniform(lo: float, hi: float) -> torch.Tensor:
            values = torch.rand(n, generator=generator, dtype=torch.float64)
            return lo + (hi - lo) * values

        depth = uniform(0.2, 0.5)
        alpha = uniform(1.3, 1.7)
        r0 = uniform(2.3, 2.8)
        self.register_buffer("depth", torch.sqrt(depth[:, None] * depth[None, :]))
        self.register_buffer("alpha", 0.5 * (alpha[:, None] + alpha[None, :]))
        self.register_buffer("r0", 0.5 * (r0[:, None] + r0[None, :]))
        self.register_buffer("density", uniform(0.5, 1.5))
        self.register_buffer(
            "embed", uniform(0.5, 1.0) if embedding else torch.zeros(n)
        )
        self.register_buffer("message", uniform(0.01, 0.03))
        self.cutoff = cutoff
        self.full_list = full_list
        self.layers = layers
        self.length_scale = length_scale
        self.energy_scale = energy_scale
        self.options = NeighborListOptions(
            cutoff=cutoff / length_scale, full_list=full_list, strict=True
        )

    def requested_neighbor_lists(self) -> list[NeighborListOptions]:
        return [self.options]

    def _morse(self, r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        depth = self.depth[a, b]
        alpha = self.alpha[a, b]
        r0 = self.r0[a, b]
        e = torch.exp(-alpha * (r - r0))
        ec = torch.exp(-alpha * (self.cutoff - r0))
        v = depth * (e * e - 2.0 * e)
        vc = depth * (ec * ec - 2.0 * ec)
        dvc = -2.0 * alpha * depth * (ec * ec - ec)
        return v - vc - (r - self.cutoff) * dvc

    def forward(
        self,
        # metatomic checks these annotations: they must come from `typing`
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[Labels] = None,  # noqa: UP045
    ) -> Dict[str, TensorMap]:  # noqa: UP006
        if "energy" not in outputs:
            return {}
        if self.fail:
            raise ValueError("this test model always fails")
        per_atom = outputs["energy"].sample_kind == "atom"
        dtype = systems[0].positions.dtype
        device = systems[0].positions.device

        values: list[torch.Tensor] = []
        samples: list[torch.Tensor] = []
        for s, system in enumerate(systems):
            n_atoms = len(system)
            neighbors = system.get_neighbor_list(self.options)
            first = neighbors.samples.column("first_atom").to(torch.long)
            second = neighbors.samples.column("second_atom").to(torch.long)
            if self.require_sorted and bool(torch.any(first[1:] < first[:-1])):
                raise ValueError("the pairs are not sorted by first atom")
            if self.center_on_second:
                # the same physics in a complete full list, read from the other end
                first, second = second, first
            vectors = neighbors.values.reshape(-1, 3) * self.length_scale
            r = torch.linalg.vector_norm(vectors, dim=1)
            species = self.type_index[system.types.to(torch.long)]
            a = species[first]
            b = species[second]

            pair = self._morse(r, a, b)
            if self.nan_below > 0.0:  # a model that breaks down at short range
                nan = torch.full_like(pair, float("nan"))
                pair = pair * torch.where(
                    r < self.nan_below, nan, torch.ones_like(pair)
                )
            x = 1.0 - r / self.cutoff
            shape = x * x * x
            atom_energy = torch.zeros(n_atoms, dtype=dtype, device=device)
            rho = torch.zeros(n_atoms, dtype=dtype, device=device)
            atom_energy = atom_energy.index_add(0, first, 0.5 * pair)
            rho = rho.index_add(0, first, self.density[b].to(dtype) * shape)
            if not self.full_list:
                atom_energy = atom_energy.index_add(0, second, 0.5 * pair)
                rho = rho.index_add(0, second, self.density[a].to(dtype) * shape)
            embed = self.embed[species].to(dtype)
            atom_energy = atom_energy - embed * (torch.sqrt(1.0 + rho) - 1.0)
            if self.layers == 2:
                message = self.message[species].to(dtype)
                atom_energy = atom_energy.index_add(
                    0, first, message[first] * shape * rho[second]
                )
                if not self.full_list:
                    atom_energy = atom_energy.index_add(
                        0, second, message[second] * shape * rho[first]
                    )

            atoms = torch.arange(n_atoms, device=device)
            if selected_atoms is not None:
                mask = selected_atoms.column("system") == s
                atoms = selected_atoms.column("atom")[mask].to(torch.long)
            atom_energy = atom_energy[atoms] * self.energy_scale
            if per_atom:
                values.append(atom_energy.reshape(-1, 1))
                samples.append(
                    torch.stack([torch.full_like(atoms, s), atoms], dim=1).to(
                        torch.int32
                    )
                )
            else:
                values.append(atom_energy.sum().reshape(1, 1))
                samples.append(torch.tensor([[s]], dtype=torch.int32, device=device))

        names = ["system", "atom"] if per_atom else ["system"]
        block = TensorBlock(
            values=torch.cat(values),
            samples=Labels(names, torch.cat(samples)),
            components=[],
            properties=Labels(["energy"], torch.tensor([[0]], device=device)),
        )
        return {
            "energy": TensorMap(
                Labels(["_"], torch.tensor([[0]], device=device)), [block]
            )
        }


@dataclass
class ModelSpec:
    types: list[int] = field(default_factory=lambda: [28, 29, 78])
    cutoff: float = 5.0
    embedding: bool = True
    full_list: bool = True
    layers: int = 1
    dtype: str = "float64"
    length_unit: str = "angstrom"
    energy_unit: str = "eV"
    per_atom: bool = True
    fail: bool = False
    center_on_second: bool = False
    # fail unless the pairs come sorted by first atom (what the exported
    # models of this project need to evaluate a chunk of atoms on a slice)
    require_sorted: bool = False
    # pairs closer than this (Angstrom) give NaN energies and forces
    nan_below: float = 0.0
    # metadata extra (e.g. alchem.chunk), as an exported alchem model has
    extra: dict[str, str] = field(default_factory=dict)


def export_model(path: str | os.PathLike, spec: ModelSpec | None = None) -> str:
    """Write the hand-made model as a metatomic ``model.pt``; returns the path."""
    spec = spec or ModelSpec()
    length_scale = unit_conversion_factor(spec.length_unit, "angstrom")
    energy_scale = unit_conversion_factor("eV", spec.energy_unit)
    module = PairEmbedding(
        spec.types,
        spec.cutoff,
        spec.embedding,
        spec.full_list,
        spec.layers,
        length_scale,
        energy_scale,
        spec.fail,
        spec.center_on_second,
        spec.require_sorted,
        spec.nan_below,
    )
    dtype = getattr(torch, spec.dtype)
    module = module.to(dtype).eval()
    capabilities = ModelCapabilities(
        outputs={
            "energy": ModelOutput(
                unit=spec.energy_unit,
                sample_kind="atom" if spec.per_atom else "system",
            )
        },
        atomic_types=spec.types,
        interaction_range=spec.layers * spec.cutoff / length_scale,
        length_unit=spec.length_unit,
        supported_devices=["cuda", "cpu"],
        dtype=spec.dtype,
    )
    metadata = ModelMetadata(
        name="pair-embedding test model",
        description="smooth Morse + embedding potential written in the alchem tests",
        extra=spec.extra,
    )
    # the module calls no extension, whatever this process loaded (sphericart-torch)
    with declared_libraries([]):
        AtomisticModel(module, metadata, capabilities).save(str(path))
    return str(path)


# ----------------------------------------------------------------------- structures
def lower_triangular(a: float, b: float, c: float, xy: float, xz: float, yz: float):
    """A LAMMPS-style cell (rows a, b, c) with the given lengths and tilts."""
    return np.array([[a, 0.0, 0.0], [xy, b, 0.0], [xz, yz, c]])


def fcc_alloy(
    repeat: tuple[int, int, int],
    lattice: float,
    numbers: list[int],
    seed: int,
    rattle: float = 0.1,
) -> ase.Atoms:
    """A random fcc alloy of the given elements, rattled."""
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.array(
        [
            [i, j, k]
            for i in range(repeat[0])
            for j in range(repeat[1])
            for k in range(repeat[2])
        ]
    )
    fractional = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    positions = fractional * lattice
    positions += rng.normal(scale=rattle, size=positions.shape)
    cell = np.diag(np.array(repeat, dtype=float) * lattice)
    atoms = ase.Atoms(
        numbers=rng.choice(numbers, size=len(positions)),
        positions=positions,
        cell=cell,
        pbc=True,
    )
    atoms.wrap()
    return atoms


def write_data(
    path: str | os.PathLike,
    atoms: ase.Atoms,
    numbers: list[int],
    types: list[int] | None = None,
) -> None:
    """Write ``atoms`` as a LAMMPS data file, atom type k+1 being ``numbers[k]``.

    ``types`` gives the LAMMPS type of each atom (default: the first type with the
    atom's element), so several types may share one element, or have no atom. The
    cell must be lower triangular (LAMMPS' convention); non-periodic directions
    get a box enclosing all atoms.
    """
    cell = np.array(atoms.cell)
    positions = atoms.positions
    lo = np.zeros(3)
    hi = np.array([cell[0, 0], cell[1, 1], cell[2, 2]])
    for d in range(3):
        if not atoms.pbc[d]:
            lo[d] = min(lo[d], positions[:, d].min() - 1.0)
            hi[d] = max(hi[d], positions[:, d].max() + 1.0)
    if atoms.pbc.any():
        assert np.allclose(cell[np.triu_indices(3, 1)], 0.0), (
            "cell must be lower triangular"
        )
    xy, xz, yz = (cell[1, 0], cell[2, 0], cell[2, 1]) if atoms.pbc.any() else (0, 0, 0)
    triclinic = abs(xy) + abs(xz) + abs(yz) > 0

    if types is None:
        types = [numbers.index(int(z)) + 1 for z in atoms.numbers]
    assert all(numbers[t - 1] == z for t, z in zip(types, atoms.numbers, strict=True))
    lines = ["LAMMPS data file written by the alchem tests", ""]
    lines.append(f"{len(atoms)} atoms")
    lines.append(f"{len(numbers)} atom types")
    lines.append("")
    for d, name in enumerate("xyz"):
        lines.append(f"{lo[d]:.17g} {hi[d]:.17g} {name}lo {name}hi")
    if triclinic:
        lines.append(f"{xy:.17g} {xz:.17g} {yz:.17g} xy xz yz")
    lines += ["", "Masses", ""]
    for t, z in enumerate(numbers):
        lines.append(f"{t + 1} {MASSES.get(z, 50.0)}")
    lines += ["", "Atoms # atomic", ""]
    for i, (t, position) in enumerate(zip(types, positions, strict=True)):
        x, y, z = position
        lines.append(f"{i + 1} {t} {x:.17g} {y:.17g} {z:.17g}")
    Path(path).write_text("\n".join(lines) + "\n")


def morse_coefficients(spec: ModelSpec) -> list[tuple[int, int, float, float, float]]:
    """(type i, type j, D0, alpha, r0) of the model's pair term, types numbered as
    ``spec.types``, for LAMMPS' ``pair_style morse/smooth/linear``."""
    module = PairEmbedding(
        spec.types, spec.cutoff, spec.embedding, spec.full_list, spec.layers, 1.0, 1.0
    )
    n = len(spec.types)
    return [
        (
            i + 1,
            j + 1,
            float(module.depth[i, j]),
            float(module.alpha[i, j]),
            float(module.r0[i, j]),
        )
        for i in range(n)
        for j in range(i, n)
    ]


# --------------------------------------------------------------------------- LAMMPS
def lammps_environment() -> dict[str, str]:
    """Environment for ``lmp``: the plugin comes from the ``lammps.plugins`` entry
    point when alchem is installed; otherwise LAMMPS_PLUGIN_PATH points at it."""
    from importlib import metadata

    from alchem.lammps import plugin_directory

    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    names = [ep.name for ep in metadata.entry_points(group="lammps.plugins")]
    if "alchemical" not in names:
        env["LAMMPS_PLUGIN_PATH"] = plugin_directory()
    return env


def plugin_built() -> bool:
    from alchem.lammps import plugin_directory

    return (Path(plugin_directory()) / "alchemicalplugin.so").is_file()


def run_lammps(
    directory: str | os.PathLike,
    script: str,
    nprocs: int = 1,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``script`` with the real ``lmp`` (under ``mpirun -np nprocs`` if > 1),
    with ``env`` added to the environment."""
    directory = Path(directory)
    (directory / "in.lammps").write_text(script)
    command = [str(LMP), "-in", "in.lammps", "-log", "log.lammps", "-nocite"]
    if nprocs > 1:
        command = [str(MPIRUN), "-np", str(nprocs), *command]
    result = subprocess.run(
        command,
        cwd=directory,
        env={**lammps_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"lmp failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-4000:]}"
        )
    return result


THERMO = " ".join(
    ["step", "pe", "vol"]
    + [f"c_virial[{k}]" for k in range(1, 7)]
    + [f"c_sum[{k}]" for k in range(1, 7)]
    + [f"c_csum[{k}]" for k in range(1, 10)]
)


def single_point_script(
    data: str,
    model: str,
    elements: list[str],
    units: str = "metal",
    boundary: str = "p p p",
    pair_options: str = "",
    extra: str = "",
    pair: str | None = None,
    before: str = "",
) -> str:
    """An input evaluating everything once (run 0), per-atom data in ``atoms.dump``."""
    if pair is None:
        pair = f"pair_style alchemical {model} {pair_options}\n"
        pair += f"pair_coeff * * {' '.join(elements)}"
    return f"""
units {units}
atom_style atomic
boundary {boundary}
{before}
read_data {data}
{extra}
{pair}

compute pe_atom all pe/atom
compute stress all stress/atom NULL virial
compute cstress all centroid/stress/atom NULL virial
compute sum all reduce sum c_stress[1] c_stress[2] c_stress[3] &
    c_stress[4] c_stress[5] c_stress[6]
compute csum all reduce sum c_cstress[1] c_cstress[2] c_cstress[3] &
    c_cstress[4] c_cstress[5] c_cstress[6] c_cstress[7] c_cstress[8] c_cstress[9]
compute virial all pressure NULL virial

thermo_style custom {THERMO}
thermo_modify format float %.17g norm no
dump atoms all custom 1 atoms.dump id type x y z fx fy fz c_pe_atom &
    c_stress[1] c_stress[2] c_stress[3] c_stress[4] c_stress[5] c_stress[6]
dump_modify atoms format float %.17g sort id
run 0
"""


@dataclass
class LammpsResult:
    energy: float
    volume: float
    virial: np.ndarray  # 3x3, energy unit (from compute pressure NULL virial)
    virial_sum: np.ndarray  # 3x3, sum of per-atom virials (stress/atom)
    centroid_sum: np.ndarray  # 3x3, sum of centroid per-atom virials
    forces: np.ndarray
    energies: np.ndarray
    atom_virials: np.ndarray  # n x 6 (xx yy zz xy xz yz), energy unit
    positions: np.ndarray
    log: str


def _voigt_to_matrix(v) -> np.ndarray:
    xx, yy, zz, xy, xz, yz = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def read_thermo(log: str, columns: str = THERMO) -> list[list[float]]:
    """Rows of the thermo table whose header starts with the first column name."""
    names = columns.split()
    rows: list[list[float]] = []
    lines = log.splitlines()
    for index, line in enumerate(lines):
        header = line.split()
        if header and header[0] == "Step" and len(header) == len(names):
            for row in lines[index + 1 :]:
                parts = row.split()
                if len(parts) != len(names):
                    break
                try:
                    rows.append([float(p) for p in parts])
                except ValueError:
                    break
    return rows


def read_result(directory: str | os.PathLike, units: str = "metal") -> LammpsResult:
    directory = Path(directory)
    log = (directory / "log.lammps").read_text()
    row = read_thermo(log)[-1]
    energy, volume = row[1], row[2]
    nktv2p = NKTV2P[units]
    virial = _voigt_to_matrix([row[3], row[4], row[5], row[6], row[7], row[8]])
    virial = virial * volume / nktv2p
    virial_sum = -_voigt_to_matrix(row[9:15]) / nktv2p
    c = row[15:24]  # xx yy zz xy xz yz yx zx zy
    centroid = (
        -np.array([[c[0], c[3], c[4]], [c[6], c[1], c[5]], [c[7], c[8], c[2]]]) / nktv2p
    )

    lines = (directory / "atoms.dump").read_text().splitlines()
    start = (
        next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    )
    table = np.array([[float(v) for v in line.split()] for line in lines[start:]])
    return LammpsResult(
        energy=energy,
        volume=volume,
        virial=virial,
        virial_sum=virial_sum,
        centroid_sum=centroid,
        forces=table[:, 5:8],
        energies=table[:, 8],
        atom_virials=-table[:, 9:15] / nktv2p,
        positions=table[:, 2:5],
        log=log,
    )


def _write_structure(
    directory: str | os.PathLike,
    atoms: ase.Atoms,
    numbers: list[int],
    types: list[int] | None = None,
) -> tuple[Path, str]:
    """``directory/structure.data`` and the LAMMPS ``boundary`` of ``atoms``: p for
    periodic directions, s (all free) or f (mixed) for the others."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_data(directory / "structure.data", atoms, numbers, types)
    boundary = " ".join("p" if p else "s" for p in atoms.pbc)
    if atoms.pbc.any() and not atoms.pbc.all():
        boundary = " ".join("p" if p else "f" for p in atoms.pbc)
    return directory, boundary


def lammps_single_point(
    directory: str | os.PathLike,
    atoms: ase.Atoms,
    model: str,
    numbers: list[int],
    units: str = "metal",
    nprocs: int = 1,
    pair_options: str = "",
    extra: str = "",
    types: list[int] | None = None,
    pair: str | None = None,
    before: str = "",
) -> LammpsResult:
    """``atoms`` through LAMMPS, ``numbers[k]`` being the element of type k+1.

    ``pair`` replaces the pair_style/pair_coeff lines (to run another potential).
    """
    directory, boundary = _write_structure(directory, atoms, numbers, types)
    script = single_point_script(
        "structure.data",
        str(model),
        [SYMBOLS[z] for z in numbers],
        units=units,
        boundary=boundary,
        pair_options=pair_options,
        extra=extra,
        pair=pair,
        before=before,
    )
    run_lammps(directory, script, nprocs=nprocs)
    return read_result(directory, units)


@dataclass
class GlobalResult:
    energy: float
    forces: np.ndarray
    virial: np.ndarray  # 3x3, energy unit
    log: str


def lammps_global_point(
    directory: str | os.PathLike,
    atoms: ase.Atoms,
    model: str,
    numbers: list[int],
    units: str = "metal",
    nprocs: int = 1,
    pair_options: str = "",
    env: dict[str, str] | None = None,
) -> GlobalResult:
    """Energy, forces and global virial with no per-atom energy or virial asked:
    the plugin then folds the pair gradients into atom gradients on the model
    device and takes the virial as sum_i x_i (x) F_i over owned and ghost atoms."""
    directory, boundary = _write_structure(directory, atoms, numbers)
    columns = "step pe vol " + " ".join(f"c_virial[{k}]" for k in range(1, 7))
    script = f"""
units {units}
atom_style atomic
boundary {boundary}
read_data structure.data
pair_style alchemical {model} {pair_options}
pair_coeff * * {" ".join(SYMBOLS[z] for z in numbers)}
compute virial all pressure NULL virial
thermo_style custom {columns}
thermo_modify format float %.17g norm no
dump atoms all custom 1 atoms.dump id fx fy fz
dump_modify atoms format float %.17g sort id
run 0
"""
    run_lammps(directory, script, nprocs=nprocs, env=env)
    log = (directory / "log.lammps").read_text()
    row = read_thermo(log, columns)[-1]
    virial = _voigt_to_matrix(row[3:9]) * row[2] / NKTV2P[units]
    lines = (directory / "atoms.dump").read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("ITEM: ATOMS")) + 1
    table = np.array([[float(v) for v in x.split()] for x in lines[start:]])
    return GlobalResult(energy=row[1], forces=table[:, 1:4], virial=virial, log=log)


# ---------------------------------------------------------------------------- ASE
@dataclass
class AseResult:
    energy: float
    energies: np.ndarray
    forces: np.ndarray
    virial: np.ndarray | None  # 3x3, eV


def ase_single_point(
    atoms: ase.Atoms, model: str, extensions: str | None = None
) -> AseResult:
    from alchem import ops
    from metatomic_ase import MetatomicCalculator

    ops.load()  # this project's models call alchem::power_spectrum on the CPU
    atoms = atoms.copy()
    atoms.calc = MetatomicCalculator(
        model, extensions_directory=extensions, check_consistency=True, device="cpu"
    )
    energy = atoms.get_potential_energy()
    energies = atoms.get_potential_energies()
    forces = atoms.get_forces()
    if atoms.pbc.all() or (atoms.pbc.any() and atoms.cell.volume > 0):
        stress = atoms.get_stress(voigt=False)
        virial = -stress * atoms.cell.volume
    else:
        # finite system: the virial is sum_i x_i (x) F_i
        virial = atoms.positions.T @ forces
    return AseResult(energy=energy, energies=energies, forces=forces, virial=virial)


def energy_factor(units: str) -> float:
    """Multiply a LAMMPS energy in ``units`` by this to get eV."""
    return unit_conversion_factor(ENERGY_UNIT[units], "eV")


def relative_error(actual: np.ndarray | float, expected: np.ndarray | float) -> float:
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    return float(np.max(np.abs(actual - expected)) / scale)


# ------------------------------------------------------------- finite differences
@dataclass
class FiniteDifferences:
    forces: np.ndarray  # analytic forces of the moved atoms, n_moved x 3
    numeric_forces: np.ndarray  # -(E(x + h) - E(x - h)) / 2h
    virial: np.ndarray  # analytic diagonal virial (xx, yy, zz)
    numeric_virial: np.ndarray  # -(E(1 + h) - E(1 - h)) / 2h for box scalings


def lammps_finite_differences(
    directory: str | os.PathLike,
    atoms: ase.Atoms,
    model: str,
    numbers: list[int],
    moved: list[int],
    h: float = 1e-4,
    pair_options: str = "",
) -> FiniteDifferences:
    """Forces and virial of LAMMPS against finite differences of LAMMPS' own energy:
    independent of ASE, this catches a model whose autograd is wrong everywhere."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_data(directory / "structure.data", atoms, numbers)
    elements = " ".join(SYMBOLS[z] for z in numbers)
    lines = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        "read_data structure.data",
        f"pair_style alchemical {model} {pair_options}",
        f"pair_coeff * * {elements}",
        "compute virial all pressure NULL virial",
        "thermo_style custom step pe vol c_virial[1] c_virial[2] c_virial[3]",
        "thermo_modify format float %.17g norm no",
        "dump forces all custom 1 forces.dump id fx fy fz",
        "dump_modify forces format float %.17g sort id",
        "run 0",
        "undump forces",
        'print "REFERENCE $(pe:%.17g) $(vol:%.17g) $(c_virial[1]:%.17g) '
        '$(c_virial[2]:%.17g) $(c_virial[3]:%.17g)"',
    ]
    for atom in moved:
        lines.append(f"group moved{atom} id {atom + 1}")
        for d, axis in enumerate("xyz"):
            step = [0.0, 0.0, 0.0]
            for sign in (1, -1):
                step[d] = sign * h
                lines.append(
                    f"displace_atoms moved{atom} move {step[0]} {step[1]} {step[2]} "
                    "units box"
                )
                lines.append("run 0")
                lines.append(f'print "MOVE {atom} {axis} {sign} $(pe:%.17g)"')
                step[d] = -sign * h
                lines.append(
                    f"displace_atoms moved{atom} move {step[0]} {step[1]} {step[2]} "
                    "units box"
                )
                step[d] = 0.0
    for axis in "xyz":
        for sign in (1, -1):
            scale = 1.0 + sign * h
            lines.append(f"change_box all {axis} scale {scale!r} remap units box")
            lines.append("run 0")
            lines.append(f'print "STRAIN {axis} {sign} $(pe:%.17g)"')
            lines.append(f"change_box all {axis} scale {1.0 / scale!r} remap units box")
    result = run_lammps(directory, "\n".join(lines) + "\n")

    values: dict[tuple, float] = {}
    reference: list[float] = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "REFERENCE":
            reference = [float(p) for p in parts[1:]]
        elif parts[0] == "MOVE":
            values[("move", int(parts[1]), parts[2], int(parts[3]))] = float(parts[4])
        elif parts[0] == "STRAIN":
            values[("strain", parts[1], int(parts[2]))] = float(parts[3])

    table = np.loadtxt(directory / "forces.dump", skiprows=9)
    forces = table[moved][:, 1:4]
    numeric = np.array(
        [
            [
                -(values[("move", a, axis, 1)] - values[("move", a, axis, -1)])
                / (2 * h)
                for axis in "xyz"
            ]
            for a in moved
        ]
    )
    volume = reference[1]
    virial = np.array(reference[2:5]) * volume / NKTV2P["metal"]
    numeric_virial = np.array(
        [
            -(values[("strain", axis, 1)] - values[("strain", axis, -1)]) / (2 * h)
            for axis in "xyz"
        ]
    )
    return FiniteDifferences(forces, numeric, virial, numeric_virial)
