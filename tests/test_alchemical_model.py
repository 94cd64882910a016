"""The Alchemical Model: hyperparameters, basis sizes, physics, and the equations.

Small hyperparameters (basis_cutoff 100, K = 2, hidden [16, 16]) everywhere except in
the tests that check the defaults and the basis sizes. The training / export / ASE
round trips are in the shared tests (test_training.py, parametrised over both
architectures).
"""

import copy
import io
import math
import os
import subprocess
import sys

import ase
import ase.units
import numpy as np
import pytest
import torch
from alchem import ops
from alchem.architectures import get_architecture
from alchem.architectures.alchemical_model import basis
from alchem.data import DatasetInfo, collate, structure_from_atoms
from alchem.data.emt import generate_emt_structures, write_emt_dataset
from alchem.errors import ConfigError
from alchem.model import predict
from alchem.options import expand_options
from alchem.training import build_model
from scipy.special import spherical_jn

TYPES = [28, 29, 78]
SMALL = {
    "soap": {
        "cutoff": 4.5,
        "basis_cutoff_power_spectrum": 100,
        "num_pseudo_species": 2,
    },
    "bpnn": {"hidden_sizes": [16, 16]},
}
LE_400 = [6, 5, 5, 4, 4, 4, 3, 3, 2, 2, 2, 1, 1, 1, 1]
PHYSICAL_400 = [12, 11, 11, 10, 9, 8, 8, 7, 6, 5, 4, 3, 2, 1]

# (radial basis, trainable basis, contract centres, normalize)
VARIANTS = [
    ("physical", True, True, True),
    ("le", False, False, True),
    ("le", True, True, False),
]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("alchemical") / "train.xyz"
    write_emt_dataset(str(path), 3, elements=("Cu", "Ni", "Pt"), seed=2)
    return str(path)


def radial_functions(net, distances, elements):
    """W[k, a] g_{k,nl}(r) per l, as the model's torch operations compute it."""
    return net.torch_operations().radial(distances, elements, net.spline_coefficients())


def expand(data_file, model=None, name="alchemical_model", precision=64, **top):
    return expand_options(
        {
            "base_precision": precision,
            "architecture": {"name": name, "model": model or {}},
            "training_set": data_file,
            **top,
        },
        "test.yaml",
    )


def small(**soap) -> dict:
    hypers = copy.deepcopy(SMALL)
    hypers["soap"].update(soap)
    return hypers


def make(data_file, hypers=None, precision=64, types=TYPES, neighbors=30.0):
    options = expand(data_file, hypers or SMALL, precision=precision)
    torch.manual_seed(0)
    info = DatasetInfo(atomic_types=list(types), mean_num_neighbors=neighbors)
    model = build_model(options, info)
    model.composition.copy_(torch.linspace(-1.0, -3.0, len(types)))
    model.energy_scale.fill_(0.7)
    return model


def variant(kind, trainable, contract, normalize) -> dict:
    return small(
        radial_basis_type=kind,
        trainable_basis=trainable,
        contract_center_species=contract,
        normalize=normalize,
    )


