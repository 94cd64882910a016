"""ASE calculator for an exported ``model.pt`` (metatomic-ase underneath)."""

import functools
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from . import contacts
from .contacts import CloseContactCheck
from .memory import reuse_freed_memory
from .uncertainty.posterior import UNCERTAINTY_OUTPUTS


def load_calculator(
    model_path: str,
    device: str | None = None,
    extensions: str | None = None,
    malloc_reuse: bool = True,
    uncertainty_threshold: float | None = None,
):
    """A ``MetatomicCalculator`` for ``model_path``, loading the extensions beside it.

    ``device``: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:N"``; default:
    the first device the model supports that torch sees).

    ``extensions`` defaults to the ``extensions/`` folder next to the model, where
    ``alchem-train`` and ``alchem-export`` put the libraries the model needs; the
    installed alchem's own operator library is used first where it matches.

    ``malloc_reuse`` (as the pair style's keyword of that name): glibc's malloc keeps
    freed memory in this process for reuse instead of handing the model's large
    temporaries back to the kernel and page-faulting them in again at every step
    (ASE MD of 2048 atoms, Alchemical Model, float32: 1.3x faster). It applies to
    the whole Python process, from this call on; ``False`` leaves malloc as it is.

    ``uncertainty_threshold`` (eV, metatomic-ase's parameter): for a model with
    uncertainty, every energy evaluation also computes the per-atom energy sigma
    and warns when one exceeds it. Off by default, unlike metatomic-ase's 0.1 eV:
    it made every force call 1.2-1.6x slower (256 atoms, SOAP-BPNN;
    docs/uncertainty.md). The energies and forces are the same either way. ``calculator.get_uncertainty(atoms)`` gives
    the sigmas and the ensemble.
    """
    if malloc_reuse:
        reuse_freed_memory()
    # A model's extensions/ may hold a copy of a library also installed as a Python
    # package (sphericart-torch for models from other tools). If the copy is loaded
    # first, a later import of the package registers the same operators again and
    # aborts the process; importing the package first avoids that.
    try:
        import sphericart.torch  # noqa: F401
    except ImportError:
        pass
    from . import ops
    from .model_files import check_operator

    # alchem::power_spectrum (the CPU kernel both architectures call), from the
    # installed package: metatomic then skips the copy in extensions/
    ops.load()
    check_operator(model_path)

    if extensions is None:
        extensions = os.path.join(
            os.path.dirname(os.path.abspath(model_path)), "extensions"
        )
    calculator = calculator_class()(
        model_path,
        extensions_directory=extensions if os.path.isdir(extensions) else None,
        device=device,
        uncertainty_threshold=uncertainty_threshold,
    )
    calculator.model_path = model_path
    distances = calculator._model.metadata().extra.get(contacts.METADATA_KEY)
    if distances:
        calculator.contacts = CloseContactCheck(contacts.from_metadata(distances))
    return calculator


@functools.cache
def calculator_class() -> type:
    """The calculator's class (defined on first use: metatomic_ase is slow to
    import)."""
    from metatomic_ase import MetatomicCalculator

    class Calculator(MetatomicCalculator):
        """Runs the model with TorchScript's plain executor, as the LAMMPS plugin
        does: the profiling executor re-specialises (and on GPU recompiles fused
        kernels) whenever the number of atoms or pairs changes, i.e. at every MD
        step (H100, 16384 atoms: 2.6x slower steps).

        It also warns once when atoms come closer than the model saw in training
        (alchem.contacts); ``close_contacts`` counts such pairs over all calls."""

        contacts: CloseContactCheck | None = None
        model_path: str = ""

        def calculate(self, atoms=None, *args, **kwargs):
            check_structure(
                atoms if atoms is not None else self.atoms,
                self._model.capabilities().atomic_types,
                self.model_path,
                min(o.cutoff for o in self._model.requested_neighbor_lists()),
            )
            with torch.jit.optimized_execution(False):
                result = super().calculate(atoms, *args, **kwargs)
            if self.contacts is not None and self.atoms is not None:
                self.contacts.check(self.atoms)
            return result

        @property
        def close_contacts(self) -> int:
            return 0 if self.contacts is None else self.contacts.pairs

        def get_uncertainty(self, atoms=None, forces: bool = True) -> "Uncertainty":
            """The model's uncertainty for ``atoms`` (default: the calculator's):
            per-atom and total energy sigma, the ensemble's energies and, with
            ``forces``, its forces and the calibrated force sigma."""
            atoms = atoms if atoms is not None else self.atoms
            check_structure(
                atoms,
                self._model.capabilities().atomic_types,
                self.model_path,
                min(o.cutoff for o in self._model.requested_neighbor_lists()),
            )
            with torch.jit.optimized_execution(False):
                return evaluate_uncertainty(self, atoms, forces)

        def run_model(self, *args, **kwargs):
            with torch.jit.optimized_execution(False):
                return super().run_model(*args, **kwargs)

        def compute_energy(self, *args, **kwargs):
            with torch.jit.optimized_execution(False):
                return super().compute_energy(*args, **kwargs)

    return Calculator


