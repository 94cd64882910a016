"""Checkpoint files: what they hold, atomic saving, safe loading, the model inside.

A checkpoint holds everything needed to resume bit-for-bit: options, model,
optimizer, scheduler, random-number states, the best model so far and the loop's
bookkeeping (``Loop.bookkeeping``).
"""

import copy
import os
import pickle
import re

import torch

from ..data import DatasetInfo
from ..errors import ConfigError
from ..io import atomic_write
from ..model import EnergyModel
from ..model_files import require_checkpoint
from .build import build_model

CHECKPOINT_FORMAT = "alchem-checkpoint-1"


def checkpoint(
    options: dict,
    info: DatasetInfo,
    model: EnergyModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    shuffle: torch.Generator,
    bookkeeping: dict,
) -> dict:
    """A snapshot of a run (copies: training may go on after it)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "options": options,
        "dataset_info": {
            "atomic_types": info.atomic_types,
            "mean_num_neighbors": info.mean_num_neighbors,
        },
        "model_state": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        **bookkeeping,
    }


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """Written whole or not at all (alchem.io.atomic_write: fsync, rename)."""
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path: str) -> dict:
    """A checkpoint's dict; ConfigError for a missing, foreign or unreadable file."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: checkpoint not found")
    require_checkpoint(path)  # model.pt, truncated or foreign files: what to give
    try:
        # tensors, dicts, lists, numbers and strings only: no code runs on loading
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise ConfigError(
            f"{path}: the checkpoint holds an object{what} other than tensors, "
            "numbers, strings, lists and dicts, which an alchem checkpoint never does; "
            "not loaded, since loading it could run code"
        ) from None
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {first_line})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not an alchem checkpoint")
    return state


def model_from_checkpoint(path: str, best: bool = True) -> tuple[EnergyModel, dict]:
    """The model stored in a checkpoint (the best one by default) and its options."""
    state = load_checkpoint(path)
    info = DatasetInfo(**state["dataset_info"])
    model = build_model(state["options"], info)
    model.load_state_dict(state["best_state"] if best else state["model_state"])
    model.eval()
    return model, state["options"]
