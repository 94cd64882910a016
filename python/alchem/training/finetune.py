"""Fine-tuning: start from a checkpoint's best weights on new data.

``alchem-train options.yaml --fine-tune model.ckpt`` keeps the checkpoint's
architecture and hyperparameters, and starts a fresh optimizer, scheduler and best
loss on the options file's data. Elements the checkpoint never saw are added for the
Alchemical Model (whose only per-element weights are the columns of its compression
matrix W, with centres compressed too): each new element gets a column of W (the
mean of the known columns: an "average element" to start from), pair-potential
weights for its element pairs fitted to the new data's forces (the known pairs kept)
and a composition energy fitted on the new data.
"""

import copy

import torch
from ase.data import chemical_symbols

from ..errors import ConfigError
from ..model import UNCERTAINTY_BUFFERS, EnergyModel, _ridge
from ..pair_potential import (
    fit_pair_potential,
    pair_energies_and_forces,
    pair_index,
)


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
    pair-potential weights 0 (``fit_new_pairs`` fits them) and no shortest
    distances."""
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
        elif key == "pair.weights" and target.shape != value.shape:
            target.zero_()
            _place_pairs(target, value.to(target.dtype), old_index, model)
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


def _place_pairs(
    target: torch.Tensor, value: torch.Tensor, old_index: list[int], model: EnergyModel
) -> None:
    """The old element pairs' rows of the pair potential at their new rows."""
    n_old, n_new = len(old_index), len(model.atomic_types)
    if value.numel() == 0:
        return
    old_rows = pair_index(n_old).reshape(n_old, n_old)
    new_rows = model.pair.pair_index.reshape(n_new, n_new)
    for a in range(n_old):
        for b in range(a, n_old):
            target[new_rows[old_index[a], old_index[b]]] = value[old_rows[a, b]]


def fit_new_pairs(model: EnergyModel, structures, old_types: list[int]) -> None:
    """Pair-potential weights of the element pairs with a new element, by ridge
    regression on the new data's forces; the known pairs keep theirs."""
    n = len(model.atomic_types)
    if model.pair.basis_size == 0 or n == len(old_types):
        return
    new = torch.tensor([z not in old_types for z in model.atomic_types])
    rows = model.pair.pair_index.reshape(n, n)
    free = torch.zeros(model.pair.weights.shape[0], dtype=torch.bool)
    free[rows[new].reshape(-1)] = True
    fit_pair_potential(
        model.pair, structures, lambda s: model.type_to_index[s.numbers], n, free
    )


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
    # what the pair potential leaves
    energies = energies - torch.tensor(
        [
            pair_energies_and_forces(model.pair, s, model.type_to_index[s.numbers])[0]
            for s in structures
        ],
        dtype=torch.float64,
    )
    composition = model.composition.detach().double()
    residual = energies - counts[:, ~free] @ composition[~free]
    fitted = _ridge(counts[:, free], residual)
    updated = composition.clone()
    updated[free] = fitted
    model.composition.copy_(updated.to(model.composition.dtype))
    return [z for z, f in zip(types, free.tolist(), strict=True) if f]
