"""Registry of model architectures.

Each architecture is a folder holding its model code, its default hyperparameters
(``default-hypers.yaml``) and its documentation, the way metatrain lays them out. A
folder's ``__init__.py`` provides:

- ``NAMES``: the names accepted in ``architecture.name``;
- ``default_hypers()``: the defaults as a nested dict (``model`` and ``training``);
- ``ONE_OF``: option paths whose value is ``{VariantName: {...}}``, with each
  variant's defaults;
- ``normalize_hypers(model: dict) -> dict``: accepts alternative spellings;
- ``check_hypers(model: dict, where: str)``: range checks, raising ``ConfigError``;
- ``build_model(model: dict, info: DatasetInfo) -> torch.nn.Module``: the network
  that maps (species index, edge vectors, centres, neighbours) to one dimensionless
  number per atom.
"""

import importlib
from types import ModuleType

from ..errors import ConfigError

_MODULES = ("soap_bpnn", "alchemical_model")


def available() -> dict[str, ModuleType]:
    """Map every accepted architecture name to its module."""
    names: dict[str, ModuleType] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        if not hasattr(module, "NAMES"):
            continue  # an architecture still being written
        for name in module.NAMES:
            names[name] = module
    return names


def get_architecture(name: str, where: str = "architecture.name") -> ModuleType:
    modules = available()
    if name not in modules:
        allowed = ", ".join(sorted(modules))
        raise ConfigError(f"{where}: unknown architecture {name!r}; allowed: {allowed}")
    return modules[name]
