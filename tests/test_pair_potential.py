"""The learned pair potential (alchem.pair_potential): its energy, forces, fit, and
what happens without one."""

import numpy as np
import pytest
import torch
from alchem.data import DatasetInfo, collate, structure_from_atoms
from alchem.data.emt import generate_emt_structures
from alchem.errors import ConfigError
from alchem.model import fit_composition_and_scale, predict
from alchem.options import expand_options
from alchem.pair_potential import PairPotential, pair_energies_and_forces
from alchem.training import build_model
from conftest import ARCHITECTURES, SMALL_HYPERS

TYPES = [28, 29, 78]


def make_model(emt_dir: str, architecture: str = "alchemical_model", **pair):
    hypers = dict(SMALL_HYPERS[architecture])
    if pair:
        hypers["pair_potential"] = pair
    options = expand_options(
        {
            "base_precision": 64,
            "architecture": {"name": architecture, "model": hypers},
            "training_set": f"{emt_dir}/train.xyz",
        },
        "test",
    )
    torch.manual_seed(0)
    return build_model(
        options, DatasetInfo(atomic_types=TYPES, mean_num_neighbors=30.0)
    )


@pytest.fixture(scope="module")
def structures():
    frames = generate_emt_structures(6, elements=("Ni", "Cu", "Pt"), seed=3)
    result = []
    for atoms in frames:
        structure = structure_from_atoms(atoms, 4.5)
        structure.energy = float(atoms.get_potential_energy())
        structure.forces = torch.tensor(atoms.get_forces())
        result.append(structure)
    return frames, result


def random_pairs(model, scale: float = 0.2) -> None:
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.pair.weights.copy_(
            scale * torch.randn(model.pair.weights.shape, generator=generator)
        )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forces_are_the_energy_gradient(emt_dir, structures, architecture):
    """Through the whole model (predict: autograd; SOAP-BPNN takes each pair once)
    and the fit's own formula."""
    model = make_model(emt_dir, architecture, basis_size=16)
    random_pairs(model)
    frames, items = structures
    atoms = frames[0]
    batch = collate([items[0]]).to("cpu", torch.float64)
    out = predict(model, batch, forces=True, virial=False)
    species = model.type_to_index[items[0].numbers]
    _, pair_forces = pair_energies_and_forces(model.pair, items[0], species)
    assert float(pair_forces.abs().max()) > 0.1  # the term is really there

    def energy(positions):
        moved = atoms.copy()
        moved.positions = positions
        b = collate([structure_from_atoms(moved, model.cutoff)]).to(
            "cpu", torch.float64
        )
        return float(predict(model, b, forces=False, virial=False)["energy"].detach())

    step = 1e-5
    for atom, axis in [(0, 0), (5, 1), (17, 2)]:
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        numeric = -(energy(plus) - energy(minus)) / (2 * step)
        assert abs(float(out["forces"][atom, axis]) - numeric) < 1e-6

    # the pair term alone: the fit's analytic forces equal autograd's
    positions = batch.positions.detach().requires_grad_(True)
    vectors = positions[batch.neighbors] - positions[batch.centers]
    vectors = vectors + batch.shifts @ batch.cells[0]
    total = model.pair(
        species, vectors, batch.centers, batch.neighbors, len(species), False
    ).sum()
    (gradient,) = torch.autograd.grad(total, positions)
    np.testing.assert_allclose(pair_forces, -gradient.detach(), atol=1e-12)


def test_each_pair_once_gives_the_same_energies(emt_dir, structures):
    """both_directions (SOAP-BPNN's half lists): each edge counts for both ends."""
    model = make_model(emt_dir)
    random_pairs(model)
    item = structures[1][0]
    species = model.type_to_index[item.numbers]
    vectors = item.positions[item.neighbors] - item.positions[item.centers]
    vectors = vectors + item.shifts @ item.cell
    n = len(species)
    full = model.pair(species, vectors, item.centers, item.neighbors, n, False)
    one_way = item.one_way
    half = model.pair(
        species,
        vectors[one_way],
        item.centers[one_way],
        item.neighbors[one_way],
        n,
        True,
    )
    np.testing.assert_allclose(half.detach(), full.detach(), atol=1e-12)


def test_vanishes_smoothly_at_the_cutoff():
    pair = PairPotential(3, 4.5, 1.0, 16, 1.0).double()
    r = torch.tensor([4.5, 4.6, 6.0], dtype=torch.float64)
    assert float(pair.basis(r).abs().max()) == 0.0
    assert float(pair.basis_slope(r).abs().max()) == 0.0
    # continuous up to it: value and slope small just below
    below = torch.tensor([4.5 - 1e-4], dtype=torch.float64)
    assert float(pair.basis(below).abs().max()) < 1e-7
    assert float(pair.basis_slope(below).abs().max()) < 1e-3


