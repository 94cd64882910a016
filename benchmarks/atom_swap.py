"""Cost of one `fix atom/swap` trial with `pair_style alchemical`: the local update
(`swap_cache yes`, the default) against a whole evaluation per trial (`swap_cache
no`), next to LAMMPS' own cost per trial.

Run (from the repository root, after ``make plugin``; about 15 minutes on 2 cores):

    .venv/bin/python benchmarks/atom_swap.py [--sizes 500,4000,32000]

What it does, in benchmarks/work/atom_swap/ (scratch, not committed):

1. Trains for one epoch, at default hyperparameters and float64, a SOAP-BPNN and an
   Alchemical Model on 20 EMT structures of Cu Ni Pd Pt (``lammps_md.train``: the
   cost of an evaluation does not depend on the weights).
2. Writes cubic fcc alloys (a = 3.6 Angstrom) of 500, 4000 and 32,000 atoms, 4
   atom types at random (seed 0).
3. For each size, one ``lmp`` process per potential (1 rank, 1 thread) runs, after
   ``run 0``, one MD step with a ``fix atom/swap`` of 0 trials and one with K
   trials (canonical swaps of types 1 and 2 at 600 K); LAMMPS times the fix in its
   "Modify" section, so the cost of a trial is (Modify(K) - Modify(0)) / K: the
   whole trial as LAMMPS runs it (swap, communication of the types, the pair
   style, `compute pe`, acceptance), without the evaluation before the trials.
   The pair style's own time per local trial (its end-of-run summary) is
   recorded too. The model runs in the same process with `swap_cache no` and
   `swap_cache yes` in turn, 3 times at 500 atoms and 2 at 4000 (the fastest of
   each is kept: the machine may be shared). LAMMPS' own cost per trial:
   `pair_style zero` (no pair work: the fix and LAMMPS alone) and `lj/cut` (a
   cheap pair style, which evaluates the whole box at every trial).

Writes benchmarks/results/atom_swap.csv and atom_swap.md.
"""

import argparse
import csv
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lammps_md import BIN, RESULTS, log, machine, train  # noqa: E402

LATTICE = 3.6
ELEMENTS = "Cu Ni Pd Pt"
MASSES = (63.55, 58.69, 106.42, 195.08)
MODELS = {"SOAP-BPNN": "sb4", "Alchemical Model": "am4"}
PAIRS = {
    "zero": ["pair_style zero 5.0", "pair_coeff * *"],
    "lj/cut": ["pair_style lj/cut 5.0", "pair_coeff * * 0.1 2.3"],
}
# trials per measurement: a whole evaluation per trial costs up to ~20 s at
# 32,000 atoms; the others milliseconds, against the noise of the evaluation of
# the whole box before the trials (up to seconds at 32,000 atoms)
FULL_TRIALS = {500: 10, 4000: 3, 32000: 1}
LOCAL_TRIALS = {500: 300, 4000: 500, 32000: 1000}
CHEAP_TRIALS = 300
REPEATS = {500: 3, 4000: 2, 32000: 1}
# `timer full`: min, avg, max wall seconds, %varavg, %CPU (CPU time / wall time)
MODIFY = re.compile(
    r"^Modify\s*\|\s*\S+\s*\|\s*(\S+)\s*\|\s*\S+\s*\|\s*\S+\s*\|\s*(\S+)\s*\|",
    re.MULTILINE,
)
SUMMARY = re.compile(
    r"fix atom/swap on rank 0: (\d+) energy evaluations, (\d+) local"
    r"(?: \(([\d.]+) owned atoms re-evaluated, ([\d.]+) ms each)?"
)


