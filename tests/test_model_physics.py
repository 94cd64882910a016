"""Physics of the models: invariances, derivatives, smoothness at the cutoff."""

import ase
import numpy as np
import pytest
import torch
from alchem import ops
from alchem.data import DatasetInfo, collate, structure_from_atoms
from alchem.data.emt import generate_emt_structures
from alchem.model import predict
from alchem.options import expand_options
from alchem.training import build_model
from conftest import ARCHITECTURES, SMALL_HYPERS

TYPES = [28, 29, 78]


def make_model(architecture: str, emt_dir: str, precision: int = 64, **model):
    hypers = {**SMALL_HYPERS[architecture], **model}
    options = expand_options(
        {
            "base_precision": precision,
            "architecture": {"name": architecture, "model": hypers},
            "training_set": f"{emt_dir}/train.xyz",
        },
        "test",
    )
    torch.manual_seed(0)
    model = build_model(
        options, DatasetInfo(atomic_types=TYPES, mean_num_neighbors=30.0)
    )
    # random, non-trivial baseline, scale and pair potential (zero until fitted)
    # so they are exercised too
    model.composition.copy_(torch.tensor([-1.0, -2.0, -3.0]))
    model.energy_scale.fill_(0.7)
    with torch.no_grad():
        model.pair.weights.normal_(0.0, 0.01)  # eV per Gaussian
    return model


def evaluate(model, atoms, dtype=torch.float64):
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to("cpu", dtype)
    out = predict(model, batch, forces=True, virial=np.all(atoms.pbc))
    return {k: v.detach().double().numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def alloy():
    return generate_emt_structures(1, elements=("Cu", "Ni", "Pt"), seed=5)[0]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.slow  # over 10 s
def test_invariances(architecture, emt_dir, alloy):
    model = make_model(architecture, emt_dir)
    reference = evaluate(model, alloy)

    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0].numpy()
    rotated = alloy.copy()
    rotated.positions = alloy.positions @ rotation.T
    rotated.cell = alloy.cell.array @ rotation.T
    out = evaluate(model, rotated)
    np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
    np.testing.assert_allclose(
        out["forces"], reference["forces"] @ rotation.T, atol=1e-10
    )
    np.testing.assert_allclose(
        out["virial"][0], rotation @ reference["virial"][0] @ rotation.T, atol=1e-10
    )

    shifted = alloy.copy()
    shifted.positions += np.array([0.3, -1.7, 2.2])
    np.testing.assert_allclose(evaluate(model, shifted)["energy"], reference["energy"])

    wrapped = shifted.copy()
    wrapped.wrap()
    out = evaluate(model, wrapped)
    np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
    np.testing.assert_allclose(out["forces"], reference["forces"], atol=1e-10)

    permutation = np.random.default_rng(0).permutation(len(alloy))
    permuted = alloy[permutation]
    out = evaluate(model, permuted)
    np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
    np.testing.assert_allclose(
        out["forces"], reference["forces"][permutation], atol=1e-10
    )
    np.testing.assert_allclose(
        out["atomic_energies"], reference["atomic_energies"][permutation], atol=1e-10
    )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.slow  # over 10 s
