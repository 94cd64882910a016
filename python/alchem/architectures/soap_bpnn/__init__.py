"""SOAP-BPNN: a Behler-Parrinello network on SOAP power-spectrum features."""

import os

import yaml

from ...errors import ConfigError
from ...pair_potential import check_pair_hypers

NAMES = ("soap_bpnn", "experimental.soap_bpnn")

# base_precision when the options do not set it
DEFAULT_PRECISION = 64

ONE_OF = {
    "soap.cutoff_function": {"ShiftedCosine": {"width": 1.0}},
    "soap.radial_scaling": {
        "Willatt2018": {"rate": 1.0, "scale": 2.0, "exponent": 7.0},
        "None": {},
    },
}


def default_hypers() -> dict:
    with open(os.path.join(os.path.dirname(__file__), "default-hypers.yaml")) as f:
        return yaml.safe_load(f)


def normalize_hypers(model: dict, where: str) -> dict:
    return model


def check_hypers(model: dict, where: str) -> None:
    soap, bpnn = model["soap"], model["bpnn"]
    check_pair_hypers(model, where, soap["cutoff"])
    if soap["cutoff"] <= 0:
        raise ConfigError(f"{where}.soap.cutoff must be > 0 Å, got {soap['cutoff']}")
    if soap["max_radial"] < 1:
        raise ConfigError(
            f"{where}.soap.max_radial must be >= 1, got {soap['max_radial']}"
        )
    if not 0 <= soap["max_angular"] <= 15:
        raise ConfigError(
            f"{where}.soap.max_angular must be between 0 and 15, "
            f"got {soap['max_angular']}"
        )
    if soap["atomic_gaussian_width"] < 0:
        raise ConfigError(f"{where}.soap.atomic_gaussian_width must be >= 0 Å")
    width = soap["cutoff_function"]["ShiftedCosine"]["width"]
    if not 0 < width <= soap["cutoff"]:
        raise ConfigError(
            f"{where}.soap.cutoff_function.ShiftedCosine.width must be in "
            f"(0, cutoff], got {width}"
        )
    scaling = soap["radial_scaling"].get("Willatt2018")
    if scaling is not None and (scaling["rate"] <= 0 or scaling["scale"] <= 0):
        raise ConfigError(
            f"{where}.soap.radial_scaling.Willatt2018: rate and scale must be > 0"
        )
    if bpnn["num_hidden_layers"] < 0 or bpnn["num_neurons_per_layer"] < 1:
        raise ConfigError(
            f"{where}.bpnn: num_hidden_layers must be >= 0 "
            "and num_neurons_per_layer >= 1"
        )


def build_model(model: dict, info):
    from .model import SoapBpnn

    return SoapBpnn(model, info)
