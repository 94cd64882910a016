"""Data: reading labelled structures, neighbour lists, batching, reference data."""

from .dataset import (
    Batch,
    DatasetInfo,
    Structure,
    collate,
    count_targets,
    dataset_info,
    read_structures,
    structure_from_atoms,
)

__all__ = [
    "Batch",
    "DatasetInfo",
    "Structure",
    "collate",
    "count_targets",
    "dataset_info",
    "read_structures",
    "structure_from_atoms",
]
