"""``alchem-train options.yaml``: train a model and export it."""

import argparse
import datetime
import logging
import os

from ..errors import ConfigError
from .common import run, setup_logging


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="alchem-train",
        description="Train a SOAP-BPNN or Alchemical Model and export it as model.pt",
    )
    parser.add_argument("options", help="options file (YAML)")
    parser.add_argument("-o", "--output", default="model.pt", help="exported model")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="final checkpoint (default: OUTPUT with .ckpt)",
    )
    parser.add_argument("--restart", default=None, help="resume from this checkpoint")
    parser.add_argument(
        "--run-dir", default=None, help="run folder (default: outputs/<date>/<time>)"
    )
    return parser.parse_args(argv)


def train_main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from ..options import expand_options, load_yaml, save_options

    user = load_yaml(args.options)
    options = expand_options(
        user, args.options, os.path.dirname(os.path.abspath(args.options))
    )
    if args.restart is not None and not os.path.isfile(args.restart):
        raise ConfigError(f"--restart {args.restart}: checkpoint not found")
    if not args.output.endswith(".pt"):
        raise ConfigError(f"-o {args.output}: the exported model must end in .pt")
    checkpoint = args.checkpoint or args.output[: -len(".pt")] + ".ckpt"

    now = datetime.datetime.now()
    run_dir = args.run_dir or os.path.join(
        "outputs", now.strftime("%Y-%m-%d"), now.strftime("%H-%M-%S")
    )
    os.makedirs(run_dir, exist_ok=True)
    setup_logging(os.path.join(run_dir, "train.log"))
    save_options(options, os.path.join(run_dir, "options.yaml"))
    log = logging.getLogger("alchem")
    log.info("run folder: %s", run_dir)

    from ..export import describe_extensions, export_model
    from ..training import train

    model, _ = train(options, args.options, run_dir, checkpoint, restart=args.restart)
    extensions = export_model(model, options, args.output)
    log.info(
        "exported %s (%s), checkpoint %s",
        args.output,
        describe_extensions(extensions),
        checkpoint,
    )


def main(argv: list[str] | None = None) -> None:
    run(lambda: train_main(argv))


if __name__ == "__main__":
    main()
