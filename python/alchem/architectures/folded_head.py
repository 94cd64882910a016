"""The first layer of both architectures' heads, with the LayerNorm folded in.

A LayerNorm over the F features x of an atom followed by a linear layer,
W^T (g (x - mean) / std + b) + c, equals (x^T W' - mean 1^T W') / std + (W^T b + c)
with W' = g W (g scaling the rows). Applied in that order, the [atoms x F] features
only meet one sum, one sum of squares and one product per block: the features never
need to be concatenated, centred or scaled, which in the double backward of force
training saves full-size copies and zero fills. The blocks may be any linear layout
of the features (the per-l blocks of the torch operations, the upper triangles of
the CPU kernel) as long as the weights are mapped onto the same layout and the
sums are those of the F features.
"""

import torch


def layernorm_statistics(
    total: torch.Tensor,
    squares: torch.Tensor,
    n_features: int,
    eps: float,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / std), both [atoms, 1], from the sums of the F features and of
    their squares per atom ([atoms]); (0, 1) without LayerNorm."""
    total = total.reshape(-1, 1)
    if not normalize:
        return torch.zeros_like(total), torch.ones_like(total)
    mean = total / n_features
    variance = torch.clamp(squares.reshape(-1, 1) / n_features - mean * mean, min=0.0)
    return mean, torch.rsqrt(variance + eps)


def fold_layernorm(
    weight: torch.Tensor, bias: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LayerNorm affine (gain, shift: [F]) folded into a layer with ``weight``
    [F, out] and ``bias`` [out].

    addmv, not ``shift @ weight``: TorchScript's profiling executor may run a
    vector-matrix matmul as another BLAS call than the simple executor, and the
    exported model must give the same float32 numbers in both (metatomic-ase uses
    the one, alchem.calculator and LAMMPS the other)."""
    return weight * gain.unsqueeze(1), torch.addmv(bias, weight.t(), shift)


def folded_first_layer(
    blocks: list[torch.Tensor],
    weights: list[torch.Tensor],
    column_sum: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    inverse_std: torch.Tensor,
) -> torch.Tensor:
    """(sum_b blocks[b] weights[b] - mean column_sum) / std + bias: [atoms, out].

    ``column_sum`` [out] is the sum over the F features of the folded weight (the
    term of the mean), ``mean`` and ``inverse_std`` come from
    ``layernorm_statistics``."""
    if len(blocks) == 1:
        # One block (the kernel's triangles, inference): the plain product.
        # TorchScript's profiling executor may run addmm as a product and a sum,
        # and an exported float32 model must give the same numbers under both
        # executors (metatomic-ase uses that one, alchem.calculator and LAMMPS the
        # simple one); with addmm they differed by 1 ulp.
        hidden = torch.mm(blocks[0], weights[0]) - mean * column_sum
    else:
        # per-l blocks (training): one pass over [atoms, out] per block fewer
        hidden = -mean * column_sum
        for index in range(len(blocks)):
            hidden = torch.addmm(hidden, blocks[index], weights[index])
    return torch.addcmul(bias, hidden, inverse_std)


def last_layer_block(
    last_input: torch.Tensor, group: int, block_size: int, n_features: int
) -> torch.Tensor:
    """(last_input, 1) placed in the columns of ``group``, block_size each:
    [atoms, n_features], the last-layer features of uncertainty for heads with one
    network per group (a network's output is this row times its last layer's
    weights and bias)."""
    with_bias = torch.cat([last_input, torch.ones_like(last_input[:, :1])], 1)
    before = group * block_size
    return torch.nn.functional.pad(
        with_bias, [before, n_features - before - block_size]
    )
