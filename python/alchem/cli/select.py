"""``alchem-select frames -m model.pt -n N -o selected.extxyz``: the N most uncertain,
mutually diverse frames of a trajectory, ready for labelling (docs/active-learning.md)."""

import argparse

from .common import add_version, check_output_folder


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alchem-select",
        description="Write the N frames of a trajectory (any file ASE reads, or a "
        "LAMMPS text dump) that the model is least sure about and that differ from "
        "each other, as extxyz without energies or forces, ready for labelling "
        "(docs/active-learning.md). The model needs uncertainty (alchem-uncertainty).",
    )
    parser.add_argument("frames", help="trajectory: extxyz, ASE .traj, LAMMPS dump...")
    parser.add_argument(
        "-m", "--model", required=True, help="exported model.pt with uncertainty"
    )
    parser.add_argument(
        "-n", "--number", type=int, required=True, help="frames to select (>= 1)"
    )
    parser.add_argument(
        "-o", "--output", default="selected.extxyz", help="extxyz file to write"
    )
    parser.add_argument(
        "--rank",
        choices=["max", "mean"],
        default="max",
        help="a frame's score: the largest per-atom energy sigma (default: one atom "
        "in an unknown environment is enough) or the mean over its atoms",
    )
    parser.add_argument(
        "--min-distance",
        default="auto",
        help="frames closer than this (eV/atom, the predicted sigma of the "
        "difference of their energies per atom) to a frame already selected are "
        "skipped; 0 keeps only exact duplicates out; auto (default): the median "
        "over the frames of the distance to their nearest other frame",
    )
    parser.add_argument(
        "--types",
        nargs="+",
        metavar="ELEMENT",
        help="LAMMPS dump without an element column: the element of each atom type, "
        "in order (type 1 first)",
    )
    parser.add_argument(
        "--index",
        default=":",
        help="frames of the file to consider, as ASE's index: 100: (skip the first "
        "100), ::10 (every 10th); default all",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: the model's)"
    )
    add_version(parser)
    return parser


def select_main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    import os

    import numpy as np

    from .. import selection
    from ..errors import ConfigError

    if args.number < 1:
        raise ConfigError(f"-n {args.number}: the number of frames must be >= 1")
    min_distance = _min_distance(args.min_distance)
    check_output_folder(args.output)
    if not os.path.isfile(args.model):
        raise ConfigError(f"-m {args.model}: no such file")
    frames, positions = selection.read_frames(args.frames, args.index, args.types)
    calculator = _calculator(args.model, args.device)
    selection.check_model(calculator, args.model)
    uncertainties = selection.evaluate_frames(calculator, frames, args.frames)

    scores = np.array([u.score(args.rank) for u in uncertainties])
    descriptors = np.stack([u.descriptor for u in uncertainties])
    if min_distance is None:
        min_distance = selection.auto_min_distance(descriptors)
    chosen = selection.select_diverse(scores, descriptors, args.number, min_distance)

    source = os.path.basename(args.frames)
    written = []
    for k in chosen:
        info = {"source_file": source, "source_index": positions[k]}
        if "timestep" in frames[k].info:
            info["timestep"] = int(frames[k].info["timestep"])
        written.append(selection.unlabelled_copy(frames[k], uncertainties[k], info))
    selection.write_frames(args.output, written)
    _report(args, len(frames), scores, min_distance, chosen, positions, uncertainties)


def _calculator(model: str, device: str | None):
    from ..calculator import load_calculator
    from ..errors import ConfigError

    try:
        return load_calculator(model, device=device)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"-m {model}: not a model alchem can load ({error})"
        ) from None


def _min_distance(text: str) -> float | None:
    """None for auto."""
    from ..errors import ConfigError

    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0.0:
        raise ConfigError(
            f"--min-distance {text}: must be auto or a number >= 0 (eV/atom)"
        )
    return value


def _report(args, n_frames, scores, min_distance, chosen, positions, uncertainties):
    import numpy as np

    print(
        f"{n_frames} frames of {args.frames}; per-atom energy sigma ({args.rank} over "
        f"atoms): median {float(np.median(scores)):.4g} eV, largest "
        f"{float(scores.max()):.4g} eV; min distance {min_distance:.3g} eV/atom"
    )
    if len(chosen) < min(args.number, n_frames):
        print(
            f"only {len(chosen)} frames differ by more than the min distance "
            f"(asked for {args.number}); a smaller --min-distance gives more"
        )
    print(f"{'frame':>7} {'sigma max':>10} {'sigma mean':>10} {'E sigma':>9}  (eV)")
    for k in chosen:
        u = uncertainties[k]
        print(
            f"{positions[k]:>7} {u.atom_sigma.max():>10.4g} {u.atom_sigma.mean():>10.4g}"
            f" {u.energy_sigma:>9.4g}"
        )
    if n_frames < args.number:
        print(f"asked for {args.number} frames: the input has {n_frames}")
    print(f"wrote {len(chosen)} frames to {args.output}")


def main(argv: list[str] | None = None) -> None:
    from .common import run

    run(lambda: select_main(argv))


if __name__ == "__main__":
    main()
