"""Active learning: pick the frames of a trajectory a model is least sure about.

Each frame is evaluated once through the exported model (``alchem.calculator``),
asking for two of its uncertainty outputs in the same call:

- ``energy_uncertainty`` per atom: sigma_i = sqrt(f_i C f_i) (eV), the model's
  uncertainty on atom i's energy. A frame's score is the largest (or the mean) of its
  atoms' sigmas.
- ``alchem::energy_uncertainty_projection`` per frame: s R, with s the sum of the
  atoms' last-layer features and C = R R^T the LLPR covariance. Divided by the number
  of atoms it is the frame's *descriptor* d (eV/atom). The distance |d_A - d_B| is the
  predicted sigma of the difference of the two frames' energies per atom: it is small
  when the model sees the two frames alike in the directions it is unsure about, i.e.
  when labelling one would teach it about the other. It costs nothing beyond the
  sigma (same features, one matrix product).

The selection is greedy: frames are taken from the most uncertain down, skipping a
frame whose descriptor lies within ``min_distance`` of one already taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

SIGMA_OUTPUT = "energy_uncertainty"
PROJECTION_OUTPUT = "alchem::energy_uncertainty_projection"
RANKINGS = ("max", "mean")
# Frames evaluated in one model call (by total atoms): large enough to amortise the
# call, small enough for the model's temporaries to stay modest
BATCH_ATOMS = 4096
# Relative distance below which two frames are the same frame: the same positions
# evaluated in different batches differ by float round-off (float32: ~1e-7)
DUPLICATE_TOLERANCE = 1e-5


@dataclass
class FrameUncertainty:
    """What the model says about one frame."""

    atom_sigma: np.ndarray  # [atoms] eV, per-atom energy sigma
    energy_sigma: float  # eV, sigma of the frame's total energy
    descriptor: np.ndarray  # [D] eV/atom, s R / atoms

    def score(self, rank: str) -> float:
        values = self.atom_sigma
        return float(values.max() if rank == "max" else values.mean())


# ---------------------------------------------------------------------- reading


def is_lammps_dump(path: str) -> bool:
    """A LAMMPS text dump starts with ``ITEM: TIMESTEP``."""
    with open(path, "rb") as handle:
        return handle.read(15) == b"ITEM: TIMESTEP\n"


def dump_columns(path: str) -> list[str]:
    """The per-atom columns of a LAMMPS text dump (its first ``ITEM: ATOMS`` line)."""
    with open(path) as handle:
        for line in handle:
            if line.startswith("ITEM: ATOMS"):
                return line.split()[2:]
    raise ConfigError(f"{path}: a LAMMPS dump without an 'ITEM: ATOMS' line")


def read_frames(
    path: str, index: str = ":", types: list[str] | None = None
) -> tuple[list, list[int]]:
    """The frames of ``path`` (any file ASE reads, or a LAMMPS text dump) selected by
    the ASE-style slice ``index``, and their positions in the file."""
    import ase.io
    from ase.io.formats import string2index

    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    try:
        selection = string2index(index)
    except ValueError:
        raise ConfigError(
            f"--index {index}: must be a frame number or a slice like 10: or ::5"
        ) from None
    kwargs = {}
    if is_lammps_dump(path):
        kwargs = {"format": "lammps-dump-text", **_dump_species(path, types)}
    try:
        frames = ase.io.read(path, index=":", **kwargs)
    except Exception as error:  # ASE's readers raise anything on a bad file
        raise ConfigError(f"{path}: ASE could not read it ({error})") from None
    positions = list(range(len(frames)))
    if isinstance(selection, int):
        selection = slice(selection, selection + 1 or None)
    frames, positions = frames[selection], positions[selection]
    if not frames:
        raise ConfigError(f"{path}: no frames (--index {index})")
    return frames, positions


def _dump_species(path: str, types: list[str] | None) -> dict:
    """How ASE names the atoms of a dump: its ``element`` column, else the
    ``--types`` mapping (LAMMPS type 1 is the first element)."""
    from ase.data import atomic_numbers

    columns = dump_columns(path)
    if "element" in columns:
        return {}
    if not types:
        raise ConfigError(
            f"{path}: the LAMMPS dump has no 'element' column (columns: "
            f"{' '.join(columns)}); give one element per atom type, e.g. --types Cu Au, "
            "or dump with 'dump_modify ID element Cu Au' and an element column"
        )
    unknown = [name for name in types if name not in atomic_numbers]
    if unknown:
        raise ConfigError(f"--types: {' '.join(unknown)} is not an element symbol")
    if "type" not in columns:
        raise ConfigError(f"{path}: the LAMMPS dump has neither 'element' nor 'type'")
    largest = _largest_type(path)
    if largest > len(types):
        raise ConfigError(
            f"{path}: atom type {largest} in the dump, but --types names only "
            f"{len(types)} element(s): {' '.join(types)}"
        )
    return {"specorder": list(types)}


def _largest_type(path: str) -> int:
    """The largest atom type in the dump (read from its ``type`` column)."""
    largest = 0
    column = None
    with open(path) as handle:
        for line in handle:
            if line.startswith("ITEM:"):
                names = line.split()[2:]
                column = names.index("type") if line.startswith("ITEM: ATOMS") else None
                continue
            if column is not None:
                try:
                    largest = max(largest, int(float(line.split()[column])))
                except (IndexError, ValueError):
                    raise ConfigError(
                        f"{path}: unreadable LAMMPS dump line: {line.strip()!r}"
                    ) from None
    return largest


# ------------------------------------------------------------------- evaluating


def check_model(calculator, model_path: str) -> None:
    """The model must have the uncertainty outputs (alchem-uncertainty adds them)."""
    outputs = calculator._model.capabilities().outputs
    if SIGMA_OUTPUT not in outputs or PROJECTION_OUTPUT not in outputs:
        checkpoint = os.path.splitext(model_path)[0] + ".ckpt"
        raise ConfigError(
            f"{model_path} has no uncertainty (no {SIGMA_OUTPUT} output): add it to "
            f"its checkpoint with 'alchem-uncertainty {checkpoint}', or train with "
            "'uncertainty: {method: llpr}' in the options"
        )


def evaluate_frames(calculator, frames: list, source: str) -> list[FrameUncertainty]:
    """Per-atom sigma, total-energy sigma and descriptor of every frame, in model
    calls of up to BATCH_ATOMS atoms."""
    from metatomic.torch import ModelOutput

    from .calculator import check_structure

    model = calculator._model
    types = model.capabilities().atomic_types
    cutoff = min(option.cutoff for option in model.requested_neighbor_lists())
    for position, atoms in enumerate(frames):
        try:
            check_structure(atoms, types, calculator.model_path, cutoff)
        except ValueError as error:
            raise ConfigError(f"{source}, frame {position}: {error}") from None
    outputs = {
        SIGMA_OUTPUT: ModelOutput(unit="eV", sample_kind="atom"),
        PROJECTION_OUTPUT: ModelOutput(sample_kind="system"),
    }
    results = []
    for batch in _batches(frames):
        values = calculator.run_model(batch, outputs)
        sigma_block = values[SIGMA_OUTPUT].block()
        sigma = sigma_block.values.detach().cpu().double().numpy()[:, 0]
        system = sigma_block.samples.column("system").cpu().numpy()
        projection = values[PROJECTION_OUTPUT].block().values.detach()
        projection = projection.cpu().double().numpy()
        for k, atoms in enumerate(batch):
            results.append(
                FrameUncertainty(
                    atom_sigma=sigma[system == k],
                    energy_sigma=float(np.linalg.norm(projection[k])),
                    descriptor=projection[k] / len(atoms),
                )
            )
    return results


def _batches(frames: list):
    batch, atoms = [], 0
    for frame in frames:
        if batch and atoms + len(frame) > BATCH_ATOMS:
            yield batch
            batch, atoms = [], 0
        batch.append(frame)
        atoms += len(frame)
    if batch:
        yield batch


# -------------------------------------------------------------------- selecting


def auto_min_distance(descriptors: np.ndarray) -> float:
    """The default diversity distance: the median over the frames of the distance
    to their nearest other frame. Frames of an MD run sit close to the frames just
    before and after them; this skips those and keeps frames apart in time, whatever
    the scale of the model's sigmas."""
    from scipy.spatial import cKDTree

    if len(descriptors) < 2:
        return 0.0
    distances, _ = cKDTree(descriptors).query(descriptors, k=2)
    return float(np.median(distances[:, 1]))


