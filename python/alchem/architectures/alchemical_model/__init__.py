"""Alchemical Model: SOAP power spectrum with the element dimension compressed into a
few learned pseudo-species, and a Behler-Parrinello network on top.

See docs/architectures/alchemical_model.md and model.py for the equations.
"""

import copy
import os

import yaml

from ...errors import ConfigError
from ...pair_potential import check_pair_hypers
from . import basis

NAMES = ("alchemical_model", "experimental.alchemical_model")

# base_precision when the options do not set it: float32. Its training kernel runs a
# step 3.8x faster than float64 on the torch operations (1.7x faster than float64 on
# the kernel) at 18 elements, and neither precision learned better per epoch there
# (float64 ahead with one seed, float32 with the other; docs/alchemical-study.md).
DEFAULT_PRECISION = 32

ONE_OF: dict = {}

RADIAL_BASES = ("le", "physical")

# accepted spellings of the activation function -> canonical name
ACTIVATIONS = {
    "silu": "SiLU",
    "swish": "SiLU",
    "relu": "ReLU",
    "tanh": "Tanh",
    "gelu": "GELU",
    "softplus": "Softplus",
}

# seed spelling -> canonical key
SOAP_ALIASES = {
    "cutoff_radius": "cutoff",
    "basis_cutoff": "basis_cutoff_power_spectrum",
}


def default_hypers() -> dict:
    with open(os.path.join(os.path.dirname(__file__), "default-hypers.yaml")) as f:
        return yaml.safe_load(f)


def normalize_hypers(model: dict, where: str) -> dict:
    """Map the seed documents' alternative spellings onto the canonical keys.

    - soap.cutoff_radius -> soap.cutoff; soap.basis_cutoff ->
      soap.basis_cutoff_power_spectrum;
    - bpnn.num_hidden_layers / bpnn.num_neurons_per_layer -> bpnn.hidden_sizes
      (the default supplies whichever of the two is missing);
    - soap.radial_basis_type and bpnn.activation_function are case-insensitive.

    Giving both spellings of one option is an error.
    """
    model = copy.deepcopy(model)
    soap = model.get("soap")
    if isinstance(soap, dict):
        for alias, key in SOAP_ALIASES.items():
            if alias in soap:
                if key in soap:
                    raise ConfigError(
                        f"{where}.soap: give either '{key}' or its alternative "
                        f"spelling '{alias}', not both"
                    )
                soap[key] = soap.pop(alias)
        kind = soap.get("radial_basis_type")
        if isinstance(kind, str):
            if kind.lower() not in RADIAL_BASES:
                raise ConfigError(
                    f"{where}.soap.radial_basis_type: unknown radial basis {kind!r}; "
                    f"allowed: {', '.join(RADIAL_BASES)}"
                )
            soap["radial_basis_type"] = kind.lower()

    bpnn = model.get("bpnn")
    if isinstance(bpnn, dict):
        layers = bpnn.pop("num_hidden_layers", None)
        neurons = bpnn.pop("num_neurons_per_layer", None)
        if layers is not None or neurons is not None:
            if "hidden_sizes" in bpnn:
                raise ConfigError(
                    f"{where}.bpnn: give either 'hidden_sizes' or "
                    "'num_hidden_layers'/'num_neurons_per_layer', not both"
                )
            default = default_hypers()["model"]["bpnn"]["hidden_sizes"]
            if layers is None:
                layers = len(default)
            if neurons is None:
                neurons = default[0] if default else 32
            for name, value, low in (
                ("num_hidden_layers", layers, 0),
                ("num_neurons_per_layer", neurons, 1),
            ):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(
                        f"{where}.bpnn.{name} must be an integer, got {value!r}"
                    )
                if value < low:
                    raise ConfigError(
                        f"{where}.bpnn.{name} must be >= {low}, got {value}"
                    )
            bpnn["hidden_sizes"] = [neurons] * layers
        activation = bpnn.get("activation_function")
        if isinstance(activation, str):
            canonical = ACTIVATIONS.get(activation.lower())
            if canonical is None:
                allowed = ", ".join(sorted(set(ACTIVATIONS.values())))
                raise ConfigError(
                    f"{where}.bpnn.activation_function: unknown activation "
                    f"{activation!r}; allowed: {allowed}"
                )
            bpnn["activation_function"] = canonical
    return model


def check_hypers(model: dict, where: str) -> None:
    soap, bpnn = model["soap"], model["bpnn"]
    if soap["num_pseudo_species"] < 1:
        raise ConfigError(
            f"{where}.soap.num_pseudo_species must be >= 1, "
            f"got {soap['num_pseudo_species']}"
        )
    if soap["cutoff"] <= 0:
        raise ConfigError(f"{where}.soap.cutoff must be > 0 Å, got {soap['cutoff']}")
    kind = soap["radial_basis_type"]
    if kind not in RADIAL_BASES:
        raise ConfigError(
            f"{where}.soap.radial_basis_type: unknown radial basis {kind!r}; "
            f"allowed: {', '.join(RADIAL_BASES)}"
        )
    lowest = basis.smallest_eigenvalue(kind)
    value = soap["basis_cutoff_power_spectrum"]
    if not lowest <= value <= basis.MAX_BASIS_CUTOFF:
        raise ConfigError(
            f"{where}.soap.basis_cutoff_power_spectrum must be between {lowest:.3f} "
            f"(the smallest eigenvalue of the {kind} basis: at least one radial "
            f"function) and {basis.MAX_BASIS_CUTOFF:g}, got {value}"
        )
    if soap["basis_scale"] <= 0:
        raise ConfigError(
            f"{where}.soap.basis_scale must be > 0 Å, got {soap['basis_scale']}"
        )
    if kind == "physical" and soap["cutoff"] / soap["basis_scale"] > 10.0:
        raise ConfigError(
            f"{where}.soap.basis_scale: the physical basis is tabulated up to "
            f"r / basis_scale = 10, but cutoff / basis_scale = "
            f"{soap['cutoff']} / {soap['basis_scale']} = "
            f"{soap['cutoff'] / soap['basis_scale']:.3g}; use basis_scale >= "
            f"{soap['cutoff'] / 10.0:g} Å"
        )
    width = soap["cutoff_width"]
    if not 0 < width <= soap["cutoff"]:
        raise ConfigError(
            f"{where}.soap.cutoff_width must be in (0, cutoff], got {width}"
        )
    for index, size in enumerate(bpnn["hidden_sizes"]):
        if size < 1:
            raise ConfigError(
                f"{where}.bpnn.hidden_sizes[{index}] must be >= 1, got {size}"
            )
    if bpnn["output_size"] < 1:
        raise ConfigError(
            f"{where}.bpnn.output_size must be >= 1, got {bpnn['output_size']}"
        )
    activation = bpnn["activation_function"]
    if activation not in ACTIVATIONS.values():
        allowed = ", ".join(sorted(set(ACTIVATIONS.values())))
        raise ConfigError(
            f"{where}.bpnn.activation_function: unknown activation {activation!r}; "
            f"allowed: {allowed}"
        )
    check_pair_hypers(model, where, soap["cutoff"])


def build_model(model: dict, info):
    from .model import AlchemicalModel

    return AlchemicalModel(model, info)
