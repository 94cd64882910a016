"""Close contacts: the shortest distance per element pair seen in training.

A model knows nothing about atoms closer than anything in its training set; there
its energy is an extrapolation (often far too soft). The exported model records
these distances (metadata extra ``alchem.shortest_distances``, JSON
``{"Cu-Ni": 2.291, ...}`` in Å, symbols in atomic-number order) and the engines
(``alchem.calculator``, ``pair_style alchemical``) warn once, with a count, when a
pair comes closer than ``MARGIN`` times its distance.
"""

import json
import math
import warnings

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from .data import Structure

METADATA_KEY = "alchem.shortest_distances"
# warn below this fraction of the shortest distance seen in training; the same
# factor is in lammps-plugin/pair_alchemical.cpp (CLOSE_CONTACT_MARGIN)
MARGIN = 0.9


def shortest_distances(
    structures: list[Structure], atomic_types: list[int]
) -> torch.Tensor:
    """[n_types, n_types] shortest distance (Å) of each element pair within the
    neighbour lists (the cutoff); inf for pairs never that close."""
    index = {z: k for k, z in enumerate(atomic_types)}
    n = len(atomic_types)
    shortest = torch.full((n, n), math.inf, dtype=torch.float64)
    for s in structures:
        if len(s.centers) == 0:
            continue
        vectors = s.positions[s.neighbors] - s.positions[s.centers] + s.shifts @ s.cell
        distances = vectors.norm(dim=1)
        species = torch.tensor([index[int(z)] for z in s.numbers.tolist()])
        a, b = species[s.centers], species[s.neighbors]
        flat = shortest.view(-1)
        for key in (a * n + b, b * n + a):
            flat.copy_(flat.scatter_reduce(0, key, distances, reduce="amin"))
    return shortest


def to_metadata(shortest: torch.Tensor, atomic_types: list[int]) -> str:
    """JSON {"A-B": distance} over the pairs with a finite distance."""
    table = {}
    for i, zi in enumerate(atomic_types):
        for j in range(i, len(atomic_types)):
            value = float(shortest[i, j])
            if math.isfinite(value):
                pair = f"{chemical_symbols[zi]}-{chemical_symbols[atomic_types[j]]}"
                table[pair] = round(value, 4)
    return json.dumps(table)


def from_metadata(text: str) -> dict[tuple[int, int], float]:
    """{(Z_a, Z_b): distance} with Z_a <= Z_b, from the metadata value."""
    result = {}
    for pair, distance in json.loads(text).items():
        a, b = (atomic_numbers[symbol] for symbol in pair.split("-"))
        result[(min(a, b), max(a, b))] = float(distance)
    return result


class CloseContactCheck:
    """Counts pairs closer than ``MARGIN`` x the training distance; warns once."""

    def __init__(self, table: dict[tuple[int, int], float]):
        self.table = table
        self.reach = MARGIN * max(table.values(), default=0.0)
        self.pairs = 0  # close pairs counted over every call
        self.structures = 0  # structures (calls) with at least one
        self.warned = False

    def check(self, atoms) -> int:
        """Close pairs in ``atoms`` (each pair once); warns at the first one."""
        if self.reach <= 0 or len(atoms) < 2:
            return 0
        from vesin import NeighborList

        box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
        i, j, d = NeighborList(cutoff=self.reach, full_list=False).compute(
            atoms.positions, box, atoms.pbc.tolist(), quantities="ijd"
        )
        numbers = atoms.numbers
        a, b = numbers[i], numbers[j]
        low, high = np.minimum(a, b), np.maximum(a, b)
        limits = np.array(
            [MARGIN * self.table.get((x, y), 0.0) for x, y in zip(low, high)]
        )
        close = d < limits
        count = int(close.sum())
        if count == 0:
            return 0
        self.pairs += count
        self.structures += 1
        if not self.warned:
            self.warned = True
            k = int(np.argmin(np.where(close, d / np.maximum(limits, 1e-300), np.inf)))
            pair = f"{chemical_symbols[low[k]]}-{chemical_symbols[high[k]]}"
            warnings.warn(
                f"{count} atom pair(s) closer than {MARGIN} x the shortest distance "
                f"of their elements in the training data (closest: {pair} at "
                f"{d[k]:.3f} Å, trained down to {limits[k] / MARGIN:.3f} Å): the "
                "model is extrapolating there. Warned once; the calculator's "
                "close_contacts attribute counts them.",
                stacklevel=3,
            )
        return count
