"""The EMT recipe data of examples/emt-validated and make demo."""

import numpy as np
import pytest
from alchem.data.emt_recipe import EOS_SCALES, generate_recipe_structures
from ase.calculators.emt import EMT


@pytest.mark.slow  # over 10 s
def test_recipe_covers_what_validation_asks():
    frames = generate_recipe_structures(("Cu", "Ni"), n_alloys=2, seed=0)
    counts: dict[int, int] = {}
    for atoms in frames:
        counts[len(atoms)] = counts.get(len(atoms), 0) + 1
    per_element = counts[4] // 2
    # equation of state and strained 4-atom cells, vacancies in 2x2x2 and 3x3x3
    # cells, slabs, hot 32-atom cells (and 2 alloys of 32)
    assert per_element == len(EOS_SCALES) + 16
    assert counts[31] == 2 * 5 and counts[107] == 2 * 2 and counts[20] == 2 * 6
    assert counts[32] == 2 * 10 + 2
    alloys = [a for a in frames if len(set(a.get_chemical_symbols())) > 1]
    assert len(alloys) == 2
    # labels are EMT's, and the relaxed vacancies are relaxed
    sample = frames[30]
    assert len(sample) == 107
    recomputed = sample.copy()
    recomputed.calc = EMT()
    assert recomputed.get_potential_energy() == sample.get_potential_energy()
    assert np.abs(sample.get_forces()).max() < 0.011
    slab = next(a for a in frames if len(a) == 20)
    heights = slab.positions[:, 2]
    assert slab.cell[2, 2] - (heights.max() - heights.min()) > 9.9  # vacuum
    for atoms in frames:
        assert np.isfinite(atoms.get_stress()).all()
