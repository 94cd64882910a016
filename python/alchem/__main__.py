"""``python -m alchem``: the same as the ``alchem`` command."""

from .cli.main import main

main()
