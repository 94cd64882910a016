"""Registry of model architectures.

Each architecture is a folder holding its model code and its default
hyperparameters (``default-hypers.yaml``), the way metatrain lays them out; its
documentation is docs/architectures/<folder>.md (with the rest of the user docs).
Code both use: ``folded_head.py`` (the LayerNorm-folded first layer) and
``checkpoints.py`` (loading checkpoints of earlier versions). A folder's
``__init__.py`` provides:

- ``NAMES``: the names accepted in ``architecture.name``;
- ``DEFAULT_PRECISION``: ``base_precision`` (32 or 64) where the options give none;
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
import importlib.util
from types import ModuleType

from ..errors import ConfigError

_MODULES = ("soap_bpnn", "alchemical_model")

# What training each architecture imports beyond the core package: (module,
# distribution), installed by the extra of the architecture's name
# (pyproject.toml: `pip install "alchem[soap-bpnn]"`).
TRAINING_PACKAGES = {
    "soap_bpnn": [("spex", "torch-spex"), ("sphericart.torch", "sphericart-torch")],
    "alchemical_model": [
        ("spex", "torch-spex"),
        ("sphericart.torch", "sphericart-torch"),
        ("physical_basis", "physical-basis"),
    ],
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


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
    module = modules[name]
    folder = module.__name__.rsplit(".", 1)[1]
    missing = [
        package
        for importable, package in TRAINING_PACKAGES.get(folder, [])
        if not _installed(importable)
    ]
    if missing:
        extra = folder.replace("_", "-")
        raise ConfigError(
            f"{where}: training {name} needs {', '.join(missing)}, which is not "
            f'installed: pip install "alchem[{extra}]"'
        )
    return module
