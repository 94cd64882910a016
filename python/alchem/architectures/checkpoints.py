"""Loading checkpoints written by earlier versions of the architectures."""


def drop_derived_keys(state_dict: dict, prefix: str, names: tuple[str, ...]) -> None:
    """Remove ``prefix + name`` from ``state_dict`` for every name: constants that an
    earlier version saved but that the architecture now rebuilds from its
    hyperparameters (or no longer has), so that its checkpoints still load. Call
    from ``_load_from_state_dict`` before the parent's."""
    for name in names:
        state_dict.pop(prefix + name, None)
