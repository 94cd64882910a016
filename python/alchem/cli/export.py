"""``alchem-export model.ckpt -o model.pt``: export a checkpoint's best model."""

import argparse

from .common import add_version, check_output_folder


def export_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="alchem-export",
        description="Export a training checkpoint as a TorchScript metatomic model "
        "(model.pt) for ASE and LAMMPS",
    )
    parser.add_argument(
        "checkpoint",
        help="checkpoint written by alchem-train (model.ckpt, epoch_N.ckpt)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="model.pt",
        help="exported model, must end in .pt; extensions/ goes beside it if the "
        "model needs any (default: %(default)s)",
    )
    parser.add_argument(
        "--last",
        action="store_true",
        help="export the model of the last epoch instead of the best one "
        "(lowest validation loss)",
    )
    add_version(parser)
    parser.add_argument(
        "--torch-only",
        action="store_true",
        help="export on torch operations only: the model needs no extensions/ "
        "folder and loads in any metatomic engine, but runs slower on the CPU "
        "(docs/training.md)",
    )
    args = parser.parse_args(argv)

    from ..errors import ConfigError
    from ..export import describe_extensions, export_model
    from ..info import metrics_record
    from ..training import load_checkpoint, model_from_checkpoint

    if not args.output.endswith(".pt"):
        raise ConfigError(f"-o {args.output}: the exported model must end in .pt")
    check_output_folder(args.output)
    model, options = model_from_checkpoint(args.checkpoint, best=not args.last)
    if not args.last:  # the metrics recorded are those of the best epoch
        options["metrics"] = metrics_record(load_checkpoint(args.checkpoint))
    extensions = export_model(model, options, args.output, torch_only=args.torch_only)
    print(f"exported {args.output} ({describe_extensions(extensions)})")


def main(argv: list[str] | None = None) -> None:
    from .common import run

    run(lambda: export_main(argv))


if __name__ == "__main__":
    main()
