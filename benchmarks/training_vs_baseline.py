"""Seconds per training epoch of today's code against an earlier commit's, same data.

    .venv/bin/python benchmarks/training_vs_baseline.py [--baseline 48dcc24]
        [--architecture alchemical_model] [--structures 48] [--validation 8]
        [--epochs 3] [--rounds 2] [--precision 64] [--today-precision 64]

The baseline is the commit when issue 13 (the many-element study) was filed: its
``python/`` is extracted with ``git archive`` into benchmarks/work/ and run by the
same interpreter (this environment's torch and libraries), its package put first on
the path in place of the editable install. Both train the default hyperparameters of
``--architecture`` (batch 8, one thread; the baseline in ``--precision``, 64 or 32,
default 64, its default; today's code in ``--today-precision``, default the
architecture's DEFAULT_PRECISION, 32 for the Alchemical Model) on the first
``--structures`` structures of benchmarks/many_elements/data/train.xyz (18
elements; made by generate.py if missing) and ``--validation`` of its validation.xyz,
for ``--epochs`` epochs. Seconds per epoch: metrics.csv's ``seconds`` (the training
pass of each epoch, validation excluded), the first epoch left out (its first steps
allocate), median over the rest. Rounds alternate the order (odd rounds baseline
first). Writes benchmarks/results/training_vs_baseline_<architecture>.{csv,md}.
"""

import argparse
import csv
import datetime
import os
import platform
import statistics
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import training  # noqa: E402 (its data preparation and timed runs)

# the baseline's package in place of the editable install (whose import hook
# would otherwise win over sys.path)
BASELINE_LAUNCHER = """
import sys
sys.meta_path = [
    f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"
]
sys.path.insert(0, sys.argv.pop(1))
from alchem.cli.train import main
sys.exit(main())
"""


def extract(commit: str, work: str) -> str:
    """The commit's python/ folder under work/: the folder to put on the path."""
    full = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = os.path.join(work, f"baseline-{full[:12]}")
    if not os.path.isdir(os.path.join(folder, "python", "alchem")):
        os.makedirs(folder, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", full, "python"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return os.path.join(folder, "python"), full


def train(
    folder: str, label: str, args: argparse.Namespace, source: str | None
) -> tuple[list[float], float]:
    """One training run; its seconds per epoch (epochs 2..) and peak MB."""
    precision = args.precision if source is not None else args.today_precision
    options = {
        "seed": 1,
        "base_precision": precision,
        "architecture": {
            "name": args.architecture,
            "training": {"batch_size": 8, "num_epochs": args.epochs},
        },
        "training_set": "train.xyz",
        "validation_set": "validation.xyz",
    }
    name = f"{label}.yaml"
    with open(os.path.join(folder, name), "w") as handle:
        yaml.safe_dump(options, handle)
    # the export after the last epoch is not in metrics.csv's seconds
    arguments = [name, "--run-dir", label, "-o", f"{label}.pt"]
    if source is None:
        command = [os.path.join(training.BIN, "alchem-train"), *arguments]
    else:
        command = [sys.executable, "-c", BASELINE_LAUNCHER, source, *arguments]
    peak = training.run(command, folder, f"{label}.log")
    with open(os.path.join(folder, label, "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["seconds"]) for r in rows[1:]], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="48dcc24")
    parser.add_argument(
        "--architecture",
        default="alchemical_model",
        choices=("alchemical_model", "soap_bpnn"),
    )
    parser.add_argument("--structures", type=int, default=48)
    parser.add_argument("--validation", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", type=int, default=64, choices=(32, 64))
    parser.add_argument("--today-precision", type=int, default=None, choices=(32, 64))
    parser.add_argument("--work", default=os.path.join(HERE, "work", "vs_baseline"))
    args = parser.parse_args()
    if args.today_precision is None:
        from alchem.architectures import get_architecture

        args.today_precision = get_architecture(args.architecture).DEFAULT_PRECISION
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch is not timed)")
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    source, commit = extract(args.baseline, work)
    summary, _ = training.many_elements_data(work, args.structures, args.validation)

    seconds: dict[str, list[float]] = {"baseline": [], "today": []}
    peaks: dict[str, list[float]] = {"baseline": [], "today": []}
    rows = []
    for round_ in range(1, args.rounds + 1):
        order = ("baseline", "today") if round_ % 2 else ("today", "baseline")
        for which in order:
            label = f"{which}-{round_}"
            print(f"round {round_}: {which}", flush=True)
            epochs, peak = train(
                work, label, args, source if which == "baseline" else None
            )
            seconds[which] += epochs
            peaks[which].append(peak)
            rows.append(
                {
                    "round": round_,
                    "code": which,
                    "seconds_per_epoch": statistics.median(epochs),
                    "peak_MB": round(peak),
                    "load": training.LOADS[-1],
                }
            )
            print(rows[-1], flush=True)

    today_precision = args.today_precision
    suffix = f"{args.precision}"
    if today_precision != args.precision:
        suffix += f"_today{today_precision}"
    base = os.path.join(
        HERE, "results", f"training_vs_baseline_{args.architecture}_{suffix}"
    )
    with open(base + ".csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    ratio = median["baseline"] / median["today"]
    lines = [
        f"# Training speed against commit {commit[:12]} "
        "(benchmarks/training_vs_baseline.py)",
        "",
        f"{args.architecture}, default hyperparameters, float{args.precision} "
        f"(today's code: float{today_precision}), "
        f"batch 8, one thread; data: {summary}; {args.epochs} epochs per run, "
        f"{args.rounds} rounds alternated. {datetime.date.today()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        "",
        "| code | s per epoch, each epoch after the first | median | peak MB |",
        "|---|---|---|---|",
    ]
    for which in ("baseline", "today"):
        each = ", ".join(f"{s:.1f}" for s in seconds[which])
        lines.append(
            f"| {which} | {each} | {median[which]:.1f} | {max(peaks[which]):.0f} |"
        )
    lines += ["", f"baseline / today (medians): {ratio:.2f}", ""]
    lines += ["Load average before -> after each run:", ""]
    lines += [f"- {load}" for load in training.LOADS]
    with open(base + ".md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
