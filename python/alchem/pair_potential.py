"""A learned pair potential, added to the network's atomic energies.

    e_i += 1/2 sum_j V_{a_i a_j}(r_ij),
    V_ab(r) = f_c(r) sum_n theta_{ab,n} exp(-((r - mu_n) / h)^2)

one row theta_ab per unordered element pair, the centres mu_n evenly spaced on
[inner_cutoff, r_c], h their spacing, f_c the shifted-cosine switch of the model
(value and slope zero at r_c). Every directed edge carries half of its pair.

V is evaluated from a table: the Gaussians times f_c and their slopes at nodes
NODES_PER_SPACING per Gaussian spacing (the switch onset r_c - w a node), cubic
Hermite between them (``features.spline_interval``, as the radial functions). The
interpolant departs from the Gaussian expansion by less than 1e-7 of the largest
weight (tests/test_pair_potential.py), and the fit, training, ASE and LAMMPS all
use the same interpolant. Each edge then gathers 4 values of its pair's table
instead of evaluating basis_size Gaussians: in LAMMPS MD the term costs 1.7 % of
a step, against 12 % for the Gaussians (benchmarks/pair_potential_cost.py).

Why: the short-range pair repulsion dominates the forces of rattled, size-mismatched
alloys, and the networks' per-atom LayerNorm hides the scale of the density that
encodes it. On the 18-element benchmark (benchmarks/many_elements) this term alone,
fitted by least squares to the forces of 1000 training structures, reaches the
validation force error both architectures reach after 30 minutes of training. So
the weights start from that fit (``fit_pair_potential``, like the composition
baseline) and train with the rest: the network learns what the pairs leave.
Its parameters grow as S(S+1)/2 x basis_size (2,736 at 18 elements with 16
Gaussians), small beside the network's.
"""

import math

import torch

from .errors import ConfigError
from .features import shifted_cosine, shifted_cosine_slope, spline_interval

# the ridge of the force fit, relative to the mean diagonal of X^T X: small enough to
# leave well-sampled pairs alone, large enough to keep pairs that never come that
# close (Gaussians below the shortest distance seen) near zero
RIDGE = 1e-4

# table nodes per Gaussian spacing h: the cubic Hermite error is about
# (h / 40)^4 / 384 max|d^4 g / dr^4| = 12 / h^4: 1.2e-8 of a weight
NODES_PER_SPACING = 40


def check_pair_hypers(model: dict, where: str, cutoff: float) -> None:
    """The ``pair_potential`` section of an architecture's hyperparameters."""
    pair = model["pair_potential"]
    if pair["basis_size"] < 0:
        raise ConfigError(
            f"{where}.pair_potential.basis_size must be >= 0 (0: no pair term), "
            f"got {pair['basis_size']}"
        )
    if pair["basis_size"] > 0 and not 0 <= pair["inner_cutoff"] < cutoff:
        raise ConfigError(
            f"{where}.pair_potential.inner_cutoff must be in [0, soap.cutoff = "
            f"{cutoff}) Å, got {pair['inner_cutoff']}"
        )


def pair_hypers(model: dict, cutoff_width: float) -> list[float]:
    """[basis_size, inner_cutoff, cutoff_width], what EnergyModel reads from the
    architecture (``pair_potential_hypers``); no pair term for hyperparameters
    saved before it existed."""
    pair = model.get("pair_potential", {"basis_size": 0, "inner_cutoff": 1.0})
    return [float(pair["basis_size"]), float(pair["inner_cutoff"]), cutoff_width]


def pair_index(n_types: int) -> torch.Tensor:
    """[S * S]: the row of theta of each ordered element pair (a, b), a <= b first."""
    index = torch.zeros(n_types, n_types, dtype=torch.int64)
    row = 0
    for a in range(n_types):
        for b in range(a, n_types):
            index[a, b] = row
            index[b, a] = row
            row += 1
    return index.reshape(-1)


