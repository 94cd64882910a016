#!/bin/sh
# One round of active learning with EMT as the reference (docs/active-learning.md):
# train on 300 K-like bulk Cu-Ni, run LAMMPS MD beyond the data (a slab with two
# free surfaces at 1200 K), select the frames the model is least sure about, label
# them with EMT, retrain on old + new, and compare errors and sigma on held-out
# frames of the new region; a control retrains on evenly spaced frames instead.
# Run from this folder, in the project's venv: sh run.sh   (about 2 min on 2 cores)
set -e
n=19   # frames to label (the control takes as many: every 5th of frames 10-100)

# 1. bulk data: 150 random fcc Cu-Ni cells of 32 atoms, rattled 0.1 Å (about the
#    thermal displacement at 300 K) and strained 3 %, labelled with EMT
python -m alchem.data.emt train.xyz -n 150 --elements Cu,Ni --seed 1
alchem-train options.yaml -o model-0.pt                 # with uncertainty: llpr

# 2. MD beyond the data: two independent runs, one to select from, one held out
lmp -in in.md -var model model-0.pt -var seed 1 -var dump md-1.dump -var devi md-1.devi \
    -log md-1.log
lmp -in in.md -var model model-0.pt -var seed 2 -var dump md-2.dump -var devi md-2.devi \
    -log md-2.log
python label.py md-2.dump --index 10::10 -o heldout.xyz

# 3. select: the n most uncertain, mutually diverse frames after equilibration
alchem-select md-1.dump -m model-0.pt -n "$n" --index 10: -o selected.extxyz

# 4. label with EMT, 5. retrain on old + new (same options, the new data file)
python label.py selected.extxyz -o selected-labelled.xyz
cat train.xyz selected-labelled.xyz > train-1.xyz
sed 's/^training_set: train.xyz/training_set: train-1.xyz/' options.yaml > options-1.yaml
alchem-train options-1.yaml -o model-1.pt

# control: as many evenly spaced frames of the same run, no uncertainty involved
python label.py md-1.dump --index 10::5 -o even-labelled.xyz
cat train.xyz even-labelled.xyz > train-even.xyz
sed 's/^training_set: train.xyz/training_set: train-even.xyz/' options.yaml > options-even.yaml
alchem-train options-even.yaml -o model-even.pt

# 6. errors and sigma on the held-out frames of the new region, and on bulk
python -m alchem.data.emt bulk-test.xyz -n 20 --elements Cu,Ni --seed 2
python errors.py heldout.xyz model-0.pt model-1.pt model-even.pt
python errors.py bulk-test.xyz model-0.pt model-1.pt model-even.pt
