"""The project's spherical harmonics against sphericart-torch, the reference.

In eager mode (training) the module calls sphericart-torch itself; the recurrence
is what TorchScript runs (the exported model, LAMMPS): both are checked here."""

import pytest
import sphericart.torch
import torch
from alchem.harmonics import SphericalHarmonics
from alchem.training import default_dtype


@pytest.mark.parametrize("max_angular", [0, 1, 6, 14])
def test_values_and_derivatives_match_sphericart(max_angular):
    torch.manual_seed(0)
    vectors = torch.randn(50, 3, dtype=torch.float64) * 3
    vectors[0] = torch.tensor([0.0, 0.0, 1.3])  # on the z axis
    vectors[1] = torch.tensor([-0.7, 0.0, 0.0])
    with default_dtype(torch.float64):  # constants computed in the working precision
        ours = SphericalHarmonics(max_angular)
    ours.use_library = False  # the recurrence, as in the exported model
    reference = sphericart.torch.SphericalHarmonics(max_angular)

    def both(v):
        mine = torch.cat(ours(v), dim=1)
        # sphericart expects unit vectors for orthonormal harmonics of the direction
        theirs = reference(v / torch.linalg.norm(v, dim=1, keepdim=True))
        return mine, theirs

    mine, theirs = both(vectors)
    assert mine.shape == (50, (max_angular + 1) ** 2)
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)

    if max_angular == 0:
        return  # a constant: nothing to differentiate
    weights = torch.randn_like(mine)
    v = vectors.clone().requires_grad_(True)
    mine, theirs = both(v)
    (g_mine,) = torch.autograd.grad((mine * weights).sum(), v, create_graph=True)
    (g_theirs,) = torch.autograd.grad((theirs * weights).sum(), v, create_graph=True)
    torch.testing.assert_close(g_mine, g_theirs, rtol=1e-9, atol=1e-10)
    (h_mine,) = torch.autograd.grad(g_mine.pow(2).sum(), v)
    (h_theirs,) = torch.autograd.grad(g_theirs.pow(2).sum(), v)
    torch.testing.assert_close(h_mine, h_theirs, rtol=1e-8, atol=1e-9)


def test_scriptable_and_float32():
    module = torch.jit.script(SphericalHarmonics(4))
    out = module(torch.randn(7, 3))
    assert [o.shape[1] for o in out] == [1, 3, 5, 7, 9]
    assert out[0].dtype == torch.float32


@pytest.mark.parametrize("max_angular", [1, 6, 13])
def test_eager_and_scripted_modules_agree(max_angular):
    """Training runs sphericart-torch (eager), engines the scripted recurrence:
    values, first and second derivatives must be the same functions."""
    torch.manual_seed(1)
    vectors = torch.randn(40, 3, dtype=torch.float64) * 2
    vectors[0] = torch.tensor([0.0, 0.0, -2.1])  # on the z axis
    with default_dtype(torch.float64):
        eager = SphericalHarmonics(max_angular)
    scripted = torch.jit.script(eager)
    weights = torch.randn(40, (max_angular + 1) ** 2, dtype=torch.float64)
    results = []
    for module in (eager, scripted):
        v = vectors.clone().requires_grad_(True)
        values = torch.cat(module(v), dim=1)
        (gradient,) = torch.autograd.grad(
            (values * weights).sum(), v, create_graph=True
        )
        (second,) = torch.autograd.grad(gradient.pow(2).sum(), v)
        results.append((values, gradient, second))
    for mine, theirs in zip(*results, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)
