"""ASE calculator for an exported ``model.pt`` (metatomic-ase underneath)."""

import functools
import os

import torch

from . import contacts
from .contacts import CloseContactCheck
from .memory import reuse_freed_memory


def load_calculator(
    model_path: str,
    device: str | None = None,
    extensions: str | None = None,
    malloc_reuse: bool = True,
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
