"""``alchem-uncertainty model.ckpt``: fit a checkpoint's uncertainty (LLPR) on the
data it was trained on, store it in the checkpoint and export model.pt."""

import argparse

from .common import add_version, check_output_folder


def uncertainty_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="alchem-uncertainty",
        description="Add calibrated uncertainty (LLPR: last-layer prediction "
        "rigidity) to a trained checkpoint, fitted on its training set and "
        "calibrated on its validation set, without retraining; write the checkpoint "
        "back and export the model (docs/uncertainty.md)",
    )
    parser.add_argument("checkpoint", help="checkpoint written by alchem-train")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="exported model, must end in .pt (default: the checkpoint's name with "
        ".pt: model.ckpt -> model.pt)",
    )
    parser.add_argument(
        "--ensemble-size",
        type=int,
        default=None,
        help="last layers drawn from the posterior for energy_ensemble "
        "(default: the options' uncertainty.ensemble_size, else 64)",
    )
    parser.add_argument(
        "--regularizer",
        default=None,
        help="varsigma^2 relative to the mean eigenvalue of the precision, or auto "
        "(1e-8) (default: the options' uncertainty.regularizer, else auto)",
    )
    parser.add_argument(
        "--torch-only",
        action="store_true",
        help="export on torch operations only (as alchem-export --torch-only)",
    )
    add_version(parser)
    args = parser.parse_args(argv)

    import logging

    from ..errors import ConfigError
    from ..export import describe_extensions, export_model
    from ..info import metrics_record
    from ..options import expand_uncertainty
    from ..training import load_checkpoint, load_datasets, model_from_checkpoint
    from ..training.checkpoints import save_checkpoint
    from ..uncertainty.apply import fit_from_options
    from .common import setup_logging

    output = args.output or _default_output(args.checkpoint)
    if not output.endswith(".pt"):
        raise ConfigError(f"-o {output}: the exported model must end in .pt")
    check_output_folder(output)
    setup_logging()
    state = load_checkpoint(args.checkpoint)
    model, options = model_from_checkpoint(args.checkpoint)
    settings = dict(options.get("uncertainty") or {})
    settings["method"] = "llpr"
    if args.ensemble_size is not None:
        settings["ensemble_size"] = args.ensemble_size
    if args.regularizer is not None:
        settings["regularizer"] = _number_or_auto(args.regularizer)
    options["uncertainty"] = expand_uncertainty(settings, "the command line")
    logging.getLogger("alchem").info("reading the data of %s", args.checkpoint)
    data = load_datasets(options, args.checkpoint)
    fit_from_options(model, data.train, data.validation, options)
    state["best_state"] = model.state_dict()
    state["options"] = options
    save_checkpoint(state, args.checkpoint)
    options["metrics"] = metrics_record(state)
    extensions = export_model(model, options, output, torch_only=args.torch_only)
    print(
        f"uncertainty added to {args.checkpoint}; exported {output} "
        f"({describe_extensions(extensions)})"
    )


def _default_output(checkpoint: str) -> str:
    stem = checkpoint[: -len(".ckpt")] if checkpoint.endswith(".ckpt") else checkpoint
    return stem + ".pt"


def _number_or_auto(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(
            f"--regularizer {text}: must be auto or a number > 0"
        ) from None


def main(argv: list[str] | None = None) -> None:
    from .common import run

    run(lambda: uncertainty_main(argv))


if __name__ == "__main__":
    main()
