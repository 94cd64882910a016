"""What a file given as a model or a checkpoint is, to say so when it is the wrong one.

``model.pt`` (exported, TorchScript) and ``model.ckpt`` (a training checkpoint,
``torch.save``) are both zip archives: an exported model holds TorchScript code and
metatomic metadata (``extra/model-metadata``), a checkpoint a pickle (``data.pkl``)
and no code. Looking inside the archive tells them apart without loading either, and the
metadata of a model tells loaders, before TorchScript does, whether this process
has the operator library the model was exported with (``check_operator``).
"""

import json
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


def extra_files(path: str) -> dict[str, str]:
    """An exported model's metatomic ``extra/*`` files by name (model-metadata,
    extensions, torch-version...), read without loading the model."""
    require_exported_model(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                name.rsplit("/extra/", 1)[1]: archive.read(name).decode()
                for name in archive.namelist()
                if "/extra/" in name
            }
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a readable model.pt ({error})") from None


def alchem_metadata(path: str) -> dict[str, str]:
    """The exporter's ``extra`` metadata (``alchem.*`` keys, architecture...)."""
    try:
        metadata = json.loads(extra_files(path).get("model-metadata", "{}"))
    except ValueError:
        return {}
    return metadata.get("extra", {}) if isinstance(metadata, dict) else {}


def check_operator(path: str) -> None:
    """ConfigError if the model calls ``alchem::power_spectrum`` and this process
    cannot give it the operator it was exported with."""
    from . import native, ops

    wanted = alchem_metadata(path).get("alchem.ops_schema")
    if not wanted:
        return  # a torch-operations model, or one of another exporter
    exported_by = alchem_metadata(path).get("alchem.version", "unknown")
    fix = (
        "re-export the checkpoint with this alchem (`alchem-export model.ckpt`), "
        "or export it with `alchem-export --torch-only`"
    )
    if not ops.load():
        mismatch = native.torch_mismatch()
        reason = mismatch or f"{ops.library_path()} is not built"
        raise ConfigError(
            f"{path} calls alchem::power_spectrum (alchem {exported_by}), which "
            f"is not available here: {reason}"
        )
    have = ops.schema()
    if have != wanted:
        from . import __version__

        raise ConfigError(
            f"{path} calls alchem::power_spectrum as exported by alchem "
            f"{exported_by} ({wanted}), but this alchem {__version__} provides "
            f"({have}): {fix}"
        )
