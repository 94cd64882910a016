"""The restructured SOAP-BPNN maths (features built in species order, batched over
l, LayerNorm folded into the first layers) equals the straightforward computation:
per-l density and power spectrum, torch's LayerNorm, one MLP per centre element.
Energies, forces, virials and the parameter gradients of a force-training loss."""

import math

import ase.build
import pytest
import torch
from alchem.data import DatasetInfo, collate
from alchem.data.dataset import structure_from_atoms
from alchem.data.emt import generate_emt_structures
from alchem.model import predict
from alchem.options import expand_options
from alchem.training import build_model

TYPES = [28, 29, 46, 78]


def reference_network(net, species, vectors, centers, neighbors) -> torch.Tensor:
    """SOAP-BPNN network output per atom, written out the plain way."""
    n_atoms, n_species = species.shape[0], net.n_species
    r = torch.linalg.norm(vectors, dim=1)
    smooth = net.cutoff_function(r)
    if net.use_scaling:
        smooth = smooth * net.radial_scaling(r)
    radial = torch.cat(net.radial(r), dim=1) * net.damping * smooth.unsqueeze(1)
    radial = radial.reshape(-1, net.max_angular + 1, net.n_radial)
    harmonics = net.torch_operations().spherical_harmonics(vectors)
    blocks = []
    for l in range(net.max_angular + 1):
        density = torch.zeros(
            n_atoms, n_species, net.n_radial, 2 * l + 1, dtype=vectors.dtype
        )
        per_edge = radial[:, l].unsqueeze(2) * harmonics[l].unsqueeze(1)
        density = density.index_put(
            (centers, species[neighbors]), per_edge, accumulate=True
        )
        if l == 0:
            own = net.center_density.reshape(1, -1, 1).expand(n_atoms, -1, 1)
            density = density.index_put(
                (torch.arange(n_atoms), species), own, accumulate=True
            )
        pairs = []
        for a in range(n_species):
            for b in range(a, n_species):
                weight = 1.0 if a == b else math.sqrt(2.0)
                p = torch.einsum("inm,ikm->ink", density[:, a], density[:, b])
                pairs.append(p * weight / math.sqrt(2 * l + 1))
        blocks.append(torch.stack(pairs, dim=1).reshape(n_atoms, -1))
    features = net.layernorm(torch.cat(blocks, dim=1))
    energies = torch.zeros(n_atoms, dtype=features.dtype)
    for a, network in enumerate(net.networks):
        mask = species == a
        energies = energies.masked_scatter(mask, network(features[mask]).reshape(-1))
    return energies


def make_model(emt_dir: str, layernorm: bool, scaling: bool):
    model = {
        "soap": {"cutoff": 4.5, "max_radial": 4, "max_angular": 3},
        "bpnn": {"layernorm": layernorm, "num_neurons_per_layer": 8},
    }
    if not scaling:
        model["soap"]["radial_scaling"] = {"None": {}}
    options = expand_options(
        {
            "architecture": {"name": "soap_bpnn", "model": model},
            "training_set": f"{emt_dir}/train.xyz",
        },
        "test",
    )
    torch.manual_seed(0)
    built = build_model(options, DatasetInfo(TYPES, 30.0))
    with torch.no_grad():  # a non-trivial LayerNorm affine
        if layernorm:
            built.architecture.layernorm.weight.uniform_(0.5, 1.5)
            built.architecture.layernorm.bias.uniform_(-0.2, 0.2)
        built.energy_scale.fill_(0.7)
    return built


@pytest.fixture(scope="module")
def batch():
    frames = generate_emt_structures(3, elements=("Cu", "Ni", "Pd", "Pt"), seed=7)
    # one element missing from a cell and an empty species block in the batch
    frames[1].numbers[frames[1].numbers == 46] = 29
    return collate([structure_from_atoms(a, 4.5) for a in frames])