class PairPotential(torch.nn.Module):
    grid: list[float]
    nodes: list[int]

    def __init__(
        self,
        n_types: int,
        cutoff: float,
        cutoff_width: float,
        basis_size: int,
        inner_cutoff: float,
    ):
        super().__init__()
        self.n_types = n_types
        self.cutoff = float(cutoff)
        self.cutoff_width = float(cutoff_width)
        self.basis_size = int(basis_size)
        dtype = torch.get_default_dtype()
        if self.basis_size > 0:
            centres = torch.linspace(
                float(inner_cutoff), self.cutoff, self.basis_size, dtype=torch.float64
            )
        else:
            centres = torch.zeros(0, dtype=torch.float64)
        self.spacing = (
            float(centres[1] - centres[0]) if self.basis_size > 1 else self.cutoff
        )
        # derived from the hyperparameters: not saved with the weights
        self.register_buffer("centres", centres, persistent=False)
        self.register_buffer("pair_index", pair_index(n_types), persistent=False)
        n_pairs = n_types * (n_types + 1) // 2 if self.basis_size > 0 else 0
        self.weights = torch.nn.Parameter(torch.zeros(n_pairs, self.basis_size))
        self._init_table(dtype)

    def _init_table(self, dtype: torch.dtype) -> None:
        """The nodes of the interpolation table (``grid``/``nodes`` as
        features.spline_interval reads them) and the Gaussians' values and
        slopes there, computed in float64: [n_nodes, basis_size] each."""
        onset = max(self.cutoff - self.cutoff_width, 0.0)
        step = self.spacing / NODES_PER_SPACING
        below = int(math.ceil(onset / step)) if onset > 0 else 0
        above = max(4, int(math.ceil((self.cutoff - onset) / step)))
        segments = [torch.linspace(onset, self.cutoff, above + 1, dtype=torch.float64)]
        if below > 0:
            first = torch.linspace(0.0, onset, below + 1, dtype=torch.float64)
            segments.insert(0, first[:-1])
        r = torch.cat(segments)
        self.grid = [
            self.cutoff,
            onset,
            onset / below if below > 0 else 1.0,
            (self.cutoff - onset) / above,
        ]
        self.nodes = [below, int(r.shape[0])]
        values, slopes = self.gaussians(r)
        self.centres = self.centres.to(dtype)
        self.register_buffer("node_values", values.to(dtype), persistent=False)
        self.register_buffer("node_slopes", slopes.to(dtype), persistent=False)
        steps = (r[1:] - r[:-1]).to(dtype)
        self.register_buffer("interval_step", steps, persistent=False)

    def gaussians(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f_c(r) exp(-((r - mu_n) / h)^2) and its r-derivative, exactly:
        [len(r), basis_size] each (the table's nodes)."""
        x = (r.unsqueeze(1) - self.centres.to(r.dtype)) / self.spacing
        gaussian = torch.exp(-x * x)
        switch = shifted_cosine(r, self.cutoff, self.cutoff_width).unsqueeze(1)
        slope = shifted_cosine_slope(r, self.cutoff, self.cutoff_width).unsqueeze(1)
        return gaussian * switch, gaussian * (
            switch * (-2.0 * x / self.spacing) + slope
        )

    def _hermite(
        self, distances: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Each distance's interval, the cubic Hermite weights of its two nodes'
        (v0, h v0', v1, h v1'), and h, the interval's length: [edges] each."""
        interval, t = spline_interval(distances, self.grid, self.nodes)
        h = self.interval_step.index_select(0, interval)
        s = 1.0 - t
        weights = [
            (1.0 + 2.0 * t) * s * s,
            t * s * s,
            t * t * (3.0 - 2.0 * t),
            t * t * (t - 1.0),
        ]
        return interval, weights, h

    def basis(self, distances: torch.Tensor) -> torch.Tensor:
        """The interpolated f_c(r) exp(-((r - mu_n) / h)^2): [edges, basis_size]."""
        interval, w, h = self._hermite(distances)
        v0 = self.node_values.index_select(0, interval)
        v1 = self.node_values.index_select(0, interval + 1)
        d0 = self.node_slopes.index_select(0, interval) * h.unsqueeze(1)
        d1 = self.node_slopes.index_select(0, interval + 1) * h.unsqueeze(1)
        w = [x.unsqueeze(1) for x in w]
        return w[0] * v0 + w[1] * d0 + w[2] * v1 + w[3] * d1

    def basis_slope(self, distances: torch.Tensor) -> torch.Tensor:
        """d/dr of ``basis``: [edges, basis_size] (the force fit)."""
        interval, t = spline_interval(distances, self.grid, self.nodes)
        h = self.interval_step.index_select(0, interval).unsqueeze(1)
        t = t.unsqueeze(1)
        v0 = self.node_values.index_select(0, interval)
        v1 = self.node_values.index_select(0, interval + 1)
        d0 = self.node_slopes.index_select(0, interval)
        d1 = self.node_slopes.index_select(0, interval + 1)
        # d/dt of the Hermite weights, over dr/dt = h
        slope = 6.0 * t * (t - 1.0) * (v0 - v1) / h
        # (beyond r_c the distance is clamped to r_c, where v1 = v1' = 0)
        return slope + (1.0 - t) * (1.0 - 3.0 * t) * d0 + t * (3.0 * t - 2.0) * d1

    def rows(
        self, species: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor
    ):
        """The row of theta of every edge."""
        return self.pair_index.index_select(
            0,
            species.index_select(0, centers) * self.n_types
            + species.index_select(0, neighbors),
        )

    def features(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        both_directions: bool,
    ) -> torch.Tensor:
        """Each of the first ``n_centers`` atoms' pair features [n_centers, n_pairs
        x basis_size]: half of each of its edges' basis values (and of the
        reversed edge's with ``both_directions``), in the block of the edge's
        element pair (row-major, as ``weights`` flattened), so that its pair
        energy is these times the weights (the linear model of uncertainty,
        alchem.uncertainty). Only the blocks of its own element's pairs are
        non-zero."""
        n_pairs, size = self.weights.shape[0], self.basis_size
        n_atoms = max(species.shape[0], n_centers)
        dtype, device = edge_vectors.dtype, edge_vectors.device
        placed = torch.zeros((n_atoms * n_pairs, size), dtype=dtype, device=device)
        if size > 0 and centers.shape[0] > 0:
            halves = 0.5 * self.basis(torch.linalg.norm(edge_vectors, dim=1))
            halves = halves.to(dtype)
            rows = self.rows(species, centers, neighbors)
            placed = placed.index_add(0, centers * n_pairs + rows, halves)
            if both_directions:
                placed = placed.index_add(0, neighbors * n_pairs + rows, halves)
        return placed.reshape(n_atoms, n_pairs * size)[:n_centers]

    def forward(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        n_centers: int,
        both_directions: bool,
    ) -> torch.Tensor:
        """The pair energy of each of the first ``n_centers`` atoms (eV): half of
        each of its edges (and of the reversed edge with ``both_directions``)."""
        dtype, device = edge_vectors.dtype, edge_vectors.device
        if self.basis_size == 0:
            return torch.zeros(n_centers, dtype=dtype, device=device)
        distances = torch.linalg.norm(edge_vectors, dim=1)
        # every pair's V and V' at the nodes, [n_pairs, n_nodes] flattened: each
        # edge then reads 4 numbers of its pair's row. A product and a sum over the
        # basis rather than a matmul: each row is then the same to the last bit
        # whatever the number of pairs (fine-tuning that adds an element leaves
        # the known pairs' energies exactly as they were)
        n_nodes = self.node_values.shape[0]
        weights = self.weights.unsqueeze(1)
        values = (weights * self.node_values.unsqueeze(0)).sum(-1).reshape(-1)
        slopes = (weights * self.node_slopes.unsqueeze(0)).sum(-1).reshape(-1)
        interval, w, h = self._hermite(distances)
        at = self.rows(species, centers, neighbors) * n_nodes + interval
        halves = 0.5 * (
            w[0] * values.index_select(0, at)
            + w[1] * h * slopes.index_select(0, at)
            + w[2] * values.index_select(0, at + 1)
            + w[3] * h * slopes.index_select(0, at + 1)
        )
        n_atoms = max(species.shape[0], n_centers)
        energies = torch.zeros(n_atoms, dtype=dtype, device=device)
        energies = energies.index_add(0, centers, halves)
        if both_directions:
            energies = energies.index_add(0, neighbors, halves)
        return energies[:n_centers]


def _edges(structure) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and unit vectors of a structure's (full) edge list."""
    vectors = (
        structure.positions[structure.neighbors]
        - structure.positions[structure.centers]
        + structure.shifts @ structure.cell
    )
    distances = vectors.norm(dim=1)
    return distances, vectors / distances.clamp(min=1e-12).unsqueeze(1)


def pair_energies_and_forces(
    pair: PairPotential, structure, species: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """Energy (eV) and forces (eV/Å) of the pair term alone, for one structure with
    a full edge list (float64, no autograd)."""
    with torch.no_grad():
        weights = pair.weights.detach().double()
        if pair.basis_size == 0 or len(structure.centers) == 0:
            return 0.0, torch.zeros_like(structure.positions)
        distances, units = _edges(structure)
        rows = pair.rows(species, structure.centers, structure.neighbors)
        theta = weights.index_select(0, rows)
        energy = 0.5 * float((pair.basis(distances).double() * theta).sum())
        slope = 0.5 * (pair.basis_slope(distances).double() * theta).sum(dim=1)
        # E = 1/2 sum_e V(r_e), dr_e/dx_j = u_e, dr_e/dx_i = -u_e: F = -dE/dx
        push = slope.unsqueeze(1) * units
        forces = torch.zeros_like(structure.positions, dtype=torch.float64)
        forces = forces.index_add(0, structure.centers, push)
        forces = forces.index_add(0, structure.neighbors, -push)
        return energy, forces


def _force_design(pair: PairPotential, structure, species: torch.Tensor):
    """The force rows of one structure over the pair rows it holds: (design
    [3 N, A basis_size], active pair rows [A], distances, edges' local rows)."""
    distances, units = _edges(structure)
    rows = pair.rows(species, structure.centers, structure.neighbors)
    active, local = torch.unique(rows, return_inverse=True)
    nb = pair.basis_size
    # F_i = sum_e 1/2 V'(r_e) u_e over edges from i, minus those into i
    slope = 0.5 * pair.basis_slope(distances).double()  # [E, nb]
    contribution = slope.unsqueeze(1) * units.double().unsqueeze(2)  # [E, 3, nb]
    n_atoms = structure.positions.shape[0]
    design = torch.zeros(n_atoms * 3 * len(active), nb, dtype=torch.float64)
    for axis in range(3):
        at_center = (structure.centers * 3 + axis) * len(active) + local
        at_neighbor = (structure.neighbors * 3 + axis) * len(active) + local
        design.index_add_(0, at_center, contribution[:, axis])
        design.index_add_(0, at_neighbor, -contribution[:, axis])
    return design.reshape(n_atoms * 3, len(active) * nb), active, distances, local


def fit_pair_potential(
    pair: PairPotential,
    structures: list,
    species_of,
    n_types: int,
    free: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """theta (and, without ``free``, the per-element energies w) by ridge
    regression on the training energies and forces; returns w, [n_types] eV
    (None with ``free`` or without a pair term).

    The least-squares problem is the training loss at its default weights: the
    mean squared energy error per atom plus the mean squared force component
    error, so the model starts at the best pair + composition model of its own
    loss. ``species_of(structure)`` gives the species indices of its atoms. Only
    the element pairs a structure holds enter its normal equations, so each costs
    (3 N) x (its pairs x basis_size)^2. ``free``: [n_pairs] bool, the rows to fit
    from the forces alone (fine-tuning: the pairs of new elements); the others stay
    as they are and their forces are subtracted first."""
    if pair.basis_size == 0:
        return None
    n_pairs, nb = pair.weights.shape
    offset = 0 if free is not None else n_types  # composition columns first
    size = offset + n_pairs * nb
    gram_f = torch.zeros(size, size, dtype=torch.float64)
    moment_f = torch.zeros(size, dtype=torch.float64)
    gram_e = torch.zeros(size, size, dtype=torch.float64)
    moment_e = torch.zeros(size, dtype=torch.float64)
    fixed = pair.weights.detach().double().clone()
    if free is None:
        fixed.zero_()
    else:
        fixed[free] = 0.0
    n_forces, n_energies = 0, 0
    with torch.no_grad():
        for structure in structures:
            if len(structure.centers) == 0:
                continue
            species = species_of(structure)
            design, active, distances, local = _force_design(pair, structure, species)
            columns = offset + (active.unsqueeze(1) * nb + torch.arange(nb)).reshape(-1)
            if structure.forces is not None:
                target = structure.forces.double().reshape(-1)
                target = target - design @ fixed.index_select(0, active).reshape(-1)
                gram_f[columns.unsqueeze(1), columns.unsqueeze(0)] += design.T @ design
                moment_f[columns] += design.T @ target
                n_forces += target.numel()
            if free is None and structure.energy is not None:
                n_atoms = float(species.shape[0])
                row = torch.zeros(size, dtype=torch.float64)
                row[:n_types] = torch.bincount(species, minlength=n_types).double()
                values = 0.5 * pair.basis(distances).double()
                per_pair = torch.zeros(len(active), nb, dtype=torch.float64)
                per_pair.index_add_(0, local, values)
                row[columns] = per_pair.reshape(-1)
                row = row / n_atoms
                gram_e += torch.outer(row, row)
                moment_e += row * (structure.energy / n_atoms)
                n_energies += 1
    gram = gram_f / max(n_forces, 1) + gram_e / max(n_energies, 1)
    moment = moment_f / max(n_forces, 1) + moment_e / max(n_energies, 1)
    if free is None:
        unknowns = torch.arange(size)
    else:
        unknowns = (torch.nonzero(free).reshape(-1, 1) * nb + torch.arange(nb)).reshape(
            -1
        )
    sub = gram[unknowns.unsqueeze(1), unknowns.unsqueeze(0)]
    diagonal = torch.diagonal(sub)[unknowns >= offset]
    positive = diagonal[diagonal > 0]
    scale = float(positive.mean()) if positive.numel() > 0 else 1.0
    ridge = torch.full((len(unknowns),), RIDGE * scale, dtype=torch.float64)
    # the composition energies: only a tiny ridge (elements absent from every
    # energy label)
    ridge[unknowns < offset] = 1e-10 * scale
    solution = torch.linalg.solve(sub + torch.diag(ridge), moment[unknowns])
    if not math.isfinite(float(solution.abs().sum())):
        raise RuntimeError("the pair potential's fit did not converge")
    weights = pair.weights.detach().double().clone().reshape(-1)
    pair_unknowns = unknowns[unknowns >= offset]
    weights[pair_unknowns - offset] = solution[unknowns >= offset]
    with torch.no_grad():
        pair.weights.copy_(weights.reshape(n_pairs, nb).to(pair.weights.dtype))
    if free is not None:
        return None
    return solution[:n_types]
