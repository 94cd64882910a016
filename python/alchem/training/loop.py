"""The training loop shared by all architectures.

Adam, ReduceLROnPlateau on the validation loss, early stopping, the best model kept,
checkpoints (alchem.training.checkpoints) every ``checkpoint_interval`` epochs, at
the end, and on SIGINT or SIGTERM (mid-epoch: up to the last batch done).
"""

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..data import Batch, Structure, collate
from ..errors import ConfigError
from ..io import atomic_write_text
from ..memory import reuse_freed_memory
from ..model import EnergyModel, predict
from ..plots import learning_curve
from ..uncertainty.apply import fit_from_options
from .build import precision
from .checkpoints import checkpoint, save_checkpoint
from .interrupts import TrainingInterrupted, stop_requests
from .metrics import (
    METRIC_NAMES,
    References,
    concatenate,
    detach,
    evaluate,
    format_metrics,
    loss_function,
    metrics,
)
from .progress import TrainingProgress
from .split import Datasets
from .start import Start, prepare

LOG = logging.getLogger("alchem")
# seconds: this epoch's training step; elapsed: wall time since training started
CSV_COLUMNS = [
    "epoch",
    "learning_rate",
    "train_loss",
    "validation_loss",
    "seconds",
    "elapsed",
] + [f"{split}_{m}" for split in ("train", "validation") for m in METRIC_NAMES]


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
    ``fine_tune``: start from this checkpoint's best weights (alchem.training.finetune),
    with its composition energies kept or refitted (``composition``). ``ready`` is
    called once the data, options and checkpoints are checked, before any file is
    written. A SIGINT or SIGTERM saves the state to ``checkpoint_path`` and raises
    ``TrainingInterrupted``; a non-finite loss raises ``ConfigError``.
    ``allow_change``: option keys a restart may change (alchem.training.restart).
    """
    torch.manual_seed(options["seed"])
    reuse_freed_memory()
    start = prepare(options, source, restart, fine_tune, composition, allow_change)
    if ready is not None:
        ready()
    loop = Loop(options, start, run_dir, checkpoint_path, restart)
    loop.run()
    return loop.finish()


@dataclass
class Best:
    """The best model so far, by validation loss."""

    state: dict
    loss: float = math.inf
    epoch: int = 0  # 0: none yet
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EpochSoFar:
    """An epoch's training pass up to batch ``next`` (all of it once finished)."""

    order: list[int]  # the epoch's shuffled structure indices
    next: int  # the position in ``order`` of the next batch's first structure
    train_loss: float = 0.0  # sum of batch loss x batch size
    seconds: float = 0.0  # of training before this process took the epoch up
    predictions: list[dict[str, torch.Tensor]] = field(default_factory=list)
    references: list[References] = field(default_factory=list)

    def saved(self) -> dict:
        # plain dicts: the checkpoint loads with weights_only
        return {
            **vars(self),
            "references": [vars(r) for r in self.references],
        }

    @staticmethod
    def of_saved(saved: dict) -> "EpochSoFar":
        references = [References(**r) for r in saved["references"]]
        return EpochSoFar(**{**saved, "references": references})


