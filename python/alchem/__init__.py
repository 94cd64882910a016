"""alchem: SOAP-BPNN and Alchemical Model interatomic potentials.

Data flows one way: options -> data -> features -> model -> training -> export ->
engines (ASE through metatomic-ase, LAMMPS through ``pair_style alchemical``).
"""

__version__ = "0.1.0"
