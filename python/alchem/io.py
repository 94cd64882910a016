"""Atomic file writes: a temporary file in the same folder, then a rename.

An interrupted run never leaves a half-written checkpoint, model or log behind.
"""

import os
import tempfile
from collections.abc import Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(
        dir=folder, prefix=".tmp-", suffix=os.path.basename(path)
    )
    os.close(handle)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    try:
        write(tmp)
        _fsync(tmp)  # the data is on disk before the name points to it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)

    atomic_write(path, write)
