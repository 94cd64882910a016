"""SOAP-BPNN against the Alchemical Model on the many-element MEAM data.

    .venv/bin/python benchmarks/many_elements/generate.py      # data/ (1 min)
    .venv/bin/python benchmarks/many_elements/run.py compare --minutes 30
    .venv/bin/python benchmarks/many_elements/run.py curves --minutes 30
    .venv/bin/python benchmarks/many_elements/run.py transfer --minutes 30

Every run is ``alchem-train`` on an options file written here (one thread,
``nice``), stopped by SIGTERM after the wall-time budget (the run saves its
checkpoint and its best model so far). Runs go two at a time (``--parallel``), side by
side, one thread each, pinned round robin to the cores (``taskset``), so that both share the machine's load
alike; SOAP-BPNN and the default Alchemical Model are always a pair.

- ``compare``: ``--train`` structures (default 1000), SOAP-BPNN, the default
  Alchemical Model and its variants (``--runs``, names below);
- ``curves``: SOAP-BPNN and the default Alchemical Model (or ``--runs``) at 100,
  300, 1000 and 3000 training structures, the same budget each;
- ``transfer``: the same two (or ``--runs``) trained on the 2-3-element structures,
  tested on the 5-8-element ones.

Each run's best model (lowest validation loss) is evaluated on the test set (500
structures; transfer: the 5-8-element ones) through the project's Python API.
Written into ``--results`` (default benchmarks/many_elements/results): ``<mode>.csv``
(one row per run: epochs, seconds per epoch, parameters, peak memory, test energy,
force and stress RMSE), ``<mode>_time.png`` (validation force and energy RMSE
against wall time) and, for curves, ``curves.png``. The runs themselves stay in
``--runs-dir`` (default benchmarks/many_elements/runs, ignored by git).
"""

import argparse
import csv
import os
import resource
import signal
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)

# name -> (architecture, model hypers, top-level options)
RUNS: dict[str, tuple[str, dict, dict]] = {
    "soap_bpnn": ("soap_bpnn", {}, {}),
    "alchemical": ("alchemical_model", {}, {}),
    "alchemical-K2": ("alchemical_model", {"soap": {"num_pseudo_species": 2}}, {}),
    "alchemical-K8": ("alchemical_model", {"soap": {"num_pseudo_species": 8}}, {}),
    "alchemical-le": ("alchemical_model", {"soap": {"radial_basis_type": "le"}}, {}),
    "alchemical-basis200": (
        "alchemical_model",
        {"soap": {"basis_cutoff_power_spectrum": 200}},
        {},
    ),
    "alchemical-percentre": (
        "alchemical_model",
        {"soap": {"contract_center_species": False}},
        {},
    ),
    "alchemical-le-percentre": (
        "alchemical_model",
        {"soap": {"radial_basis_type": "le", "contract_center_species": False}},
        {},
    ),
    "alchemical-nopair": (
        "alchemical_model",
        {"pair_potential": {"basis_size": 0}},
        {},
    ),
    "alchemical-percentre-nopair": (
        "alchemical_model",
        {
            "soap": {"contract_center_species": False},
            "pair_potential": {"basis_size": 0},
        },
        {},
    ),
    # without the LayerNorm (and without the pair potential: the diagnosis of
    # docs/alchemical-study.md compares them with alchemical-nopair)
    "alchemical-nonorm": (
        "alchemical_model",
        {"soap": {"normalize": False}, "pair_potential": {"basis_size": 0}},
        {},
    ),
    "alchemical-percentre-nonorm": (
        "alchemical_model",
        {
            "soap": {"normalize": False, "contract_center_species": False},
            "pair_potential": {"basis_size": 0},
        },
        {},
    ),
    "soap_bpnn-pair": ("soap_bpnn", {"pair_potential": {"basis_size": 16}}, {}),
    "soap_bpnn-nonorm": ("soap_bpnn", {"bpnn": {"layernorm": False}}, {}),
    # base_precision: each architecture's default unless a run sets it (the
    # Alchemical Model's is 32, SOAP-BPNN's 64)
    "alchemical-f32": ("alchemical_model", {}, {"base_precision": 32}),
    "alchemical-f64": ("alchemical_model", {}, {"base_precision": 64}),
    "soap_bpnn-f32": ("soap_bpnn", {}, {"base_precision": 32}),
}
DEFAULT_COMPARE = "soap_bpnn,alchemical,alchemical-K2,alchemical-le,alchemical-percentre,alchemical-f32"
DEFAULT_PAIR = "soap_bpnn,alchemical"  # curves and transfer
TRAINING = {
    "batch_size": 8,
    "num_epochs": 100000,  # the wall-time budget stops the run
    "log_interval": 1,
    "checkpoint_interval": 1000000,
}


def subset(source: str, count: int, folder: str, n_elements=None) -> str:
    """The first ``count`` structures of ``source`` (random order already)."""
    import ase.io

    frames = ase.io.read(source, ":")
    if n_elements is not None:
        frames = [a for a in frames if a.info["n_elements"] in n_elements]
    frames = frames[:count]
    path = os.path.join(folder, f"{os.path.basename(source)[:-4]}_{len(frames)}.xyz")
    if not os.path.exists(path):
        ase.io.write(path + ".tmp", frames, format="extxyz")
        os.replace(path + ".tmp", path)
    return path