def write_structure(work: str, atoms: int) -> str:
    """A cubic fcc cell of ``atoms`` atoms, 4 types at random, as a data file."""
    import numpy as np

    n = round((atoms / 4) ** (1 / 3))
    assert 4 * n**3 == atoms, atoms
    path = os.path.join(work, f"fcc{atoms}.data")
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    positions = (cells.reshape(-1, 1, 3) + basis).reshape(-1, 3) * LATTICE
    types = np.random.default_rng(0).integers(1, 5, len(positions))
    lines = [
        f"random fcc alloy, a = {LATTICE}",
        "",
        f"{atoms} atoms",
        "4 atom types",
        "",
    ]
    lines += [f"0 {n * LATTICE} {axis}lo {axis}hi" for axis in "xyz"]
    lines += ["", "Masses", ""] + [f"{t + 1} {m}" for t, m in enumerate(MASSES)]
    lines += ["", "Atoms # atomic", ""]
    lines += [
        f"{i + 1} {t} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}"
        for i, (t, p) in enumerate(zip(types, positions, strict=True))
    ]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def script(data: str, variants: list[tuple[list[str], int]], repeats: int) -> str:
    """``repeats`` times each variant in turn: its pair_style lines, then one MD
    step with a fix atom/swap of 0 trials and one with K trials."""
    lines = [
        "units metal",
        "atom_style atomic",
        f"read_data {data}",
        *variants[0][0],
        "neighbor 1.0 bin",
        "velocity all create 300 4928",
        "fix md all nve",
        "timestep 0.001",
        "thermo_style custom step pe",
        "timer full",
        "run 0",
    ]
    for _ in range(repeats):
        for pair, trials in variants:
            lines += pair
            for seed, k in ((29, 0), (31, trials)):
                lines += [
                    f"fix swap all atom/swap 1 {k} {seed} 600 ke yes types 1 2",
                    "run 1",
                    "unfix swap",
                ]
    return "\n".join(lines) + "\n"


