"""What ``alchem-validate`` compares the model with: an ASE calculator given as
``module:Class``, a second exported ``model.pt``, or precomputed values in a YAML
(or JSON) file."""

import importlib
import os
from dataclasses import dataclass

import yaml

from ..errors import ConfigError
from .properties import CalculatorFactory

REFERENCE_FORMS = (
    "an ASE calculator as module:Class (e.g. ase.calculators.emt:EMT), "
    "a model.pt, or a .yaml/.json file of values"
)


@dataclass
class Reference:
    label: str
    make: CalculatorFactory | None  # None: precomputed values only
    values: dict[str, dict[str, float]]  # system -> property -> value


def load_reference(spec: str, kwargs: dict | None = None) -> Reference:
    """The reference named by ``spec`` (see REFERENCE_FORMS); ``kwargs`` go to an
    ASE calculator's constructor."""
    if spec.endswith((".yaml", ".yml", ".json")):
        return Reference(spec, None, _read_values(spec))
    if spec.endswith(".pt"):
        from ..calculator import load_calculator

        calculator = load_calculator(spec)
        return Reference(spec, lambda: calculator, {})
    if ":" in spec:
        module_name, _, class_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(
                f"--reference {spec}: cannot import module '{module_name}' ({error})"
            ) from None
        factory = getattr(module, class_name, None)
        if factory is None or not callable(factory):
            raise ConfigError(
                f"--reference {spec}: module '{module_name}' has no class "
                f"'{class_name}'"
            )
        return Reference(spec, lambda: factory(**(kwargs or {})), {})
    raise ConfigError(f"--reference {spec}: not understood; give {REFERENCE_FORMS}")


def _read_values(path: str) -> dict[str, dict[str, float]]:
    """``{system: {property: value}}``, or the model values of a validation.json."""
    if not os.path.isfile(path):
        raise ConfigError(f"--reference {path}: file not found")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ConfigError(f"--reference {path}: not valid YAML ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("systems"), dict):
        # a validation.json of an earlier run: its model's values
        data = {
            system: {
                name: entry["model"]
                for name, entry in content.get("properties", {}).items()
                if isinstance(entry, dict) and entry.get("model") is not None
            }
            for system, content in data["systems"].items()
        }
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) for v in data.values()
    ):
        raise ConfigError(
            f"--reference {path}: expected a mapping of systems to properties, e.g. "
            "'Cu-fcc: {lattice_constant: 3.59, bulk_modulus: 134}'"
        )
    values: dict[str, dict[str, float]] = {}
    for system, properties in data.items():
        values[str(system)] = {}
        for name, value in properties.items():
            try:
                values[str(system)][str(name)] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"--reference {path}: {system}.{name}: '{value}' is not a number"
                ) from None
    return values
