"""``alchem-validate``: physical properties of a model against a reference.

``systems`` builds the crystals, ``properties`` computes each property with any ASE
calculator, ``references`` reads what the model is compared with, ``run`` puts
model and reference side by side and ``report`` writes the files.
"""
