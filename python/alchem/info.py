"""What a model is: ``alchem-info model.pt|model.ckpt``.

Both files record the architecture and its hyperparameters, the elements, the
cutoff and the precision. alchem-train also records a summary of the training data
(structures per target, elements, file) and the metrics of the best epoch: in the
checkpoint's options and state, and in model.pt's metadata (``extra``, keys
``alchem.training_data`` and ``alchem.metrics``, see ``export.atomistic_model``).
"""

import json
import os
import zipfile
from typing import Any

from .errors import ConfigError
from .model_files import CHECKPOINT, EXPORTED, file_kind

TRAINING_DATA_KEY = "alchem.training_data"
METRICS_KEY = "alchem.metrics"
UNCERTAINTY_KEY = "alchem.uncertainty"  # alchem.uncertainty's fit (export)


def metrics_record(run: dict, final: dict | None = None) -> dict:
    """The metrics a model file records: best epoch, its validation loss and
    metrics, and the final validation/test metrics of the best model when known."""
    record: dict[str, Any] = {
        "best_epoch": run.get("best_epoch"),
        "best_validation_loss": run.get("best_loss"),
        "best_epoch_validation": run.get("best_metrics") or {},
    }
    for name in ("validation", "test"):
        if final and final.get(name):
            record[name] = final[name]
    return record


def describe(path: str) -> dict:
    """Everything alchem-info prints, from a model.pt or a checkpoint."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: file not found")
    kind = file_kind(path)
    if kind == EXPORTED:
        return _describe_exported(path)
    if kind == CHECKPOINT:
        return _describe_checkpoint(path)
    raise ConfigError(
        f"{path}: neither an exported model (model.pt) nor an alchem checkpoint"
    )


def _describe_exported(path: str) -> dict:
    from metatomic.torch import load_atomistic_model, read_model_metadata

    from . import ops

    metadata = read_model_metadata(path)
    extra = dict(metadata.extra)
    extensions_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "extensions")
    ops.load()  # alchem::power_spectrum, which the models call on the CPU
    try:
        model = load_atomistic_model(
            path,
            extensions_directory=extensions_dir
            if os.path.isdir(extensions_dir)
            else None,
        )
    except Exception as error:  # TorchScript raises many types
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(f"{path}: cannot load this model ({first_line})") from None
    capabilities = model.capabilities()
    hypers = json.loads(extra.get("hypers", "{}"))
    return {
        "file": f"{path} (exported model)",
        "architecture": extra.get("architecture", metadata.name),
        "elements": _symbols(capabilities.atomic_types),
        "cutoff": float(capabilities.interaction_range),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": capabilities.dtype,
        "extensions": _extensions(path),
        "hypers": hypers.get("model", {}),
        "training_data": json.loads(extra.get(TRAINING_DATA_KEY, "{}")),
        "metrics": json.loads(extra.get(METRICS_KEY, "{}")),
        "uncertainty": json.loads(extra.get(UNCERTAINTY_KEY, "{}")),
    }


def _describe_checkpoint(path: str) -> dict:
    from .training import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(path)
    options = state["options"]
    model, _ = model_from_checkpoint(path)
    return {
        "file": f"{path} (checkpoint, epoch {state.get('epoch')})",
        "architecture": options["architecture"]["name"],
        "elements": _symbols(state["dataset_info"]["atomic_types"]),
        "cutoff": float(model.cutoff),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float64" if options["base_precision"] == 64 else "float32",
        "extensions": "none (a checkpoint; alchem-export writes what model.pt needs)",
        "hypers": options["architecture"]["model"],
        "training_data": options.get("data_summary", {}),
        "metrics": metrics_record(state),
        "uncertainty": options.get("uncertainty_fit") or {},
    }


def _symbols(numbers) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in numbers]


def _extensions(path: str) -> str:
    """The TorchScript extension libraries model.pt asks engines to load."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.split("/", 1)[-1] == "extra/extensions":
                libraries = json.loads(archive.read(name))
                break
        else:
            libraries = []
    if not libraries:
        return "none needed"
    return ", ".join(
        str(entry.get("name", entry)) if isinstance(entry, dict) else str(entry)
        for entry in libraries
    )


def format_description(info: dict) -> list[str]:
    """The lines alchem-info prints."""
    lines = [
        f"file           {info['file']}",
        f"architecture   {info['architecture']}",
        f"elements       {' '.join(info['elements'])}",
        f"cutoff         {info['cutoff']:g} Å",
        f"parameters     {info['parameters']:,}",
        f"dtype          {info['dtype']}",
        f"extensions     {info['extensions']}",
    ]
    data = info["training_data"]
    if data:
        lines.append("training data")
        if data.get("training_set", {}).get("file"):
            lines.append(f"  file         {data['training_set']['file']}")
        for name in ("training_set", "validation_set", "test_set"):
            count = data.get(name)
            if count and count.get("structures"):
                lines.append(
                    f"  {name.split('_')[0]:<12} {count['structures']} structures "
                    f"({' '.join(count.get('elements', []))}): energy "
                    f"{count['energy']}, forces {count['forces']}, stress "
                    f"{count['virial']}"
                )
    else:
        lines.append("training data  not recorded in this file")
    metrics = info["metrics"]
    if metrics and metrics.get("best_epoch") is not None:
        lines.append(
            f"best epoch     {metrics['best_epoch']} (validation loss "
            f"{metrics['best_validation_loss']:.4e})"
        )
        # the final metrics of the best model (alchem-train), else those of its
        # epoch as logged (checkpoints, alchem-export)
        final = [n for n in ("validation", "test") if metrics.get(n)]
        for name in final or ["best_epoch_validation"]:
            if metrics.get(name):
                label = name.replace("best_epoch_", "")
                lines.append(f"  {label:<12} {_metric_text(metrics[name])}")
    else:
        lines.append("metrics        not recorded in this file")
    lines.append(_uncertainty_line(info.get("uncertainty") or {}))
    return lines


def _uncertainty_line(fit: dict) -> str:
    if not fit:
        return "uncertainty    none (alchem-uncertainty model.ckpt adds it)"
    within = fit.get("validation", {}).get("energy_within_1_sigma")
    calibration = (
        f"; validation energies within 1 sigma {100 * within:.0f} %"
        if within is not None
        else ""
    )
    return (
        f"uncertainty    {fit.get('method', '?')}, ensemble of "
        f"{fit.get('ensemble_size', '?')}{calibration}"
    )


def _metric_text(values: dict) -> str:
    parts = []
    for target, unit, digits in (
        ("energy", "meV/atom", 2),
        ("forces", "meV/Å", 1),
        ("stress", "meV/Å³", 3),
    ):
        if f"{target}_rmse" in values:
            parts.append(
                f"{target} RMSE {values[f'{target}_rmse']:.{digits}f} "
                f"MAE {values[f'{target}_mae']:.{digits}f} {unit}"
            )
    return ", ".join(parts)
