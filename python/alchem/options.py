"""Reading, expanding and validating the options file of ``alchem-train``.

Everything is checked before any work starts: unknown keys (with the closest valid
name), wrong types, values out of range, missing files. Every problem is one
``ConfigError`` naming the file, the key path and what is allowed.
"""

import copy
import difflib
import os
import re
from typing import Any

import yaml

from .architectures import get_architecture
from .errors import ConfigError
from .units import energy_factor, length_factor

TOP_LEVEL_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "base_precision": None,  # the architecture's DEFAULT_PRECISION
    "device": "cpu",
    "architecture": None,  # required
    "training_set": None,  # required
    "validation_set": None,  # 0.1 of the training set unless given
    "test_set": None,
    "uncertainty": None,  # none unless asked (UNCERTAINTY_DEFAULTS)
}

# alchem.uncertainty, fitted after training (docs/uncertainty.md)
UNCERTAINTY_DEFAULTS: dict[str, Any] = {
    "method": "none",  # none or llpr
    "ensemble_size": 64,  # last layers drawn from the calibrated posterior
    "regularizer": "auto",  # varsigma^2 / mean eigenvalue of the precision; auto: 1e-8
}
UNCERTAINTY_METHODS = ("none", "llpr")

TARGET_DEFAULTS: dict[str, Any] = {
    "key": "energy",
    "unit": "eV",
    "forces": {"key": "forces"},
    "stress": {"key": "stress"},
    "virial": False,
}

GRADIENTS = ("forces", "stress", "virial")

SYSTEMS_DEFAULTS: dict[str, Any] = {
    "read_from": None,
    "reader": None,
    "length_unit": "angstrom",
}


class _Loader(yaml.SafeLoader):
    """YAML with numbers as people write them: PyYAML follows YAML 1.1, where a float
    needs a dot (``1.0e-3``) and ``1e-3`` is a string. This loader also reads
    ``1e-3``, ``5E-4`` and ``+2e1`` as floats (as YAML 1.2 does), for every key."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """YAML with 1e-3-style floats (see ``_Loader``)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects


