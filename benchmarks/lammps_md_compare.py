"""MD speed of two builds of the project in LAMMPS, alternated in one script.

Run (from the repository root, after ``make plugin``):

    .venv/bin/python benchmarks/lammps_md_compare.py --before-lib DIR --before-work DIR
                                                     [--rounds 4] [--sizes 2048,16384]

"before": the compiled libraries in ``--before-lib`` (``ALCHEM_PLUGIN_DIR``: another
checkout's ``alchem/lib``) running the model files of ``--before-work``, which that
checkout's Python trained and exported (its benchmarks/lammps_md.py ``train``, as in
docs/benchmarks-md.md). "after": this checkout's libraries and models, trained and
exported here into ``--work`` the same way (one epoch on 20 EMT structures, seed 0;
the cost of a step does not depend on the weights).

For the default models (Alchemical Model 7 el. and SOAP-BPNN 2 el., float32, the
plugin's default keywords) at each size, on one rank: ``rounds`` times a run of the
before build, then one of the after build, with benchmarks/lammps_md.py's timed MD
(same data file, warm-up and steps for both). The spread of each build's own repeats
is the noise against which the ratio after / before is read. Writes
benchmarks/results/lammps_md_compare.csv (every run) and .md (medians, ratios).
"""

import argparse
import csv
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lammps_md  # noqa: E402 (the benchmark whose runs this repeats)

MODELS = [lammps_md.AM32, lammps_md.SB32]


def compare(args: argparse.Namespace) -> list[dict]:
    """Every run, before and after alternated, as lammps_md.run_lammps rows."""
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    lammps_md.train(work, "am", "alchemical_model", lammps_md.SEVEN.replace(" ", ","))
    lammps_md.train(work, "sb2", "soap_bpnn", "Cu,Ni")
    sizes = [int(size) for size in args.sizes.split(",")]
    data = lammps_md.write_structures(work, sizes)
    potentials = lammps_md.potentials_folder()
    builds = {
        "before": (os.path.abspath(args.before_work), args.before_lib),
        "after": (work, None),
    }
    rows = []
    for atoms in sizes:
        for potential in MODELS:
            warmup, steps = lammps_md.steps_for(potential, atoms, 1, quick=False)
            for round_ in range(args.rounds):
                for build, (folder, library) in builds.items():
                    # importing the lammps module set LAMMPS_PLUGIN_PATH in this
                    # process to this checkout's plugin; lmp would load it too
                    env = (
                        {"ALCHEM_PLUGIN_DIR": library, "LAMMPS_PLUGIN_PATH": library}
                        if library
                        else None
                    )
                    row = lammps_md.run_lammps(
                        folder,
                        potential,
                        data[atoms],
                        1,
                        warmup,
                        steps,
                        potentials,
                        timeout=1800,
                        profile=False,  # a plugin before `profile on` refuses it
                        env=env,
                    )
                    row.update(build=build, round=round_ + 1)
                    expected = os.path.realpath(library or lammps_md.plugin_folder())
                    if os.path.realpath(row["plugin_folder"]) != expected:
                        sys.exit(
                            f"lammps_md_compare.py: the {build} run loaded the plugin "
                            f"of {row['plugin_folder']}, not of {expected}"
                        )
                    rows.append(row)
                    lammps_md.log(
                        f"{build:6s} {potential}, {atoms} atoms, round {round_ + 1}: "
                        f"{row['us_per_atom_step']:.2f} us/atom/step"
                    )
    return rows


def summary(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Markdown: per model and size, each build's runs, median and spread, and the
    ratio of the medians."""
    lines = [
        "# MD speed, two builds alternated (benchmarks/lammps_md_compare.py)",
        "",
        f"Machine: {lammps_md.machine()}. Before: libraries {args.before_lib}, "
        f"models of {args.before_work}; after: this checkout. 1 rank, one torch "
        "thread, the plugin's default keywords; µs per atom per step (LAMMPS "
        "`Loop time`, wall). Spread: (max - min) / median of one build's runs.",
        "",
        "Paired: each after run over the before run just before it (the machine's "
        "load changes between rounds; a pair ran seconds apart).",
        "",
        "| model | atoms | steps | before: runs | after: runs | before median "
        "| after median | after / before (medians) | paired after / before: median "
        "(range) | spread before | spread after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for build in ("after", "before"):  # inserted in front: before comes first
        folders = sorted({r["plugin_folder"] for r in rows if r["build"] == build})
        lines.insert(3, f"Plugin loaded by LAMMPS, {build}: {', '.join(folders)}.")
    lines.insert(3, "")
    keys = sorted({(r["potential"], r["atoms"]) for r in rows}, key=lambda k: k[1])
    for potential, atoms in keys:
        times = {
            build: [
                r["us_per_atom_step"]
                for r in rows
                if r["build"] == build
                and r["potential"] == potential
                and r["atoms"] == atoms
            ]
            for build in ("before", "after")
        }
        medians = {b: statistics.median(t) for b, t in times.items()}
        paired = [a / b for a, b in zip(times["after"], times["before"])]
        spreads = {b: (max(t) - min(t)) / medians[b] for b, t in times.items()}
        steps = next(r["steps"] for r in rows if r["potential"] == potential)
        lines.append(
            f"| {potential} | {atoms} | {steps} | "
            + " | ".join(", ".join(f"{t:.2f}" for t in times[b]) for b in times)
            + f" | {medians['before']:.2f} | {medians['after']:.2f} | "
            f"{medians['after'] / medians['before']:.3f} | "
            f"{statistics.median(paired):.3f} ({min(paired):.3f}-{max(paired):.3f}) | "
            f"{100 * spreads['before']:.1f} % | {100 * spreads['after']:.1f} % |"
        )
    return lines


def write_report(rows: list[dict], args: argparse.Namespace, stem: str) -> None:
    with open(stem + ".md.tmp", "w") as handle:
        handle.write("\n".join(summary(rows, args)) + "\n")
    os.replace(stem + ".md.tmp", stem + ".md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-lib", required=True, help="ALCHEM_PLUGIN_DIR")
    parser.add_argument("--before-work", required=True, help="its model files")
    parser.add_argument(
        "--work", default=os.path.join(HERE, "work", "lammps_md_compare")
    )
    parser.add_argument("--sizes", default="2048,16384")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--output", default="lammps_md_compare")
    parser.add_argument(
        "--report-only", action="store_true", help="the .md again from the .csv"
    )
    args = parser.parse_args()
    stem = os.path.join(lammps_md.RESULTS, args.output)
    if args.report_only:
        with open(stem + ".csv") as handle:
            rows = [
                dict(
                    row,
                    atoms=int(row["atoms"]),
                    us_per_atom_step=float(row["us_per_atom_step"]),
                )
                for row in csv.DictReader(handle)
            ]
        write_report(rows, args, stem)
        return
    for path, what in ((args.before_lib, "library"), (args.before_work, "model")):
        if not os.path.isdir(path):
            sys.exit(f"lammps_md_compare.py: the {what} folder '{path}' does not exist")
    started = time.perf_counter()
    rows = compare(args)
    fields = ["build", "round"] + [k for k in rows[0] if k not in ("build", "round")]
    temporary = stem + ".csv.tmp"
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, stem + ".csv")
    write_report(rows, args, stem)
    lammps_md.log(f"done in {time.perf_counter() - started:.0f} s: {stem}.md")


if __name__ == "__main__":
    main()
