"""``alchem-train options.yaml``: train a model and export it."""

import argparse
import datetime
import logging
import logging.handlers
import os
import shlex
import sys
import traceback
from collections.abc import Callable

from ..errors import ConfigError
from .common import add_version, check_output_folder, run, setup_logging


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="alchem-train",
        description="Train a SOAP-BPNN or Alchemical Model and export it as model.pt",
    )
    parser.add_argument(
        "options", help="options file (YAML; every option: docs/training.md)"
    )
    parser.add_argument(
        "-o",
        "--output",
        default="model.pt",
        help="exported model of the best epoch, must end in .pt (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="CKPT",
        help="final checkpoint, for --restart, --fine-tune and alchem-export "
        "(default: OUTPUT with .ckpt, e.g. model.ckpt)",
    )
    parser.add_argument(
        "--restart",
        default=None,
        metavar="CKPT",
        help="resume from this checkpoint (model.ckpt or the run folder's "
        "epoch_N.ckpt) with the same options file; num_epochs may be raised",
    )
    parser.add_argument(
        "--allow-change",
        default="",
        metavar="KEYS",
        help="with --restart: option keys that may differ from the checkpoint's run, "
        "comma-separated (e.g. learning_rate, or architecture.training.batch_size; "
        "training_set for other data); num_epochs, log_interval and "
        "checkpoint_interval may always change",
    )
    parser.add_argument(
        "--fine-tune",
        default=None,
        metavar="CKPT",
        help="start from this checkpoint's best weights with a fresh optimizer, "
        "scheduler and best loss, on the options file's data (an Alchemical Model "
        "also learns elements it never saw)",
    )
    parser.add_argument(
        "--composition",
        choices=("keep", "refit"),
        default=None,
        help="with --fine-tune: keep the checkpoint's per-element energies (fit only "
        "new elements', default) or refit those of every element in the new data",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        metavar="DIR",
        help="run folder: train.log, metrics.csv, options.yaml, epoch_N.ckpt "
        "(default: outputs/<date>/<time>)",
    )
    add_version(parser)
    return parser.parse_args(argv)


def train_main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from ..options import expand_options, load_yaml

    user = load_yaml(args.options)
    options = expand_options(
        user, args.options, os.path.dirname(os.path.abspath(args.options))
    )
    checkpoint, allow_change = _check_arguments(args)
    now = datetime.datetime.now()
    run_dir = args.run_dir or os.path.join(
        "outputs", now.strftime("%Y-%m-%d"), now.strftime("%H-%M-%S")
    )
    start_run = _run_folder(run_dir, options)
    log = logging.getLogger("alchem")

    from ..export import describe_extensions, export_model
    from ..training import train
    from ..training.interrupts import TrainingInterrupted

    started = datetime.datetime.now()
    try:
        model, summary = train(
            options,
            args.options,
            run_dir,
            checkpoint,
            restart=args.restart,
            fine_tune=args.fine_tune,
            composition=args.composition or "keep",
            ready=start_run,
            allow_change=allow_change,
        )
    except TrainingInterrupted as stop:
        _stopped(stop, args, options, run_dir, export_model)
        sys.exit(stop.exit_status)
    except ConfigError as error:
        _to_log_file(f"error: {error}")
        raise
    except BaseException:
        _to_log_file(traceback.format_exc().rstrip())
        raise
    from ..info import metrics_record

    options["metrics"] = metrics_record(summary["run"], summary)  # for alchem-info
    extensions = export_model(model, options, args.output)
    elapsed = (datetime.datetime.now() - started).total_seconds()
    _closing_summary(summary, args, options, run_dir, checkpoint, elapsed)
    log.info("extensions: %s", describe_extensions(extensions))


