"""What every command shares: clean error messages and logging set-up."""

import argparse
import logging
import sys
from collections.abc import Callable

from ..errors import ConfigError


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the command's name and alchem's version."""
    from .. import __version__

    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )


def run(main: Callable[[], None]) -> None:
    """Run a command; bad input is one line on stderr and exit status 2."""
    try:
        main()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def setup_logging(log_file: str | None = None) -> None:
    logger = logging.getLogger("alchem")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if log_file is not None:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)


def check_output_folder(path: str) -> None:
    """An output whose folder does not exist is a typo more often than a wish:
    say so before any work, instead of failing when the file is written."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"-o {path}: the folder {folder} does not exist")
