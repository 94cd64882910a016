"""Fine-tuning: start from a checkpoint's best weights on new data.

``alchem-train options.yaml --fine-tune model.ckpt`` keeps the checkpoint's
architecture and hyperparameters, and starts a fresh optimizer, scheduler and best
loss on the options file's data. Elements the checkpoint never saw are added for the
Alchemical Model (whose only per-element weights are the columns of its compression
matrix W, with centres compressed too): each new element gets a column of W (the
mean of the known columns: an "average element" to start from) and a composition
energy fitted on the new data.
"""

import copy

import torch
from ase.data import chemical_symbols

from ..errors import ConfigError
from ..model import UNCERTAINTY_BUFFERS, EnergyModel, _ridge


def symbols(types) -> str:
    return " ".join(chemical_symbols[z] for z in sorted(types))


def fine_tuned_options(options: dict, state: dict, flag: str) -> list[str]:
    """Take the checkpoint's architecture hyperparameters into ``options``; returns
    the model hyperparameters of the options file that differ (ignored)."""
    old = state["options"]["architecture"]
    if old["name"].split(".")[-1] != options["architecture"]["name"].split(".")[-1]:
        raise ConfigError(
            f"{flag}: the checkpoint's architecture is {old['name']} but the options "
            f"ask for {options['architecture']['name']}"
        )
    differ = sorted(
        key
        for key in set(old["model"]) | set(options["architecture"]["model"])
        if old["model"].get(key) != options["architecture"]["model"].get(key)
    )
    options["architecture"]["model"] = copy.deepcopy(old["model"])
    return differ


def check_new_elements(
    state: dict, new_types: set[int], flag: str, architecture: str
) -> None:
    """Only the Alchemical Model with compressed centres can take new elements."""
    if not new_types:
        return
    known = state["dataset_info"]["atomic_types"]
    what = (
        f"{flag}: the training set has elements the checkpoint never saw "
        f"({symbols(new_types)}; it knows {symbols(known)})"
    )
    if architecture.split(".")[-1] != "alchemical_model":
        raise ConfigError(
            f"{what}: {architecture} has weights per element pair and can not add "
            "elements; train it from scratch, or use alchemical_model"
        )
    if not state["options"]["architecture"]["model"]["soap"]["contract_center_species"]:
        raise ConfigError(
            f"{what}: new elements need soap.contract_center_species: true (the "
            "checkpoint has a network per element)"
        )


def transfer_weights(
    model: EnergyModel, weights: dict[str, torch.Tensor], old_types: list[int]
) -> None:
    """Copy ``weights`` (a state dict for ``old_types``) into ``model``, whose
    element list may be longer; new elements get W's mean column, composition 0,
    and no shortest distances."""
    old_index = [model.atomic_types.index(z) for z in old_types]
    columns = torch.tensor(old_index)
    state = model.state_dict()
    for key, value in weights.items():
        target = state[key]
        if key == "type_to_index":
            continue  # built for the new element list
        if key in UNCERTAINTY_BUFFERS:
            continue  # fitted for the old weights: refitted after training, if asked
        if key == "architecture.compression":
            target.copy_(value.mean(1, keepdim=True).expand_as(target))
            target[:, columns] = value.to(target.dtype)
        elif key == "composition":
            target.zero_()
            target[columns] = value.to(target.dtype)
        elif key == "shortest_distance":
            target.fill_(float("inf"))
            target[columns.unsqueeze(1), columns.unsqueeze(0)] = value.to(target.dtype)
        elif target.shape != value.shape:
            raise ConfigError(
                f"the checkpoint's {key} has shape {tuple(value.shape)}, the model "
                f"needs {tuple(target.shape)}"
            )
        else:
            target.copy_(value)
    model.load_state_dict(state)


def fit_composition(
    model: EnergyModel, structures, mode: str, old_types: list[int]
) -> list[int]:
    """Least-squares composition energies on the new data, for the elements new to
    the model (``keep``) or for every element in the new data (``refit``); the
    others keep theirs. Returns the atomic numbers refitted."""
    types = model.atomic_types
    counts = torch.zeros(len(structures), len(types), dtype=torch.float64)
    for row, structure in enumerate(structures):
        index = model.type_to_index[structure.numbers]
        counts[row] = torch.bincount(index, minlength=len(types)).double()
    present = counts.sum(0) > 0
    if mode == "refit":
        free = present
    else:
        free = torch.tensor([z not in old_types for z in types]) & present
    if not bool(free.any()):
        return []
    energies = torch.tensor([s.energy for s in structures], dtype=torch.float64)
    composition = model.composition.detach().double()
    residual = energies - counts[:, ~free] @ composition[~free]
    fitted = _ridge(counts[:, free], residual)
    updated = composition.clone()
    updated[free] = fitted
    model.composition.copy_(updated.to(model.composition.dtype))
    return [z for z, f in zip(types, free.tolist(), strict=True) if f]
