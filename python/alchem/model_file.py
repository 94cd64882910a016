"""What an exported ``model.pt`` says about itself, read without loading it.

metatomic stores its metadata as extra files of the TorchScript archive (a zip):
``extra/model-metadata`` (with the exporter's ``extra`` dict), ``extra/extensions``
and ``extra/torch-version``. Reading them first lets loaders give one clear
message (wrong file, missing operator library, operator of another build) where
TorchScript would raise a long error.
"""

import json
import zipfile

from .errors import ConfigError


def extra_files(path: str) -> dict[str, str]:
    """The archive's ``extra/*`` files by name; ConfigError if it is no model."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                name.rsplit("/extra/", 1)[1]: archive.read(name).decode()
                for name in archive.namelist()
                if "/extra/" in name
            }
    except FileNotFoundError:
        raise ConfigError(f"{path}: model file not found") from None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path}: not a readable model.pt ({error}); export one with "
            "`alchem-export model.ckpt -o model.pt`"
        ) from None


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
