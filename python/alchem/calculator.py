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
    # The model's extensions/ hold a copy of sphericart-torch's library. If that copy
    # is loaded first, a later `import sphericart.torch` (training, another model)
    # registers the same operators again and aborts the process. Importing the
    # package first makes metatomic find the operators already registered.
    import sphericart.torch  # noqa: F401
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