def load_yaml(path: str) -> dict:
    """Read an options file; a missing file or broken YAML is a ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: options file not found")
    try:
        with open(path) as handle:
            data = parse_yaml(handle)
    except yaml.YAMLError as error:
        # one line: what is wrong and where (PyYAML's message spans several)
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not a text file (an options file is YAML)"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the options file must be a mapping of keys")
    return data


def expand_options(user: dict, source: str, base_dir: str = ".") -> dict:
    """Fill in every default and validate; ``source`` names the file in messages.

    Paths to data files are made absolute relative to ``base_dir`` (the folder of
    the options file) so the expanded options can be reused from anywhere.
    """
    options = _merge_known(user, TOP_LEVEL_DEFAULTS, source, "")
    for required in ("architecture", "training_set"):
        if options[required] is None:
            raise ConfigError(f"{source}: missing required key '{required}'")

    _check_type(options["seed"], int, source, "seed")
    if options["seed"] < 0:
        raise ConfigError(f"{source}: seed must be >= 0, got {options['seed']}")
    if options["base_precision"] not in (None, 32, 64):
        raise ConfigError(
            f"{source}: base_precision must be 32 or 64, "
            f"got {options['base_precision']!r}"
        )
    options["device"] = _check_device(options["device"], source)
    options["architecture"] = _expand_architecture(options["architecture"], source)
    if options["base_precision"] is None:
        # each architecture trains in the precision it is fastest in without
        # losing accuracy (as metatrain's architectures declare theirs)
        arch = get_architecture(options["architecture"]["name"])
        options["base_precision"] = arch.DEFAULT_PRECISION
    options["uncertainty"] = expand_uncertainty(options["uncertainty"], source)

    # validation and test sets without their own 'targets' read the same keys and
    # units as the training set
    user_training = options["training_set"]
    training_targets = (
        user_training.get("targets") if isinstance(user_training, dict) else None
    )
    options["training_set"] = _expand_dataset(
        user_training, source, "training_set", base_dir
    )
    if options["validation_set"] is None:
        options["validation_set"] = 0.1
    for name in ("validation_set", "test_set"):
        value = options[name]
        if value is None:
            continue
        if isinstance(value, bool):
            raise ConfigError(
                f"{source}: {name} must be a fraction, a path or a section"
            )
        if isinstance(value, (int, float)):
            if not 0.0 < value < 1.0:
                raise ConfigError(
                    f"{source}: {name} as a fraction of the training set must be "
                    f"between 0 and 1 (exclusive), got {value}"
                )
            options[name] = float(value)
        else:
            options[name] = _expand_dataset(
                value, source, name, base_dir, inherit=training_targets
            )
    fractions = [
        options[n]
        for n in ("validation_set", "test_set")
        if isinstance(options[n], float)
    ]
    if sum(fractions) >= 1.0:
        raise ConfigError(
            f"{source}: validation_set and test_set fractions add up to "
            f"{sum(fractions)}, leaving no training data"
        )
    return options


def expand_uncertainty(section: Any, source: str) -> dict:
    """The ``uncertainty:`` section with its defaults, checked."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(
            f"{source}: uncertainty must be a section (method, ensemble_size, "
            f"regularizer), got {section!r}"
        )
    regularizer = section.get("regularizer", "auto")
    rest = {k: v for k, v in section.items() if k != "regularizer"}
    result = _merge_known(rest, UNCERTAINTY_DEFAULTS, source, "uncertainty")
    if result["method"] not in UNCERTAINTY_METHODS:
        raise ConfigError(
            f"{source}: uncertainty.method must be one of "
            f"{', '.join(UNCERTAINTY_METHODS)}, got {result['method']!r}"
        )
    if result["ensemble_size"] < 2 or result["ensemble_size"] % 2:
        raise ConfigError(
            f"{source}: uncertainty.ensemble_size must be even and at least 2 (the "
            f"members come in pairs theta +- delta), got {result['ensemble_size']}"
        )
    numeric = isinstance(regularizer, (int, float)) and not isinstance(
        regularizer, bool
    )
    if not (regularizer == "auto" or (numeric and regularizer > 0)):
        raise ConfigError(
            f"{source}: uncertainty.regularizer must be auto or a number > 0 (relative "
            "to the mean eigenvalue of the precision), "
            f"got {regularizer!r}"
        )
    result["regularizer"] = regularizer if regularizer == "auto" else float(regularizer)
    return result


def _expand_architecture(section: Any, source: str) -> dict:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: 'architecture' must be a section with a 'name'")
    unknown = set(section) - {"name", "model", "training"}
    for key in unknown:
        raise ConfigError(
            _unknown_key(source, "architecture", key, ["name", "model", "training"])
        )
    if "name" not in section:
        raise ConfigError(f"{source}: missing required key 'architecture.name'")
    name = section["name"]
    if not isinstance(name, str):
        raise ConfigError(f"{source}: architecture.name must be a string")
    arch = get_architecture(name, f"{source}: architecture.name")
    defaults = arch.default_hypers()
    model_user = section.get("model") or {}
    training_user = section.get("training") or {}
    for key, value in (("model", model_user), ("training", training_user)):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: architecture.{key} must be a section")
    model_user = arch.normalize_hypers(
        copy.deepcopy(model_user), f"{source}: architecture.model"
    )
    one_of = getattr(arch, "ONE_OF", {})
    model = _merge_known(
        model_user, defaults["model"], source, "architecture.model", one_of
    )
    training = _merge_known(
        training_user, defaults["training"], source, "architecture.training", one_of
    )
    arch.check_hypers(model, f"{source}: architecture.model")
    check_training_hypers(training, f"{source}: architecture.training")
    return {"name": arch.NAMES[0], "model": model, "training": training}