def write_options(folder: str, name: str, train: str, validation: str, args) -> str:
    architecture, model, top = RUNS[name]
    training = dict(TRAINING, batch_size=args.batch_size)
    if args.learning_rate is not None:
        training["learning_rate"] = args.learning_rate
    options = {
        "seed": args.seed,
        **top,
        "architecture": {
            "name": architecture,
            "model": model,
            "training": training,
        },
        "training_set": {"systems": {"read_from": os.path.abspath(train)}},
        "validation_set": {"systems": {"read_from": os.path.abspath(validation)}},
    }
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "options.yaml")
    with open(path, "w") as file:
        yaml.safe_dump(options, file)
    return path


def start(folder: str, core: int | None) -> subprocess.Popen:
    environment = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[name] = "1"
    command = ["nice", "-n", "10"]
    if core is not None:
        command += ["taskset", "-c", str(core)]
    command += [
        "/usr/bin/time",
        "-f",
        "%M",
        "-o",
        os.path.join(folder, "peak_kb"),
        os.path.join(BIN, "alchem-train"),
        "options.yaml",
        "-o",
        "model.pt",
        "--run-dir",
        "run",
    ]
    log = open(os.path.join(folder, "stdout.log"), "w")
    return subprocess.Popen(
        command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=environment
    )


def train_side_by_side(folders: list[str], seconds: float) -> None:
    """Start the runs together, SIGTERM them all after ``seconds``."""
    cores = os.cpu_count() or 1
    # one core each where there are enough; else round robin (still one thread each)
    processes = [
        start(f, i % cores if cores > 1 else None) for i, f in enumerate(folders)
    ]
    deadline = time.time() + seconds
    while time.time() < deadline and any(p.poll() is None for p in processes):
        time.sleep(2)
    for p in processes:
        if p.poll() is None:
            # /usr/bin/time forwards nothing: signal its child, alchem-train
            children = subprocess.run(
                ["pgrep", "-P", str(p.pid)], capture_output=True, text=True
            ).stdout.split()
            for child in children:
                grand = subprocess.run(
                    ["pgrep", "-P", child], capture_output=True, text=True
                ).stdout.split()
                for pid in grand or [child]:
                    os.kill(int(pid), signal.SIGTERM)
    for p in processes:
        p.wait()


