"""``alchem-info model.pt|model.ckpt``: what a model is and what it was trained on."""

import argparse

from .common import add_version, run


def info_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="alchem-info",
        description="Print a model's architecture, elements, cutoff, number of "
        "parameters, precision, extensions, training data and metrics",
    )
    parser.add_argument(
        "model", help="an exported model (model.pt) or a checkpoint (model.ckpt)"
    )
    add_version(parser)
    args = parser.parse_args(argv)

    from ..info import describe, format_description

    print("\n".join(format_description(describe(args.model))))


def main(argv: list[str] | None = None) -> None:
    run(lambda: info_main(argv))


if __name__ == "__main__":
    main()
