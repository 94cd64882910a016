"""Training speed of the Alchemical Model: the kernel against the torch operations.

    .venv/bin/python benchmarks/training_speed.py [--rounds 3] [--batches 2]

One thread, batches of 8, default hyperparameters, at 4 elements (ASE EMT fcc
alloys, generated here) and at 18 (benchmarks/many_elements/data/train.xyz, from
benchmarks/many_elements/generate.py). Every variant runs on the same batches in
the same process, the rounds interleaved so that the machine's load hits them
alike; every number printed is a ratio to a peer measured beside it:

- ``step``: one training step as alchem-train does it (energy, forces and virial
  with create_graph, loss on all three, backward), in float64 and float32
  (``base_precision: 32``), with the features on the CPU kernel
  (``alchem::power_spectrum``: forward, gradient, double backward; the default
  where the kernel is built) or on the torch operations (``ALCHEM_NO_KERNEL=1``);
- ``features part``: the kernel's step with the head replaced by a fixed linear
  readout of the features (P_l triangles, LayerNorm sums): the share of the step
  the features still take.
"""

import argparse
import os
import sys
import tempfile
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "many_elements"))

from profile_step import options_for  # noqa: E402

DATA_18 = os.path.join(HERE, "many_elements", "data", "train.xyz")


def read(data: str, structures: int) -> tuple[list, dict]:
    from alchem.data import read_structures

    options = options_for("alchemical_model", data, [], 64)
    cutoff = float(options["architecture"]["model"]["soap"]["cutoff"])
    selected = read_structures(dict(options["training_set"]), cutoff, "speed")
    return selected[:structures], options


FIT_STRUCTURES = 200  # the model's elements and composition, as profile_step.py


def build(data: str, structures: list, dtype_bits: int):
    """The default model (seed 0) and its dtype, composition fitted."""
    from alchem.data import dataset_info
    from alchem.model import fit_composition_and_scale
    from alchem.training import build_model, precision

    options = options_for("alchemical_model", data, [], dtype_bits)
    torch.manual_seed(0)
    model = build_model(options, dataset_info(structures))
    fit_composition_and_scale(model, structures)
    model.train()
    return model, precision(options)


def linear_readout(model, seed: int = 1):
    """architecture.forward replaced by a fixed random linear map of the features:
    the features' cost without the head's."""
    arch = model.architecture
    generator = torch.Generator().manual_seed(seed)
    dtype = arch.multiplicity.dtype
    weights = [
        torch.randn(size, generator=generator, dtype=dtype) / size**0.5
        for size in arch.triangle_sizes
    ]

    def forward(self, species, edge_vectors, centers, neighbors, n_centers=-1, *_):
        if n_centers < 0:
            n_centers = species.shape[0]
        blocks, total, squares = self.feature_blocks(
            species, edge_vectors, centers, neighbors, n_centers
        )
        energy = 1e-3 * total + 1e-6 * squares
        # the kernel gives the triangles of every l as one block
        readout = [torch.cat(weights)] if len(blocks) == 1 else weights
        for block, weight in zip(blocks, readout, strict=True):
            energy = energy + block @ weight
        return energy

    arch.forward = types.MethodType(forward, arch)
    return model


def train_step(model, batch) -> float:
    from alchem.model import predict
    from alchem.training import loss_function

    targets = {"energy": True, "forces": True, "virial": True}
    weights = {"energy": 1.0, "forces": 1.0, "stress": 1.0}
    parameters = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    out = predict(model, batch, forces=True, virial=True, create_graph=True)
    loss = loss_function(out, batch, targets, weights, False)
    loss.backward(inputs=parameters)
    elapsed = time.perf_counter() - t0
    for p in parameters:
        p.grad = None
    return elapsed


def measure(data: str, label: str, args) -> None:
    from alchem.data import collate

    structures, _ = read(data, max(FIT_STRUCTURES, args.batches * 8))
    models = {}
    for bits in (64, 32):
        for backend in ("torch", "kernel"):
            model, dtype = build(data, structures, bits)
            model.architecture.use_backend(backend)
            model.train()
            models[f"float{bits} {backend}"] = (model, dtype)
    readout = linear_readout(build(data, structures, 64)[0])
    models["float64 kernel, features part"] = (readout, torch.float64)
    groups = [structures[i * 8 : (i + 1) * 8] for i in range(args.batches)]
    batches = {
        dtype: [collate(g).to("cpu", dtype) for g in groups]
        for dtype in (torch.float64, torch.float32)
    }
    atoms = sum(int(b.n_atoms.sum()) for b in batches[torch.float64])
    for model, dtype in models.values():  # warm-up
        train_step(model, batches[dtype][0])
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (model, dtype) in models.items():
            times[name].append(sum(train_step(model, b) for b in batches[dtype]))
    best = {name: min(values) for name, values in times.items()}
    reference = best["float64 torch"]
    print(
        f"{label}, {len(models['float64 torch'][0].atomic_types)} in the model: "
        f"{atoms / args.batches:.0f} atoms per batch, best of {args.rounds} rounds "
        f"of {args.batches} steps; load {os.getloadavg()[0]:.1f}"
    )
    for name in ("float64 torch", "float64 kernel", "float32 torch", "float32 kernel"):
        print(
            f"  step {name}: {1e3 * best[name] / atoms:.2f} ms/atom, "
            f"{reference / best[name]:.2f}x faster than float64 torch"
        )
    share = best["float64 kernel, features part"] / best["float64 kernel"]
    print(f"  features part / step, float64 kernel: {share:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--elements", type=int, nargs="+", default=[4, 18])
    args = parser.parse_args()
    torch.set_num_threads(1)
    from alchem.data.emt import write_emt_dataset
    from alchem.memory import reuse_freed_memory

    reuse_freed_memory()
    if 4 in args.elements:
        with tempfile.TemporaryDirectory() as folder:
            data = os.path.join(folder, "train.xyz")
            write_emt_dataset(
                data, 8 * args.batches, elements=("Cu", "Ni", "Pd", "Pt"), seed=104
            )
            measure(data, "4 elements (EMT)", args)
    if 18 in args.elements:
        if not os.path.exists(DATA_18):
            raise SystemExit(
                f"{DATA_18} is missing: run benchmarks/many_elements/generate.py"
            )
        measure(DATA_18, "18 elements (MEAM)", args)


if __name__ == "__main__":
    main()