def _check_arguments(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The checkpoint path and the --allow-change keys, the flags checked together
    (before any work)."""
    if args.restart is not None and not os.path.isfile(args.restart):
        raise ConfigError(f"--restart {args.restart}: checkpoint not found")
    if not args.output.endswith(".pt"):
        raise ConfigError(f"-o {args.output}: the exported model must end in .pt")
    check_output_folder(args.output)
    checkpoint = args.checkpoint or args.output[: -len(".pt")] + ".ckpt"

    allow_change = [key.strip() for key in args.allow_change.split(",") if key.strip()]
    if allow_change and args.restart is None:
        raise ConfigError(
            f"--allow-change {args.allow_change} applies to --restart only (a new run "
            "or a fine-tuning takes the options file as it is)"
        )
    if args.fine_tune is not None and not os.path.isfile(args.fine_tune):
        raise ConfigError(f"--fine-tune {args.fine_tune}: checkpoint not found")
    if args.composition is not None and args.fine_tune is None:
        raise ConfigError(
            f"--composition {args.composition} applies to --fine-tune only (a new run "
            "fits the composition energies on its training set)"
        )
    return checkpoint, allow_change


def _run_folder(run_dir: str, options: dict) -> Callable[[], None]:
    """Logging to the console now; the function that makes the run folder once the
    inputs are checked (no stray folders), with train.log holding what was logged
    before it."""
    from ..options import save_options

    setup_logging()  # the console only, until the inputs are checked
    log = logging.getLogger("alchem")
    early = logging.handlers.MemoryHandler(10**6, flushLevel=logging.CRITICAL + 1)
    log.addHandler(early)

    def start_run() -> None:
        os.makedirs(run_dir, exist_ok=True)
        setup_logging(os.path.join(run_dir, "train.log"))
        for handler in log.handlers:
            if isinstance(handler, logging.FileHandler):
                early.setTarget(handler)
                early.flush()
        early.close()
        save_options(options, os.path.join(run_dir, "options.yaml"))
        log.info("run folder: %s", run_dir)

    return start_run


def _to_log_file(text: str) -> None:
    """Errors go to train.log too (once the run folder exists), not twice on screen."""
    for handler in logging.getLogger("alchem").handlers:
        if isinstance(handler, logging.FileHandler):
            record = logging.LogRecord("alchem", logging.ERROR, "", 0, text, None, None)
            handler.handle(record)


def restart_command(args: argparse.Namespace, checkpoint: str, run_dir: str) -> str:
    """The command line that goes on from ``checkpoint`` (same options, same files)."""
    words = ["alchem-train", args.options, "-o", args.output]
    if args.checkpoint is not None:
        words += ["--checkpoint", args.checkpoint]
    words += ["--run-dir", run_dir, "--restart", checkpoint]
    return shlex.join(words)


def _stopped(stop, args, options, run_dir, export_model) -> None:
    log = logging.getLogger("alchem")
    if stop.model is not None:
        export_model(stop.model, options, args.output)
        model = f" and {args.output} (best model so far, epoch {stop.best_epoch})"
    else:
        model = f" (no epoch had ended: {args.output} not written)"
    log.warning(
        "stopped by %s: saved the state of the run in %s%s. To go on:\n  %s",
        stop,
        stop.checkpoint,
        model,
        restart_command(args, stop.checkpoint, run_dir),
    )


def _closing_summary(summary, args, options, run_dir, checkpoint, elapsed) -> None:
    from ase.data import chemical_symbols

    from ..training import format_metrics
    from ..training.progress import format_duration

    log = logging.getLogger("alchem")
    run_info = summary["run"]
    best = run_info["best_metrics"]
    metrics = f" ({format_metrics('validation', best)})" if best else ""
    elements = " ".join(chemical_symbols[z] for z in run_info["atomic_types"])
    test = options.get("test_set")
    data = test["systems"]["read_from"] if isinstance(test, dict) else "test.xyz"
    data = os.path.relpath(data) if os.path.isabs(data) else data
    lines = [
        f"done in {format_duration(elapsed)}: {run_info['epochs']} epochs; best "
        f"validation loss {run_info['best_loss']:.4e} at epoch "
        f"{run_info['best_epoch']}{metrics}",
        "files:",
        f"  {args.output:<28} the model of the best epoch (ASE, LAMMPS)",
        f"  {checkpoint:<28} checkpoint: --restart, --fine-tune, alchem-export",
    ]
    for name, what in (
        ("train.log", "this log"),
        ("metrics.csv", "metrics of every epoch"),
        ("options.yaml", "every option, defaults filled in"),
    ):
        lines.append(f"  {os.path.join(run_dir, name):<28} {what}")
    lines += [
        "next:",
        f"  alchem-eval {args.output} {shlex.quote(data)}",
        "  in LAMMPS (units metal):",
        f"    pair_style alchemical {args.output}",
        f"    pair_coeff * * {elements}    # one element per atom type",
    ]
    log.info("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    run(lambda: train_main(argv))


if __name__ == "__main__":
    main()
