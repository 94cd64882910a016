"""``make demo``: the whole story on generated EMT alloys.

Generate data -> train -> export -> evaluate -> (when the LAMMPS plugin is built)
run MD in LAMMPS with ``pair_style alchemical`` and compare its first frame with ASE.
Everything is written to ``demo/``.
"""

import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "emt-alloys", "options.yaml")
ELEMENTS = ("Cu", "Ni", "Pd", "Pt")


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

    step(f"1. EMT reference data: random fcc {'-'.join(ELEMENTS)} alloys -> demo/*.xyz")
    write_emt_dataset(os.path.join(folder, "train.xyz"), 200, elements=ELEMENTS, seed=1)
    write_emt_dataset(os.path.join(folder, "test.xyz"), 20, elements=ELEMENTS, seed=2)
    shutil.copy(EXAMPLE, os.path.join(folder, "options.yaml"))

    step("2. alchem-train options.yaml (SOAP-BPNN) -> demo/model.pt")
    command("alchem-train", "options.yaml", "--run-dir", "run", cwd=folder)

    step("3. alchem-eval model.pt test.xyz (through ASE / metatomic-ase)")
    command("alchem-eval", "model.pt", "test.xyz", "-o", "predictions.xyz", cwd=folder)

    try:
        from .lammps import demo_md
    except ImportError:
        demo_md = None
    if demo_md is not None:
        step("4. LAMMPS MD with pair_style alchemical, first frame against ASE")
        demo_md(folder)

    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; files in {folder}"
    )


if __name__ == "__main__":
    main()