@pytest.mark.parametrize("layernorm,scaling", [(True, True), (False, False)])
@pytest.mark.slow  # over 10 s
def test_optimised_soap_bpnn_equals_reference(emt_dir, batch, layernorm, scaling):
    model = make_model(emt_dir, layernorm, scaling)
    net = model.architecture

    def run(reference: bool) -> tuple[dict, list[torch.Tensor]]:
        model.zero_grad()
        if reference:
            # every directed edge, written out the plain way; the optimised run
            # takes each pair once (predict, both_directions)
            forward = net.forward
            net.forward = lambda s, v, c, n, k=-1, b=False: reference_network(
                net, s, v, c, n
            )
            net.accepts_both_directions = False
        try:
            out = predict(model, batch, forces=True, virial=True, create_graph=True)
        finally:
            if reference:
                net.forward = forward
                net.accepts_both_directions = True
        # a force-training loss: its gradient goes through the double backward
        loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
        loss = loss + out["virial"].pow(2).sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.numel() > 0]
        return {k: v.detach() for k, v in out.items()}, grads

    fast, fast_grads = run(False)
    slow, slow_grads = run(True)
    for key in ("energy", "atomic_energies", "forces", "virial"):
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-11, atol=1e-11)
    assert len(fast_grads) == len(slow_grads)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert torch.any(b != 0)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_ghost_neighbours_give_the_same_energies(emt_dir, batch):
    """With n_centers the extra atoms are neighbours only (LAMMPS ghosts): every
    neighbour replaced by a ghost copy of it gives the same centre energies."""
    model = make_model(emt_dir, True, True)
    species = model.type_to_index[batch.numbers]
    vectors = (
        batch.positions[batch.neighbors]
        - batch.positions[batch.centers]
        + torch.einsum("ea,eab->eb", batch.shifts, batch.cells[batch.edge_structure])
    )
    n = species.shape[0]
    direct = model.architecture(species, vectors, batch.centers, batch.neighbors)
    ghosts = torch.arange(n, n + len(batch.neighbors))
    with_ghosts = torch.cat([species, species[batch.neighbors]])
    ghosted = model.architecture(with_ghosts, vectors, batch.centers, ghosts, n)
    assert ghosted.shape == (n,)
    torch.testing.assert_close(direct, ghosted, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("cell", ["periodic", "small periodic", "cluster"])
def test_each_pair_once_equals_every_directed_edge(emt_dir, cell):
    """predict gives SOAP-BPNN each pair of the full list once (both_directions):
    energies, forces, virials and the parameter gradients of a force loss must be
    those of every directed edge. A cell smaller than twice the cutoff has pairs of
    an atom with its own images (i = j, shifts S and -S)."""
    frames = generate_emt_structures(2, elements=("Cu", "Ni", "Pd", "Pt"), seed=3)
    if cell == "small periodic":
        frames = [ase.build.bulk("Cu", "fcc", a=3.6) * (1, 1, 2)] + frames[:1]
        frames[0].rattle(0.05, seed=2)
    elif cell == "cluster":
        for atoms in frames:
            atoms.pbc = False
    batch = collate([structure_from_atoms(a, 4.5) for a in frames])
    assert batch.one_way is not None and batch.one_way.sum() * 2 == len(batch.centers)
    model = make_model(emt_dir, True, True)

    def run(each_pair_once: bool):
        model.zero_grad()
        model.architecture.accepts_both_directions = each_pair_once
        out = predict(model, batch, forces=True, virial=True, create_graph=True)
        loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
        (loss + out["virial"].pow(2).sum()).backward()
        return out, [p.grad.clone() for p in model.parameters() if p.numel() > 0]

    once, once_grads = run(True)
    every, every_grads = run(False)
    for key in ("energy", "atomic_energies", "forces", "virial"):
        torch.testing.assert_close(once[key], every[key], rtol=1e-12, atol=1e-12)
    for a, b in zip(once_grads, every_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_one_way_edges_need_a_symmetric_list():
    """One edge per pair only where every edge has its reverse; otherwise (an edge
    whose reverse fell outside the cutoff by rounding) every directed edge."""
    from alchem.data.dataset import one_way_edges

    atoms = generate_emt_structures(1, elements=("Cu", "Ni"), seed=5)[0]
    structure = structure_from_atoms(atoms, 4.5)
    keep = structure.one_way
    assert keep is not None and int(keep.sum()) * 2 == len(structure.centers)
    centers, neighbors = structure.centers, structure.neighbors
    shifts = structure.shifts
    assert one_way_edges(centers[1:], neighbors[1:], shifts[1:]) is None
    # as many edges each way, but one edge (i > j, not kept) points elsewhere
    wrong = neighbors.clone()
    candidates = torch.nonzero((centers > neighbors) & (neighbors > 0)).reshape(-1)
    wrong[candidates[0]] -= 1
    same_count = (centers < wrong) | ((centers == wrong) & keep)
    assert int(same_count.sum()) == int(keep.sum())
    assert one_way_edges(centers, wrong, shifts) is None