def check_training_hypers(training: dict, where: str) -> None:
    """Range checks shared by all architectures."""
    for key in ("batch_size", "num_epochs", "log_interval", "checkpoint_interval"):
        if training[key] < 1:
            raise ConfigError(f"{where}.{key} must be >= 1, got {training[key]}")
    for key in ("early_stopping_patience", "scheduler_patience"):
        if training[key] < 0:
            raise ConfigError(f"{where}.{key} must be >= 0, got {training[key]}")
    if training["learning_rate"] <= 0:
        raise ConfigError(
            f"{where}.learning_rate must be > 0, got {training['learning_rate']}"
        )
    if not 0.0 < training["scheduler_factor"] < 1.0:
        raise ConfigError(
            f"{where}.scheduler_factor must be between 0 and 1, "
            f"got {training['scheduler_factor']}"
        )
    for target in training["per_structure_targets"]:
        if target != "energy":
            raise ConfigError(
                f"{where}.per_structure_targets: unknown target {target!r}; "
                "allowed: energy"
            )
    for target, weight in training["loss_weights"].items():
        if weight < 0:
            raise ConfigError(
                f"{where}.loss_weights.{target} must be >= 0, got {weight}"
            )


def _expand_dataset(
    section: Any, source: str, name: str, base_dir: str, inherit: Any = None
) -> dict:
    """Expand a dataset section. ``inherit``: the training set's ``targets`` as the
    user wrote them, used when this section has none (its explicit keys are then
    not required here: a validation file of slabs has no stress)."""
    if isinstance(section, str):
        section = {"systems": section}
    if not isinstance(section, dict):
        raise ConfigError(
            f"{source}: {name} must be a path to a structure file or a section "
            "with 'systems' and 'targets'"
        )
    for key in section:
        if key not in ("systems", "targets"):
            raise ConfigError(_unknown_key(source, name, key, ["systems", "targets"]))
    systems = _expand_systems(section.get("systems"), source, name, base_dir)
    inherited = section.get("targets") is None and inherit is not None
    targets = inherit if inherited else section.get("targets")
    energy = _expand_energy(targets, inherited, source, name)
    return {"systems": systems, "targets": {"energy": energy}}


def _expand_systems(systems: Any, source: str, name: str, base_dir: str) -> dict:
    """A dataset's ``systems``: a path, or a section with ``read_from``; the file
    must exist (its path made absolute) and the length unit be known."""
    if systems is None:
        raise ConfigError(f"{source}: missing required key '{name}.systems'")
    if isinstance(systems, str):
        systems = {"read_from": systems}
    if not isinstance(systems, dict):
        raise ConfigError(f"{source}: {name}.systems must be a path or a section")
    systems = _merge_known(systems, SYSTEMS_DEFAULTS, source, f"{name}.systems")
    if not isinstance(systems["read_from"], str):
        raise ConfigError(f"{source}: missing required key '{name}.systems.read_from'")
    path = systems["read_from"]
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base_dir, path))
    if not os.path.isfile(path):
        raise ConfigError(f"{source}: {name}.systems.read_from: file not found: {path}")
    systems["read_from"] = path
    length_factor(systems["length_unit"], f"{source}: {name}.systems.length_unit")
    return systems


def _expand_energy(targets: Any, inherited: bool, source: str, name: str) -> dict:
    """A dataset's ``targets.energy``, its forces, stress and virial expanded to
    ``{key, required}`` or False (``required``: named in this section)."""
    targets = targets or {"energy": {}}
    if not isinstance(targets, dict):
        raise ConfigError(f"{source}: {name}.targets must be a section")
    for key in targets:
        if key != "energy":
            raise ConfigError(_unknown_key(source, f"{name}.targets", key, ["energy"]))
    energy = targets["energy"]
    if isinstance(energy, str):
        energy = {"key": energy}
    if energy is None:
        energy = {}
    if not isinstance(energy, dict):
        raise ConfigError(
            f"{source}: {name}.targets.energy must be a section or a key name"
        )
    explicit = set() if inherited else {k for k in GRADIENTS if k in energy}
    energy = _merge_known(
        energy,
        {**TARGET_DEFAULTS, "forces": None, "stress": None, "virial": None},
        source,
        f"{name}.targets.energy",
    )
    for gradient in ("forces", "stress", "virial"):
        where = f"{source}: {name}.targets.energy.{gradient}"
        energy[gradient] = _expand_gradient(
            energy[gradient], gradient, gradient in explicit, where
        )
    if energy["stress"] and energy["virial"]:
        if energy["stress"]["required"] and energy["virial"]["required"]:
            raise ConfigError(
                f"{source}: {name}.targets.energy: "
                "give either stress or virial, not both"
            )
        # the explicit one wins over the default stress key
        if energy["virial"]["required"]:
            energy["stress"] = False
        else:
            energy["virial"] = False
    energy_factor(energy["unit"], f"{source}: {name}.targets.energy.unit")
    return energy


