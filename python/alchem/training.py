"""The training loop shared by all architectures.

Adam, ReduceLROnPlateau on the validation loss, early stopping, the best model kept,
checkpoints with everything needed to resume bit-for-bit (model, optimizer,
scheduler, epoch, best model, random-number state).
"""

import contextlib
import copy
import ctypes
import logging
import math
import os
import pickle
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .architectures import get_architecture
from .contacts import shortest_distances
from .data import (
    DatasetInfo,
    Structure,
    collate,
    count_targets,
    dataset_info,
    read_structures,
)
from .errors import ConfigError
from .finetune import (
    check_new_elements,
    fine_tuned_options,
    fit_composition,
    symbols,
    transfer_weights,
)
from .interrupts import TrainingInterrupted, stop_requests
from .io import atomic_write, atomic_write_text
from .model import EnergyModel, fit_composition_and_scale, predict
from .model_files import require_checkpoint
from .plots import learning_curve
from .progress import TrainingProgress
from .restart import check_restart, data_fingerprint, model_differences

CHECKPOINT_FORMAT = "alchem-checkpoint-1"
LOG = logging.getLogger("alchem")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules directly in the working precision (splines keep full accuracy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def keep_freed_memory() -> None:
    """Keep freed memory in the process (glibc only; no-op elsewhere).

    By default glibc gives blocks above a few hundred kB back to the kernel when they
    are freed, so every training step maps its large tensors afresh: about 10^4 page
    faults per SOAP-BPNN step of 8 cells, 15 % of its time. Serving them from the
    heap instead keeps the peak memory resident, which training needs anyway.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's largest allowed value
    mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    mallopt(m_top_pad, 64 * 1024 * 1024)


def precision(options: dict) -> torch.dtype:
    return torch.float64 if options["base_precision"] == 64 else torch.float32


def build_model(options: dict, info: DatasetInfo) -> EnergyModel:
    arch = get_architecture(options["architecture"]["name"])
    dtype = precision(options)
    with default_dtype(dtype):
        network = arch.build_model(options["architecture"]["model"], info)
        model = EnergyModel(network, info)
    return model.to(dtype)


def model_cutoff(options: dict) -> float:
    return float(options["architecture"]["model"]["soap"]["cutoff"])


@dataclass
class Datasets:
    train: list[Structure]
    validation: list[Structure]
    test: list[Structure]
    targets: dict  # which of energy/forces/virial are trained


def load_datasets(options: dict, source: str) -> Datasets:
    """Read training, validation and test sets; split fractions off the training set."""
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
    known = {int(z) for s in train for z in s.numbers.tolist()}
    for name in ("validation_set", "test_set"):
        extra = {int(z) for s in splits[name] for z in s.numbers.tolist()} - known
        if extra:
            from ase.data import chemical_symbols

            symbols = ", ".join(chemical_symbols[z] for z in sorted(extra))
            raise ConfigError(
                f"{source}: {name} contains elements absent from the training set: "
                f"{symbols}"
            )
    counts = {
        "training_set": count_targets(train),
        "validation_set": count_targets(splits["validation_set"]),
        "test_set": count_targets(splits["test_set"]),
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
        for (name, count), structures in zip(
            counts.items(), (train, splits["validation_set"], splits["test_set"])
        )
    }
    options["data_summary"]["training_set"]["file"] = options["training_set"][
        "systems"
    ]["read_from"]
    return Datasets(train, splits["validation_set"], splits["test_set"], targets)


def describe_counts(count: dict[str, int]) -> str:
    """'44 structures; energy 44, forces 44, stress 30' (stress: stress or virial)."""
    n = count["structures"]
    return (
        f"{n} structures; energy {count['energy']}, forces {count['forces']}, "
        f"stress {count['virial']}"
    )


def _elements(structures: list[Structure]) -> list[str]:
    from ase.data import chemical_symbols

    numbers = sorted({int(z) for s in structures for z in s.numbers.tolist()})
    return [chemical_symbols[z] for z in numbers]


def loss_function(
    prediction: dict, batch, targets: dict, weights: dict, per_structure_energy: bool
) -> torch.Tensor:
    """Weighted MSE; ``batch`` is a Batch or References (same attribute names).

    Each term averages over the structures (and their components) that have that
    label: a batch of slabs without stress adds no stress term.
    """
    n_atoms = batch.n_atoms.to(prediction["energy"].dtype)
    if per_structure_energy:
        loss = weights["energy"] * _mse(prediction["energy"], batch.energy)
    else:
        loss = weights["energy"] * _mse(
            prediction["energy"] / n_atoms, batch.energy / n_atoms
        )
    if targets["forces"] and batch.forces is not None:
        atoms_with_forces = torch.repeat_interleave(batch.has_forces, batch.n_atoms)
        loss = loss + weights["forces"] * _mse(
            prediction["forces"], batch.forces, atoms_with_forces
        )
    if targets["virial"] and batch.virial is not None:
        per_atom = n_atoms.reshape(-1, 1, 1)
        loss = loss + weights["stress"] * _mse(
            prediction["virial"] / per_atom, batch.virial / per_atom, batch.has_virial
        )
    return loss


def _mse(
    a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the rows selected by ``rows`` (bool), or all rows."""
    if rows is not None and not bool(rows.all()):
        a, b = a[rows], b[rows]
    return (a - b).pow(2).mean()


@dataclass
class References:
    """Reference values of a set of structures, concatenated in their order."""

    energy: torch.Tensor  # [n_structures]
    n_atoms: torch.Tensor  # [n_structures]
    volumes: torch.Tensor  # [n_structures] (nan without a periodic cell)
    forces: torch.Tensor | None  # [n_atoms, 3], zeros where has_forces is False
    virial: torch.Tensor | None  # [n_structures, 3, 3], zeros where not has_virial
    has_forces: torch.Tensor  # [n_structures] bool
    has_virial: torch.Tensor  # [n_structures] bool

    @staticmethod
    def of(structures: list[Structure]) -> "References":
        batch = collate(structures)
        return References.of_batch(batch)

    @staticmethod
    def of_batch(batch) -> "References":
        volumes = torch.det(batch.cells.double()).abs()
        volumes = torch.where(volumes > 0, volumes, torch.nan)
        return References(
            energy=batch.energy.detach().double().cpu(),
            n_atoms=batch.n_atoms.cpu(),
            volumes=volumes.cpu(),
            forces=None if batch.forces is None else batch.forces.double().cpu(),
            virial=None if batch.virial is None else batch.virial.double().cpu(),
            has_forces=batch.has_forces.cpu(),
            has_virial=batch.has_virial.cpu(),
        )

    @staticmethod
    def cat(parts: list["References"]) -> "References":
        def join(name: str, rows: list[torch.Tensor]) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            # a part without any such label: zeros, masked out by has_*
            shape = {"forces": (3,), "virial": (3, 3)}.get(name, ())
            return torch.cat(
                [
                    torch.zeros(len(r), *shape, dtype=torch.float64) if v is None else v
                    for v, r in zip(values, rows, strict=True)
                ]
            )

        structures = [p.n_atoms for p in parts]
        atoms = [torch.zeros(int(p.n_atoms.sum())) for p in parts]
        return References(
            energy=join("energy", structures),
            n_atoms=join("n_atoms", structures),
            volumes=join("volumes", structures),
            forces=join("forces", atoms),
            virial=join("virial", structures),
            has_forces=join("has_forces", structures),
            has_virial=join("has_virial", structures),
        )


def evaluate(
    model: EnergyModel,
    structures: list[Structure],
    targets: dict,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Predictions for every structure, concatenated (float64, on the CPU)."""
    collected: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(structures), batch_size):
        batch = collate(structures[start : start + batch_size]).to(device, dtype)
        out = predict(model, batch, forces=targets["forces"], virial=targets["virial"])
        collected.append(_detach(out))
    return _concatenate(collected)


def _detach(prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = ("energy", "forces", "virial")
    return {k: prediction[k].detach().double().cpu() for k in keys if k in prediction}


def _concatenate(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def metrics(
    predictions: dict[str, torch.Tensor], reference: References, targets: dict
) -> dict[str, float]:
    """RMSE and MAE: energy in meV/atom, forces in meV/Å, stress in meV/Å^3.

    Forces and stress over the structures that have them; absent when none has.
    """
    result: dict[str, float] = {}
    error = (predictions["energy"] - reference.energy) / reference.n_atoms * 1000
    result["energy_rmse"] = float(error.pow(2).mean().sqrt())
    result["energy_mae"] = float(error.abs().mean())
    atoms_with_forces = torch.repeat_interleave(reference.has_forces, reference.n_atoms)
    if targets["forces"] and reference.forces is not None:
        error = (predictions["forces"] - reference.forces)[atoms_with_forces] * 1000
        result["forces_rmse"] = float(error.pow(2).mean().sqrt())
        result["forces_mae"] = float(error.abs().mean())
    # stress needs a volume: periodic structures with a stress (or virial) label
    with_stress = reference.has_virial & torch.isfinite(reference.volumes)
    if targets["virial"] and reference.virial is not None and bool(with_stress.any()):
        volumes = reference.volumes.reshape(-1, 1, 1)
        error = (predictions["virial"] - reference.virial) / volumes * 1000  # -W/V
        error = error[with_stress]
        result["stress_rmse"] = float(error.pow(2).mean().sqrt())
        result["stress_mae"] = float(error.abs().mean())
    return result


def _format(name: str, values: dict[str, float]) -> str:
    parts = [
        f"{name} E {values['energy_rmse']:.2f}/{values['energy_mae']:.2f} meV/atom"
    ]
    if "forces_rmse" in values:
        parts.append(f"F {values['forces_rmse']:.1f}/{values['forces_mae']:.1f} meV/Å")
    if "stress_rmse" in values:
        parts.append(f"S {values['stress_rmse']:.3f} meV/Å³")
    return ", ".join(parts)


def train(
    options: dict,
    source: str,
    run_dir: str,
    checkpoint_path: str,
    restart: str | None = None,
    fine_tune: str | None = None,
    composition: str = "keep",
    ready: Callable[[], None] | None = None,
    allow_change: list[str] | None = None,
) -> tuple[EnergyModel, dict]:
    """Train from expanded options; returns the best model and the final metrics.

    The metrics printed are RMSE/MAE pairs for training and validation.
    ``fine_tune``: start from this checkpoint's best weights (alchem.finetune), with
    its composition energies kept or refitted (``composition``). ``ready`` is called
    once the data, options and checkpoints are checked, before any file is written.
    A SIGINT or SIGTERM saves the state to ``checkpoint_path`` and raises
    ``TrainingInterrupted``; a non-finite loss raises ``ConfigError``.
    ``allow_change``: option keys a restart may change (alchem.restart).
    """
    training = options["architecture"]["training"]
    dtype = precision(options)
    device = torch.device(options["device"])
    torch.manual_seed(options["seed"])
    keep_freed_memory()

    state = None
    tuned = None
    if restart is not None and fine_tune is not None:
        raise ConfigError(
            "give either --restart (go on with a run) or --fine-tune (start a new run "
            "from trained weights), not both"
        )
    if restart is not None:
        state = load_checkpoint(restart)
        if state["options"]["architecture"]["name"] != options["architecture"]["name"]:
            raise ConfigError(
                f"--restart {restart}: the checkpoint is a "
                f"{state['options']['architecture']['name']} model but the options ask "
                f"for {options['architecture']['name']}"
            )
        ignored = model_differences(state["options"], options)
        if ignored:
            LOG.info(
                "restart: the model hyperparameters are the checkpoint's; the options "
                "file's %s are ignored",
                ", ".join(ignored),
            )
        # the checkpoint's model (a fine-tuned one keeps its checkpoint's hypers)
        options["architecture"]["model"] = copy.deepcopy(
            state["options"]["architecture"]["model"]
        )
    if fine_tune is not None:
        tuned = load_checkpoint(fine_tune)
        ignored = fine_tuned_options(options, tuned, f"--fine-tune {fine_tune}")
        if ignored:
            LOG.info(
                "fine-tuning: the model hyperparameters are the checkpoint's; the "
                "options file's %s are ignored",
                ", ".join(f"model.{key}" for key in ignored),
            )

    data = load_datasets(options, source)
    fingerprints = {
        "training_set": data_fingerprint(data.train),
        "validation_set": data_fingerprint(data.validation),
        "test_set": data_fingerprint(data.test),
    }
    changed: list[str] = []
    if state is not None:
        changed = check_restart(
            f"--restart {restart}",
            state["options"],
            options,
            state.get("data_fingerprint"),
            fingerprints,
            allow_change or [],
        )
    info = dataset_info(data.train)
    old_types: list[int] = []
    if state is not None:
        info = DatasetInfo(**state["dataset_info"])
    elif tuned is not None:
        old_types = list(tuned["dataset_info"]["atomic_types"])
        new_types = set(info.atomic_types) - set(old_types)
        check_new_elements(
            tuned,
            new_types,
            f"--fine-tune {fine_tune}",
            options["architecture"]["name"],
        )
        info = DatasetInfo(
            atomic_types=sorted(set(old_types) | set(info.atomic_types)),
            mean_num_neighbors=tuned["dataset_info"]["mean_num_neighbors"],
        )
    model = build_model(options, info)
    if state is not None:
        model.load_state_dict(state["model_state"])
    elif tuned is not None:
        transfer_weights(model, tuned["best_state"], old_types)
        refitted = fit_composition(model, data.train, composition, old_types)
        seen = shortest_distances(data.train, model.atomic_types)
        model.shortest_distance.copy_(torch.minimum(model.shortest_distance, seen))
        added = sorted(set(model.atomic_types) - set(old_types))
        LOG.info(
            "fine-tuning from %s (epoch %d of its run): %s%scomposition energies %s%s",
            fine_tune,
            tuned["best_epoch"],
            f"new elements {symbols(added)}; " if added else "",
            "fresh optimizer, scheduler and best loss; ",
            "refitted for " if refitted else "kept",
            symbols(refitted) if refitted else "",
        )
    else:
        fit_composition_and_scale(model, data.train)
        seen = shortest_distances(data.train, model.atomic_types)
        model.shortest_distance.copy_(seen)
    if ready is not None:
        ready()
    model = model.to(device)
    # the loss gradient is only wanted for these: naming them lets autograd skip
    # the parts of the double backward that only lead to positions and strain
    parameters = [p for p in model.parameters() if p.requires_grad]

    n_params = sum(p.numel() for p in model.parameters())
    LOG.info(
        "%s: %d parameters; %d training, %d validation, %d test structures; "
        "targets: %s",
        options["architecture"]["name"],
        n_params,
        len(data.train),
        len(data.validation),
        len(data.test),
        ", ".join(k for k, v in data.targets.items() if v),
    )

    # fused: one vectorised kernel for all parameters (CPU and GPU) instead of a
    # dozen elementwise operations per parameter tensor (3 % of a SOAP-BPNN step)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=training["learning_rate"], fused=True
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=training["scheduler_factor"],
        patience=training["scheduler_patience"],
    )
    shuffle = torch.Generator().manual_seed(options["seed"] + 1)
    start_epoch = 1
    best_loss = math.inf
    best_state = copy.deepcopy(model.state_dict())
    best_epoch = 0
    best_metrics: dict[str, float] = {}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # the scheduler's state holds its settings: those of the options file
        # (the same unless --allow-change)
        scheduler.factor = training["scheduler_factor"]
        scheduler.patience = training["scheduler_patience"]
        if "architecture.training.learning_rate" in changed:
            for group in optimizer.param_groups:
                group["lr"] = training["learning_rate"]
            scheduler._last_lr = [training["learning_rate"]]
        shuffle.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available():  # a GPU run's states, as far as GPUs are here
            cuda_states = state["rng"].get("cuda", [])
            for index in range(min(len(cuda_states), torch.cuda.device_count())):
                torch.cuda.set_rng_state(cuda_states[index], index)
        start_epoch = state["epoch"] + 1
        best_loss = state["best_loss"]
        best_state = state["best_state"]
        best_epoch = state["best_epoch"]
        best_metrics = state.get("best_metrics", {})

    weights = training["loss_weights"]
    validation_reference = References.of(data.validation)
    per_structure = "energy" in training["per_structure_targets"]
    metrics_path = os.path.join(run_dir, "metrics.csv")
    # seconds: this epoch's training step; elapsed: wall time since training started
    columns = [
        "epoch",
        "learning_rate",
        "train_loss",
        "validation_loss",
        "seconds",
        "elapsed",
    ]
    metric_names = [
        "energy_rmse",
        "energy_mae",
        "forces_rmse",
        "forces_mae",
        "stress_rmse",
    ]
    columns += [
        f"{split}_{m}" for split in ("train", "validation") for m in metric_names
    ]
    csv_lines = [",".join(columns)]
    if state is not None:
        csv_lines = state.get("csv_lines", csv_lines)

    def loop_state() -> dict:
        return {
            "epoch": epoch,
            "best_loss": best_loss,
            "best_state": best_state,
            "best_epoch": best_epoch,
            "best_metrics": best_metrics,
            "csv_lines": list(csv_lines),
            "elapsed": total_elapsed,
            "data_fingerprint": fingerprints,
        }

    def interrupted(partial_epoch: dict | None) -> None:
        """Save the state (mid-epoch: up to the last batch done) and stop."""
        snapshot = _checkpoint(
            options, info, model, optimizer, scheduler, shuffle, loop_state()
        )
        if partial_epoch is not None:
            snapshot["epoch"] = epoch - 1  # the last whole epoch
        snapshot["partial_epoch"] = partial_epoch
        save_checkpoint(snapshot, checkpoint_path)
        progress.close()
        best = None
        if best_epoch > 0:
            model.load_state_dict(best_state)
            best = model.eval()
        raise TrainingInterrupted(
            stop_request.received, checkpoint_path, best, best_epoch
        )

    # a run interrupted mid-epoch goes on with that epoch's order and sums
    partial = None if state is None else state.get("partial_epoch")
    batch_size = training["batch_size"]
    n_batches = math.ceil(len(data.train) / batch_size)
    last_checkpoint = restart
    total_elapsed = 0.0
    progress = TrainingProgress(
        start_epoch,
        training["num_epochs"],
        n_batches,
        first_batch=partial["next"] // batch_size if partial else 0,
    )
    epoch = start_epoch - 1
    elapsed_before = 0.0 if state is None else state.get("elapsed", 0.0)
    training_started = time.perf_counter()
    with stop_requests() as stop_request, progress.logging_above():
        for epoch in range(start_epoch, training["num_epochs"] + 1):
            started = time.perf_counter()
            model.train()
            if partial is not None:
                order, first = partial["order"], partial["next"]
                train_loss, seconds_before = partial["train_loss"], partial["seconds"]
                seen_predictions = partial["predictions"]
                seen_references = [References(**r) for r in partial["references"]]
                partial = None
            else:
                order = torch.randperm(len(data.train), generator=shuffle).tolist()
                first, train_loss, seconds_before = 0, 0.0, 0.0
                seen_predictions: list[dict[str, torch.Tensor]] = []
                seen_references: list[References] = []
            for start in range(first, len(order), batch_size):
                chunk = [data.train[i] for i in order[start : start + batch_size]]
                batch = collate(chunk).to(device, dtype)
                optimizer.zero_grad()
                prediction = predict(
                    model,
                    batch,
                    data.targets["forces"],
                    data.targets["virial"],
                    create_graph=True,
                )
                loss = loss_function(
                    prediction, batch, data.targets, weights, per_structure
                )
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # before the step spoils the weights
                    raise ConfigError(
                        _diverged(
                            f"the training loss is {loss_value} at epoch {epoch}, batch "
                            f"{start // batch_size + 1} of {n_batches}",
                            optimizer,
                            last_checkpoint,
                        )
                    )
                loss.backward(inputs=parameters)
                optimizer.step()
                train_loss += loss_value * len(chunk)
                # training metrics come from this pass, not from another one
                seen_predictions.append(_detach(prediction))
                seen_references.append(References.of_batch(batch))
                progress.batch(epoch, start // batch_size, loss_value)
                if stop_request.received and start + batch_size < len(order):
                    now = time.perf_counter()
                    total_elapsed = elapsed_before + now - training_started
                    interrupted(
                        {
                            "order": order,
                            "next": start + batch_size,
                            "train_loss": train_loss,
                            "seconds": seconds_before + time.perf_counter() - started,
                            "predictions": seen_predictions,
                            # plain dicts: the checkpoint loads with weights_only
                            "references": [vars(r) for r in seen_references],
                        }
                    )
            train_loss /= len(data.train)
            elapsed = seconds_before + time.perf_counter() - started

            model.eval()
            predictions = evaluate(
                model,
                data.validation,
                data.targets,
                training["batch_size"],
                dtype,
                device,
            )
            validation_loss = loss_function(
                predictions, validation_reference, data.targets, weights, per_structure
            ).item()
            if not math.isfinite(validation_loss):
                raise ConfigError(
                    _diverged(
                        f"the validation loss is {validation_loss} after epoch {epoch}",
                        optimizer,
                        last_checkpoint,
                    )
                )
            validation_metrics = metrics(
                predictions, validation_reference, data.targets
            )
            scheduler.step(validation_loss)
            if validation_loss < best_loss:
                best_loss = validation_loss
                best_state = copy.deepcopy(model.state_dict())
                best_epoch = epoch
                best_metrics = validation_metrics
            log_now = (
                epoch % training["log_interval"] == 0 or epoch == training["num_epochs"]
            )
            train_metrics: dict[str, float] = {}
            if log_now:
                train_metrics = metrics(
                    _concatenate(seen_predictions),
                    References.cat(seen_references),
                    data.targets,
                )
                LOG.info(
                    "epoch %4d | lr %.2e | loss %.4e / %.4e | %s | %s | %.2f s",
                    epoch,
                    optimizer.param_groups[0]["lr"],
                    train_loss,
                    validation_loss,
                    _format("train", train_metrics),
                    _format("val", validation_metrics),
                    elapsed,
                )
            total_elapsed = elapsed_before + time.perf_counter() - training_started
            lr = optimizer.param_groups[0]["lr"]
            row = [epoch, lr, train_loss, validation_loss, elapsed, total_elapsed]
            row += [train_metrics.get(m, "") for m in metric_names]
            row += [validation_metrics.get(m, "") for m in metric_names]
            csv_lines.append(",".join(str(v) for v in row))
            atomic_write_text(metrics_path, "\n".join(csv_lines) + "\n")
            progress.epoch(epoch, train_loss, validation_loss, logged=log_now)

            stop = epoch - best_epoch > training["early_stopping_patience"]
            if epoch % training["checkpoint_interval"] == 0 or stop:
                snapshot = _checkpoint(
                    options, info, model, optimizer, scheduler, shuffle, loop_state()
                )
                last_checkpoint = os.path.join(run_dir, f"epoch_{epoch}.ckpt")
                save_checkpoint(snapshot, last_checkpoint)
                learning_curve(run_dir)  # the figure follows the checkpoints
            if stop:
                LOG.info(
                    "early stopping: no improvement for %d epochs",
                    training["early_stopping_patience"],
                )
                break
            if stop_request.received:  # at the end of an epoch: nothing half done
                total_elapsed = elapsed_before + time.perf_counter() - training_started
                interrupted(None)
    progress.close()
    total_elapsed = elapsed_before + time.perf_counter() - training_started
    if best_epoch == 0:
        raise ConfigError(
            f"no epoch was trained (the checkpoint is at epoch {epoch}, num_epochs is "
            f"{training['num_epochs']}): nothing to export; raise num_epochs"
        )

    final = _checkpoint(
        options, info, model, optimizer, scheduler, shuffle, loop_state()
    )
    save_checkpoint(final, checkpoint_path)
    learning_curve(run_dir)
    model.load_state_dict(best_state)
    model.eval()
    LOG.info("best validation loss %.4e at epoch %d", best_loss, best_epoch)

    summary = {}
    for name, structures in (("validation", data.validation), ("test", data.test)):
        if structures:
            predictions = evaluate(
                model, structures, data.targets, training["batch_size"], dtype, device
            )
            summary[name] = metrics(
                predictions, References.of(structures), data.targets
            )
            LOG.info("final %s", _format(name, summary[name]))
    summary["run"] = {
        "elapsed": total_elapsed,
        "epochs": epoch,
        "best_epoch": best_epoch,
        "best_loss": best_loss,
        "best_metrics": best_metrics,
        "checkpoint": checkpoint_path,
        "atomic_types": list(model.atomic_types),
    }
    return model, summary


def _diverged(what: str, optimizer, last_checkpoint: str | None) -> str:
    kept = (
        f"the last good checkpoint is {last_checkpoint}"
        if last_checkpoint
        else "no checkpoint was due yet"
    )
    return (
        f"training diverged: {what}. Try a smaller learning_rate (now "
        f"{optimizer.param_groups[0]['lr']:g}) and look for outliers in the data "
        f"(huge forces, wrong units); nothing was exported, {kept}"
    )


def _checkpoint(options, info, model, optimizer, scheduler, shuffle, loop) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "options": options,
        "dataset_info": {
            "atomic_types": info.atomic_types,
            "mean_num_neighbors": info.mean_num_neighbors,
        },
        "model_state": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        **loop,
    }


def save_checkpoint(checkpoint: dict, path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: checkpoint not found")
    require_checkpoint(path)  # model.pt, truncated or foreign files: what to give
    try:
        # tensors, dicts, lists, numbers and strings only: no code runs on loading
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise ConfigError(
            f"{path}: the checkpoint holds an object{what} other than tensors, "
            "numbers, strings, lists and dicts, which an alchem checkpoint never does; "
            "not loaded, since loading it could run code"
        ) from None
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {first_line})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not an alchem checkpoint")
    return state


def model_from_checkpoint(path: str, best: bool = True) -> tuple[EnergyModel, dict]:
    """The model stored in a checkpoint (the best one by default) and its options."""
    state = load_checkpoint(path)
    info = DatasetInfo(**state["dataset_info"])
    model = build_model(state["options"], info)
    model.load_state_dict(state["best_state"] if best else state["model_state"])
    model.eval()
    return model, state["options"]