def test_forces_and_stress_are_derivatives(architecture, emt_dir, alloy):
    model = make_model(architecture, emt_dir)
    atoms = alloy.copy()
    reference = evaluate(model, atoms)
    h = 1e-5
    rng = np.random.default_rng(1)
    for atom in rng.choice(len(atoms), 4, replace=False):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * h
                energies.append(evaluate(model, moved)["energy"][0])
            numerical = -(energies[0] - energies[1]) / (2 * h)
            assert abs(numerical - reference["forces"][atom, axis]) < 1e-6

    # virial W = -dE/d(strain): strain positions and cell together
    for a, b in [(0, 0), (1, 2), (2, 1), (0, 1)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=False)
            strained.positions = atoms.positions @ strain
            energies.append(evaluate(model, strained)["energy"][0])
        numerical = -(energies[0] - energies[1]) / (2 * h)
        assert abs(numerical - reference["virial"][0][a, b]) < 1e-6


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_energy_is_smooth_across_the_cutoff(architecture, emt_dir):
    model = make_model(architecture, emt_dir)
    cutoff = model.cutoff

    def dimer(distance):
        atoms = ase.Atoms("CuNi", positions=[[0, 0, 0], [distance, 0, 0]], pbc=False)
        out = evaluate(model, atoms)
        return out["energy"][0], out["forces"][1, 0]

    isolated, _ = dimer(cutoff + 1.0)
    for epsilon in (1e-3, 1e-4):
        inside, force_inside = dimer(cutoff - epsilon)
        outside, force_outside = dimer(cutoff + epsilon)
        # energy and force vanish continuously: the cutoff function is C1 at r_c
        assert abs(inside - isolated) < 1e-4 * epsilon
        assert abs(force_inside) < 1e-2 * epsilon**0.5
        assert outside == pytest.approx(isolated, abs=1e-14)
        assert force_outside == 0.0
    # and the interaction is not trivially zero inside
    assert abs(dimer(cutoff - 1.5)[0] - isolated) > 1e-6


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_float32_matches_float64(architecture, emt_dir, alloy):
    model64 = make_model(architecture, emt_dir, precision=64)
    model32 = make_model(architecture, emt_dir, precision=32)
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    assert next(model32.parameters()).dtype == torch.float32
    out64 = evaluate(model64, alloy)
    out32 = evaluate(model32, alloy, torch.float32)
    np.testing.assert_allclose(out32["energy"], out64["energy"], rtol=1e-5)
    scale = np.abs(out64["forces"]).max()
    np.testing.assert_allclose(out32["forces"], out64["forces"], atol=1e-4 * scale)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_torchscript_gives_the_same_energies(architecture, emt_dir, alloy):
    model = make_model(architecture, emt_dir)
    scripted = torch.jit.script(model.architecture)
    structure = structure_from_atoms(alloy, model.cutoff)
    batch = collate([structure])
    vectors = (
        batch.positions[batch.neighbors]
        - batch.positions[batch.centers]
        + batch.shifts @ batch.cells[0]
    )
    species = model.type_to_index[batch.numbers]
    eager = model.architecture(species, vectors, batch.centers, batch.neighbors)
    script = scripted(species, vectors, batch.centers, batch.neighbors)
    torch.testing.assert_close(script, eager, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not ops.load(), reason="libalchem_ops.so is not built")
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("layernorm", [True, False])
def test_cpu_kernel_matches_the_torch_operations(
    architecture, layernorm, emt_dir, alloy
):
    """In eval mode on the CPU both architectures compute their features with
    alchem::power_spectrum; the same model on its torch operations
    (use_backend("torch")) must give the same energies, forces and virials."""
    key = "layernorm" if architecture == "soap_bpnn" else "normalize"
    if architecture == "soap_bpnn":
        model = make_model(
            architecture,
            emt_dir,
            bpnn={**SMALL_HYPERS[architecture]["bpnn"], key: layernorm},
        )
    else:
        model = make_model(
            architecture,
            emt_dir,
            soap={**SMALL_HYPERS[architecture]["soap"], key: layernorm},
        )
    net = model.architecture
    with torch.no_grad():  # LayerNorm affine away from its initial values
        for name, parameter in net.named_parameters():
            if "layernorm" in name and parameter.numel() > 0:
                low, high = (0.5, 1.5) if "weight" in name else (-0.2, 0.2)
                parameter.uniform_(low, high)
    model.eval()
    if hasattr(net, "refresh_cache"):
        net.refresh_cache()
    assert net.feature_backend == "kernel"
    kernel = evaluate(model, alloy)
    net.use_backend("torch")
    reference = evaluate(model, alloy)
    net.use_backend("kernel")
    for key, value in reference.items():
        scale = np.abs(value).max()
        np.testing.assert_allclose(kernel[key], value, rtol=0, atol=1e-12 * scale)
    assert np.abs(kernel["forces"]).max() > 1e-5  # forces are not all zero


# keys of constants that checkpoints written before the feature backends carried
# (read from such checkpoints): SOAP-BPNN's never-read pair_weight and both
# architectures' spherical-harmonics constants
OLD_CONSTANTS = {
    "soap_bpnn": ["pair_weight", "spherical_harmonics.a", "spherical_harmonics.b"],
    "alchemical_model": ["spherical_harmonics.factors", "spherical_harmonics.reverse"],
}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_checkpoints_with_old_constants_load(architecture, emt_dir, alloy):
    """A state dict with the constants older versions saved loads strictly into a
    model of this version, which neither saves them nor changes its numbers."""
    model = make_model(architecture, emt_dir)
    reference = evaluate(model, alloy)
    state = model.state_dict()
    assert not any("spherical_harmonics" in key for key in state)
    assert "architecture.pair_weight" not in state
    old = dict(state)
    for name in OLD_CONSTANTS[architecture]:
        old[f"architecture.{name}"] = torch.full((3,), float("nan"))
    fresh = make_model(architecture, emt_dir)
    with torch.no_grad():  # other parameters than the reference's
        for parameter in fresh.parameters():
            parameter.add_(0.1)
    fresh.load_state_dict(old)  # strict: unexpected keys would raise
    for key, value in evaluate(fresh, alloy).items():
        np.testing.assert_array_equal(value, reference[key])
