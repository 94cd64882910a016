"""Training: the options' data split, the model built, the epoch loop, checkpoints.

One job per module, in the order a run uses them:

- ``split``: the training, validation and test sets (``load_datasets``);
- ``build``: the model in its working precision (``build_model``);
- ``start``: a fresh, restarted (``restart``) or fine-tuned (``finetune``) start;
- ``metrics``: the loss, references, predictions over a set, error metrics;
- ``loop``: the epochs (``train``), with ``progress`` and ``interrupts``;
- ``checkpoints``: saving and loading checkpoints, the model inside one.
"""

from .build import build_model, default_dtype, precision
from .checkpoints import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from .loop import train
from .metrics import (
    References,
    evaluate,
    format_metrics,
    loss_function,
    metrics,
)
from .split import Datasets, load_datasets

__all__ = [
    "CHECKPOINT_FORMAT",
    "Datasets",
    "References",
    "build_model",
    "default_dtype",
    "evaluate",
    "format_metrics",
    "load_checkpoint",
    "load_datasets",
    "loss_function",
    "metrics",
    "model_from_checkpoint",
    "precision",
    "save_checkpoint",
    "train",
]
