"""``alchem``: the list of commands, ``--version``, and ``alchem COMMAND ...`` as a
shorthand for ``alchem-COMMAND ...`` (also ``python -m alchem``)."""

import difflib
import importlib
import sys

from .. import __version__

# command: (module, what it does); each module has main(argv)
COMMANDS = {
    "train": ("alchem.cli.train", "train a model from an options file, write model.pt"),
    "eval": ("alchem.cli.evaluate", "errors of model.pt on labelled structures"),
    "export": ("alchem.cli.export", "export a checkpoint (model.ckpt) as model.pt"),
    "info": ("alchem.cli.info", "what a model.pt or model.ckpt is and was trained on"),
    "lammps": ("alchem.cli.lammps", "where the LAMMPS plugin is (plugin load)"),
    "validate": (
        "alchem.cli.validate",
        "physics of model.pt against a reference (elastic constants, phonons, MD)",
    ),
    "uncertainty": (
        "alchem.cli.uncertainty",
        "add calibrated uncertainty (LLPR) to a model.ckpt, export model.pt",
    ),
    "select": (
        "alchem.cli.select",
        "the most uncertain, diverse frames of a trajectory, for labelling",
    ),
}


def usage() -> str:
    lines = [
        f"alchem {__version__}: interatomic potentials trained in Python, run in LAMMPS",
        "",
        "usage: alchem COMMAND [ARGS...]   (or alchem-COMMAND [ARGS...])",
        "       alchem --version",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "alchem COMMAND --help lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        print(f"alchem {__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(
            f"error: unknown command '{name}'{hint} (commands: {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        sys.exit(2)
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = f"alchem-{name}"
    module.main(rest)


if __name__ == "__main__":
    main()
