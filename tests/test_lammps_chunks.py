"""`pair_style alchemical ... chunk N`: the owned atoms evaluated in chunks of at
most N atoms (one forward and backward pass each, pair gradients summed) give the
energy, per-atom energies, forces and virials of one evaluation of all atoms, and
of ASE, to 1e-10, on 1 and 2 MPI ranks; `malloc_reuse` changes nothing but speed.

The test models (tests/lammps_support.py) compute every atom and then keep the
selected ones, this project's trained models compute only the selected atoms as
centres (python/alchem/export.py): both ways of using `selected_atoms` are run.
"""

import os
import re

import pytest
from lammps_support import (
    ModelSpec,
    ase_single_point,
    energy_factor,
    export_model,
    fcc_alloy,
    lammps_single_point,
    plugin_built,
    relative_error,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]

ELEMENTS = [28, 29, 78]
TOLERANCE = 1e-10
EVALUATIONS = re.compile(
    r"pair_style alchemical on rank (\d+): .* ([\d.]+) model evaluation\(s\)"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("chunk-models")
    return {
        "full": export_model(folder / "full.pt", ModelSpec()),
        "half": export_model(folder / "half.pt", ModelSpec(full_list=False)),
        "two-layers": export_model(folder / "mp.pt", ModelSpec(layers=2, cutoff=4.0)),
        "nm-kJ": export_model(
            folder / "nm.pt",
            ModelSpec(length_unit="nanometer", energy_unit="kJ/mol"),
        ),
    }


def _evaluations(log: str) -> dict[int, float]:
    """Model evaluations per step of each rank, from the plugin's `profile on`."""
    return {int(rank): float(n) for rank, n in EVALUATIONS.findall(log)}


def _same(result, expected, tolerance: float = TOLERANCE, factor: float = 1.0):
    assert relative_error(result.energy * factor, expected.energy) < tolerance
    assert relative_error(result.energies * factor, expected.energies) < tolerance
    assert relative_error(result.forces * factor, expected.forces) < tolerance
    assert relative_error(result.virial * factor, expected.virial) < tolerance


def _run(tmp_path, name, atoms, model, options, nprocs=1):
    return lammps_single_point(
        tmp_path / name,
        atoms,
        model,
        ELEMENTS,
        nprocs=nprocs,
        # the profile says how many evaluations (chunks) a step took
        pair_options=f"{options} profile on",
    )


@pytest.mark.parametrize("model", ["full", "half", "two-layers", "nm-kJ"])
def test_chunks_equal_one_evaluation_and_ase(model, models, tmp_path):
    """256 atoms in chunks of 50 (6 evaluations, the last one of 6 atoms)."""
    atoms = fcc_alloy((4, 4, 4), 3.6, ELEMENTS, seed=61)
    whole = _run(tmp_path, "all", atoms, models[model], "chunk all")
    chunked = _run(tmp_path, "50", atoms, models[model], "chunk 50")
    assert "chunk all: all owned atoms in one evaluation" in whole.log
    assert "chunk 50: at most 50 owned atoms per evaluation" in chunked.log
    assert _evaluations(whole.log) == {0: 1.0}
    assert _evaluations(chunked.log) == {0: 6.0}
    _same(chunked, whole)
    assert relative_error(chunked.virial_sum, whole.virial) < TOLERANCE
    assert relative_error(chunked.centroid_sum, whole.virial) < TOLERANCE
    assert relative_error(chunked.atom_virials, whole.atom_virials) < TOLERANCE
    _same(
        chunked, ase_single_point(atoms, models[model]), factor=energy_factor("metal")
    )


@pytest.mark.parametrize("model", ["full", "two-layers"])
def test_chunks_on_two_ranks(model, models, tmp_path):
    atoms = fcc_alloy((4, 4, 4), 3.6, ELEMENTS, seed=62)
    serial = _run(tmp_path, "serial", atoms, models[model], "chunk all")
    chunked = _run(tmp_path, "2-ranks", atoms, models[model], "chunk 37", nprocs=2)
    # 128 owned atoms per rank: 4 chunks of at most 37 on each
    assert _evaluations(chunked.log)[0] == 4.0
    _same(chunked, serial)
    assert relative_error(chunked.virial_sum, serial.virial) < TOLERANCE
    _same(chunked, ase_single_point(atoms, models[model]))


def test_default_and_large_chunk_are_one_evaluation(models, tmp_path):
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=63)
    default = _run(tmp_path, "default", atoms, models["full"], "")
    large = _run(tmp_path, "large", atoms, models["full"], "chunk 100000")
    single = _run(tmp_path, "single", atoms, models["full"], "chunk 1")
    assert _evaluations(default.log) == {0: 1.0}
    assert _evaluations(large.log) == {0: 1.0}
    assert _evaluations(single.log) == {0: 32.0}
    assert "malloc_reuse on" in default.log
    _same(large, default)
    _same(single, default)


@pytest.mark.parametrize("full_list", [True, False])
@pytest.mark.parametrize("nprocs", [1, 2])
def test_pairs_sorted_by_first_atom(full_list, nprocs, tmp_path):
    """The plugin gives its pairs sorted by first atom, ghosts' reverse pairs
    included (periodic cell: every owned atom has ghost neighbours), so that the
    exported models find a chunk's pairs as one slice. The test model raises
    otherwise."""
    model = export_model(
        tmp_path / "sorted.pt", ModelSpec(full_list=full_list, require_sorted=True)
    )
    # the same model without the check, for ASE (whose pairs come in any order)
    same = export_model(tmp_path / "any.pt", ModelSpec(full_list=full_list))
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=66)
    result = _run(tmp_path, "sorted", atoms, model, "chunk 20", nprocs=nprocs)
    _same(result, ase_single_point(atoms, same), factor=energy_factor("metal"))


def test_malloc_reuse_off(models, tmp_path):
    atoms = fcc_alloy((3, 3, 3), 3.6, ELEMENTS, seed=64)
    on = _run(tmp_path, "on", atoms, models["full"], "malloc_reuse on chunk 30")
    off = _run(tmp_path, "off", atoms, models["full"], "malloc_reuse off chunk 30")
    assert "malloc_reuse off" in off.log
    assert "malloc_reuse on" not in off.log
    _same(off, on)


def test_trained_models_in_chunks(trained, tmp_path):
    """This project's exported models compute only the selected atoms as centres;
    in chunks of 7 atoms (32 atoms: 5 chunks on 1 rank) on 1 and 2 ranks."""
    extensions = os.path.join(trained["dir"], "extensions")
    extensions = extensions if os.path.isdir(extensions) else None
    atoms = fcc_alloy((2, 2, 2), 3.6, ELEMENTS, seed=65)
    atoms.rattle(0.05, seed=3)
    whole = _run(tmp_path, "all", atoms, trained["model"], "chunk all")
    chunked = _run(tmp_path, "7", atoms, trained["model"], "chunk 7")
    two = _run(tmp_path, "7-2", atoms, trained["model"], "chunk 7", nprocs=2)
    assert _evaluations(chunked.log) == {0: 5.0}
    assert all(n > 1 for n in _evaluations(two.log).values())
    _same(chunked, whole)
    _same(two, whole)
    _same(chunked, ase_single_point(atoms, trained["model"], extensions))
    # on the CPU kernel the models ask for chunks of 4096 atoms by default
    # (metadata extra "alchem.chunk"), and each chunk gets its own pairs
    default = _run(tmp_path, "default", atoms, trained["model"], "")
    assert "chunk 4096: at most 4096 owned atoms" in default.log
    _same(default, whole)