def measure(
    work: str, name: str, data: str, variants: list, repeats: int
) -> tuple[list[dict], list]:
    """ms per trial of each variant, from LAMMPS' Modify times: the fastest of the
    repeats (the variants alternate, so that a busy spell of a shared machine
    does not favour one), and the pair style's summaries of the runs with trials."""
    path = os.path.join(work, f"in.{name}")
    with open(path, "w") as out:
        out.write(script(data, variants, repeats))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [os.path.join(BIN, "lmp"), "-in", path, "-log", "none", "-nocite"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}")
    # (wall, CPU) seconds of each run after run 0
    modify = [
        (float(wall), float(wall) * float(cpu) / 100.0)
        for wall, cpu in MODIFY.findall(result.stdout)
    ][1:]
    summaries = [s for s in SUMMARY.findall(result.stdout) if int(s[1]) > 0]
    rows = []
    for v, (_, trials) in enumerate(variants):
        wall, cpu = [], []
        for r in range(repeats):
            k = 2 * (r * len(variants) + v)
            wall.append(1e3 * (modify[k + 1][0] - modify[k][0]) / trials)
            cpu.append(1e3 * (modify[k + 1][1] - modify[k][1]) / trials)
        rows.append(
            {
                "trials": trials,
                "repeats": repeats,
                "ms_per_trial": min(wall),
                "cpu_ms_per_trial": min(cpu),
            }
        )
    return rows, summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(HERE, "work", "atom_swap"))
    parser.add_argument("--sizes", default="500,4000,32000")
    parser.add_argument("--output", default="atom_swap", help="results file stem")
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    train(work, "sb4", "soap_bpnn", ELEMENTS.replace(" ", ","))
    train(work, "am4", "alchemical_model", ELEMENTS.replace(" ", ","))
    log(f"models ready ({time.perf_counter() - started:.0f} s)")

    rows = []
    for atoms in [int(n) for n in args.sizes.split(",")]:
        data = write_structure(work, atoms)
        cheap = [(PAIRS[name], CHEAP_TRIALS) for name in PAIRS]
        repeats = REPEATS.get(atoms, 1)
        measured, _ = measure(work, f"lammps{atoms}", data, cheap, repeats)
        for name, row in zip(PAIRS, measured, strict=True):
            rows.append({"potential": name, "mode": "lammps", "atoms": atoms, **row})
            log(f"{name} {atoms} atoms: {row['cpu_ms_per_trial']:.3f} ms per trial")
        for potential, model in MODELS.items():
            pair = [
                f"pair_style alchemical {model}-f64.pt swap_cache {{}}",
                f"pair_coeff * * {ELEMENTS}",
            ]
            variants = [
                ([pair[0].format("no"), pair[1]], FULL_TRIALS.get(atoms, 1)),
                ([pair[0].format("yes"), pair[1]], LOCAL_TRIALS.get(atoms, 1000)),
            ]
            measured, summaries = measure(
                work, f"{model}-{atoms}", data, variants, repeats
            )
            for mode, row in zip(("full", "local"), measured, strict=True):
                if mode == "local":  # the summaries of the runs with local trials
                    row["atoms_reevaluated"] = float(summaries[0][2])
                    row["plugin_ms_per_local_evaluation"] = min(
                        float(local[3]) for local in summaries
                    )
                rows.append(
                    {"potential": potential, "mode": mode, "atoms": atoms, **row}
                )
                log(
                    f"{potential} {mode} {atoms} atoms: {row['cpu_ms_per_trial']:.3f} "
                    f"ms CPU, {row['ms_per_trial']:.3f} ms wall"
                )

    os.makedirs(RESULTS, exist_ok=True)
    fields = [
        "potential",
        "mode",
        "atoms",
        "trials",
        "repeats",
        "ms_per_trial",
        "cpu_ms_per_trial",
        "atoms_reevaluated",
        "plugin_ms_per_local_evaluation",
    ]
    with open(os.path.join(RESULTS, f"{args.output}.csv"), "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})
    with open(os.path.join(RESULTS, f"{args.output}.md"), "w") as out:
        out.write(report(rows))
    log(f"done in {time.perf_counter() - started:.0f} s")


def report(rows: list[dict]) -> str:
    sizes = sorted({row["atoms"] for row in rows})
    cost = {(r["potential"], r["mode"], r["atoms"]): r for r in rows}
    lines = [
        "# fix atom/swap: milliseconds per trial",
        "",
        f"Machine: {machine()}, shared with other jobs. 1 MPI rank, 1 thread, "
        "default-size models (float64, cutoff 5 Å) on random fcc Cu-Ni-Pd-Pt (a = "
        "3.6 Å); canonical swaps of types 1 and 2 at 600 K. A trial's cost: LAMMPS' "
        "Modify time of a step with K trials minus that of a step with none, over K; "
        "the CPU time (wall time x LAMMPS' %CPU of the section, `timer full`: the "
        "time the process computed, which a shared machine disturbs less), wall time "
        "in brackets; fastest of 3 (500 atoms), 2 (4000) or 1 (32,000) alternated "
        "measurements (`benchmarks/atom_swap.py`). `swap_cache yes`: also the owned "
        "atoms a trial re-evaluated on average and the pair style's own wall "
        "milliseconds per trial (its end-of-run summary).",
        "",
        "| potential | " + " | ".join(f"{n} atoms" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]

    def cell(row: dict) -> str:
        return f"{row['cpu_ms_per_trial']:.3f} ({row['ms_per_trial']:.3f})"

    for name in PAIRS:
        cells = [cell(cost[(name, "lammps", n)]) for n in sizes]
        lines.append(f"| LAMMPS, `pair_style {name}` | " + " | ".join(cells) + " |")
    for potential in MODELS:
        for mode, label in (("full", "swap_cache no"), ("local", "swap_cache yes")):
            cells = []
            for n in sizes:
                row = cost[(potential, mode, n)]
                text = cell(row)
                if mode == "local":
                    text += (
                        f"; {row['atoms_reevaluated']:.0f} atoms, pair style "
                        f"{row['plugin_ms_per_local_evaluation']:.3f}"
                    )
                cells.append(text)
            lines.append(f"| {potential}, {label} | " + " | ".join(cells) + " |")
        ratios = []
        for n in sizes:
            full, local = cost[(potential, "full", n)], cost[(potential, "local", n)]
            ratios.append(
                f"{full['cpu_ms_per_trial'] / local['cpu_ms_per_trial']:.0f}x "
                f"({full['ms_per_trial'] / local['ms_per_trial']:.0f}x)"
            )
        lines.append(f"| {potential}: no / yes | " + " | ".join(ratios) + " |")
    first, last = sizes[0], sizes[-1]
    lines += [
        "",
        f"Growth of the cost per trial from {first} to {last} atoms, CPU ms (wall):",
        "",
    ]
    for potential, mode in [(p, "local") for p in MODELS] + [
        (name, "lammps") for name in PAIRS
    ]:
        growth = [
            cost[(potential, mode, last)][key] - cost[(potential, mode, first)][key]
            for key in ("cpu_ms_per_trial", "ms_per_trial")
        ]
        label = f"`pair_style {potential}`" if mode == "lammps" else potential
        if mode == "local":
            label += ", swap_cache yes"
        lines.append(f"- {label}: {growth[0]:+.3f} ({growth[1]:+.3f})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
