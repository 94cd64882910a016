"""ASE calculator for an exported ``model.pt`` (metatomic-ase underneath)."""

import ctypes
import ctypes.util
import os

import torch

from . import contacts
from .contacts import CloseContactCheck


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
        _reuse_freed_memory()
    # A model's extensions/ may hold a copy of a library also installed as a Python
    # package (sphericart-torch for models from other tools). If the copy is loaded
    # first, a later import of the package registers the same operators again and
    # aborts the process; importing the package first avoids that.
    try:
        import sphericart.torch  # noqa: F401
    except ImportError:
        pass
    from metatomic_ase import MetatomicCalculator

    from . import ops
    from .model_files import check_operator

    # alchem::power_spectrum (the CPU kernel both architectures call), from the
    # installed package: metatomic then skips the copy in extensions/
    ops.load()
    check_operator(model_path)

    class Calculator(MetatomicCalculator):
        """Runs the model with TorchScript's plain executor, as the LAMMPS plugin
        does: the profiling executor re-specialises (and on GPU recompiles fused
        kernels) whenever the number of atoms or pairs changes, i.e. at every MD
        step (H100, 16384 atoms: 2.6x slower steps).

        It also warns once when atoms come closer than the model saw in training
        (alchem.contacts); ``close_contacts`` counts such pairs over all calls."""

        contacts: CloseContactCheck | None = None

        def calculate(self, *args, **kwargs):
            with torch.jit.optimized_execution(False):
                result = super().calculate(*args, **kwargs)
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

    if extensions is None:
        extensions = os.path.join(
            os.path.dirname(os.path.abspath(model_path)), "extensions"
        )
    calculator = Calculator(
        model_path,
        extensions_directory=extensions if os.path.isdir(extensions) else None,
        device=device,
    )
    distances = calculator._model.metadata().extra.get(contacts.METADATA_KEY)
    if distances:
        calculator.contacts = CloseContactCheck(contacts.from_metadata(distances))
    return calculator


def _reuse_freed_memory() -> bool:
    """mallopt as ``malloc_reuse on`` does in the pair style: no mmap for large
    blocks, no trimming of the heap's top, which grows in steps of 64 MB. False
    where the C library is not glibc (nothing done)."""
    path = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(path).mallopt if path else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, -1)  # never trim
    mallopt(M_TOP_PAD, 64 << 20)
    return True