class Loop:
    """One run's epochs: a training pass, validation, the metrics file, checkpoints."""

    def __init__(
        self,
        options: dict,
        start: Start,
        run_dir: str,
        checkpoint_path: str,
        restart: str | None,
    ) -> None:
        self.options = options
        self.training = options["architecture"]["training"]
        self.dtype = precision(options)
        self.device = torch.device(options["device"])
        self.data = start.data
        self.info = start.info
        self.fingerprints = start.fingerprints
        self.run_dir = run_dir
        self.checkpoint_path = checkpoint_path
        self.last_checkpoint = restart  # where to go back to if training diverges
        self.model = start.model.to(self.device)
        # the loss gradient is only wanted for these: naming them lets autograd skip
        # the parts of the double backward that only lead to positions and strain
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        _log_run(options, self.model, self.data)
        # fused: one vectorised kernel for all parameters (CPU and GPU) instead of a
        # dozen elementwise operations per parameter tensor (3 % of a SOAP-BPNN step)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.training["learning_rate"], fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            factor=self.training["scheduler_factor"],
            patience=self.training["scheduler_patience"],
        )
        self.shuffle = torch.Generator().manual_seed(options["seed"] + 1)
        self.start_epoch = 1
        self.best = Best(state=copy.deepcopy(self.model.state_dict()))
        self.csv_lines = [",".join(CSV_COLUMNS)]
        self.partial: EpochSoFar | None = None  # of a run interrupted mid-epoch
        self.elapsed_before = 0.0  # of the runs this one restarts
        if start.state is not None:
            self._resume(start.state, start.changed)
        self.batch_size = self.training["batch_size"]
        self.validation_reference = References.of(self.data.validation)
        self.metrics_path = os.path.join(run_dir, "metrics.csv")
        n_batches = math.ceil(len(self.data.train) / self.batch_size)
        self.progress = TrainingProgress(
            self.start_epoch,
            self.training["num_epochs"],
            n_batches,
            first_batch=self.partial.next // self.batch_size if self.partial else 0,
        )
        self.epoch = self.start_epoch - 1
        self.total_elapsed = 0.0
        self.started = time.perf_counter()

    def _resume(self, state: dict, changed: list[str]) -> None:
        """Optimizer, scheduler, random numbers and bookkeeping of the checkpoint."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the scheduler's state holds its settings: those of the options file
        # (the same unless --allow-change)
        self.scheduler.factor = self.training["scheduler_factor"]
        self.scheduler.patience = self.training["scheduler_patience"]
        if "architecture.training.learning_rate" in changed:
            for group in self.optimizer.param_groups:
                group["lr"] = self.training["learning_rate"]
            self.scheduler._last_lr = [self.training["learning_rate"]]
        self.shuffle.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available():  # a GPU run's states, as far as GPUs are here
            cuda_states = state["rng"].get("cuda", [])
            for index in range(min(len(cuda_states), torch.cuda.device_count())):
                torch.cuda.set_rng_state(cuda_states[index], index)
        self.start_epoch = state["epoch"] + 1
        self.best = Best(
            state=state["best_state"],
            loss=state["best_loss"],
            epoch=state["best_epoch"],
            metrics=state.get("best_metrics", {}),
        )
        self.csv_lines = state.get("csv_lines", self.csv_lines)
        if state.get("partial_epoch") is not None:
            self.partial = EpochSoFar.of_saved(state["partial_epoch"])
        self.elapsed_before = state.get("elapsed", 0.0)

    def run(self) -> None:
        """Epochs until num_epochs or early stopping; a stop request checkpoints and
        raises TrainingInterrupted."""
        self.started = time.perf_counter()
        num_epochs = self.training["num_epochs"]
        with stop_requests() as self.stop_request, self.progress.logging_above():
            for epoch in range(self.start_epoch, num_epochs + 1):
                self.epoch = epoch
                if self._end_epoch(epoch, self._train_epoch(epoch)):
                    break
                if self.stop_request.received:  # at an epoch's end: nothing half done
                    self._update_elapsed()
                    self._interrupt(None)
        self.progress.close()
        self._update_elapsed()

    def _train_epoch(self, epoch: int) -> EpochSoFar:
        """One pass over the training set (or the rest of an interrupted one)."""
        started = time.perf_counter()
        self.model.train()
        if self.partial is not None:  # goes on with that epoch's order and sums
            so_far, self.partial = self.partial, None
        else:
            order = torch.randperm(len(self.data.train), generator=self.shuffle)
            so_far = EpochSoFar(order=order.tolist(), next=0)
        order, batch_size = so_far.order, self.batch_size
        for start in range(so_far.next, len(order), batch_size):
            chunk = [self.data.train[i] for i in order[start : start + batch_size]]
            loss, prediction, batch = self._step(chunk, epoch, start // batch_size)
            so_far.train_loss += loss * len(chunk)
            # training metrics come from this pass, not from another one
            so_far.predictions.append(detach(prediction))
            so_far.references.append(References.of_batch(batch))
            self.progress.batch(epoch, start // batch_size, loss)
            so_far.next = start + batch_size
            if self.stop_request.received and so_far.next < len(order):
                self._update_elapsed()
                so_far.seconds += time.perf_counter() - started
                self._interrupt(so_far)
        so_far.seconds += time.perf_counter() - started
        return so_far

    def _step(
        self, chunk: list[Structure], epoch: int, index: int
    ) -> tuple[float, dict[str, torch.Tensor], Batch]:
        """One optimizer step on a batch: its loss, prediction and the batch."""
        batch = collate(chunk).to(self.device, self.dtype)
        self.optimizer.zero_grad()
        targets = self.data.targets
        prediction = predict(
            self.model, batch, targets["forces"], targets["virial"], create_graph=True
        )
        loss = loss_function(
            prediction,
            batch,
            targets,
            self.training["loss_weights"],
            self._per_structure,
        )
        loss_value = loss.item()
        if not math.isfinite(loss_value):  # before the step spoils the weights
            n_batches = math.ceil(len(self.data.train) / self.batch_size)
            raise ConfigError(
                self._diverged(
                    f"the training loss is {loss_value} at epoch {epoch}, batch "
                    f"{index + 1} of {n_batches}"
                )
            )
        loss.backward(inputs=self.parameters)
        self.optimizer.step()
        return loss_value, prediction, batch

    @property
    def _per_structure(self) -> bool:
        return "energy" in self.training["per_structure_targets"]

    def _end_epoch(self, epoch: int, so_far: EpochSoFar) -> bool:
        """Validation, the scheduler, the log and metrics.csv, a checkpoint when due;
        True when early stopping ends the run."""
        seconds = so_far.seconds
        train_loss = so_far.train_loss / len(self.data.train)
        validation_loss, validation_metrics = self._validate(epoch)
        self.scheduler.step(validation_loss)
        if validation_loss < self.best.loss:
            self.best = Best(
                copy.deepcopy(self.model.state_dict()),
                validation_loss,
                epoch,
                validation_metrics,
            )
        log_now = (
            epoch % self.training["log_interval"] == 0
            or epoch == self.training["num_epochs"]
        )
        train_metrics: dict[str, float] = {}
        if log_now:
            train_metrics = metrics(
                concatenate(so_far.predictions),
                References.cat(so_far.references),
                self.data.targets,
            )
            LOG.info(
                "epoch %4d | lr %.2e | loss %.4e / %.4e | %s | %s | %.2f s",
                epoch,
                self.optimizer.param_groups[0]["lr"],
                train_loss,
                validation_loss,
                format_metrics("train", train_metrics),
                format_metrics("val", validation_metrics),
                seconds,
            )
        self._update_elapsed()
        lr = self.optimizer.param_groups[0]["lr"]
        row = [epoch, lr, train_loss, validation_loss, seconds, self.total_elapsed]
        row += [train_metrics.get(m, "") for m in METRIC_NAMES]
        row += [validation_metrics.get(m, "") for m in METRIC_NAMES]
        self.csv_lines.append(",".join(str(v) for v in row))
        atomic_write_text(self.metrics_path, "\n".join(self.csv_lines) + "\n")
        self.progress.epoch(epoch, train_loss, validation_loss, logged=log_now)
        return self._checkpoint_or_stop(epoch)

    def _validate(self, epoch: int) -> tuple[float, dict[str, float]]:
        """The validation loss and metrics of the model as it is now."""
        self.model.eval()
        predictions = evaluate(
            self.model,
            self.data.validation,
            self.data.targets,
            self.batch_size,
            self.dtype,
            self.device,
        )
        validation_loss = loss_function(
            predictions,
            self.validation_reference,
            self.data.targets,
            self.training["loss_weights"],
            self._per_structure,
        ).item()
        if not math.isfinite(validation_loss):
            raise ConfigError(
                self._diverged(
                    f"the validation loss is {validation_loss} after epoch {epoch}"
                )
            )
        return validation_loss, metrics(
            predictions, self.validation_reference, self.data.targets
        )

    def _checkpoint_or_stop(self, epoch: int) -> bool:
        """A checkpoint every checkpoint_interval epochs and when stopping early."""
        patience = self.training["early_stopping_patience"]
        stop = epoch - self.best.epoch > patience
        if epoch % self.training["checkpoint_interval"] == 0 or stop:
            snapshot = self._snapshot()
            self.last_checkpoint = os.path.join(self.run_dir, f"epoch_{epoch}.ckpt")
            save_checkpoint(snapshot, self.last_checkpoint)
            learning_curve(self.run_dir)  # the figure follows the checkpoints
        if stop:
            LOG.info("early stopping: no improvement for %d epochs", patience)
        return stop

    def _update_elapsed(self) -> None:
        self.total_elapsed = self.elapsed_before + time.perf_counter() - self.started

    def _snapshot(self) -> dict:
        bookkeeping = {
            "epoch": self.epoch,
            "best_loss": self.best.loss,
            "best_state": self.best.state,
            "best_epoch": self.best.epoch,
            "best_metrics": self.best.metrics,
            "csv_lines": list(self.csv_lines),
            "elapsed": self.total_elapsed,
            "data_fingerprint": self.fingerprints,
        }
        return checkpoint(
            self.options,
            self.info,
            self.model,
            self.optimizer,
            self.scheduler,
            self.shuffle,
            bookkeeping,
        )

    def _interrupt(self, so_far: EpochSoFar | None) -> None:
        """Save the state (mid-epoch: up to the last batch done) and stop."""
        snapshot = self._snapshot()
        if so_far is not None:
            snapshot["epoch"] = self.epoch - 1  # the last whole epoch
        snapshot["partial_epoch"] = None if so_far is None else so_far.saved()
        save_checkpoint(snapshot, self.checkpoint_path)
        self.progress.close()
        best = None
        if self.best.epoch > 0:
            self.model.load_state_dict(self.best.state)
            best = self.model.eval()
        raise TrainingInterrupted(
            self.stop_request.received, self.checkpoint_path, best, self.best.epoch
        )

    def _diverged(self, what: str) -> str:
        kept = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was due yet"
        )
        return (
            f"training diverged: {what}. Try a smaller learning_rate (now "
            f"{self.optimizer.param_groups[0]['lr']:g}) and look for outliers in the "
            f"data (huge forces, wrong units); nothing was exported, {kept}"
        )

    def finish(self) -> tuple[EnergyModel, dict]:
        """The last checkpoint, the best model, and its metrics on validation and
        test sets."""
        training = self.training
        if self.best.epoch == 0:
            raise ConfigError(
                f"no epoch was trained (the checkpoint is at epoch {self.epoch}, "
                f"num_epochs is {training['num_epochs']}): nothing to export; raise "
                "num_epochs"
            )
        save_checkpoint(self._snapshot(), self.checkpoint_path)
        learning_curve(self.run_dir)
        model = self.model
        model.load_state_dict(self.best.state)
        model.eval()
        LOG.info(
            "best validation loss %.4e at epoch %d", self.best.loss, self.best.epoch
        )
        if fit_from_options(model, self.data.train, self.data.validation, self.options):
            # the best model of the checkpoint carries it too (alchem-export)
            self.best.state = copy.deepcopy(model.state_dict())
            save_checkpoint(self._snapshot(), self.checkpoint_path)
        summary = {}
        for name, structures in (
            ("validation", self.data.validation),
            ("test", self.data.test),
        ):
            if structures:
                predictions = evaluate(
                    model,
                    structures,
                    self.data.targets,
                    self.batch_size,
                    self.dtype,
                    self.device,
                )
                reference = References.of(structures)
                summary[name] = metrics(predictions, reference, self.data.targets)
                LOG.info("final %s", format_metrics(name, summary[name]))
        summary["run"] = {
            "elapsed": self.total_elapsed,
            "epochs": self.epoch,
            "best_epoch": self.best.epoch,
            "best_loss": self.best.loss,
            "best_metrics": self.best.metrics,
            "checkpoint": self.checkpoint_path,
            "atomic_types": list(model.atomic_types),
        }
        return model, summary


def _log_run(options: dict, model: EnergyModel, data: Datasets) -> None:
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
