"""Atomic file writes: a temporary file in the same folder, then a rename.

An interrupted run never leaves a half-written checkpoint, model or log behind: the
data is flushed to disk (``fsync``) before the rename, and the folder after it, so
that even a power loss leaves either the old file or the whole new one.
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
    _fsync_folder(folder)  # and the new name is on disk too (power loss)


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: str) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that can not be opened (not on every platform)
        return
    try:
        os.fsync(handle)
    except OSError:  # file systems that do not sync folders
        pass
    finally:
        os.close(handle)


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)

    atomic_write(path, write)
