"""What the pair potential costs in LAMMPS MD: the default Alchemical Model with and
without it, alternated in one script.

    .venv/bin/python benchmarks/pair_potential_cost.py [--rounds 4] [--atoms 2048]

Both models are trained as benchmarks/lammps_md.py trains its Alchemical Model (one
epoch on 20 EMT structures of 7 elements, default hyperparameters, exported in
float32 with the plugin's default keywords): "with" has the default
``pair_potential`` (16 Gaussians per element pair), "without" ``basis_size: 0``.
The cost of a step does not depend on the weights. Each round runs "without", then
"with", on the same fcc alloy, one rank, one thread; µs per atom per step from
LAMMPS' Loop time. Writes benchmarks/results/pair_potential_cost.csv and .md
(medians, the ratio with / without, and each model's spread across rounds, the
noise against which the ratio is read).
"""

import argparse
import csv
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lammps_md  # noqa: E402 (its training, structures and timed runs)

WITH = "Alchemical Model 7 el. float32, pair potential"
WITHOUT = "Alchemical Model 7 el. float32, no pair potential"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--atoms", type=int, default=2048)
    parser.add_argument(
        "--work", default=os.path.join(HERE, "work", "pair_potential_cost")
    )
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    seven = lammps_md.SEVEN.replace(" ", ",")
    lammps_md.train(work, "am", "alchemical_model", seven)
    lammps_md.train(
        work,
        "am-nopair",
        "alchemical_model",
        seven,
        {"pair_potential": {"basis_size": 0}},
    )
    template = lammps_md.POTENTIALS[lammps_md.AM32]
    lammps_md.POTENTIALS[WITH] = (template[0], template[1], "am-f32.pt", {})
    lammps_md.POTENTIALS[WITHOUT] = (template[0], template[1], "am-nopair-f32.pt", {})
    data = lammps_md.write_structures(work, [args.atoms])[args.atoms]
    potentials = lammps_md.potentials_folder()
    warmup, steps = lammps_md.steps_for(lammps_md.AM32, args.atoms, 1, quick=False)
    rows = []
    for round_ in range(args.rounds):
        for name in (WITHOUT, WITH):
            row = lammps_md.run_lammps(
                work, name, data, 1, warmup, steps, potentials, timeout=1800
            )
            row["round"] = round_ + 1
            rows.append(row)
            print(f"{name}: {row['us_per_atom_step']:.2f} µs/atom/step", flush=True)
    os.makedirs(lammps_md.RESULTS, exist_ok=True)
    path = os.path.join(lammps_md.RESULTS, "pair_potential_cost")
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path + ".csv.tmp", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".csv.tmp", path + ".csv")
    values = {
        name: [r["us_per_atom_step"] for r in rows if r["potential"] == name]
        for name in (WITHOUT, WITH)
    }
    medians = {name: statistics.median(v) for name, v in values.items()}
    lines = [
        "# The pair potential's cost in LAMMPS (benchmarks/pair_potential_cost.py)",
        "",
        f"{args.atoms} atoms, fcc alloy of 7 elements, 1 rank, 1 thread, "
        f"{steps} timed steps after {warmup}; {args.rounds} rounds, the two "
        f"models alternated. Machine: {lammps_md.machine()}.",
        "",
        "| model | µs/atom/step, each round | median | spread |",
        "|---|---|---|---|",
    ]
    for name, v in values.items():
        spread = (max(v) - min(v)) / medians[name]
        runs = ", ".join(f"{x:.2f}" for x in v)
        lines.append(f"| {name} | {runs} | {medians[name]:.2f} | {spread:.1%} |")
    ratio = medians[WITH] / medians[WITHOUT]
    lines += ["", f"with / without (medians): {ratio:.3f}", ""]
    with open(path + ".md.tmp", "w") as file:
        file.write("\n".join(lines))
    os.replace(path + ".md.tmp", path + ".md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
