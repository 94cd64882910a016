"""ASE calculator for an exported ``model.pt`` (metatomic-ase underneath)."""

import os

from .errors import ConfigError


def load_calculator(
    model_path: str, device: str | None = None, extensions: str | None = None
):
    """A ``MetatomicCalculator`` for ``model_path``, loading the extensions beside it.

    ``extensions`` defaults to the ``extensions/`` folder next to the model, where
    ``alchem-train`` and ``alchem-export`` put the libraries the model needs.
    """
    # A model's extensions/ may hold a copy of a library also installed as a Python
    # package (sphericart-torch for models from other tools). If the copy is loaded
    # first, a later import of the package registers the same operators again and
    # aborts the process; importing the package first avoids that.
    try:
        import sphericart.torch  # noqa: F401
    except ImportError:
        pass
    from metatomic_ase import MetatomicCalculator

    if not os.path.isfile(model_path):
        raise ConfigError(f"{model_path}: model file not found")
    if extensions is None:
        extensions = os.path.join(
            os.path.dirname(os.path.abspath(model_path)), "extensions"
        )
    return MetatomicCalculator(
        model_path,
        extensions_directory=extensions if os.path.isdir(extensions) else None,
        device=device,
    )