def check_structure(atoms, atomic_types, model_path: str, cutoff: float) -> None:
    """What the model can not evaluate, as one ValueError saying what is wrong (not
    an error from deep inside the neighbour list or the model, nor a silent NaN)."""
    import numpy as np
    from ase.data import chemical_symbols
    from scipy.spatial import cKDTree

    from .data.dataset import MIN_DISTANCE, check_cell_size, check_extent

    if atoms is None or len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    positions = atoms.positions
    if not np.all(np.isfinite(positions)):
        index = int(np.flatnonzero(~np.all(np.isfinite(positions), axis=1))[0])
        raise ValueError(
            f"atom {index} has a non-finite position {positions[index].tolist()}"
        )
    if np.any(atoms.pbc):
        cell = atoms.cell.array
        if not np.all(np.isfinite(cell)):
            raise ValueError(f"the cell is not finite: {cell.tolist()}")
        check_cell_size(cell, np.asarray(atoms.pbc), len(atoms))
    check_extent(positions, atoms.cell.array, np.asarray(atoms.pbc), cutoff)
    unknown = sorted(set(atoms.numbers.tolist()) - {int(z) for z in atomic_types})
    if unknown:
        raise ValueError(
            f"element {' '.join(chemical_symbols[z] for z in unknown)} is not "
            f"supported by the model {model_path}, which knows: "
            f"{' '.join(chemical_symbols[int(z)] for z in sorted(atomic_types))}"
        )
    wrapped = atoms.get_positions(wrap=True) if np.any(atoms.pbc) else positions
    pairs = cKDTree(wrapped).query_pairs(MIN_DISTANCE, output_type="ndarray")
    if len(pairs):
        i, j = pairs[0]
        distance = np.linalg.norm(wrapped[i] - wrapped[j])
        raise ValueError(
            f"atoms {i} and {j} are {distance:.3g} Å apart (below {MIN_DISTANCE} Å, "
            "a duplicated atom?)"
        )


@dataclass
class Uncertainty:
    """A structure's uncertainty from a model with LLPR (eV, eV/Å); the ensemble
    comes in antithetic pairs, so its mean is the model's energy and forces."""

    atom_sigma: np.ndarray  # [atoms]: sigma of each atom's energy
    energy_sigma: float  # sigma of the total energy
    energy_ensemble: np.ndarray  # [M]: the members' total energies
    forces_ensemble: np.ndarray | None  # [M, atoms, 3]: the members' forces
    force_sigma: np.ndarray | None  # [atoms, 3]: kappa x the members' spread
    force_factor: float  # kappa (the model's metadata)


def force_factor(calculator) -> float:
    """kappa, from the model's metadata ``alchem.uncertainty``; a ValueError
    saying how to add uncertainty when the model has none."""
    outputs = calculator._model.capabilities().outputs
    extra = calculator._model.metadata().extra.get("alchem.uncertainty")
    if not extra or any(name not in outputs for name in UNCERTAINTY_OUTPUTS):
        raise ValueError(
            f"the model {calculator.model_path or '(this model)'} has no uncertainty: "
            "add it with alchem-uncertainty model.ckpt (or uncertainty: {method: "
            "llpr} in the training options)"
        )
    return float(json.loads(extra).get("force_factor", 1.0))


