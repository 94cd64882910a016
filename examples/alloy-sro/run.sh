#!/bin/sh
# Short-range order of an equiatomic Cu-Ni-Pd-Pt alloy at two temperatures:
# EMT data, a small SOAP-BPNN, hybrid MD + Monte Carlo swaps in LAMMPS
# (fix atom/swap with pair_style alchemical), Warren-Cowley parameters of the
# first shell (docs/lammps.md, "Example: short-range order"). Run from this
# folder, in the project's venv:
#   sh run.sh [MPI ranks, default 1: at 500 atoms each trial would wait on the
#   communication of the ranks more than it computes]
set -e
ranks=${1:-1}
python -m alchem.data.emt train.xyz -n 80 --elements Cu,Ni,Pd,Pt --seed 1
alchem-train options.yaml -o model.pt
for temperature in 600 1100; do
    mpirun -np "$ranks" lmp -in in.sro -var model model.pt \
        -var temperature "$temperature" -log "log-$temperature.lammps"
done
python sro.py sro-600.dump sro-1100.dump --labels "600 K" "1100 K" \
    --elements Cu Ni Pd Pt -o sro
