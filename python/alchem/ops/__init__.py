"""The project's TorchScript extension: ``alchem::power_spectrum``.

``alchemical_ops.cpp`` and ``kernel.h`` (next to this file) compute the features of
both architectures and their gradient with respect to the pair vectors in one CPU kernel; the build of
the LAMMPS plugin (CMakeLists.txt) compiles it into ``libalchem_ops.so`` beside the
plugin (``alchem/lib``, or ``$ALCHEM_PLUGIN_DIR``). The pair style links that
library, so LAMMPS always has the operator; in Python ``load()`` registers it.
Without the library (a pip install without the CMake build) models use their torch
operations, which give the same numbers.

``ALCHEM_NO_KERNEL=1`` in the environment keeps new models (and exports) on the
torch operations, for comparisons.
"""

import os
import warnings

import torch

from ..lammps import plugin_directory

LIBRARY_NAME = "libalchem_ops.so"

_loaded: bool | None = None


def library_path() -> str:
    return os.path.realpath(os.path.join(plugin_directory(), LIBRARY_NAME))


def load() -> bool:
    """Register ``torch.ops.alchem.*`` once; False where the library is not built."""
    global _loaded
    if _loaded is None:
        _loaded = False
        path = library_path()
        if os.path.isfile(path):
            try:
                torch.ops.load_library(path)
            except (OSError, RuntimeError) as error:
                # e.g. built against another torch than the one installed now
                warnings.warn(
                    f"{path} could not be loaded ({error}); the Alchemical Model "
                    "runs on its torch operations. Rebuild it with `make plugin`.",
                    stacklevel=2,
                )
                return False
            # metatomic's save(collect_extensions=...) copies every library in
            # this set next to the model it saves, whatever the model calls; the
            # pair style links this one and alchem.calculator loads it, so no
            # model needs a copy (and metatomic refuses to copy a library that
            # lives outside site-packages)
            loaded = torch.ops.loaded_libraries
            loaded.difference_update({p for p in loaded if os.path.realpath(p) == path})
            _loaded = True
    return _loaded


def kernel_enabled() -> bool:
    """Whether models built now use the kernel (library present, not disabled)."""
    return os.environ.get("ALCHEM_NO_KERNEL", "") in ("", "0") and load()