def ensemble_gradients(ensemble: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """d E_m / d positions of every member, [M, atoms, 3]. The members come in
    antithetic pairs (alchem.uncertainty.llpr: E_m = E + o_m and E_{m + M/2} =
    E - o_m), so the gradients of E and of the M/2 offsets give all M: M/2 + 1
    backward passes instead of M. A model whose ensemble is not paired that way
    gets one backward pass per member."""
    count = ensemble.shape[0]
    half = count // 2
    mean = ensemble.mean()
    offsets = 0.5 * (ensemble[:half] - ensemble[half:])
    # pairs to rounding: the members' energies are sums of atoms' in the model's
    # precision (float32 or float64)
    scale = max(float(ensemble.detach().abs().max()), 1.0)
    tolerance = 1e3 * torch.finfo(ensemble.dtype).eps * scale
    paired = count % 2 == 0 and bool(
        (ensemble[:half] - offsets - mean).abs().max() <= tolerance
    )
    if not paired:
        return torch.stack(
            [
                torch.autograd.grad(e, positions, retain_graph=m < count - 1)[0]
                for m, e in enumerate(ensemble)
            ]
        ).detach()
    (centre,) = torch.autograd.grad(mean, positions, retain_graph=True)
    spreads = [
        torch.autograd.grad(o, positions, retain_graph=m < half - 1)[0]
        for m, o in enumerate(offsets)
    ]
    spread = torch.stack(spreads)
    return torch.cat([centre + spread, centre - spread]).detach()


def evaluate_uncertainty(calculator, atoms, forces: bool) -> Uncertainty:
    """One model call for the per-atom sigma, the total's sigma (the norm of the
    additive projection s R) and the ensemble's energies; the members' forces by
    autograd (``ensemble_gradients``: M/2 + 1 backward passes)."""
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System
    from metatomic_ase._calculator import _ase_to_torch_data, _get_ase_input

    kappa = force_factor(calculator)
    types, positions, cell, pbc = _ase_to_torch_data(
        atoms=atoms, dtype=calculator._dtype, device=calculator._device
    )
    positions.requires_grad_(forces)
    system = calculator._nl_calculators.compute(
        systems=[System(types, positions, cell, pbc)]
    )[0]
    for name, option in calculator._model.requested_inputs(use_new_names=True).items():
        system.add_data(
            name,
            _get_ase_input(
                atoms, name, option, dtype=calculator._dtype, device=calculator._device
            ),
        )
    outputs = {
        "energy_uncertainty": ModelOutput(unit="eV", sample_kind="atom"),
        "energy_ensemble": ModelOutput(unit="eV", sample_kind="system"),
        "alchem::energy_uncertainty_projection": ModelOutput(sample_kind="system"),
    }
    result = calculator._model(
        [system],
        ModelEvaluationOptions(length_unit="angstrom", outputs=outputs),
        check_consistency=calculator.parameters["check_consistency"],
    )
    ensemble = result["energy_ensemble"].block().values[0]  # [M]
    projection = result["alchem::energy_uncertainty_projection"].block().values[0]
    members = None
    force_sigma = None
    if forces:
        members = -ensemble_gradients(ensemble, positions).double().cpu().numpy()
        spread = np.sqrt(np.mean((members - members.mean(axis=0)) ** 2, axis=0))
        force_sigma = kappa * spread
    return Uncertainty(
        atom_sigma=result["energy_uncertainty"]
        .block()
        .values[:, 0]
        .detach()
        .double()
        .cpu()
        .numpy(),
        energy_sigma=float(torch.linalg.vector_norm(projection.detach().double())),
        energy_ensemble=ensemble.detach().double().cpu().numpy(),
        forces_ensemble=members,
        force_sigma=force_sigma,
        force_factor=kappa,
    )
