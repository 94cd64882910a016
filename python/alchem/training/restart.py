"""What ``--restart`` may change: the options and data of a run against its checkpoint.

A restart goes on with the checkpoint's model, optimizer and random-number state; the
options file and the data must be those of the run, or the resumed run silently is
another one (a changed seed or split fraction gives another data split). Every
difference is listed in one message; ``--allow-change KEY,...`` accepts the ones
meant (docs/training.md).
"""

import hashlib
from typing import Any

import torch

from ..data import Structure
from ..errors import ConfigError

# change nothing in the epochs already trained: free on a restart
FREE = {
    "architecture.training.num_epochs",
    "architecture.training.log_interval",
    "architecture.training.checkpoint_interval",
    # applied to the best model after the last epoch
    "uncertainty.method",
    "uncertainty.ensemble_size",
    "uncertainty.regularizer",
}
# bookkeeping that training writes into the options, not options of the user
IGNORED = {"data_summary", "metrics", "uncertainty_fit"}
# the checkpoint's model hyperparameters are used (docs/training.md)
MODEL = "architecture.model"


def data_fingerprint(structures: list[Structure]) -> str:
    """SHA-256 of the structures and their labels, in their order."""
    digest = hashlib.sha256()
    for structure in structures:
        for value in (
            structure.numbers,
            structure.positions,
            structure.cell,
            structure.pbc,
            structure.energy,
            structure.forces,
            structure.virial,
        ):
            if value is None:
                digest.update(b"none")
            elif isinstance(value, torch.Tensor):
                digest.update(str(value.dtype).encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            else:
                digest.update(repr(float(value)).encode())
        digest.update(b"|")
    return digest.hexdigest()


def _flatten(options: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(options, dict) and options:
        flat: dict[str, Any] = {}
        for key, value in options.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: options}


def _matches(path: str, name: str) -> bool:
    """``name`` is the full key path, a key path above it, or its last key."""
    return path == name or path.startswith(name + ".") or path.split(".")[-1] == name


def differences(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """Option key path -> (checkpoint's value, options file's value), model aside."""
    old, new = _flatten(saved), _flatten(current)
    result = {}
    for path in sorted(set(old) | set(new)):
        if path.split(".")[0] in IGNORED or path == MODEL or path.startswith(MODEL):
            continue
        missing = "(not set)"
        if old.get(path, missing) != new.get(path, missing):
            result[path] = (old.get(path, missing), new.get(path, missing))
    return result


def model_differences(saved: dict, current: dict) -> list[str]:
    """Model hyperparameters of the options file that the checkpoint's replace."""
    old = _flatten(saved["architecture"]["model"], MODEL)
    new = _flatten(current["architecture"]["model"], MODEL)
    return sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))


def check_restart(
    flag: str,
    saved_options: dict,
    options: dict,
    saved_data: dict[str, str] | None,
    data: dict[str, str],
    allowed: list[str],
) -> list[str]:
    """Raise a ConfigError listing what differs and is not allowed; return the
    option key paths that differ and are allowed (or free)."""
    changed = differences(saved_options, options)
    for name in data:
        if saved_data is not None and saved_data.get(name) != data[name]:
            changed[name] = ("", "")  # the structures themselves
    refused = [
        path
        for path in changed
        if path not in FREE and not any(_matches(path, a) for a in allowed)
    ]
    if refused:
        parts = []
        for path in refused:
            old, new = changed[path]
            if path in data:
                parts.append(
                    f"{path}: its structures or labels differ (the file changed, or "
                    "seed or the split fractions picked others)"
                )
            else:
                parts.append(f"{path}: {old!r} in the checkpoint, {new!r} now")
        raise ConfigError(
            f"{flag}: the options or data differ from the checkpoint's run: "
            + "; ".join(parts)
            + ". Restart with the run's options file (its run folder has options.yaml), "
            f"or allow the change deliberately: --allow-change {','.join(refused)}"
        )
    return list(changed)