def select_diverse(
    scores: np.ndarray, descriptors: np.ndarray, n: int, min_distance: float
) -> list[int]:
    """Up to ``n`` frames, most uncertain first, none within ``min_distance`` of a
    frame taken before it (greedy; a 0 distance keeps only duplicates out: frames
    equal to DUPLICATE_TOLERANCE, the round-off of a float32 model)."""
    taken: list[int] = []
    for frame in np.argsort(-scores, kind="stable"):
        if len(taken) == n:
            break
        if taken:
            distances = np.linalg.norm(descriptors[taken] - descriptors[frame], axis=1)
            duplicate = DUPLICATE_TOLERANCE * np.linalg.norm(descriptors[frame])
            if distances.min() <= max(min_distance, duplicate):
                continue
        taken.append(int(frame))
    return taken


# ---------------------------------------------------------------------- writing


def unlabelled_copy(atoms, uncertainty: FrameUncertainty, info: dict):
    """The frame as a labeller should get it: elements, positions, cell, periodicity,
    the model's sigmas and where it came from; no energies or forces (the model's,
    or the MD's, are not labels)."""
    from ase import Atoms

    copy = Atoms(
        numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
    )
    copy.info.update(info)
    copy.info["energy_sigma"] = uncertainty.energy_sigma
    copy.info["atom_sigma_max"] = float(uncertainty.atom_sigma.max())
    copy.info["atom_sigma_mean"] = float(uncertainty.atom_sigma.mean())
    copy.arrays["atom_sigma"] = uncertainty.atom_sigma.copy()
    return copy


def write_frames(path: str, frames: list) -> None:
    """extxyz, written atomically (a temporary file renamed onto ``path``)."""
    import ase.io

    from .io import atomic_write

    atomic_write(path, lambda tmp: ase.io.write(tmp, frames, format="extxyz"))