def evaluate(model, atoms, dtype=torch.float64, virial=None):
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to("cpu", dtype)
    if virial is None:
        virial = bool(np.all(atoms.pbc))
    out = predict(model, batch, forces=True, virial=virial)
    return {k: v.detach().double().numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def alloy():
    return generate_emt_structures(1, elements=("Cu", "Ni", "Pt"), seed=5)[0]


# ---------------------------------------------------------------- hyperparameters


def test_defaults_are_the_seed_defaults(data_file):
    options = expand(data_file)
    assert options["architecture"]["name"] == "alchemical_model"
    assert options["architecture"]["model"] == {
        "soap": {
            "num_pseudo_species": 4,
            "cutoff": 5.0,
            "basis_cutoff_power_spectrum": 400.0,
            "radial_basis_type": "physical",
            "basis_scale": 3.0,
            "trainable_basis": True,
            "normalize": True,
            "contract_center_species": True,
            "cutoff_width": 1.0,
        },
        "bpnn": {
            "hidden_sizes": [32, 32],
            "output_size": 1,
            "activation_function": "SiLU",
        },
        # not a seed hyperparameter: the pair term beside the network
        # (alchem.pair_potential, docs/architectures/alchemical_model.md)
        "pair_potential": {"basis_size": 16, "inner_cutoff": 1.0},
    }
    assert options["architecture"]["training"] == {
        "batch_size": 8,
        "num_epochs": 100,
        "learning_rate": 0.001,
        "early_stopping_patience": 50,
        "scheduler_patience": 10,
        "scheduler_factor": 0.8,
        "log_interval": 10,
        "checkpoint_interval": 25,
        "per_structure_targets": [],
        "loss_weights": {"energy": 1.0, "forces": 1.0, "stress": 1.0},
    }


def test_seed_spellings_are_accepted(data_file):
    options = expand(
        data_file,
        {
            "soap": {
                "cutoff_radius": 4.0,
                "basis_cutoff": 200,
                "radial_basis_type": "LE",
            },
            "bpnn": {
                "num_hidden_layers": 3,
                "num_neurons_per_layer": 8,
                "activation_function": "silu",
            },
        },
        name="experimental.alchemical_model",
    )
    assert options["architecture"]["name"] == "alchemical_model"
    model = options["architecture"]["model"]
    assert model["soap"]["cutoff"] == 4.0
    assert model["soap"]["basis_cutoff_power_spectrum"] == 200.0
    assert model["soap"]["radial_basis_type"] == "le"
    assert "cutoff_radius" not in model["soap"] and "basis_cutoff" not in model["soap"]
    assert model["bpnn"]["hidden_sizes"] == [8, 8, 8]
    assert model["bpnn"]["activation_function"] == "SiLU"
    # either of the two layer keys alone: the other comes from the defaults
    only_layers = expand(data_file, {"bpnn": {"num_hidden_layers": 1}})
    assert only_layers["architecture"]["model"]["bpnn"]["hidden_sizes"] == [32]
    only_width = expand(data_file, {"bpnn": {"num_neurons_per_layer": 5}})
    assert only_width["architecture"]["model"]["bpnn"]["hidden_sizes"] == [5, 5]
    for name, module in [("ReLU", torch.nn.ReLU), ("tanh", torch.nn.Tanh)]:
        hypers = {**SMALL, "bpnn": {"hidden_sizes": [4], "activation_function": name}}
        model = make(data_file, hypers)
        assert isinstance(model.architecture.activation, module)


@pytest.mark.parametrize(
    "model, words",
    [
        ({"soap": {"num_pseudo_species": 0}}, ["soap.num_pseudo_species", ">= 1"]),
        ({"soap": {"cutoff": -1.0}}, ["soap.cutoff must be > 0"]),
        ({"soap": {"radial_basis_type": "gto"}}, ["soap.radial_basis_type", "le"]),
        ({"soap": {"basis_cutoff": 5}}, ["soap.basis_cutoff_power_spectrum", "7.049"]),
        (
            {"soap": {"basis_cutoff_power_spectrum": 1e5, "radial_basis_type": "le"}},
            ["soap.basis_cutoff_power_spectrum", "3000"],
        ),
        ({"soap": {"basis_scale": 0.4}}, ["soap.basis_scale", "10", ">= 0.5"]),
        ({"soap": {"basis_scale": -1.0}}, ["soap.basis_scale must be > 0"]),
        ({"soap": {"cutoff_width": 6.0}}, ["soap.cutoff_width"]),
        (
            {"soap": {"cutoff": 4.0, "cutoff_radius": 4.0}},
            ["'cutoff_radius'", "not both"],
        ),
        (
            {"soap": {"trainable_basis": "yes"}},
            ["soap.trainable_basis", "true or false"],
        ),
        ({"soap": {"num_pseudo_species": 2.5}}, ["soap.num_pseudo_species", "integer"]),
        (
            {"soap": {"pseudo_species": 2}},
            ["soap.pseudo_species", "num_pseudo_species"],
        ),
        ({"bpnn": {"hidden_sizes": [8, 0]}}, ["bpnn.hidden_sizes[1] must be >= 1"]),
        ({"bpnn": {"output_size": 0}}, ["bpnn.output_size must be >= 1"]),
        (
            {"bpnn": {"activation_function": "swishy"}},
            ["bpnn.activation_function", "SiLU"],
        ),
        ({"bpnn": {"num_hidden_layers": -1}}, ["bpnn.num_hidden_layers must be >= 0"]),
        (
            {"bpnn": {"num_neurons_per_layer": 2.5}},
            ["bpnn.num_neurons_per_layer", "integer"],
        ),
        (
            {"bpnn": {"hidden_sizes": [8], "num_hidden_layers": 2}},
            ["hidden_sizes", "not both"],
        ),
    ],
)
def test_bad_values_are_rejected_naming_the_key(data_file, model, words):
    with pytest.raises(ConfigError) as error:
        expand(data_file, model)
    message = str(error.value)
    assert message.startswith("test.yaml: ")
    for word in words:
        assert word in message, message


# ------------------------------------------------------------------- radial basis


def test_basis_sizes_at_400(data_file):
    assert basis.n_per_l("le", 400) == LE_400
    assert basis.n_per_l("physical", 400) == PHYSICAL_400
    assert sum(PHYSICAL_400) == 97
    # the same trimming as torch-spex (whose le eigenvalues are z^2 / r_c^2)
    from spex.radial.physical import LaplacianEigenstates

    spex_le = LaplacianEigenstates(
        5.0, max_angular=None, max_radial=None, max_eigenvalue=400 / 25.0
    )
    assert spex_le.n_per_l == LE_400
    eigenvalues = basis.eigenvalues("physical", 400)
    assert eigenvalues.shape[0] > len(PHYSICAL_400)
    for l, count in enumerate(PHYSICAL_400):
        assert eigenvalues[l, count - 1] <= 400 < eigenvalues[l, count]
    assert eigenvalues[len(PHYSICAL_400), 0] > 400
    # feature sizes of the model-spec: K^2 sum_l n_l^2
    for kind, size in [("physical", 13360), ("le", 2688)]:
        model = make(data_file, {"soap": {"radial_basis_type": kind}})
        assert model.architecture.n_per_l == (
            PHYSICAL_400 if kind == "physical" else LE_400
        )
        assert model.architecture.n_features == size
        assert model.architecture.head_weight.shape == (size, 4 * 32)


def test_basis_functions_and_normalisation():
    from physical_basis import PhysicalBasis

    r = np.linspace(0.1, 5.0, 37)
    counts = basis.n_per_l("physical", 100)
    values, derivatives = basis.tabulate("physical", counts, 5.0, 3.0, r)
    reference = PhysicalBasis()
    column = 0
    for l, count in enumerate(counts):
        for n in range(count):
            ratio = values[:, column] / reference.compute(n, l, r / 3.0)
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
            slope = derivatives[:, column] / (
                reference.compute_derivative(n, l, r / 3.0) / 3.0
            )
            np.testing.assert_allclose(slope, ratio[0], rtol=1e-7)
            column += 1
    counts = basis.n_per_l("le", 100)
    values, derivatives = basis.tabulate("le", counts, 5.0, 3.0, r)
    zeros = basis.eigenvalues("le", 100) ** 0.5
    column = 0
    for l, count in enumerate(counts):
        for n in range(count):
            k = zeros[l, n] / 5.0
            ratio = values[:, column] / spherical_jn(l, k * r)
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-8)
            slope = derivatives[:, column] / (
                k * spherical_jn(l, k * r, derivative=True)
            )
            np.testing.assert_allclose(slope, ratio[0], rtol=1e-6)
            column += 1
    # le functions vanish at r_c by construction
    at_cutoff, _ = basis.tabulate("le", counts, 5.0, 3.0, np.array([5.0]))
    assert np.abs(at_cutoff).max() < 1e-10
    # unit mean square over the cutoff sphere, for both bases
    fine = np.linspace(0.0, 5.0, 20001)
    for kind in ("le", "physical"):
        values, _ = basis.tabulate(kind, basis.n_per_l(kind, 100), 5.0, 3.0, fine)
        mean_square = (
            3.0 / 5.0**3 * np.trapezoid(fine[:, None] ** 2 * values**2, fine, axis=0)
        )
        np.testing.assert_allclose(mean_square, 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", ["le", "physical"])
def test_tabulated_radial_functions_match_the_basis(data_file, kind):
    """Fixed basis: the spline is f_c(r) R_nl(r) times W[k, a] and the scale."""
    model = make(data_file, small(radial_basis_type=kind, trainable_basis=False))
    net = model.architecture
    r = torch.linspace(0.3, net.cutoff, 501)
    element = 1
    rows = radial_functions(net, r, torch.full_like(r, element, dtype=torch.int64))
    values, derivatives = basis.tabulate(kind, net.n_per_l, net.cutoff, 3.0, r.numpy())
    switch, _ = basis.shifted_cosine(r.numpy(), net.cutoff, 1.0)
    expected_all = torch.tensor(values * switch[:, None])
    weights = net.compression[:, element].detach()
    for l, block in enumerate(rows):
        a, b = net.radial_offsets[l], net.radial_offsets[l + 1]
        scale = math.sqrt(net.ps_scale[l])
        expected = torch.cat(
            [weights[k] * expected_all[:, a:b] for k in range(net.n_pseudo)], 1
        )
        amplitude = expected_all[:, a:b].abs().max() * weights.abs().max() * scale
        error = (block.detach() - scale * expected).abs().max()
        assert error < 2e-5 * amplitude, (l, float(error / amplitude))
    # and every column, value and slope, is zero (to rounding) at and beyond r_c
    edge = torch.tensor(
        [net.cutoff, net.cutoff + 0.5], dtype=torch.float64, requires_grad=True
    )
    out = torch.cat(radial_functions(net, edge, torch.zeros(2, dtype=torch.int64)), 1)
    (gradient,) = torch.autograd.grad(out.pow(2).sum() + out.sum(), edge)
    assert out.abs().max() < 1e-14 and gradient.abs().max() < 1e-12


@pytest.mark.slow  # over 10 s
def test_trainable_radial_table_is_the_mlp_of_the_basis(data_file):
    """The per-(l, k) MLP on the basis, times f_c: values and r-derivatives."""
    model = make(data_file, small(radial_basis_type="physical"))
    net = model.architecture
    nodes, _ = basis.grid("physical", 100.0, net.cutoff, 3.0, 1.0)
    assert len(nodes) == net.n_nodes
    r = torch.tensor(nodes, requires_grad=True)
    values, derivatives = basis.tabulate(
        "physical", net.n_per_l, net.cutoff, 3.0, r.detach().numpy()
    )
    # R(r) with its exact r-derivative attached, then the plain MLP by autograd
    radial = torch.tensor(values) + (r - r.detach()).unsqueeze(1) * torch.tensor(
        derivatives
    )
    switch, switch_slope = basis.shifted_cosine(r.detach().numpy(), net.cutoff, 1.0)
    switch = torch.tensor(switch) + (r - r.detach()) * torch.tensor(switch_slope)
    table = net.radial_table().detach()
    H, K = net.radial_hidden_size, net.n_pseudo
    column = 0
    for l, count in enumerate(net.n_per_l):
        a, b = net.radial_offsets[l], net.radial_offsets[l + 1]
        first = radial[:, a:b] @ net.radial_in[a:b].detach()
        for k in range(K):
            h = torch.nn.functional.silu(first[:, k * H : (k + 1) * H])
            for i in range(net.radial_layers - 1):
                h = torch.nn.functional.silu(
                    h @ net.radial_hidden[i, l * K + k].detach()
                )
            out = (h @ net.radial_out[k, :, a:b].detach()) * switch.unsqueeze(1)
            for n in range(count):
                (slope,) = torch.autograd.grad(out[:, n].sum(), r, retain_graph=True)
                torch.testing.assert_close(table[:, 0, column], out[:, n].detach())
                torch.testing.assert_close(table[:, 1, column], slope)
                column += 1
    assert column == net.n_columns


# --------------------------------------------------------------------- the equations


def reference_energies(net, species, vectors, centers, neighbors):
    """The model-spec equations written out directly: per-edge sums, the full
    F-wide power spectrum, torch's LayerNorm and plain linear layers."""
    n_atoms = species.shape[0]
    r = torch.linalg.norm(vectors, dim=1)
    radial = torch.cat(
        radial_functions(net, r, species[neighbors]), 1
    )  # W and s_l included
    harmonics = net.torch_operations().spherical_harmonics(vectors)
    features = []
    for l in range(net.max_angular + 1):
        a, b = net.column_offsets[l], net.column_offsets[l + 1]
        per_edge = radial[:, a:b].unsqueeze(2) * harmonics[l].unsqueeze(1)
        density = torch.zeros(n_atoms, b - a, 2 * l + 1, dtype=r.dtype)
        density = density.index_add(0, centers, per_edge)
        features.append(
            torch.einsum("ixm,iym->ixy", density, density).reshape(n_atoms, -1)
        )
    features = torch.cat(features, 1)
    assert features.shape[1] == net.n_features
    if net.normalize:
        features = torch.nn.functional.layer_norm(
            features,
            (net.n_features,),
            net.layernorm_weight,
            net.layernorm_bias,
            eps=net.layernorm_eps,
        )
    size = net.first_size
    energies = torch.zeros(n_atoms, dtype=r.dtype)
    for i in range(n_atoms):
        groups = (
            range(net.n_groups) if net.contract_center_species else [int(species[i])]
        )
        for g in groups:
            h = features[i] @ net.head_weight[:, g * size : (g + 1) * size]
            h = h + net.head_bias[g * size : (g + 1) * size]
            for layer in net.head_layers:
                h = net.activation(h) @ layer.weight[g] + layer.bias[g]
            weight = (
                net.compression[g, species[i]] if net.contract_center_species else 1.0
            )
            if net.contract_center_species and net.normalize:
                weight = weight / math.sqrt(net.n_pseudo)
            energies[i] += weight * h.sum()
    return energies


@pytest.mark.parametrize("hypers", VARIANTS)
def test_model_computes_the_spec_equations(data_file, alloy, hypers):
    model = make(data_file, variant(*hypers))
    net = model.architecture
    with torch.no_grad():
        net.layernorm_weight.uniform_(0.5, 1.5)
        net.layernorm_bias.uniform_(-0.2, 0.2)
    structure = structure_from_atoms(alloy, model.cutoff)
    vectors = (
        structure.positions[structure.neighbors]
        - structure.positions[structure.centers]
        + structure.shifts @ structure.cell
    )
    species = model.type_to_index[structure.numbers]
    got = net(species, vectors, structure.centers, structure.neighbors)
    expected = reference_energies(
        net, species, vectors, structure.centers, structure.neighbors
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_neighbour_count_normalisation(data_file):
    model = make(data_file, small(), neighbors=36.0)
    scale = model.architecture.ps_scale
    assert float(scale[0]) == pytest.approx(36.0**-1.5)
    for l in range(1, len(scale)):
        assert float(scale[l]) == pytest.approx(36.0**-1.0 / math.sqrt(2 * l + 1))
    assert "architecture.ps_scale" in model.state_dict()
    plain = make(data_file, small(normalize=False), neighbors=36.0)
    for l in range(len(plain.architecture.ps_scale)):
        assert float(plain.architecture.ps_scale[l]) == pytest.approx(
            1 / math.sqrt(2 * l + 1)
        )


def test_parameter_count_does_not_grow_with_elements(data_file):
    """In the network only W (K x S) grows with the elements (per-element baselines
    are buffers); the pair potential beside it has a row per element pair."""
    counts = {}
    for hypers in ({}, {"soap": {"radial_basis_type": "le", "num_pseudo_species": 2}}):
        for n_types in (2, 4, 7):
            model = make(
                data_file, hypers, types=[13, 28, 29, 46, 47, 78, 79][:n_types]
            )
            counts[n_types] = sum(p.numel() for p in model.architecture.parameters())
            assert model.architecture.compression.shape[1] == n_types
            pairs = n_types * (n_types + 1) // 2
            assert model.pair.weights.shape == (pairs, 16)
        K = model.architecture.n_pseudo
        assert counts[4] - counts[2] == 2 * K
        assert counts[7] - counts[2] == 5 * K
    # without contract_center_species there is one MLP per element (documented)
    hypers = small(contract_center_species=False)
    grows = [
        sum(p.numel() for p in make(data_file, hypers, types=TYPES[:n]).parameters())
        for n in (2, 3)
    ]
    assert grows[1] - grows[0] > 1000


# ------------------------------------------------------------------------- physics


@pytest.mark.parametrize("hypers", VARIANTS)
def test_invariances(data_file, alloy, hypers):
    model = make(data_file, variant(*hypers))
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
    out = evaluate(model, shifted)
    np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
    wrapped = shifted.copy()
    wrapped.wrap()
    out = evaluate(model, wrapped)
    np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
    np.testing.assert_allclose(out["forces"], reference["forces"], atol=1e-10)

    permutation = np.random.default_rng(0).permutation(len(alloy))
    out = evaluate(model, alloy[permutation])
    np.testing.assert_allclose(out["energy"], reference["energy"], rtol=1e-12)
    np.testing.assert_allclose(
        out["forces"], reference["forces"][permutation], atol=1e-10
    )
    np.testing.assert_allclose(
        out["atomic_energies"], reference["atomic_energies"][permutation], atol=1e-10
    )


@pytest.mark.parametrize("hypers", VARIANTS)
@pytest.mark.slow  # over 10 s
def test_forces_and_virial_are_derivatives(data_file, alloy, hypers):
    model = make(data_file, variant(*hypers))
    atoms = alloy.copy()
    reference = evaluate(model, atoms)
    h = 1e-5
    rng = np.random.default_rng(1)
    for atom in rng.choice(len(atoms), 3, replace=False):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * h
                energies.append(evaluate(model, moved, virial=False)["energy"][0])
            numerical = -(energies[0] - energies[1]) / (2 * h)
            assert abs(numerical - reference["forces"][atom, axis]) < 1e-6
    for a, b in [(0, 0), (1, 2), (2, 1), (0, 1)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=False)
            strained.positions = atoms.positions @ strain
            energies.append(evaluate(model, strained, virial=False)["energy"][0])
        numerical = -(energies[0] - energies[1]) / (2 * h)
        assert abs(numerical - reference["virial"][0][a, b]) < 1e-6


def dimer_model(data_file, kind):
    model = make(data_file, small(radial_basis_type=kind))
    model.energy_scale.fill_(0.2)
    return model


def dimer(model, distance):
    atoms = ase.Atoms("CuNi", positions=[[0, 0, 0], [distance, 0, 0]], pbc=False)
    out = evaluate(model, atoms)
    return out["energy"][0], out["forces"][1, 0]


@pytest.mark.parametrize("kind", ["le", "physical"])
@pytest.mark.slow  # over 10 s
def test_energy_and_force_are_continuous_across_the_cutoff(data_file, kind):
    model = dimer_model(data_file, kind)
    cutoff = model.cutoff
    isolated, _ = dimer(model, cutoff + 1.0)
    inside = dimer(model, cutoff - 1.0)[0] - isolated
    assert abs(inside) > 1e-4  # the pair does interact
    for epsilon in (1e-2, 1e-3, 1e-4):
        energy, force = dimer(model, cutoff - epsilon)
        # the switch is quadratic at r_c: energy ~ eps^2 (or faster), force ~ eps
        assert abs(energy - isolated) < 10 * abs(inside) * epsilon**2
        assert abs(force) < 10 * abs(inside) * epsilon
    energy, force = dimer(model, cutoff + 1e-6)
    assert energy == pytest.approx(isolated, abs=1e-14) and force == 0.0
    # a scan through r_c: no step anywhere, and force = -dE/dr on the way
    distances = np.linspace(cutoff - 0.5, cutoff + 0.2, 141)
    scan = np.array([dimer(model, d) for d in distances])
    step = distances[1] - distances[0]
    assert (
        np.abs(np.diff(scan[:, 0])).max() < 2 * step * np.abs(scan[:, 1]).max() + 1e-12
    )
    midpoint_force = -np.diff(scan[:, 0]) / step
    average_force = 0.5 * (scan[1:, 1] + scan[:-1, 1])
    np.testing.assert_allclose(
        midpoint_force, average_force, atol=2e-3 * np.abs(scan[:, 1]).max()
    )


@pytest.mark.parametrize("kind", ["le", "physical"])
@pytest.mark.slow  # over 10 s
def test_nve_conserves_energy_across_the_cutoff(data_file, kind):
    """Velocity Verlet on a dimer that flies apart through r_c (and a third atom
    that stays bonded): the total energy stays flat."""
    model = dimer_model(data_file, kind)
    cutoff = model.cutoff
    atoms = ase.Atoms(
        "CuNiPt",
        positions=[[0, 0, 0], [cutoff - 0.6, 0, 0], [-1.2, 2.0, 0.3]],
        pbc=False,
    )
    masses = atoms.get_masses()[:, None]
    velocities = np.zeros((3, 3))
    velocities[1, 0] = 0.03 * ase.units.Ang / ase.units.fs
    dt = 0.25 * ase.units.fs
    out = evaluate(model, atoms)
    forces = out["forces"]
    totals, distances = [], []
    for _ in range(160):
        velocities += 0.5 * dt * forces / masses
        atoms.positions += dt * velocities
        out = evaluate(model, atoms)
        forces = out["forces"]
        velocities += 0.5 * dt * forces / masses
        kinetic = 0.5 * np.sum(masses * velocities**2)
        totals.append(out["energy"][0] + kinetic)
        distances.append(atoms.get_distance(0, 1))
    assert min(distances) < cutoff - 0.3 and max(distances) > cutoff + 0.1
    drift = np.max(np.abs(np.array(totals) - totals[0]))
    assert drift < 1e-4, drift


def test_per_centre_head_with_an_absent_element(data_file, alloy):
    """One MLP per element: a structure without one of the elements, and atoms
    in any order, give the direct implementation's energies."""
    model = make(data_file, small(contract_center_species=False))
    atoms = alloy.copy()
    atoms.symbols[[i for i, s in enumerate(atoms.symbols) if s == "Ni"]] = "Pt"
    atoms = atoms[np.random.default_rng(3).permutation(len(atoms))]
    structure = structure_from_atoms(atoms, model.cutoff)
    vectors = (
        structure.positions[structure.neighbors]
        - structure.positions[structure.centers]
        + structure.shifts @ structure.cell
    )
    species = model.type_to_index[structure.numbers]
    assert set(species.tolist()) == {1, 2}  # Cu and Pt; no Ni (index 0)
    args = (species, vectors, structure.centers, structure.neighbors)
    got = model.architecture(*args)
    torch.testing.assert_close(
        got, reference_energies(model.architecture, *args), rtol=1e-10, atol=1e-10
    )


# -------------------------------------------------------------- export, precision


@pytest.mark.parametrize("contract", [True, False])
def test_torchscript_and_save_load(data_file, alloy, contract):
    model = make(data_file, small(contract_center_species=contract))
    structure = structure_from_atoms(alloy, model.cutoff)
    vectors = (
        structure.positions[structure.neighbors]
        - structure.positions[structure.centers]
        + structure.shifts @ structure.cell
    )
    species = model.type_to_index[structure.numbers]
    args = (species, vectors, structure.centers, structure.neighbors)
    scripted = torch.jit.script(model.architecture)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    eager = model.architecture(*args)
    torch.testing.assert_close(scripted(*args), eager, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loaded(*args), eager, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hypers", VARIANTS[:2])
def test_float32(data_file, alloy, hypers):
    model64 = make(data_file, variant(*hypers))
    model32 = make(data_file, variant(*hypers), precision=32)
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    assert all(
        b.dtype == torch.float32 for b in model32.buffers() if b.is_floating_point()
    )
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    out64 = evaluate(model64, alloy)
    out32 = evaluate(model32, alloy, torch.float32)
    np.testing.assert_allclose(out32["energy"], out64["energy"], rtol=1e-5)
    scale = np.abs(out64["forces"]).max()
    np.testing.assert_allclose(out32["forces"], out64["forces"], atol=1e-4 * scale)


def test_atoms_without_neighbours(data_file):
    model = make(data_file)
    lonely = ase.Atoms("CuPt", positions=[[0, 0, 0], [20, 0, 0]], pbc=False)
    out = evaluate(model, lonely)
    assert np.all(np.isfinite(out["energy"])) and np.all(out["forces"] == 0.0)
    single = evaluate(model, ase.Atoms("Ni", positions=[[0, 0, 0]], pbc=False))
    assert np.isfinite(single["energy"][0])


def test_architecture_is_registered():
    module = get_architecture("alchemical_model")
    assert get_architecture("experimental.alchemical_model") is module
    assert module.NAMES[0] == "alchemical_model"


def test_inference_cache_follows_the_parameters(data_file, alloy):
    """eval() caches the spline table and the folded first layer; train() and
    load_state_dict keep the cache in step with the parameters."""
    model = make(data_file)
    training = evaluate(model, alloy)
    model.eval()
    assert model.architecture.cached
    np.testing.assert_allclose(evaluate(model, alloy)["forces"], training["forces"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert not any("cache" in key for key in state)
    state["architecture.compression"] *= 1.5
    model.load_state_dict(state)  # in eval mode: the cache is refreshed
    cached = evaluate(model, alloy)
    model.train()
    assert not model.architecture.cached
    fresh = evaluate(model, alloy)
    np.testing.assert_allclose(cached["energy"], fresh["energy"], rtol=1e-13)
    assert abs(fresh["energy"][0] - training["energy"][0]) > 1e-6


# ------------------------------------------------------------ the inference kernel
# alchem::power_spectrum (python/alchem/ops/alchemical_ops.cpp) runs in eval mode on
# CPU; the same model with ``use_backend("torch")`` runs the torch operations checked
# above against the spec's equations. Energies, forces and virials must agree for
# every variant, in float64 and float32, with atoms without neighbours and edges at
# the cutoff.

needs_kernel = pytest.mark.skipif(
    not ops.load(), reason="libalchem_ops.so is not built (make plugin)"
)


def run_kernel(model, atoms, use_kernel, dtype):
    model.architecture.use_backend("kernel" if use_kernel else "torch")
    batch = collate([structure_from_atoms(atoms, model.cutoff)]).to("cpu", dtype)
    out = predict(model, batch, forces=True, virial=bool(np.all(atoms.pbc)))
    return {k: v.detach().double().numpy() for k, v in out.items()}


def compare_kernel(model, atoms, dtype, rtol):
    model.eval()
    assert model.architecture.cached
    assert model.architecture.feature_backend == "kernel"
    kernel = run_kernel(model, atoms, True, dtype)
    torch_ops = run_kernel(model, atoms, False, dtype)
    model.architecture.use_backend("kernel")
    for key, value in torch_ops.items():
        scale = max(np.abs(value).max(), 1e-300)
        np.testing.assert_allclose(kernel[key], value, rtol=0, atol=rtol * scale)
    return kernel


@needs_kernel
@pytest.mark.parametrize("hypers", VARIANTS)
def test_kernel_matches_the_torch_operations(data_file, alloy, hypers):
    model = make(data_file, variant(*hypers))
    with torch.no_grad():  # LayerNorm affine away from its initial values
        model.architecture.layernorm_weight.uniform_(0.5, 1.5)
        model.architecture.layernorm_bias.uniform_(-0.2, 0.2)
    model.architecture.refresh_cache()
    out = compare_kernel(model, alloy, torch.float64, 1e-12)
    assert np.abs(out["forces"]).max() > 1e-3  # forces are not trivially zero


@needs_kernel
@pytest.mark.parametrize("hypers", VARIANTS[:2])
def test_kernel_float32(data_file, alloy, hypers):
    model = make(data_file, variant(*hypers), precision=32)
    compare_kernel(model, alloy, torch.float32, 2e-5)


@needs_kernel
def test_kernel_default_basis_sizes(data_file, alloy):
    """l up to 13 and 12 radial functions per l (the physical basis at 400)."""
    model = make(data_file, small(basis_cutoff_power_spectrum=400))
    assert model.architecture.max_angular == 13
    compare_kernel(model, alloy, torch.float64, 1e-12)


@needs_kernel
def test_kernel_lonely_atoms_and_cutoff_edges(data_file):
    model = make(data_file)
    cutoff = model.cutoff
    atoms = ase.Atoms(
        "CuNiPtCu",
        positions=[[0, 0, 0], [cutoff, 0, 0], [0, 2.1, 0.4], [30, 0, 0]],
        pbc=False,
    )
    out = compare_kernel(model, atoms, torch.float64, 1e-12)
    assert np.all(out["forces"][3] == 0.0)


@needs_kernel
def test_kernel_has_no_second_derivatives_in_the_positions(data_file, alloy):
    """Training differentiates the forces in the parameters only; derivatives of
    the forces in the positions (a Hessian) are refused rather than wrong."""
    model = make(data_file).eval()
    batch = collate([structure_from_atoms(alloy, model.cutoff)]).to(
        "cpu", torch.float64
    )
    out = predict(
        model, batch, forces=True, virial=False, create_graph=True, with_features=True
    )
    with pytest.raises(RuntimeError, match="no second derivatives"):
        torch.autograd.grad(out["forces"].sum(), out["positions"])


def graph_nodes(tensor) -> set[str]:
    """Names of the autograd nodes that ``tensor`` depends on."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def training_gradients(model, structures, dtype, backend):
    """Outputs and the gradient of a random loss on energies, forces and virials
    with respect to every parameter, as a training step computes them."""
    model.architecture.use_backend(backend)
    model.train()
    batch = collate(
        [structure_from_atoms(atoms, model.cutoff) for atoms in structures]
    ).to("cpu", dtype)
    out = predict(model, batch, forces=True, virial=True, create_graph=True)
    generator = torch.Generator().manual_seed(3)
    loss = sum(
        (value * torch.randn(value.shape, generator=generator, dtype=dtype)).sum()
        for value in out.values()
    )
    parameters = [p for p in model.parameters() if p.numel() > 0]
    gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
    nodes = graph_nodes(out["forces"])
    return out, gradients, nodes


@needs_kernel
@pytest.mark.parametrize(
    "hypers, precision",
    [(hypers, 64) for hypers in VARIANTS] + [(VARIANTS[0], 32), (VARIANTS[1], 32)],
)
def test_kernel_trains_as_the_torch_operations(data_file, hypers, precision):
    """In training mode the kernel computes the features, their gradient in the
    spline table and the double backward of a loss on forces and virials: every
    parameter's gradient equals the torch operations' (float64: to 1e-11 of its
    largest entry)."""
    dtype = torch.float64 if precision == 64 else torch.float32
    model = make(data_file, variant(*hypers), precision=precision)
    with torch.no_grad():  # LayerNorm affine away from its initial values
        if model.architecture.normalize:
            model.architecture.layernorm_weight.uniform_(0.5, 1.5)
            model.architecture.layernorm_bias.uniform_(-0.2, 0.2)
    structures = generate_emt_structures(2, elements=("Cu", "Ni", "Pt"), seed=5)
    out, kernel, nodes = training_gradients(model, structures, dtype, "kernel")
    assert any("PowerSpectrumBackward" in name for name in nodes)
    reference, torch_ops, torch_nodes = training_gradients(
        model, structures, dtype, "torch"
    )
    assert not any("PowerSpectrum" in name for name in torch_nodes)
    tolerance = 1e-11 if precision == 64 else 5e-5
    for key, value in reference.items():
        scale = float(value.abs().max())
        assert float((out[key] - value).abs().max()) <= tolerance * scale, key
    names = [name for name, p in model.named_parameters() if p.numel() > 0]
    checked = 0
    for name, mine, theirs in zip(names, kernel, torch_ops, strict=True):
        assert (mine is None) == (theirs is None), name
        if theirs is None:
            continue
        scale = float(theirs.abs().max())
        assert float((mine - theirs).abs().max()) <= tolerance * scale, name
        checked += scale > 0
    assert checked >= 6  # W, the radial MLPs, the head: not trivially zero


@needs_kernel
def test_kernel_threads_give_the_same_numbers(data_file, alloy):
    """Atoms are split between torch's threads; each atom's sums run in one
    thread, in edge order, so the result does not depend on the thread count."""
    model = make(data_file).eval()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_kernel(model, alloy, True, torch.float64)
        torch.set_num_threads(2)
        two = run_kernel(model, alloy, True, torch.float64)
    finally:
        torch.set_num_threads(threads)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


@needs_kernel
def test_kernel_table_in_factors_or_whole(data_file, alloy):
    """alchem::power_spectrum_factored (the table as a spline per interval times
    per-element weights, training) and alchem::power_spectrum given the whole table
    as their product (differentiable through torch) give the same gradients of both
    factors, through the backward and through the double backward (a loss on the
    gradient with respect to the vectors)."""
    from alchem.ops.modules import power_spectrum, power_spectrum_factored

    model = make(data_file)
    arch = model.architecture
    batch = collate([structure_from_atoms(alloy, model.cutoff)]).to(
        "cpu", torch.float64
    )
    species = model.type_to_index[batch.numbers]
    vectors = (
        batch.positions[batch.neighbors]
        - batch.positions[batch.centers]
        + batch.shifts @ batch.cells[0]
    ).requires_grad_(True)
    elements = species.index_select(0, batch.neighbors)
    cubic, weights = (x.detach().requires_grad_(True) for x in arch.spline_factors())
    features = arch.features
    common = (features.column_sizes, features.grid, features.nodes)
    sums = (features.multiplicity, features.multiplicity)
    generator = torch.Generator().manual_seed(4)

    def gradients(factored: bool):
        if factored:
            outputs = power_spectrum_factored(
                vectors,
                elements,
                batch.centers,
                len(species),
                cubic,
                weights,
                *common,
                *sums,
            )
        else:
            table = (cubic.unsqueeze(0) * weights[:, None, None, :]).reshape(
                -1, 4, cubic.shape[2]
            )
            outputs = power_spectrum(
                vectors,
                elements,
                batch.centers,
                len(species),
                table,
                *common,
                *sums,
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, 0, dtype=torch.float64),
                [0.0, 1.0, 1.0, 0.0],
            )
        generator.manual_seed(4)
        loss = sum(
            (x * torch.randn(x.shape, generator=generator, dtype=x.dtype)).sum()
            for x in outputs
        )
        first = torch.autograd.grad(loss, [cubic, weights, vectors], create_graph=True)
        direction = torch.randn(vectors.shape, generator=generator, dtype=torch.float64)
        second = torch.autograd.grad((first[2] * direction).sum(), [cubic, weights])
        return [x.detach() for x in first[:2]] + list(second)

    for mine, theirs in zip(gradients(True), gradients(False), strict=True):
        scale = float(theirs.abs().max())
        assert scale > 0
        assert float((mine - theirs).abs().max()) <= 1e-12 * scale


@needs_kernel
def test_kernel_training_gradients_do_not_depend_on_threads(data_file, alloy):
    """The table's gradient sums the edges in one fixed order in every thread."""
    model = make(data_file)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, one, _ = training_gradients(model, [alloy], torch.float64, "kernel")
        torch.set_num_threads(2)
        _, two, _ = training_gradients(model, [alloy], torch.float64, "kernel")
    finally:
        torch.set_num_threads(threads)
    for mine, theirs in zip(one, two, strict=True):
        if mine is not None:
            assert torch.equal(mine, theirs)


@needs_kernel
@pytest.mark.slow  # over 10 s
def test_kernel_baseline_build():
    """The kernel is built for the x86-64 baseline and for x86-64-v3 (AVX2, FMA)
    and picks one at run time; ALCHEM_KERNEL=baseline forces the build that CPUs
    without AVX2 (and other architectures) run: the same comparisons pass."""
    env = dict(os.environ, ALCHEM_KERNEL="baseline")
    name = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; from alchem import ops; ops.load(); "
            "print(torch.ops.alchem.kernel_name())",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert name == "baseline"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
        + ["-k", "kernel and not baseline_build"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout


def test_unloadable_kernel_library_falls_back(tmp_path):
    """A libalchem_ops.so that does not load (say, built against another torch)
    gives a warning and models on their torch operations, not a failure."""
    (tmp_path / "libalchem_ops.so").write_text("not a library")
    script = "from alchem import ops; print('enabled', ops.kernel_enabled())"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, ALCHEM_PLUGIN_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "enabled False" in result.stdout
    assert "could not be loaded" in result.stderr
    assert "make plugin" in result.stderr
