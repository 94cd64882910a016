"""glibc malloc's policy for large blocks: keep freed memory for reuse.

By default glibc serves blocks above a dynamic threshold (128 kB up to 32 MiB) with
``mmap`` and unmaps them when they are freed, and gives the heap's free top back to
the kernel. A model step allocates and frees the same large tensors every time, so
each step page-faults them in afresh (training SOAP-BPNN on 8 cells: about 10^4
faults per step, 15 % of its time).

The policy, one for every engine of this project:

- ``M_MMAP_MAX = 0``: no block is served by ``mmap``; all come from the heap and are
  reused. (A 32 MiB ``M_MMAP_THRESHOLD`` instead still maps every block above it, as
  SOAP-BPNN's feature matrices of a few hundred MB are: see docs/training.md for the
  measured page faults.)
- ``M_TRIM_THRESHOLD = -1``: the heap's free top is never given back.
- ``M_TOP_PAD = 64 MiB``: the heap grows in steps of 64 MiB.

The cost is that the process keeps its peak memory resident, which a training run or
an MD run reaches again at every step anyway. ``alchem-train`` applies it always,
``load_calculator(malloc_reuse=True)`` (the default) applies it for ASE, and the
LAMMPS pair style's ``malloc_reuse on`` (its default) sets the same three values in
C++ (lammps-plugin/pair_alchemical.cpp).
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
POLICY = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: -1, M_TOP_PAD: 64 << 20}


def reuse_freed_memory() -> bool:
    """Apply the policy to this whole process, from now on.

    False where the C library is not glibc (nothing done).
    """
    path = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(path).mallopt if path else None
    except (OSError, AttributeError):  # no C library by that name, or not glibc
        mallopt = None
    if mallopt is None:
        return False
    for parameter, value in POLICY.items():
        mallopt(parameter, value)
    return True
