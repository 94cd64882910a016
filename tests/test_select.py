"""alchem-select: the most uncertain, mutually diverse frames of a trajectory (real
CLI runs on a small model with uncertainty; a real LAMMPS dump)."""

import os
import subprocess

import ase.io
import numpy as np
import pytest
import torch
from alchem.data import collate, structure_from_atoms
from alchem.data.emt import generate_emt_structures
from alchem.model import predict
from alchem.training import model_from_checkpoint
from alchem.uncertainty import atom_sigma
from conftest import BIN, run_cli, write_options

ELEMENTS = ("Cu", "Ni", "Pt")


@pytest.fixture(scope="module")
def models(emt_dir, tmp_path_factory) -> dict:
    """A small SOAP-BPNN trained with uncertainty, and one trained without."""
    folder = tmp_path_factory.mktemp("select")
    os.symlink(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
    write_options(
        str(folder / "uncertain.yaml"),
        "soap_bpnn",
        uncertainty={"method": "llpr", "ensemble_size": 4},
    )
    run_cli("alchem-train", "uncertain.yaml", "-o", "uncertain.pt", cwd=str(folder))
    write_options(str(folder / "plain.yaml"), "soap_bpnn", training={"num_epochs": 1})
    run_cli("alchem-train", "plain.yaml", "-o", "plain.pt", cwd=str(folder))
    return {
        "dir": str(folder),
        "model": str(folder / "uncertain.pt"),
        "checkpoint": str(folder / "uncertain.ckpt"),
        "plain": str(folder / "plain.pt"),
    }


@pytest.fixture(scope="module")
def pool(models) -> str:
    """12 frames, from near the training data (rattle 0.1 Å) to far from it (0.3 Å)."""
    frames = []
    for k, rattle in enumerate(np.linspace(0.05, 0.3, 12)):
        frames += generate_emt_structures(
            1, elements=ELEMENTS, rattle=float(rattle), seed=100 + k
        )
    path = os.path.join(models["dir"], "pool.extxyz")
    ase.io.write(path, frames, format="extxyz")
    return path


def reference_sigmas(checkpoint: str, frames: list) -> list[np.ndarray]:
    """Per-atom sigma sqrt(f C f) from the checkpoint's model, not through model.pt."""
    model, _ = model_from_checkpoint(checkpoint)
    model = model.to(torch.float64).eval()
    sigmas = []
    for atoms in frames:
        batch = collate([structure_from_atoms(atoms, model.cutoff)]).to(
            "cpu", torch.float64
        )
        out = predict(model, batch, forces=False, virial=False, with_features=True)
        features = out["atomic_features"].detach()
        sigmas.append(atom_sigma(features, model.uncertainty_covariance).numpy())
    return sigmas


def select(*args: str, cwd: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("alchem-select", *args, cwd=cwd, check=check)


def test_selects_the_most_uncertain_frames(models, pool):
    """With no diversity filter, the N frames of largest max (or mean) per-atom
    sigma, most uncertain first, each with its sigmas and source index and without
    the labels of the input."""
    frames = ase.io.read(pool, ":")
    sigmas = reference_sigmas(models["checkpoint"], frames)
    for rank, reduce in (("max", np.max), ("mean", np.mean)):
        select(
            pool, "-m", models["model"], "-n", "4", "--min-distance", "0",
            "--rank", rank, "-o", f"{rank}.extxyz", cwd=models["dir"],
        )  # fmt: skip
        scores = np.array([reduce(s) for s in sigmas])
        assert scores.max() > 1.2 * scores.min()  # the ranking has something to rank
        expected = list(np.argsort(-scores)[:4])
        chosen = ase.io.read(os.path.join(models["dir"], f"{rank}.extxyz"), ":")
        assert [a.info["source_index"] for a in chosen] == expected
        for atoms in chosen:
            k = atoms.info["source_index"]
            # extxyz keeps 8 decimals of a per-atom array (eV)
            np.testing.assert_allclose(
                atoms.arrays["atom_sigma"], sigmas[k], rtol=1e-8, atol=1e-8
            )
            assert atoms.info["atom_sigma_max"] == pytest.approx(sigmas[k].max())
            assert atoms.info["source_file"] == "pool.extxyz"
            np.testing.assert_array_equal(atoms.positions, frames[k].positions)
            np.testing.assert_array_equal(atoms.numbers, frames[k].numbers)
            assert (
                atoms.calc is None
            )  # no energy, forces or stress to mistake for labels
            assert "forces" not in atoms.arrays


def test_a_duplicated_frame_is_not_selected_twice(models, pool):
    frames = ase.io.read(pool, ":")
    sigmas = reference_sigmas(models["checkpoint"], frames)
    top = int(np.argmax([s.max() for s in sigmas]))
    path = os.path.join(models["dir"], "duplicated.extxyz")
    ase.io.write(path, frames + [frames[top]], format="extxyz")
    result = select(
        path, "-m", models["model"], "-n", "13", "--min-distance", "0",
        "-o", "unique.extxyz", cwd=models["dir"],
    )  # fmt: skip
    chosen = ase.io.read(os.path.join(models["dir"], "unique.extxyz"), ":")
    indices = [a.info["source_index"] for a in chosen]
    assert indices[0] == top
    assert sorted(indices) == list(range(12))  # all frames once, the copy (12) left out
    assert "only 12 frames" in result.stdout


def test_diversity_skips_close_frames(models, pool):
    """A large --min-distance keeps only the most uncertain frame; auto keeps
    frames further apart than the median nearest-neighbour distance."""
    result = select(
        pool, "-m", models["model"], "-n", "5", "--min-distance", "1e6",
        "-o", "one.extxyz", cwd=models["dir"],
    )  # fmt: skip
    assert len(ase.io.read(os.path.join(models["dir"], "one.extxyz"), ":")) == 1
    assert "only 1 frames" in result.stdout
    select(
        pool, "-m", models["model"], "-n", "12", "-o", "auto.extxyz", cwd=models["dir"]
    )
    chosen = ase.io.read(os.path.join(models["dir"], "auto.extxyz"), ":")
    assert 1 < len(chosen) < 12


LAMMPS_INPUT = """
units metal
atom_style atomic
boundary p p p
lattice fcc 3.6
region box block 0 3 0 3 0 3
create_box 2 box
create_atoms 1 box
set type 1 type/ratio 2 0.5 1234
mass * 60.0
pair_style alchemical {model}
pair_coeff * * Cu Ni
velocity all create 900 42 mom yes
fix nve all nve
timestep 0.002
dump elements all custom 5 elements.dump id type element x y z fx fy fz
dump_modify elements element Cu Ni sort id
dump types all custom 5 types.dump id type x y z
dump_modify types sort id
run 20
"""


@pytest.fixture(scope="module")
def dumps(models) -> dict:
    """Two dumps of the same 5 frames of real LAMMPS MD: with and without an
    element column."""
    folder = models["dir"]
    with open(os.path.join(folder, "in.select"), "w") as handle:
        handle.write(LAMMPS_INPUT.format(model=models["model"]))
    subprocess.run(
        [os.path.join(BIN, "lmp"), "-in", "in.select", "-log", "none"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return {
        "elements": os.path.join(folder, "elements.dump"),
        "types": os.path.join(folder, "types.dump"),
    }


def test_reads_a_lammps_dump(models, dumps):
    """The element column, or --types; the same frames and sigmas either way, the
    timestep carried along, the dump's forces (the model's) dropped."""
    folder = models["dir"]
    select(dumps["elements"], "-m", models["model"], "-n", "3", "-o", "a.extxyz",
           "--min-distance", "0", cwd=folder)  # fmt: skip
    select(dumps["types"], "-m", models["model"], "-n", "3", "-o", "b.extxyz",
           "--min-distance", "0", "--types", "Cu", "Ni", cwd=folder)  # fmt: skip
    a = ase.io.read(os.path.join(folder, "a.extxyz"), ":")
    b = ase.io.read(os.path.join(folder, "b.extxyz"), ":")
    assert len(a) == len(b) == 3
    dumped = ase.io.read(dumps["elements"], ":", format="lammps-dump-text")
    assert len(dumped) == 5
    sigmas = reference_sigmas(models["checkpoint"], dumped)
    expected = list(np.argsort([-s.max() for s in sigmas])[:3])
    assert [x.info["source_index"] for x in a] == expected
    for x, y in zip(a, b):
        assert x.info["source_index"] == y.info["source_index"]
        assert x.info["timestep"] == 5 * x.info["source_index"]
        assert set(x.get_chemical_symbols()) <= {"Cu", "Ni"}
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_allclose(x.arrays["atom_sigma"], y.arrays["atom_sigma"])
        np.testing.assert_allclose(  # extxyz: 8 decimals
            x.arrays["atom_sigma"], sigmas[x.info["source_index"]], rtol=1e-8, atol=1e-8
        )
        assert "forces" not in x.arrays and x.calc is None


def error_of(*args: str, cwd: str) -> str:
    result = select(*args, cwd=cwd, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    return result.stderr


def test_errors(models, pool, dumps):
    folder = models["dir"]
    model = models["model"]
    assert "missing.xyz: no such file" in error_of(
        "missing.xyz", "-m", model, "-n", "2", cwd=folder
    )
    assert "-m missing.pt: no such file" in error_of(
        pool, "-m", "missing.pt", "-n", "2", cwd=folder
    )
    message = error_of(pool, "-m", models["plain"], "-n", "2", cwd=folder)
    assert "has no uncertainty" in message and "alchem-uncertainty" in message
    assert "-n 0: the number of frames must be >= 1" in error_of(
        pool, "-m", model, "-n", "0", cwd=folder
    )
    assert "--min-distance -1" in error_of(
        pool, "-m", model, "-n", "2", "--min-distance", "-1", cwd=folder
    )
    message = error_of(dumps["types"], "-m", model, "-n", "2", cwd=folder)
    assert "no 'element' column" in message and "--types" in message
    message = error_of(dumps["types"], "-m", model, "-n", "2", "--types", "Cu",
                       cwd=folder)  # fmt: skip
    assert "atom type 2" in message and "--types names only 1" in message
    broken = os.path.join(folder, "broken.dump")
    with open(dumps["types"]) as source, open(broken, "w") as handle:
        lines = source.read().splitlines()[:20]
        lines[15] = "17 1 0.5 oops"
        handle.write("\n".join(lines) + "\n")
    message = error_of(
        broken, "-m", model, "-n", "2", "--types", "Cu", "Ni", cwd=folder
    )
    assert "broken.dump" in message
    gold = os.path.join(folder, "gold.extxyz")
    ase.io.write(gold, generate_emt_structures(2, elements=("Au",)), format="extxyz")
    message = error_of(gold, "-m", model, "-n", "1", cwd=folder)
    assert "gold.extxyz, frame 0: element Au is not supported" in message
    message = error_of(
        pool, "-m", model, "-n", "2", "-o", "nowhere/s.extxyz", cwd=folder
    )
    assert "does not exist" in message
    assert not os.path.exists(os.path.join(folder, "nowhere"))


@pytest.mark.slow
def test_active_learning_example_runs_end_to_end(tmp_path):
    """examples/active-learning/run.sh as docs/active-learning.md runs it (about 2
    min): one round lowers the force error on held-out frames of the new region."""
    import shutil

    example = os.path.join(
        os.path.dirname(__file__), "..", "examples", "active-learning"
    )
    for name in os.listdir(example):
        shutil.copy(os.path.join(example, name), tmp_path)
    environment = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(
        ["sh", "run.sh"], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(ase.io.read(tmp_path / "selected.extxyz", ":")) == 19
    output = result.stdout
    table = output[output.index("of heldout.xyz") : output.index("of bulk-test.xyz")]
    rmse = {
        line.split()[0]: float(line.split()[1])
        for line in table.splitlines()
        if line.startswith("model-")
    }
    assert rmse["model-1.pt"] < 0.8 * rmse["model-0.pt"]
