"""``make demo``: the whole story on generated EMT data.

Generate data (examples/emt-validated: pure elements over volumes and strains, with
vacancies and surfaces, and random alloys) -> train -> export -> evaluate (parity
plot) -> (when the LAMMPS plugin is built) run MD in LAMMPS with ``pair_style
alchemical`` and compare its first frame with ASE -> validate the physics against
EMT. Everything is written to ``demo/``.
"""

import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "emt-validated", "options.yaml")
ELEMENTS = ("Cu", "Ni")
ALLOY_CELLS = 40  # random alloys of 32 atoms besides the pure-element structures


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def command(*args: str, cwd: str) -> None:
    binary = os.path.join(os.path.dirname(sys.executable), args[0])
    subprocess.run([binary, *args[1:]], cwd=cwd, check=True)


def main() -> None:
    folder = os.path.join(os.getcwd(), "demo")
    os.makedirs(folder, exist_ok=True)
    started = time.perf_counter()

    from .data.emt import write_emt_dataset
    from .data.emt_recipe import write_recipe_dataset

    step(
        f"1. EMT reference data: {', '.join(ELEMENTS)} (volumes, strains, vacancies, "
        "surfaces) and random alloys -> demo/*.xyz"
    )
    write_recipe_dataset(
        os.path.join(folder, "train.xyz"), ELEMENTS, ALLOY_CELLS, seed=1
    )
    write_emt_dataset(os.path.join(folder, "test.xyz"), 20, elements=ELEMENTS, seed=2)
    shutil.copy(EXAMPLE, os.path.join(folder, "options.yaml"))

    step("2. alchem-train options.yaml (SOAP-BPNN) -> demo/model.pt")
    command("alchem-train", "options.yaml", "--run-dir", "run", cwd=folder)

    step("3. alchem-eval model.pt test.xyz (through ASE / metatomic-ase) -> parity.png")
    command("alchem-eval", "model.pt", "test.xyz", "-o", "predictions.xyz", cwd=folder)

    try:
        from .lammps import demo_md
    except ImportError:
        demo_md = None
    if demo_md is not None:
        step("4. LAMMPS MD with pair_style alchemical, first frame against ASE")
        demo_md(folder)

    step("5. alchem-validate model.pt against EMT, the reference of the data")
    command(
        "alchem-validate", "model.pt", "--reference", "ase.calculators.emt:EMT",
        "-o", "validation", cwd=folder,
    )  # fmt: skip

    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; files in {folder}"
    )
    print("figures:")
    for path in (
        "run/learning_curve.png",
        "parity.png",
        "validation/eos.png",
        "validation/relative_errors.png",
    ):
        print(f"  {os.path.join(folder, path)}")
    print(f"validation table: {os.path.join(folder, 'validation', 'validation.md')}")


if __name__ == "__main__":
    main()
