"""The choices of the force-aware posterior (docs/uncertainty.md), measured on a
model of ``benchmarks/uncertainty_calibration.py``: its folder's model.ckpt, data
split and test sets, with the posteriors computed here from the last-layer
features and the force rows (alchem.uncertainty.llpr).

- energies: the energy-only precision P (what the model uses) against P plus the
  force rows, w P_F with w relative to the traces (tr P / tr P_F);
- forces: the exact force sigma sqrt(g C_F g) against the model's ensemble
  (kappa x its spread), and what each test set's per-structure ranking could be at
  best: Spearman's rho against errors drawn from the exact sigma (independent
  Gaussian components, 1000 draws, median); other per-structure scores (the
  median and the largest per-atom force sigma), other regularizers, and what
  varies between structures;
- the ensemble's energies: the median of their spread over the energy sigma, with
  the energy rows in C_F (as fitted) and with the force rows alone;
- the force sigma's scale: the coverage (errors within 1, 2 and 3 sigma) of the
  exact sigma and of the model's ensemble (kappa x its spread) with the scale
  as fitted (maximum likelihood), one scale per element, the scale that gives
  the validation's median |error| / sigma the Gaussian's 0.674, and the maximum-likelihood scale on ``test.xyz`` (cells
  that are not the training cells, unlike the validation's snapshots);
- with ``--reference``: another model (e.g. the other architecture's): rho
  between the two models' per-structure force RMSEs, and of their force
  difference with this model's RMSE;
- with ``--pair`` (a model with a pair potential): the model's energy posterior
  (the pair potential's weights beside the last layer's) against the last
  layer's alone, their out-of-domain ratios; and that the model's pair features
  are those of ``pair_features`` here (an independent evaluation);
- with ``--two-layers`` (SOAP-BPNN): the force posterior on the last two layers'
  weights (force rows by central differences), forces within 1 sigma / rho;
- with ``--committee``: models of the same data trained with other seeds
  (``uncertainty_calibration.py --seed N``): how much their per-structure force
  RMSEs agree, and how a committee's force spread ranks them; and how much of
  the RMSE's variance is between cells (the snapshots of one cell: 5 per cell in
  ``test.xyz``, 2 in ``test-large.xyz``);
- the fit's time (one thread) against the energy posterior alone.

    python benchmarks/uncertainty_posteriors.py benchmarks/work/uncertainty/soap_bpnn
        [--committee benchmarks/work/uncertainty/soap_bpnn-seed2 ...]
        [--reference benchmarks/work/uncertainty/alchemical_model] [--two-layers]
        [--pair] [--no-cost]
"""

import argparse
import dataclasses
import logging
import os
import time

import numpy as np
import torch
from alchem.data import collate, read_structures
from alchem.model import predict
from alchem.options import expand_options
from alchem.training import load_datasets, model_from_checkpoint
from alchem.uncertainty import llpr
from alchem.uncertainty.llpr import (
    fit_uncertainty,
    force_rows,
    inverse_square_root,
    likelihood_scale,
)
from scipy.stats import spearmanr

RELATIVE = 1e-8  # regularizer: auto
TEST_SETS = ("test", "test-large", "mixed")
SNAPSHOTS_PER_CELL = {"test": 5, "test-large": 2}  # uncertainty_calibration.py
GAUSSIAN_MEDIAN = 0.6745  # median |x| of a standard normal x


def collect(model, structures: list) -> list[dict]:
    """Per structure: atom features f [n, D], force rows g [3n, D], energy error,
    force errors [3n] (float64 numpy)."""
    result = []
    for start in range(0, len(structures), 8):
        chunk = structures[start : start + 8]
        rows, out = force_rows(model, chunk, torch.float64)
        features = out["atomic_features"].detach()
        force_errors = (out["forces"].detach() - out["batch_forces"]).numpy()
        energy = out["energy"].detach().numpy()
        first = 0
        for index, structure in enumerate(chunk):
            atoms = slice(first, first + len(structure.numbers))
            first = atoms.stop
            result.append(
                {
                    "f": features[atoms].numpy(),
                    "g": rows[atoms].reshape(-1, rows.shape[-1]).numpy(),
                    "energy_error": float(energy[index] - structure.energy),
                    "energy_per_atom": structure.energy / len(structure.numbers),
                    "force_errors": force_errors[atoms].reshape(-1),
                    "numbers": np.repeat(structure.numbers.numpy(), 3),
                }
            )
    return result


