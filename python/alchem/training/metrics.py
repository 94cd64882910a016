"""The loss, the reference values, predictions over a set, and error metrics."""

from dataclasses import dataclass

import torch

from ..data import Structure, collate
from ..model import EnergyModel, predict

# the error metrics of each split in metrics.csv, in this order
METRIC_NAMES = ["energy_rmse", "energy_mae", "forces_rmse", "forces_mae", "stress_rmse"]


def loss_function(
    prediction: dict, batch, targets: dict, weights: dict, per_structure_energy: bool
) -> torch.Tensor:
    """Weighted MSE; ``batch`` is a Batch or References (same attribute names).

    Each term averages over the structures (and their components) that have that
    label: a batch of slabs without stress adds no stress term.
    """
    n_atoms = batch.n_atoms.to(prediction["energy"].dtype)
    if per_structure_energy:
        loss = weights["energy"] * _mse(prediction["energy"], batch.energy)
    else:
        loss = weights["energy"] * _mse(
            prediction["energy"] / n_atoms, batch.energy / n_atoms
        )
    if targets["forces"] and batch.forces is not None:
        atoms_with_forces = torch.repeat_interleave(batch.has_forces, batch.n_atoms)
        loss = loss + weights["forces"] * _mse(
            prediction["forces"], batch.forces, atoms_with_forces
        )
    if targets["virial"] and batch.virial is not None:
        per_atom = n_atoms.reshape(-1, 1, 1)
        loss = loss + weights["stress"] * _mse(
            prediction["virial"] / per_atom, batch.virial / per_atom, batch.has_virial
        )
    return loss


def _mse(
    a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the rows selected by ``rows`` (bool), or all rows."""
    if rows is not None and not bool(rows.all()):
        a, b = a[rows], b[rows]
    return (a - b).pow(2).mean()


@dataclass
class References:
    """Reference values of a set of structures, concatenated in their order."""

    energy: torch.Tensor  # [n_structures]
    n_atoms: torch.Tensor  # [n_structures]
    volumes: torch.Tensor  # [n_structures] (nan without a periodic cell)
    forces: torch.Tensor | None  # [n_atoms, 3], zeros where has_forces is False
    virial: torch.Tensor | None  # [n_structures, 3, 3], zeros where not has_virial
    has_forces: torch.Tensor  # [n_structures] bool
    has_virial: torch.Tensor  # [n_structures] bool

    @staticmethod
    def of(structures: list[Structure]) -> "References":
        batch = collate(structures)
        return References.of_batch(batch)

    @staticmethod
    def of_batch(batch) -> "References":
        volumes = torch.det(batch.cells.double()).abs()
        volumes = torch.where(volumes > 0, volumes, torch.nan)
        return References(
            energy=batch.energy.detach().double().cpu(),
            n_atoms=batch.n_atoms.cpu(),
            volumes=volumes.cpu(),
            forces=None if batch.forces is None else batch.forces.double().cpu(),
            virial=None if batch.virial is None else batch.virial.double().cpu(),
            has_forces=batch.has_forces.cpu(),
            has_virial=batch.has_virial.cpu(),
        )

    @staticmethod
    def cat(parts: list["References"]) -> "References":
        def join(name: str, rows: list[torch.Tensor]) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            # a part without any such label: zeros, masked out by has_*
            shape = {"forces": (3,), "virial": (3, 3)}.get(name, ())
            return torch.cat(
                [
                    torch.zeros(len(r), *shape, dtype=torch.float64) if v is None else v
                    for v, r in zip(values, rows, strict=True)
                ]
            )

        structures = [p.n_atoms for p in parts]
        atoms = [torch.zeros(int(p.n_atoms.sum())) for p in parts]
        return References(
            energy=join("energy", structures),
            n_atoms=join("n_atoms", structures),
            volumes=join("volumes", structures),
            forces=join("forces", atoms),
            virial=join("virial", structures),
            has_forces=join("has_forces", structures),
            has_virial=join("has_virial", structures),
        )


def evaluate(
    model: EnergyModel,
    structures: list[Structure],
    targets: dict,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Predictions for every structure, concatenated (float64, on the CPU)."""
    collected: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(structures), batch_size):
        batch = collate(structures[start : start + batch_size]).to(device, dtype)
        out = predict(model, batch, forces=targets["forces"], virial=targets["virial"])
        collected.append(detach(out))
    return concatenate(collected)


def detach(prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Energy, forces and virial of a prediction: float64 on the CPU, no graph."""
    keys = ("energy", "forces", "virial")
    return {k: prediction[k].detach().double().cpu() for k in keys if k in prediction}


def concatenate(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def metrics(
    predictions: dict[str, torch.Tensor], reference: References, targets: dict
) -> dict[str, float]:
    """RMSE and MAE: energy in meV/atom, forces in meV/Å, stress in meV/Å^3.

    Forces and stress over the structures that have them; absent when none has.
    """
    result: dict[str, float] = {}
    error = (predictions["energy"] - reference.energy) / reference.n_atoms * 1000
    result["energy_rmse"] = float(error.pow(2).mean().sqrt())
    result["energy_mae"] = float(error.abs().mean())
    atoms_with_forces = torch.repeat_interleave(reference.has_forces, reference.n_atoms)
    if targets["forces"] and reference.forces is not None:
        error = (predictions["forces"] - reference.forces)[atoms_with_forces] * 1000
        result["forces_rmse"] = float(error.pow(2).mean().sqrt())
        result["forces_mae"] = float(error.abs().mean())
    # stress needs a volume: periodic structures with a stress (or virial) label
    with_stress = reference.has_virial & torch.isfinite(reference.volumes)
    if targets["virial"] and reference.virial is not None and bool(with_stress.any()):
        volumes = reference.volumes.reshape(-1, 1, 1)
        error = (predictions["virial"] - reference.virial) / volumes * 1000  # -W/V
        error = error[with_stress]
        result["stress_rmse"] = float(error.pow(2).mean().sqrt())
        result["stress_mae"] = float(error.abs().mean())
    return result


def format_metrics(name: str, values: dict[str, float]) -> str:
    """'val E 1.20/0.90 meV/atom, F 50.1/38.2 meV/Å, S 0.123 meV/Å³' (RMSE/MAE)."""
    parts = [
        f"{name} E {values['energy_rmse']:.2f}/{values['energy_mae']:.2f} meV/atom"
    ]
    if "forces_rmse" in values:
        parts.append(f"F {values['forces_rmse']:.1f}/{values['forces_mae']:.1f} meV/Å")
    if "stress_rmse" in values:
        parts.append(f"S {values['stress_rmse']:.3f} meV/Å³")
    return ", ".join(parts)
