"""The model of an options file, built in its working precision."""

import contextlib
from collections.abc import Iterator

import torch

from ..architectures import get_architecture
from ..data import DatasetInfo
from ..model import EnergyModel


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly in the working precision (splines keep full accuracy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def precision(options: dict) -> torch.dtype:
    """The working precision: ``base_precision`` 64 or 32."""
    return torch.float64 if options["base_precision"] == 64 else torch.float32


def build_model(options: dict, info: DatasetInfo) -> EnergyModel:
    """An untrained model of the options' architecture for the data's elements."""
    arch = get_architecture(options["architecture"]["name"])
    dtype = precision(options)
    with default_dtype(dtype):
        network = arch.build_model(options["architecture"]["model"], info)
        model = EnergyModel(network, info)
    return model.to(dtype)