def variance(rows: np.ndarray, root: np.ndarray) -> np.ndarray:
    return ((rows @ root) ** 2).sum(1)


def scaled_root(
    precision: np.ndarray, rows: np.ndarray, errors: np.ndarray, relative=RELATIVE
) -> tuple[np.ndarray, float]:
    """(sqrt(alpha^2) A, alpha^2), alpha^2 the maximum likelihood of ``errors``."""
    root = inverse_square_root(torch.from_numpy(precision), relative)
    alpha2 = likelihood_scale(torch.from_numpy(rows) @ root, torch.from_numpy(errors))
    return np.sqrt(alpha2) * root.numpy(), alpha2


def energy_line(name: str, sets: dict, root: np.ndarray) -> str:
    parts = []
    for test in TEST_SETS:
        rows = sets[test]
        summed = np.array([r["f"].sum(0) for r in rows])
        sigma = np.sqrt(variance(summed, root))
        errors = np.abs([r["energy_error"] for r in rows])
        atom = [np.mean(np.sqrt(variance(r["f"], root))) for r in rows]
        rmse = [np.sqrt(np.mean(r["force_errors"] ** 2)) for r in rows]
        parts.append(
            f"{100 * np.mean(errors <= sigma):5.1f} % / {spearmanr(atom, rmse)[0]:5.2f}"
        )
    return f"{name:38s}" + " | ".join(parts)


def rms(sigma: np.ndarray) -> float:
    return float(np.sqrt(np.mean(sigma**2)))


def atom_norms(sigma: np.ndarray) -> np.ndarray:
    return np.sqrt((sigma.reshape(-1, 3) ** 2).sum(1))


def force_line(name: str, sets: dict, sigma_of, score=rms) -> str:
    """Components within 1 sigma and rho (force RMSE vs ``score`` of each
    structure's component sigmas), per test set."""
    parts = []
    for test in TEST_SETS:
        rows = sets[test]
        sigmas = [sigma_of(r["g"]) for r in rows]
        ratio = np.concatenate([np.abs(r["force_errors"]) for r in rows])
        ratio = ratio / np.concatenate(sigmas)
        scores = [score(s) for s in sigmas]
        rmse = [np.sqrt(np.mean(r["force_errors"] ** 2)) for r in rows]
        parts.append(
            f"{100 * np.mean(ratio <= 1):5.1f} % / {spearmanr(scores, rmse)[0]:5.2f}"
        )
    return f"{name:38s}" + " | ".join(parts)


