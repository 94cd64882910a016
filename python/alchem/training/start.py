"""Where a run starts: fresh, restarted from its checkpoint, or fine-tuned from
another run's weights. Data, options and checkpoints are all checked here, before
any file is written."""

import copy
import logging
from dataclasses import dataclass

import torch

from ..contacts import shortest_distances
from ..data import DatasetInfo, dataset_info
from ..errors import ConfigError
from ..model import EnergyModel, fit_composition_and_scale
from .build import build_model
from .checkpoints import load_checkpoint
from .finetune import (
    check_new_elements,
    fine_tuned_options,
    fit_composition,
    fit_new_pairs,
    symbols,
    transfer_weights,
)
from .restart import check_restart, data_fingerprint, model_differences
from .split import Datasets, load_datasets

LOG = logging.getLogger("alchem")


@dataclass
class Start:
    data: Datasets
    info: DatasetInfo
    model: EnergyModel  # initialised, or with the restarted run's weights
    state: dict | None  # the checkpoint of the run restarted
    changed: list[str]  # option keys --allow-change let differ from that run
    fingerprints: dict[str, str]  # of each split (alchem.training.restart)


def prepare(
    options: dict,
    source: str,
    restart: str | None,
    fine_tune: str | None,
    composition: str,
    allow_change: list[str] | None,
) -> Start:
    """The data and the model a run starts from (see ``train`` for the arguments).

    ``options`` take the restarted or fine-tuned checkpoint's model hyperparameters.
    """
    if restart is not None and fine_tune is not None:
        raise ConfigError(
            "give either --restart (go on with a run) or --fine-tune (start a new run "
            "from trained weights), not both"
        )
    state = None if restart is None else _restarted(restart, options)
    tuned = None if fine_tune is None else _fine_tuned(fine_tune, options)
    data = load_datasets(options, source)
    fingerprints = {
        "training_set": data_fingerprint(data.train),
        "validation_set": data_fingerprint(data.validation),
        "test_set": data_fingerprint(data.test),
    }
    changed: list[str] = []
    if state is not None:
        changed = check_restart(
            f"--restart {restart}",
            state["options"],
            options,
            state.get("data_fingerprint"),
            fingerprints,
            allow_change or [],
        )
    info = dataset_info(data.train)
    old_types: list[int] = []
    if state is not None:
        info = DatasetInfo(**state["dataset_info"])
    elif tuned is not None:
        old_types = list(tuned["dataset_info"]["atomic_types"])
        info = _fine_tuned_info(tuned, info, fine_tune, options)
    model = build_model(options, info)
    if state is not None:
        model.load_state_dict(state["model_state"])
    elif tuned is not None:
        _start_from_weights(model, tuned, data, composition, old_types, fine_tune)
    else:
        fit_composition_and_scale(model, data.train)
        seen = shortest_distances(data.train, model.atomic_types)
        model.shortest_distance.copy_(seen)
    return Start(data, info, model, state, changed, fingerprints)


def _restarted(restart: str, options: dict) -> dict:
    """The checkpoint to go on from; ``options`` take its model hyperparameters."""
    state = load_checkpoint(restart)
    if state["options"]["architecture"]["name"] != options["architecture"]["name"]:
        raise ConfigError(
            f"--restart {restart}: the checkpoint is a "
            f"{state['options']['architecture']['name']} model but the options ask "
            f"for {options['architecture']['name']}"
        )
    ignored = model_differences(state["options"], options)
    if ignored:
        LOG.info(
            "restart: the model hyperparameters are the checkpoint's; the options "
            "file's %s are ignored",
            ", ".join(ignored),
        )
    # the checkpoint's model (a fine-tuned one keeps its checkpoint's hypers)
    options["architecture"]["model"] = copy.deepcopy(
        state["options"]["architecture"]["model"]
    )
    return state


def _fine_tuned(fine_tune: str, options: dict) -> dict:
    """The checkpoint whose weights start the run; ``options`` take its model."""
    tuned = load_checkpoint(fine_tune)
    ignored = fine_tuned_options(options, tuned, f"--fine-tune {fine_tune}")
    if ignored:
        LOG.info(
            "fine-tuning: the model hyperparameters are the checkpoint's; the "
            "options file's %s are ignored",
            ", ".join(f"model.{key}" for key in ignored),
        )
    return tuned


def _fine_tuned_info(
    tuned: dict, info: DatasetInfo, fine_tune: str, options: dict
) -> DatasetInfo:
    """The fine-tuned model's elements: the checkpoint's and the data's."""
    old_types = list(tuned["dataset_info"]["atomic_types"])
    new_types = set(info.atomic_types) - set(old_types)
    check_new_elements(
        tuned, new_types, f"--fine-tune {fine_tune}", options["architecture"]["name"]
    )
    return DatasetInfo(
        atomic_types=sorted(set(old_types) | set(info.atomic_types)),
        mean_num_neighbors=tuned["dataset_info"]["mean_num_neighbors"],
    )


def _start_from_weights(
    model: EnergyModel,
    tuned: dict,
    data: Datasets,
    composition: str,
    old_types: list[int],
    fine_tune: str,
) -> None:
    """The fine-tuned checkpoint's best weights, composition kept or refitted."""
    transfer_weights(model, tuned["best_state"], old_types)
    fit_new_pairs(model, data.train, old_types)
    refitted = fit_composition(model, data.train, composition, old_types)
    seen = shortest_distances(data.train, model.atomic_types)
    model.shortest_distance.copy_(torch.minimum(model.shortest_distance, seen))
    added = sorted(set(model.atomic_types) - set(old_types))
    LOG.info(
        "fine-tuning from %s (epoch %d of its run): %s%scomposition energies %s%s",
        fine_tune,
        tuned["best_epoch"],
        f"new elements {symbols(added)}; " if added else "",
        "fresh optimizer, scheduler and best loss; ",
        "refitted for " if refitted else "kept",
        symbols(refitted) if refitted else "",
    )