def test_the_table_is_the_gaussian_expansion():
    """The tabulated interpolant (what every engine evaluates) against the
    Gaussians times the switch, computed directly, across [0, r_c] and beyond;
    basis_slope is the interpolant's own derivative."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        pair = PairPotential(3, 5.0, 1.0, 16, 1.0)
    finally:
        torch.set_default_dtype(default)
    r = torch.linspace(0.0, 5.5, 100_001, dtype=torch.float64)
    exact, exact_slope = pair.gaussians(r)
    assert float(exact.abs().max()) > 0.99  # every Gaussian's peak is sampled
    assert float((pair.basis(r) - exact).abs().max()) < 1e-7
    # slopes reach 2 / (h sqrt(2 e)) = 3.2 / Å
    assert float((pair.basis_slope(r) - exact_slope).abs().max()) < 2e-5
    moving = r.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(pair.basis(moving).sum(), moving)
    np.testing.assert_allclose(gradient, pair.basis_slope(r).sum(dim=1), atol=1e-10)


def test_the_fit_recovers_a_pair_potential(emt_dir, structures):
    """Labels made by a known pair potential + composition energies: the joint
    least-squares fit reproduces their energies and forces."""
    frames, items = structures
    truth = make_model(emt_dir)
    random_pairs(truth, 0.3)
    composition = torch.tensor([-4.0, -3.5, -5.5], dtype=torch.float64)
    labelled = []
    for atoms, item in zip(frames, items, strict=True):
        species = truth.type_to_index[item.numbers]
        energy, forces = pair_energies_and_forces(truth.pair, item, species)
        copy = structure_from_atoms(atoms, 4.5)
        copy.energy = energy + float(composition[species].sum())
        copy.forces = forces
        labelled.append(copy)
    model = make_model(emt_dir)
    fit_composition_and_scale(model, labelled)
    force_rms = float(torch.cat([s.forces for s in labelled]).pow(2).mean().sqrt())
    errors = []
    for item in labelled:
        species = model.type_to_index[item.numbers]
        energy, forces = pair_energies_and_forces(model.pair, item, species)
        energy += float(model.composition[species].sum())
        assert abs(energy - item.energy) / len(species) < 1e-3 * force_rms
        errors.append(forces - item.forces)
    # the ridge (RIDGE, relative) biases it slightly: 1 % of the RMS at most
    assert float(torch.cat(errors).pow(2).mean().sqrt()) < 1e-2 * force_rms
    # what the pairs leave is (nearly) nothing: the network's scale follows
    assert float(model.energy_scale) < 1e-2 * force_rms


def test_on_emt_the_pairs_take_most_of_the_forces(emt_dir, structures):
    """EMT of rattled fcc alloys is nearly pairwise: the fit leaves a fraction of
    the force components' RMS to the network (its scale)."""
    model = make_model(emt_dir)
    _, items = structures
    fit_composition_and_scale(model, items)
    force_rms = float(torch.cat([s.forces for s in items]).pow(2).mean().sqrt())
    assert float(model.energy_scale) < 0.2 * force_rms


def test_without_a_pair_potential(emt_dir, structures):
    """basis_size 0: no parameters, nothing added; hyperparameters saved before
    the pair potential existed build the model without one, and a state dict
    without its weights loads."""
    model = make_model(emt_dir, basis_size=0)
    assert model.pair.weights.numel() == 0
    with_pairs = make_model(emt_dir)
    assert (
        sum(p.numel() for p in with_pairs.parameters())
        - sum(p.numel() for p in model.parameters())
        == 6 * 16  # 3 elements: 6 pairs, 16 Gaussians each
    )
    options = expand_options(
        {
            "base_precision": 64,
            "architecture": {"name": "alchemical_model"},
            "training_set": f"{emt_dir}/train.xyz",
        },
        "test",
    )
    hypers = options["architecture"]["model"]
    del hypers["pair_potential"]
    from alchem.architectures.alchemical_model.model import AlchemicalModel
    from alchem.model import EnergyModel

    info = DatasetInfo(atomic_types=TYPES, mean_num_neighbors=30.0)
    old = EnergyModel(AlchemicalModel(hypers, info), info)
    assert old.pair.basis_size == 0
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("pair.")}
    old.load_state_dict(state)
    batch = collate([structures[1][0]]).to("cpu", torch.float64)
    energy = predict(model, batch, forces=False, virial=False)["energy"]
    model.composition.fill_(1.0)
    shifted = predict(model, batch, forces=False, virial=False)["energy"]
    assert float((shifted - energy).detach()) == pytest.approx(len(batch.numbers))


@pytest.mark.parametrize(
    "pair, message",
    [
        ({"basis_size": -1}, "pair_potential.basis_size must be >= 0"),
        (
            {"inner_cutoff": 4.5},
            "pair_potential.inner_cutoff must be in [0, soap.cutoff",
        ),
    ],
)
def test_bad_hyperparameters(pair, message):
    hypers = {**SMALL_HYPERS["alchemical_model"], "pair_potential": pair}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        expand_options(
            {
                "architecture": {"name": "alchemical_model", "model": hypers},
                "training_set": "x.xyz",
            },
            "options.yaml",
        )
