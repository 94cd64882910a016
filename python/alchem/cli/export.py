"""``alchem-export model.ckpt -o model.pt``: export a checkpoint's best model."""

import argparse


def export_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="alchem-export", description="Export a training checkpoint as model.pt"
    )
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", default="model.pt")
    parser.add_argument(
        "--last", action="store_true", help="export the last model instead of the best"
    )
    args = parser.parse_args(argv)

    from ..errors import ConfigError
    from ..export import describe_extensions, export_model
    from ..training import model_from_checkpoint

    if not args.output.endswith(".pt"):
        raise ConfigError(f"-o {args.output}: the exported model must end in .pt")
    model, options = model_from_checkpoint(args.checkpoint, best=not args.last)
    extensions = export_model(model, options, args.output)
    print(f"exported {args.output} ({describe_extensions(extensions)})")


def main(argv: list[str] | None = None) -> None:
    from .common import run

    run(lambda: export_main(argv))


if __name__ == "__main__":
    main()
