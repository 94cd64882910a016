"""What a file given as a model or a checkpoint is, to say so when it is the wrong one.

``model.pt`` (exported, TorchScript) and ``model.ckpt`` (a training checkpoint,
``torch.save``) are both zip archives: an exported model holds TorchScript code and
metatomic metadata (``extra/model-metadata``), a checkpoint a pickle (``data.pkl``)
and no code. Looking inside the archive tells them apart without loading either.
"""

import zipfile

from .errors import ConfigError

EXPORTED = "exported model"
CHECKPOINT = "checkpoint"
OTHER = "other"


def file_kind(path: str) -> str:
    """EXPORTED, CHECKPOINT or OTHER (a zip archive of something else).

    A missing file, or one that is not a complete zip archive (truncated, garbage),
    is a ConfigError.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a file") from None
    except (zipfile.BadZipFile, OSError):
        raise ConfigError(
            f"{path}: not a model or checkpoint (the file is truncated or not a torch "
            "archive); write it again with alchem-train or alchem-export"
        ) from None
    parts = {name.split("/", 1)[-1] for name in names}
    if "extra/model-metadata" in parts:
        return EXPORTED
    if "data.pkl" in parts and not any(p.startswith("code/") for p in parts):
        return CHECKPOINT
    return OTHER


def require_exported_model(path: str) -> None:
    """For commands that run ``model.pt``: a checkpoint gets the export command."""
    kind = file_kind(path)
    if kind == CHECKPOINT:
        raise ConfigError(
            f"{path}: this is a checkpoint; export it with "
            f"`alchem-export {path} -o model.pt` and give model.pt"
        )
    if kind == OTHER:
        raise ConfigError(
            f"{path}: not an exported metatomic model; export a checkpoint with "
            "`alchem-export model.ckpt -o model.pt`"
        )


def require_checkpoint(path: str) -> None:
    """For commands that read a checkpoint: ``model.pt`` cannot be trained on."""
    kind = file_kind(path)
    if kind == EXPORTED:
        raise ConfigError(
            f"{path}: this is an exported model, not a checkpoint; give the .ckpt "
            "that alchem-train wrote beside it (default: model.ckpt)"
        )
    if kind == OTHER:
        raise ConfigError(
            f"{path}: not an alchem checkpoint; give the .ckpt that alchem-train wrote"
        )