def best_ranking(sets: dict, root: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    parts = []
    for test in TEST_SETS:
        sigmas = [np.sqrt(variance(r["g"], root)) for r in sets[test]]
        rms = [np.sqrt(np.mean(s**2)) for s in sigmas]
        draws = [
            spearmanr(rms, [np.sqrt(np.mean((s * rng.standard_normal(s.shape)) ** 2))
                            for s in sigmas])[0]
            for _ in range(1000)
        ]  # fmt: skip
        parts.append(f"{'':9s}{np.median(draws):5.2f}")
    return f"{'best rho (errors drawn from C_F)':38s}" + " | ".join(parts)


def spread_line(sets: dict, root: np.ndarray) -> str:
    """What varies between structures: the coefficients of variation of the exact
    RMS force sigma and of the force RMSE, and the RMSE's rho with the reference
    energy per atom."""
    parts = []
    for test in TEST_SETS:
        rows = sets[test]
        sigma = np.array([rms(np.sqrt(variance(r["g"], root))) for r in rows])
        rmse = np.array([rms(r["force_errors"]) for r in rows])
        energy = [r["energy_per_atom"] for r in rows]
        parts.append(
            f"{np.std(sigma) / np.mean(sigma):.2f} {np.std(rmse) / np.mean(rmse):.2f}"
            f" {spearmanr(energy, rmse)[0]:5.2f}"
        )
    return f"{'cv sigma, cv RMSE, rho(E/atom, RMSE)':38s}" + " | ".join(parts)


def coverage_text(errors: np.ndarray, sigma: np.ndarray) -> str:
    ratio = np.abs(errors) / sigma
    return " / ".join(f"{100 * np.mean(ratio <= k):4.1f}" for k in (1, 2, 3))


def scale_lines(sets: dict, sigma_of, name: str = "exact") -> list[str]:
    """Components within 1 / 2 / 3 sigma (exact sigma ``sigma_of``), on the
    validation set and the test sets (the last also per element), with its
    scale as fitted (maximum likelihood), one maximum-likelihood scale per
    element, and the scale matching the Gaussian's median |error| / sigma."""
    names = ("validation",) + TEST_SETS
    pooled = {}
    for test in names:
        rows = sets[test]
        pooled[test] = (
            np.concatenate([r["force_errors"] for r in rows]),
            np.concatenate([sigma_of(r["g"]) for r in rows]),
            np.concatenate([r["numbers"] for r in rows]),
        )
    errors, sigma, numbers = pooled["validation"]
    ratio2 = (errors / sigma) ** 2
    per_element = {z: np.sqrt(ratio2[numbers == z].mean()) for z in set(numbers)}
    median = np.median(np.abs(errors) / sigma) / GAUSSIAN_MEDIAN
    # held-out cells (test.xyz) instead of snapshots of the training cells
    other_errors, other_sigma, _ = pooled[TEST_SETS[0]]
    other_cells = np.sqrt(np.mean((other_errors / other_sigma) ** 2))
    scales = {
        "maximum likelihood (as fitted)": lambda numbers: np.ones(len(numbers)),
        "one ML scale per element": lambda numbers: np.vectorize(per_element.get)(
            numbers
        ),
        f"median |e|/sigma = 0.674 (x{median:.3f})": lambda numbers: np.full(
            len(numbers), median
        ),
        f"ML scale on test.xyz's cells (x{other_cells:.3f})": lambda numbers: np.full(
            len(numbers), other_cells
        ),
    }
    lines = [
        f"{f'within 1 / 2 / 3 sigma ({name})':38s}"
        + " | ".join(f"{test:>16s}" for test in names)
        + " | per element, mixed"
    ]
    for label, scale_of in scales.items():
        parts = []
        for test in names:
            errors, sigma, numbers = pooled[test]
            parts.append(coverage_text(errors, sigma * scale_of(numbers)))
        errors, sigma, numbers = pooled[TEST_SETS[-1]]
        scaled = sigma * scale_of(numbers)
        parts.append(
            "  ".join(
                f"Z={z}: {coverage_text(errors[numbers == z], scaled[numbers == z])}"
                for z in sorted(set(numbers))
            )
        )
        lines.append(f"{label:38s}" + " | ".join(parts))
    return lines


def predicted_forces(checkpoint: str, structures: dict) -> dict[str, list]:
    """Each structure's predicted forces [3n] by the model of ``checkpoint``."""
    model, _ = model_from_checkpoint(checkpoint)
    model.eval()
    dtype = model.composition.dtype
    result = {}
    for name, chunk_list in structures.items():
        result[name] = []
        for start in range(0, len(chunk_list), 8):
            chunk = chunk_list[start : start + 8]
            batch = collate(chunk).to(model.composition.device, dtype)
            forces = predict(model, batch, forces=True, virial=False)["forces"]
            forces = forces.detach().double().cpu().numpy()
            first = 0
            for structure in chunk:
                n_atoms = len(structure.numbers)
                result[name].append(forces[first : first + n_atoms].reshape(-1))
                first += n_atoms
    return result


def between_cells(values: np.ndarray, per_cell: int) -> float:
    """The intraclass correlation ICC(1) of ``values`` grouped by cell (snapshots
    of one cell are consecutive): the share of their variance between cells."""
    groups = np.asarray(values).reshape(-1, per_cell)
    within = groups.var(axis=1, ddof=1).mean()
    between = groups.mean(axis=1).var(ddof=1) * per_cell
    return float((between - within) / (between + (per_cell - 1) * within))


def committee_lines(
    folders: list[str], structures: dict, sets: dict, sigma_of
) -> list[str]:
    """This folder's model and those of ``folders`` (other seeds) on the test
    sets: Spearman's rho between their per-structure force RMSEs, of the
    committee's spread with them, and of this model's exact sigma with the
    others' RMSE; and the share of the RMSE's variance that is between cells."""
    members = [predicted_forces("model.ckpt", structures)]
    members += [
        predicted_forces(os.path.join(f, "model.ckpt"), structures) for f in folders
    ]
    rows = {name: [] for name in ("rmse", "spread", "mean", "sigma", "others")}
    cells = {"this model's RMSE": [], "RMS exact sigma": [], "committee RMSE": []}
    for name in TEST_SETS:
        reference = [
            f - r["force_errors"] for f, r in zip(members[0][name], sets[name])
        ]
        forces = [np.stack(m) for m in zip(*(member[name] for member in members))]
        rmse = np.array(
            [[rms(f - ref) for f, ref in zip(m[name], reference)] for m in members]
        )
        spread = [rms(f.std(axis=0)) for f in forces]
        mean_rmse = [rms(f.mean(axis=0) - ref) for f, ref in zip(forces, reference)]
        sigma = [rms(sigma_of(r["g"])) for r in sets[name]]
        pairs = [spearmanr(rmse[0], other)[0] for other in rmse[1:]]
        rows["rmse"].append(f"{np.median(pairs):16.2f}")
        rows["spread"].append(f"{spearmanr(spread, rmse[0])[0]:16.2f}")
        rows["mean"].append(f"{spearmanr(spread, mean_rmse)[0]:16.2f}")
        rows["sigma"].append(f"{spearmanr(sigma, rmse[1:].mean(0))[0]:16.2f}")
        rows["others"].append(f"{spearmanr(sigma, mean_rmse)[0]:16.2f}")
        if name in SNAPSHOTS_PER_CELL:
            per_cell = SNAPSHOTS_PER_CELL[name]
            for label, values in zip(cells, (rmse[0], sigma, mean_rmse)):
                cells[label].append(f"{name} {between_cells(values, per_cell):5.2f}")
    size = len(members)
    labels = {
        "rmse": "rho(RMSE, other seed's RMSE), median",
        "spread": f"rho(spread of {size}, RMSE)",
        "mean": "rho(spread, committee mean's RMSE)",
        "sigma": "rho(exact sigma, other seeds' RMSE)",
        "others": "rho(exact sigma, committee's RMSE)",
    }
    lines = [f"{labels[key]:38s}" + " | ".join(rows[key]) for key in labels]
    lines += [
        f"{'between-cell share (ICC), ' + label:38s}" + " | ".join(values)
        for label, values in cells.items()
    ]
    return lines


def reference_line(folder: str, structures: dict, sets: dict) -> str:
    """Another model (e.g. the other architecture) beside this one: Spearman's
    rho between their per-structure force RMSEs / between the RMS of their force
    difference and this model's force RMSE."""
    other = predicted_forces(os.path.join(folder, "model.ckpt"), structures)
    parts = []
    for name in TEST_SETS:
        rmse, other_rmse, difference = [], [], []
        for forces, r, structure in zip(other[name], sets[name], structures[name]):
            other_errors = forces - structure.forces.double().numpy().reshape(-1)
            rmse.append(rms(r["force_errors"]))
            other_rmse.append(rms(other_errors))
            difference.append(rms(r["force_errors"] - other_errors))
        parts.append(
            f"{spearmanr(rmse, other_rmse)[0]:7.2f} / {spearmanr(difference, rmse)[0]:5.2f}"
        )
    label = f"{os.path.basename(folder)}: RMSE / |F - F'|"
    return f"{label:38s}" + " | ".join(parts)


def pair_features(model, structures: list) -> list[np.ndarray]:
    """Per atom, the pair potential's features [atoms, pairs x basis]: half of
    each of its edges' basis values, in its element pair's block (the pair
    energy is these times the pair weights: linear, as the last layer is)."""
    pair = model.pair
    result = []
    for structure in structures:
        batch = collate([structure]).to("cpu", torch.float64)
        vectors = (
            batch.positions[batch.neighbors]
            - batch.positions[batch.centers]
            + batch.shifts @ batch.cells[0]
        )
        basis = pair.basis(torch.linalg.norm(vectors, dim=1)).detach()
        species = model.type_to_index[batch.numbers]
        rows = pair.rows(species, batch.centers, batch.neighbors)
        n_pairs, size = pair.weights.shape
        placed = torch.zeros((len(basis), n_pairs, size), dtype=torch.float64)
        placed[torch.arange(len(basis)), rows] = 0.5 * basis
        atoms = torch.zeros(
            (len(structure.numbers), n_pairs * size), dtype=torch.float64
        )
        result.append(
            atoms.index_add(0, batch.centers, placed.reshape(len(basis), -1)).numpy()
        )
    return result


def pair_lines(model, data, structures: dict, sets: dict) -> list[str]:
    """The model's energy posterior (features [f_i, pair_i]: the pair potential's
    weights beside the last layer's) against the last layer's alone (f_i):
    median per-atom energy sigma of the melt and the slabs (in ``mixed.xyz``)
    over ``test.xyz``'s, and total energies within 1 sigma. Checks first that
    the model's pair features are ``pair_features``'s."""
    if model.pair.weights.numel() == 0:
        return ["--pair: the model has no pair potential"]
    last = model.n_last_layer_features
    independent = pair_features(model, structures["test"])
    largest = max(
        float(np.abs(r["f"][:, last:] - p).max())
        for r, p in zip(sets["test"], independent)
    )
    lines = [f"pair features against pair_features: largest difference {largest:.1e}"]
    regions = {"melt": slice(60, 80), "slab": slice(80, 110)}  # of mixed.xyz
    for label, join in (
        ("last layer alone", lambda f: f[:, :last]),
        ("last layer + pair weights (the model's)", lambda f: f),
    ):
        atoms = np.concatenate([join(r["f"]) for r in sets["train"]])
        summed = np.array([join(r["f"]).sum(0) for r in sets["validation"]])
        errors = np.array([r["energy_error"] for r in sets["validation"]])
        root, _ = scaled_root(atoms.T @ atoms / len(atoms), summed, errors)
        sigma = {
            name: [np.sqrt(variance(join(r["f"]), root)) for r in sets[name]]
            for name in ("test", "mixed")
        }
        test = np.median(np.concatenate(sigma["test"]))
        ratios = [
            f"{region} {np.median(np.concatenate(sigma['mixed'][part])) / test:5.2f}x"
            for region, part in regions.items()
        ]
        within = []
        for name in ("test", "mixed"):
            totals = np.array(
                [np.sqrt(variance(join(r["f"]).sum(0, keepdims=True), root))[0]
                 for r in sets[name]]
            )  # fmt: skip
            errors = np.abs([r["energy_error"] for r in sets[name]])
            within.append(f"{name} {100 * np.mean(errors <= totals):5.1f} %")
        lines.append(
            f"{label:40s}median atom sigma over test's: {', '.join(ratios)}; "
            f"energies within 1 sigma: {', '.join(within)}"
        )
    return lines


FD_STEP = 1e-4  # Å, central differences of the two-layer force rows


class TwoLayerJacobian:
    """Per-atom gradients of a SOAP-BPNN's atomic energies with respect to the
    weights and biases of its last two layers (eV; the last-layer features f_i
    are its last columns per species): a richer linear model than LLPR's, its
    inputs captured by forward hooks on each species' second-last layer."""

    def __init__(self, model) -> None:
        self.model = model
        last = model.architecture.last_position
        self.layers = [
            (net[last - 2], net[last]) for net in model.architecture.networks
        ]
        if not all(
            isinstance(n[last - 1], torch.nn.SiLU) for n in model.architecture.networks
        ):
            raise SystemExit("--two-layers: SOAP-BPNN with SiLU activations only")
        self.captured: list = []
        for layer, _ in self.layers:
            layer.register_forward_hook(
                lambda _, inputs, output: self.captured.append((inputs[0], output))
            )
        hidden, inputs = self.layers[0][0].weight.shape
        self.block = hidden * inputs + 2 * hidden + 1

    def per_atom(self, batch) -> torch.Tensor:
        """[atoms, species x block]: d E_i / d (W, b, w, c) of z = W h + b,
        E_i = w . silu(z) + c (times the model's energy scale)."""
        self.captured = []
        with torch.no_grad():
            predict(self.model, batch, forces=False, virial=False)
        species = self.model.type_to_index[batch.numbers]
        n_species = len(self.layers)
        blocks = []
        for index, ((h, z), (_, last)) in enumerate(zip(self.captured, self.layers)):
            sigmoid = torch.sigmoid(z)
            delta = last.weight[0] * sigmoid * (1 + z * (1 - sigmoid))  # dE/dz
            rows = torch.cat(
                [
                    (delta[:, :, None] * h[:, None, :]).reshape(len(h), -1),
                    delta,
                    z * sigmoid,
                    torch.ones_like(z[:, :1]),
                ],
                dim=1,
            )
            before = index * self.block
            blocks.append(
                torch.nn.functional.pad(
                    rows, [before, (n_species - index - 1) * self.block]
                )
            )
        order = torch.argsort(species, stable=True)
        row = torch.empty_like(order).index_copy_(0, order, torch.arange(len(order)))
        scale = self.model.energy_scale.detach()
        return torch.cat(blocks).index_select(0, row).detach() * scale

    def rows(self, structures: list) -> tuple[np.ndarray, np.ndarray, list]:
        """Per-atom rows J [atoms, P], and the force rows d(sum_i J_i)/d r per
        structure [3n, P] (central differences, all structures of the batch at
        once)."""
        batch = collate(structures).to("cpu", torch.float64)
        atoms = self.per_atom(batch)
        n_structures = len(structures)
        sizes = [len(s.numbers) for s in structures]
        first = np.cumsum([0] + sizes[:-1])
        force_rows = [np.zeros((3 * n, atoms.shape[1])) for n in sizes]
        for component in range(3 * max(sizes)):
            atom, axis = divmod(component, 3)
            moved = [s for s in range(n_structures) if sizes[s] > atom]
            index = torch.tensor([first[s] + atom for s in moved])
            summed = []
            for step in (FD_STEP, -FD_STEP):
                positions = batch.positions.clone()
                positions[index, axis] += step
                shifted = dataclasses.replace(batch, positions=positions)
                summed.append(
                    torch.zeros(
                        (n_structures, atoms.shape[1]), dtype=torch.float64
                    ).index_add(0, batch.atom_structure, self.per_atom(shifted))
                )
            gradient = ((summed[0] - summed[1]) / (2 * FD_STEP)).numpy()
            for s in moved:
                force_rows[s][component] = gradient[s]
        return atoms.numpy(), np.concatenate(force_rows), force_rows


def two_layer_lines(model, data, structures: dict, sets: dict) -> list[str]:
    """The force posterior of fit_uncertainty on the last two layers' weights
    (TwoLayerJacobian) instead of the last layer's: forces within 1 sigma / rho
    on the test sets, and the best rho errors drawn from it could give."""
    jacobian = TwoLayerJacobian(model)
    size = jacobian.block * len(jacobian.layers)
    energy_precision, force_precision = np.zeros((size, size)), np.zeros((size, size))
    n_atoms = n_rows = 0
    hidden = jacobian.layers[0][1].weight.shape[1]
    last = np.concatenate(
        [e * jacobian.block + jacobian.block - hidden - 1 + np.arange(hidden + 1)
         for e in range(len(jacobian.layers))]
    )  # fmt: skip
    for start in range(0, len(data.train), 8):
        atoms, rows, _ = jacobian.rows(data.train[start : start + 8])
        if start == 0:  # its last-layer columns are LLPR's features and force rows
            chunk = sets["train"][:8]
            for mine, theirs in ((atoms, "f"), (rows, "g")):
                expected = np.concatenate([r[theirs] for r in chunk])
                error = np.abs(mine[:, last] - expected).max()
                print(f"two layers: |{theirs} - LLPR's| <= {error:.2e} (largest "
                      f"{np.abs(expected).max():.2e})")  # fmt: skip
        energy_precision += atoms.T @ atoms
        force_precision += rows.T @ rows
        n_atoms, n_rows = n_atoms + len(atoms), n_rows + len(rows)
    energy_precision /= n_atoms
    force_precision /= n_rows
    summed, rows = [], []
    for start in range(0, len(data.validation), 8):
        atoms, force_rows, per_structure = jacobian.rows(
            data.validation[start : start + 8]
        )
        rows.append(force_rows)
        sizes = [len(g) // 3 for g in per_structure]
        summed += [block.sum(0) for block in np.split(atoms, np.cumsum(sizes)[:-1])]
    rows = np.concatenate(rows)
    validation = sets["validation"]
    energy_errors = np.array([r["energy_error"] for r in validation])
    force_errors = np.concatenate([r["force_errors"] for r in validation])
    _, energy_alpha2 = scaled_root(energy_precision, np.array(summed), energy_errors)
    _, alone_alpha2 = scaled_root(force_precision, rows, force_errors)
    root, _ = scaled_root(
        force_precision + alone_alpha2 / energy_alpha2 * energy_precision,
        rows,
        force_errors,
    )
    scored = {}
    for name in TEST_SETS:
        scored[name] = []
        for start in range(0, len(structures[name]), 8):
            _, _, per_structure = jacobian.rows(structures[name][start : start + 8])
            scored[name] += [{"g": g} for g in per_structure]
        for entry, r in zip(scored[name], sets[name]):
            entry["sigma"] = np.sqrt(variance(entry.pop("g"), root))
            entry["force_errors"] = r["force_errors"]
    within = lambda r: np.mean(np.abs(r["force_errors"]) <= r["sigma"])  # noqa: E731
    parts = []
    for name in TEST_SETS:
        rmse = [rms(r["force_errors"]) for r in scored[name]]
        sigma = [rms(r["sigma"]) for r in scored[name]]
        fraction = np.mean([within(r) for r in scored[name]])
        parts.append(f"{100 * fraction:5.1f} % / {spearmanr(sigma, rmse)[0]:5.2f}")
    return [f"{f'last two layers ({size} weights), exact':38s}" + " | ".join(parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder of uncertainty_calibration.py")
    parser.add_argument(
        "--committee", nargs="*", default=[], help="folders of other seeds' models"
    )
    parser.add_argument(
        "--reference", help="the folder of another model (e.g. architecture)"
    )
    parser.add_argument(
        "--pair",
        action="store_true",
        help="the model's energy posterior (with the pair weights) against the last "
        "layer's alone",
    )
    parser.add_argument("--no-cost", action="store_true", help="skip the fit's time")
    parser.add_argument(
        "--two-layers",
        action="store_true",
        help="the force posterior on the last two layers (SOAP-BPNN)",
    )
    args = parser.parse_args()
    committee = [os.path.abspath(folder) for folder in args.committee]
    start_dir = os.getcwd()
    os.chdir(args.folder)
    torch.set_num_threads(1)
    model, options = model_from_checkpoint("model.ckpt")
    data = load_datasets(options, "model.ckpt")
    sets = {"train": collect(model, data.train)}
    sets["validation"] = collect(model, data.validation)
    structures = {}
    for test in TEST_SETS:
        section = expand_options(
            {"architecture": {"name": "soap_bpnn"}, "training_set": f"{test}.xyz"},
            "posteriors",
        )["training_set"]
        structures[test] = read_structures(section, model.cutoff, test)
        sets[test] = collect(model, structures[test])

    atoms = np.concatenate([r["f"] for r in sets["train"]])
    components = np.concatenate([r["g"] for r in sets["train"]])
    energy_precision = atoms.T @ atoms / len(atoms)
    force_precision = components.T @ components / len(components)
    validation = sets["validation"]
    summed = np.array([r["f"].sum(0) for r in validation])
    energy_errors = np.array([r["energy_error"] for r in validation])
    rows = np.concatenate([r["g"] for r in validation])
    force_errors = np.concatenate([r["force_errors"] for r in validation])

    header = " | ".join(f"{t:>16s}" for t in TEST_SETS)
    print(f"energies within 1 sigma / rho (mean atom sigma)  {header}")
    energy_root, energy_alpha2 = scaled_root(energy_precision, summed, energy_errors)
    print(energy_line("P (energy rows only)", sets, energy_root))
    trace = np.trace(energy_precision) / np.trace(force_precision)
    for weight in (0.01, 1.0, 100.0):
        precision = energy_precision + weight * trace * force_precision
        root, _ = scaled_root(precision, summed, energy_errors)
        print(energy_line(f"P + {weight:g} (trace ratio) P_F", sets, root))

    alone, alone_alpha2 = scaled_root(force_precision, rows, force_errors)
    weight = alone_alpha2 / energy_alpha2  # lambda, as llpr._force_posterior
    fitted = options.get("uncertainty_fit", {}).get("energy_weight")
    print(f"lambda {weight:.4g} (the model's fit: {fitted})")
    print(f"\nforces within 1 sigma / rho (RMS force sigma)    {header}")
    force_root, _ = scaled_root(
        force_precision + weight * energy_precision, rows, force_errors
    )
    print(force_line("C_F, exact", sets, lambda g: np.sqrt(variance(g, force_root))))
    ensemble = model.uncertainty_ensemble.double().numpy()
    kappa = float(model.uncertainty_force_factor)
    size = ensemble.shape[1]

    def ensemble_sigma(g: np.ndarray) -> np.ndarray:
        return kappa * np.sqrt(np.mean((g @ ensemble) ** 2, axis=1))

    print(
        force_line(
            f"model's ensemble ({size}), kappa {kappa:.3f}", sets, ensemble_sigma
        )
    )
    print(best_ranking(sets, force_root))
    exact = lambda g: np.sqrt(variance(g, force_root))  # noqa: E731
    for name, score in (
        ("median atom", lambda s: np.median(atom_norms(s))),
        ("largest atom", lambda s: np.max(atom_norms(s))),
    ):
        print(force_line(f"C_F exact, {name} force sigma", sets, exact, score))
    for relative in (1e-6, 1e-4, 1e-2):
        root, _ = scaled_root(
            force_precision + weight * energy_precision, rows, force_errors, relative
        )
        sigma_of = lambda g, root=root: np.sqrt(variance(g, root))  # noqa: E731
        print(force_line(f"C_F exact, regularizer {relative:g}", sets, sigma_of))
    print(spread_line(sets, force_root))
    print("\n".join(scale_lines(sets, exact)))
    print("\n".join(scale_lines(sets, ensemble_sigma, "ensemble")))
    if committee:
        print("\ncommittee" + " " * 29 + header)
        print("\n".join(committee_lines(committee, structures, sets, exact)))
    if args.reference:
        reference = os.path.abspath(os.path.join(start_dir, args.reference))
        print(reference_line(reference, structures, sets))
    if args.pair:
        print("\n".join(pair_lines(model, data, structures, sets)))
    if args.two_layers:
        print("\n".join(two_layer_lines(model, data, structures, sets)))

    print("\nensemble energies: median spread / energy sigma, per test set")
    for name, root in (("C_F (as fitted)", force_root), ("force rows alone", alone)):
        ratios = []
        for test in TEST_SETS:
            summed_test = np.array([r["f"].sum(0) for r in sets[test]])
            spread = np.sqrt(variance(summed_test, root))
            ratios.append(
                np.median(spread / np.sqrt(variance(summed_test, energy_root)))
            )
        print(f"{name:38s}" + " | ".join(f"{r:16.3g}" for r in ratios))
    if not args.no_cost:
        logging.getLogger("alchem").setLevel(logging.ERROR)  # the fits' log lines
        print("\n" + fit_cost(model, data))


def fit_cost(model, data, rounds: int = 3) -> str:
    """Seconds of ``fit_uncertainty`` (16 members), fastest of ``rounds``
    interleaved: in full; with the validation's force rows computed twice (not
    kept: what a validation set above llpr.VALIDATION_ROWS_KEPT does); and with
    the validation forces removed (the energy posterior alone: its peer)."""
    energies_only = [dataclasses.replace(s, forces=None) for s in data.validation]
    kept = llpr.VALIDATION_ROWS_KEPT
    variants = {
        "full": (data.validation, kept),
        "rows computed twice": (data.validation, 0),
        "energy posterior only": (energies_only, kept),
    }
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (validation, limit) in variants.items():
            llpr.VALIDATION_ROWS_KEPT = limit
            start = time.perf_counter()
            fit_uncertainty(model, data.train, validation, ensemble_size=16)
            times[name].append(time.perf_counter() - start)
    llpr.VALIDATION_ROWS_KEPT = kept
    best = {name: min(values) for name, values in times.items()}
    peer = best["energy posterior only"]
    return f"fit (fastest of {rounds}): " + ", ".join(
        f"{name} {seconds:.2f} s ({seconds / peer:.1f}x)"
        for name, seconds in best.items()
    )


if __name__ == "__main__":
    main()
