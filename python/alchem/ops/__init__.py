"""The project's TorchScript extension: ``alchem::power_spectrum``.

``alchemical_ops.cpp`` and ``kernel.h`` (next to this file) compute the features of
both architectures and their gradient with respect to the pair vectors in one CPU
kernel. pip compiles them into ``libalchem_ops.so`` (the CMake target
``alchem_ops``) in the package's ``lib/`` folder (``alchem.native``). Users of the
library:

- Python: ``load()`` registers the operator (models built while it is loaded use
  the kernel; ``alchem.calculator`` loads it before a model).
- Exported models that call it declare it as a metatomic extension: ``alchem-train``
  and ``alchem-export`` copy it to ``extensions/`` beside ``model.pt``, where any
  metatomic engine loads it (``extensions_directory``).
- The LAMMPS pair style links it.

Without the library, models use their torch operations, which give the same
numbers. ``ALCHEM_NO_KERNEL=1`` in the environment keeps new models on the torch
operations, for comparisons.
"""

import os
import warnings

import torch

from .. import native

OPERATOR = "alchem::power_spectrum"

_loaded: bool | None = None


def library_path() -> str:
    return os.path.realpath(native.library_directory() / native.OPS_LIBRARY)


def load() -> bool:
    """Register ``torch.ops.alchem.*`` once; False (with a warning that says why and
    how to fix it) where the library is missing or does not match torch."""
    global _loaded
    if _loaded is None:
        _loaded = False
        path = library_path()
        if not os.path.isfile(path):
            return False
        mismatch = native.torch_mismatch()
        if mismatch is not None:
            warnings.warn(
                f"{mismatch}; until then models run on their torch operations",
                stacklevel=2,
            )
            return False
        try:
            torch.ops.load_library(path)
        except (OSError, RuntimeError) as error:
            warnings.warn(
                f"{path} could not be loaded ({error}); models run on their torch "
                f"operations. Rebuild it with: {native.REBUILD}",
                stacklevel=2,
            )
            return False
        _loaded = True
    return _loaded


def schema() -> str:
    """The operator's signature in this build ('' where it is not loaded): exported
    models record it, loaders compare it (``check_model_schema``)."""
    if not load():
        return ""
    return "\n".join(str(s) for s in torch._C._jit_get_schemas_for_operator(OPERATOR))


def kernel_enabled() -> bool:
    """Whether models built now use the kernel (library present, not disabled)."""
    return os.environ.get("ALCHEM_NO_KERNEL", "") in ("", "0") and load()
