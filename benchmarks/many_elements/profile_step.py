"""Where a training step's time goes, and what the untrained model predicts.

    .venv/bin/python benchmarks/many_elements/profile_step.py [--architecture A]
        [--set soap.num_pseudo_species=2 ...] [--batches 5]

One thread, float64 (``--float32``), batches of 8 from the many-element training
set: seconds per step split into the forward pass (features and head, with the
force/virial graph), the force/virial gradient (create_graph) and the loss
backward, the top operators of torch's profiler, and the energy RMSE of the
untrained model against that of the composition baseline alone (the point the
network starts from).
"""

import argparse
import os
import resource
import sys
import time

import torch
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def options_for(architecture: str, data: str, overrides: list[str], dtype: int):
    from alchem.options import expand_options

    model: dict = {}
    for item in overrides:
        key, value = item.split("=", 1)
        node = model
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    user = {
        "base_precision": dtype,
        "architecture": {"name": architecture, "model": model},
        "training_set": {"systems": {"read_from": data}},
        "validation_set": 0.05,
    }
    return expand_options(user, "profile_step")


def set_malloc(policy: str) -> None:
    """glibc's defaults, alchem.memory's policy, or the 32 MiB mmap threshold that
    training used before it (for the comparison in docs/alchemical-study.md)."""
    import ctypes

    from alchem.memory import reuse_freed_memory

    if policy == "alchem":
        reuse_freed_memory()
    elif policy == "mmap-32MiB":
        mallopt = ctypes.CDLL("libc.so.6").mallopt
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
        mallopt(m_trim_threshold, 1 << 30)
        mallopt(m_top_pad, 64 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="alchemical_model")
    parser.add_argument("--data", default=os.path.join(HERE, "data", "train.xyz"))
    parser.add_argument("--set", action="append", default=[], help="model key=value")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--structures", type=int, default=200)
    parser.add_argument(
        "--malloc",
        choices=("glibc", "mmap-32MiB", "alchem"),
        default="alchem",
        help="glibc's defaults; a 32 MiB mmap threshold (training's earlier "
        "policy); alchem.memory's policy (no mmap: M_MMAP_MAX = 0), as alchem-train",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_malloc(args.malloc)

    from alchem.data import collate, dataset_info, read_structures
    from alchem.model import fit_composition_and_scale, predict
    from alchem.training import build_model, loss_function, precision

    options = options_for(
        args.architecture, args.data, args.set, 32 if args.float32 else 64
    )
    dtype = precision(options)
    cutoff = float(options["architecture"]["model"]["soap"]["cutoff"])
    section = dict(options["training_set"])
    structures = read_structures(section, cutoff, "profile")[: args.structures]
    info = dataset_info(structures)
    torch.manual_seed(0)
    model = build_model(options, info)
    fit_composition_and_scale(model, structures)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.architecture} {args.set}: {n_params:,} parameters, {dtype}")

    # the untrained model against the composition baseline alone
    targets = {"energy": True, "forces": True, "virial": True}
    errors, baseline, force_sq, force_ref = [], [], [], []
    for start in range(0, len(structures), 16):
        batch = collate(structures[start : start + 16]).to("cpu", dtype)
        out = predict(model, batch, forces=True, virial=False)
        n = batch.n_atoms.to(dtype)
        errors.append(((out["energy"] - batch.energy) / n).detach())
        counts = torch.zeros(len(n), len(model.atomic_types), dtype=dtype)
        index = model.type_to_index[batch.numbers]
        counts.index_put_(
            (batch.atom_structure, index), torch.ones_like(index, dtype=dtype), True
        )
        base = counts @ model.composition.to(dtype)
        baseline.append(((base - batch.energy) / n).detach())
        force_sq.append(((out["forces"] - batch.forces) ** 2).detach().flatten())
        force_ref.append((batch.forces**2).flatten())
    rmse = lambda x: float(torch.cat(x).pow(2).mean().sqrt()) * 1000  # noqa: E731
    print(
        f"untrained: energy RMSE {rmse(errors):.0f} meV/atom (baseline alone "
        f"{rmse(baseline):.0f}), force RMSE "
        f"{float(torch.cat(force_sq).mean().sqrt()) * 1000:.0f} meV/Å (RMS force "
        f"{float(torch.cat(force_ref).mean().sqrt()) * 1000:.0f}); energy scale "
        f"{float(model.energy_scale):.3f} eV"
    )

    weights = {"energy": 1.0, "forces": 1.0, "stress": 1.0}
    parameters = [p for p in model.parameters() if p.requires_grad]
    split = {"forward": 0.0, "gradient": 0.0, "backward": 0.0}
    batches = [
        collate(structures[i * args.batch_size : (i + 1) * args.batch_size]).to(
            "cpu", dtype
        )
        for i in range(args.batches + 1)
    ]
    atoms = 0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for i, batch in enumerate(batches):
        # predict() split into its forward and its autograd.grad
        t0 = time.perf_counter()
        out = predict(model, batch, forces=True, virial=True, create_graph=True)
        t1 = time.perf_counter()
        loss = loss_function(out, batch, targets, weights, False)
        loss.backward(inputs=parameters)
        t2 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        atoms += int(batch.n_atoms.sum())
        split["forward"] += t1 - t0
        split["backward"] += t2 - t1
    # forward alone (energies with the graph kept), to separate it from the
    # force/virial gradient inside predict()
    for batch in batches[1:]:
        t0 = time.perf_counter()
        energy = predict(model, batch, forces=False, virial=False)["energy"].sum()
        split["gradient"] += time.perf_counter() - t0
        del energy
    forward_only = split["gradient"]
    split["gradient"] = split["forward"] - forward_only
    split["forward"] = forward_only
    total = sum(split.values())
    print(
        f"per step of {args.batch_size} ({atoms / args.batches:.0f} atoms): "
        f"{total / args.batches:.3f} s = "
        + ", ".join(
            f"{name} {value / args.batches:.3f} s ({100 * value / total:.0f} %)"
            for name, value in split.items()
        )
        + f"; {1e3 * total / atoms:.2f} ms/atom"
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"malloc {args.malloc}: {(usage.ru_minflt - faults) / args.batches / 2:.0f} "
        f"minor page faults and {(usage.ru_stime - system) / args.batches / 2:.3f} s "
        f"system time per step; peak RSS {usage.ru_maxrss / 1e6:.2f} GB"
    )

    with torch.profiler.profile() as profiler:
        for batch in batches[1:3]:
            out = predict(model, batch, forces=True, virial=True, create_graph=True)
            loss = loss_function(out, batch, targets, weights, False)
            loss.backward(inputs=parameters)
    print(
        profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