def _expand_gradient(
    value: Any, gradient: str, required: bool, where: str
) -> dict | bool:
    """true, false, a key name or {key: NAME} (None: the default) as
    ``{key, required}``, or False."""
    if value is None:
        value = TARGET_DEFAULTS[gradient]
    if value is True:
        value = {"key": gradient}
    elif isinstance(value, str):
        value = {"key": value}
    if value is False:
        return False
    if not isinstance(value, dict) or set(value) - {"key"}:
        raise ConfigError(f"{where} must be true, false, a key name or {{key: NAME}}")
    return {"key": value.get("key", gradient), "required": required}


def _merge_known(
    user: dict,
    defaults: dict,
    source: str,
    path: str,
    one_of: dict | None = None,
) -> dict:
    """Defaults overridden by ``user``; unknown keys and wrong types are errors."""
    one_of = one_of or {}
    result = copy.deepcopy(defaults)
    for key, value in user.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in defaults:
            raise ConfigError(_unknown_key(source, path, key, list(defaults)))
        default = defaults[key]
        variants = one_of.get(
            full.split(".", 2)[-1] if full.startswith("architecture.") else full
        )
        if variants is not None:
            result[key] = _merge_variant(value, variants, source, full)
        elif isinstance(default, dict) and default:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {full} must be a section, got {value!r}")
            result[key] = _merge_known(value, default, source, full, one_of)
        elif default is None or (isinstance(default, dict) and not default):
            result[key] = value
        else:
            result[key] = _check_like(value, default, source, full)
    return result


def _merge_variant(value: Any, variants: dict, source: str, full: str) -> dict:
    names = ", ".join(variants)
    if value is None or value == {}:
        if "None" in variants:
            return {}
        raise ConfigError(f"{source}: {full} must be one of: {names}")
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{source}: {full} must be a section with one of: {names}")
    ((variant, params),) = value.items()
    if variant not in variants:
        raise ConfigError(_unknown_key(source, full, variant, list(variants)))
    params = params or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: {full}.{variant} must be a section")
    return {
        variant: _merge_known(params, variants[variant], source, f"{full}.{variant}")
    }


def _check_like(value: Any, default: Any, source: str, full: str) -> Any:
    """Check that ``value`` has the type of ``default`` (ints accepted for floats)."""
    if isinstance(default, bool):
        return _check_type(value, bool, source, full)
    if isinstance(default, int):
        return _check_type(value, int, source, full)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {full} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        return _check_type(value, str, source, full)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {full} must be a list, got {value!r}")
        if default:
            return [
                _check_like(v, default[0], source, f"{full}[{i}]")
                for i, v in enumerate(value)
            ]
        return value
    return value


def _check_type(value: Any, kind: type, source: str, full: str) -> Any:
    names = {bool: "true or false", int: "an integer", str: "a string"}
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{source}: {full} must be an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{source}: {full} must be {names[kind]}, got {value!r}")
    return value


def _check_device(device: Any, source: str) -> str:
    if not isinstance(device, str) or not (
        device == "cpu" or device == "cuda" or device.startswith("cuda:")
    ):
        raise ConfigError(
            f"{source}: device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        )
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"{source}: device is {device!r} but this torch has no CUDA device; "
                "use 'cpu' or install a CUDA build of torch (docs/install.md)"
            )
    return device


def _unknown_key(source: str, path: str, key: Any, allowed: list[str]) -> str:
    where = f"{path}.{key}" if path else str(key)
    if not where.isprintable():  # a newline or tab in a key: shown escaped, one line
        where = repr(where)[1:-1]
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    names = ", ".join(map(str, allowed))
    return f"{source}: unknown key '{where}'{hint} (allowed: {names})"


def save_options(options: dict, path: str) -> None:
    """Write the fully expanded options (atomically)."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(options, sort_keys=False))