def read_metrics(folder: str) -> list[dict]:
    path = os.path.join(folder, "run", "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return list(csv.DictReader(file))


def test_errors(folder: str, test: str) -> dict:
    """Best model of the run on the test set: RMSEs, parameters."""
    import torch
    from alchem.data import read_structures
    from alchem.training import References, evaluate, metrics, model_from_checkpoint

    torch.set_num_threads(1)
    model, options = model_from_checkpoint(os.path.join(folder, "model.ckpt"))
    structures = read_structures(
        dict(
            options["training_set"],
            systems=dict(options["training_set"]["systems"], read_from=test),
        ),
        model.cutoff,
        test,
    )
    targets = {"energy": True, "forces": True, "virial": True}
    dtype = next(model.parameters()).dtype
    predictions = evaluate(model, structures, targets, 8, dtype, torch.device("cpu"))
    result = metrics(predictions, References.of(structures), targets)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def summarise(name: str, folder: str, test: str, train_count: int) -> dict:
    rows = read_metrics(folder)
    row = {"run": name, "train": train_count, "epochs": len(rows)}
    if rows:
        row["seconds_per_epoch"] = float(rows[-1]["elapsed"]) / len(rows)
        row["elapsed"] = float(rows[-1]["elapsed"])
    peak = os.path.join(folder, "peak_kb")
    if os.path.exists(peak):
        row["peak_GB"] = int(open(peak).read().split()[-1]) / 1e6
    if os.path.exists(os.path.join(folder, "model.ckpt")) and rows:
        errors = test_errors(folder, test)
        row["parameters"] = errors["parameters"]
        for key in ("energy_rmse", "forces_rmse", "stress_rmse"):
            row[f"test_{key}"] = errors.get(key)
    return row


def write_csv(path: str, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path + ".tmp", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def plot_time(path: str, runs: dict[str, str], title: str) -> None:
    from alchem.plots import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, folder in runs.items():
        rows = read_metrics(folder)
        if not rows:
            continue
        t = [float(r["elapsed"]) / 60 for r in rows]
        for axis, key in zip(axes, ("forces_rmse", "energy_rmse"), strict=True):
            axis.plot(
                t, [float(r[f"validation_{key}"]) for r in rows], "o-", ms=3, label=name
            )
    axes[0].set_ylabel("validation force RMSE (meV/Å)")
    axes[1].set_ylabel("validation energy RMSE (meV/atom)")
    for axis in axes:
        axis.set_xlabel("wall time (min)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)


def plot_curves(path: str, rows: list[dict], title: str) -> None:
    from alchem.plots import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in sorted({r["run"] for r in rows}):
        mine = sorted((r for r in rows if r["run"] == name), key=lambda r: r["train"])
        mine = [r for r in mine if r.get("test_forces_rmse") is not None]
        n = [r["train"] for r in mine]
        axes[0].plot(n, [r["test_forces_rmse"] for r in mine], "o-", label=name)
        axes[1].plot(n, [r["test_energy_rmse"] for r in mine], "o-", label=name)
    axes[0].set_ylabel("test force RMSE (meV/Å)")
    axes[1].set_ylabel("test energy RMSE (meV/atom)")
    for axis in axes:
        axis.set_xlabel("training structures")
        axis.set_xscale("log")
        # linear errors: they span less than a decade, where log ticks read badly
        axis.grid(alpha=0.3, which="both")
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)


def replot_curves(args: argparse.Namespace) -> None:
    table = os.path.join(args.results, f"curves{args.tag}.csv")
    with open(table) as file:
        rows = list(csv.DictReader(file))
    numeric = ("train", "test_energy_rmse", "test_forces_rmse")
    rows = [{**r, **{k: float(r[k]) for k in numeric}} for r in rows]
    title = f"curves: {args.minutes:g} min per run, side by side, 1 thread each"
    plot_curves(os.path.join(args.results, f"curves{args.tag}.png"), rows, title)


def groups_of(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("compare", "curves", "transfer"))
    parser.add_argument("--minutes", type=float, default=30.0, help="per run")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--sizes", default="100,300,1000,3000", help="curves")
    parser.add_argument(
        "--runs",
        default=None,
        help=f"compare (default {DEFAULT_COMPARE}), curves and transfer (default "
        f"{DEFAULT_PAIR}): {', '.join(RUNS)}",
    )
    parser.add_argument(
        "--parallel", type=int, default=2, help="compare: runs side by side"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=os.path.join(HERE, "data"))
    parser.add_argument("--runs-dir", default=os.path.join(HERE, "runs"))
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--tag", default="", help="suffix of the output names")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="curves: only redraw curves<tag>.png from curves<tag>.csv (rows from "
        "other runs, such as a compare at the same --minutes, may be appended to it)",
    )
    args = parser.parse_args()
    if args.replot:
        replot_curves(args)
        return
    if args.runs is None:
        args.runs = DEFAULT_COMPARE if args.mode == "compare" else DEFAULT_PAIR
    names = args.runs.split(",")
    for name in names:
        if name not in RUNS:
            parser.error(f"--runs: unknown run {name}; known: {', '.join(RUNS)}")
    if not os.path.exists(os.path.join(args.data, "train.xyz")):
        parser.error(f"{args.data}: no train.xyz; run generate.py first")
    os.makedirs(args.results, exist_ok=True)
    data = args.data
    seconds = args.minutes * 60
    validation = os.path.join(data, "validation.xyz")
    test = os.path.join(data, "test.xyz")
    mode = args.mode + args.tag
    base = os.path.join(args.runs_dir, mode)
    os.makedirs(base, exist_ok=True)

    jobs: list[list[tuple[str, str, int]]] = []  # pairs of (name, train file, n)
    if args.mode == "compare":
        train = subset(os.path.join(data, "train.xyz"), args.train, base)
        jobs = [
            [(n, train, args.train) for n in p] for p in groups_of(names, args.parallel)
        ]
    elif args.mode == "curves":
        for size in [int(s) for s in args.sizes.split(",")]:
            train = subset(os.path.join(data, "train.xyz"), size, base)
            jobs.append([(n, train, size) for n in names])
    else:
        train = subset(os.path.join(data, "transfer_train.xyz"), args.train, base)
        jobs = [
            [(n, train, args.train) for n in p] for p in groups_of(names, args.parallel)
        ]
        test = os.path.join(data, "transfer_test.xyz")

    rows: list[dict] = []
    folders: dict[str, str] = {}
    for pair in jobs:
        pair_folders = []
        for name, train, n in pair:
            folder = os.path.join(base, f"{name}-{n}")
            write_options(folder, name, train, validation, args)
            pair_folders.append(folder)
            folders[f"{name}-{n}" if args.mode == "curves" else name] = folder
        started = time.time()
        print(
            f"training {', '.join(p[0] for p in pair)} ({n} structures) for "
            f"{args.minutes} min, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        train_side_by_side(pair_folders, seconds)
        for (name, _, n), folder in zip(pair, pair_folders, strict=True):
            row = summarise(name, folder, test, n)
            row["load_average"] = round(os.getloadavg()[0], 1)
            rows.append(row)
            print(row, flush=True)
        print(f"  {time.time() - started:.0f} s", flush=True)
        write_csv(os.path.join(args.results, f"{mode}.csv"), rows)
    title = f"{args.mode}: {args.minutes:g} min per run, side by side, 1 thread each"
    plot_time(os.path.join(args.results, f"{mode}_time.png"), folders, title)
    if args.mode == "curves":
        plot_curves(os.path.join(args.results, f"{mode}.png"), rows, title)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"done; children's CPU time {usage.ru_utime + usage.ru_stime:.0f} s")


if __name__ == "__main__":
    main()
