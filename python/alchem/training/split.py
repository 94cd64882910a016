"""The training, validation and test sets of an options file."""

import logging
from dataclasses import dataclass

import torch
from ase.data import chemical_symbols

from ..data import Structure, count_targets, read_structures
from ..errors import ConfigError

LOG = logging.getLogger("alchem")
SPLITS = ("training_set", "validation_set", "test_set")


@dataclass
class Datasets:
    train: list[Structure]
    validation: list[Structure]
    test: list[Structure]
    targets: dict  # which of energy/forces/virial are trained


def model_cutoff(options: dict) -> float:
    return float(options["architecture"]["model"]["soap"]["cutoff"])


def load_datasets(options: dict, source: str) -> Datasets:
    """Read training, validation and test sets; split fractions off the training set.

    Also records what was read in ``options["data_summary"]`` (exported with the
    model).
    """
    train, validation, test = _split(options, source)
    _check_elements(train, {"validation_set": validation, "test_set": test}, source)
    counts = {
        name: count_targets(structures)
        for name, structures in zip(SPLITS, (train, validation, test))
    }
    for name, count in counts.items():
        if count["structures"]:
            LOG.info("%s: %s", name, describe_counts(count))
    # a target is trained when any training structure has it; each structure then
    # contributes the labels it has (loss_function, metrics)
    targets = {
        "energy": True,
        "forces": counts["training_set"]["forces"] > 0,
        "virial": counts["training_set"]["virial"] > 0,
    }
    options["data_summary"] = {
        name: {**count, "elements": _elements(structures)}
        for (name, count), structures in zip(counts.items(), (train, validation, test))
    }
    options["data_summary"]["training_set"]["file"] = options["training_set"][
        "systems"
    ]["read_from"]
    return Datasets(train, validation, test, targets)


def _split(
    options: dict, source: str
) -> tuple[list[Structure], list[Structure], list[Structure]]:
    """Validation and test sets: files of their own, or fractions of the training
    set taken from one seeded shuffle (validation first)."""
    cutoff = model_cutoff(options)
    train = read_structures(options["training_set"], cutoff, f"{source}: training_set")
    generator = torch.Generator().manual_seed(options["seed"])
    order = torch.randperm(len(train), generator=generator).tolist()
    shuffled = [train[i] for i in order]
    splits: dict[str, list[Structure]] = {}
    taken = 0
    for name in ("validation_set", "test_set"):
        value = options[name]
        if isinstance(value, float):
            count = max(1, int(round(value * len(train))))
            splits[name] = shuffled[taken : taken + count]
            taken += count
        elif isinstance(value, dict):
            splits[name] = read_structures(value, cutoff, f"{source}: {name}")
        else:
            splits[name] = []
    if any(isinstance(options[n], float) for n in ("validation_set", "test_set")):
        train = shuffled[taken:]
    if len(train) == 0:
        raise ConfigError(f"{source}: no structures left for training after the splits")
    if len(splits["validation_set"]) == 0:
        raise ConfigError(f"{source}: validation_set is empty")
    return train, splits["validation_set"], splits["test_set"]


def _check_elements(
    train: list[Structure], others: dict[str, list[Structure]], source: str
) -> None:
    """The model only learns the training set's elements."""
    known = {int(z) for s in train for z in s.numbers.tolist()}
    for name, structures in others.items():
        extra = {int(z) for s in structures for z in s.numbers.tolist()} - known
        if extra:
            symbols = ", ".join(chemical_symbols[z] for z in sorted(extra))
            raise ConfigError(
                f"{source}: {name} contains elements absent from the training set: "
                f"{symbols}"
            )


def describe_counts(count: dict[str, int]) -> str:
    """'44 structures; energy 44, forces 44, stress 30' (stress: stress or virial)."""
    n = count["structures"]
    return (
        f"{n} structures; energy {count['energy']}, forces {count['forces']}, "
        f"stress {count['virial']}"
    )


def _elements(structures: list[Structure]) -> list[str]:
    numbers = sorted({int(z) for s in structures for z in s.numbers.tolist()})
    return [chemical_symbols[z] for z in numbers]
