"""Real spherical harmonics in plain torch operations, one list entry per l.

Same functions, order (m = -l..l) and normalisation as sphericart-torch
(orthonormal real harmonics, Wikipedia convention), computed with the same
recurrence (Bigi et al., J. Chem. Phys. 159, 064802 (2023)) on unit vectors:

    Q_l^l = -(2l - 1) Q_{l-1}^{l-1},   Q_l^{l-1} = -z Q_l^l,
    Q_l^m = ((2l - 1) z Q_{l-1}^m - (l + m - 1) Q_{l-2}^m) / (l - m),
    c_m + i s_m = (x + i y)^m,
    Y_l^{m>0} = F_l^m Q_l^m c_m,  Y_l^0 = F_l^0 Q_l^0 / sqrt(2),
    Y_l^{-m} = F_l^m Q_l^m s_m,   F_l^m = (-1)^m sqrt((2l+1)/(2 pi) (l-m)!/(l+m)!).

Where each one runs:
- eager mode on CPU (training, validation, ``alchem-eval``): sphericart-torch,
  whose fused kernels make a SOAP-BPNN training step (l_max = 6, forces and
  stress, so second derivatives) about 5 % faster; for the Alchemical Model
  (l_max = 13) the two cost the same. On a GPU the recurrence, whose CUDA
  training was checked on an H100 (tests/test_cuda.py); sphericart's CUDA path
  has not been run here;
- TorchScript (the exported ``model.pt`` in LAMMPS and ASE): the recurrence
  below. sphericart-torch registers its autograd formulas from Python
  (sphericart/torch/register.py), so in a C++ engine the gradients through the
  harmonics were silently missing (forces 2 % off while energies matched), and
  a model that needs no TorchScript extension needs no extensions/ folder.
Every step of the recurrence is an elementwise torch operation on [edges, <= l + 1]
tensors, so autograd differentiates it (twice, if asked) in Python and C++ alike.
``use_library = False`` makes the eager module run the recurrence too.
"""

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _library_calculator(max_angular: int):
    """sphericart-torch's calculator, or None where it is not installed."""
    try:
        import sphericart.torch
    except ImportError:
        return None
    return sphericart.torch.SphericalHarmonics(max_angular)


class SphericalHarmonics(torch.nn.Module):
    def __init__(self, max_angular: int, dtype: torch.dtype | None = None):
        """``dtype``: of the constants (default: torch's default dtype); a model
        built in one precision and used in another passes its own."""
        super().__init__()
        self.max_angular = max_angular
        self.use_library = True
        a, b, f, top, reverse = [], [], [], [], []
        q_top = 1.0
        for l in range(max_angular + 1):
            if l > 0:
                q_top *= -(2 * l - 1)
            top.append(q_top)  # Q_l^l, a constant
            m = torch.arange(max(l - 1, 0), dtype=torch.float64)
            a.append((2 * l - 1) / (l - m))
            b.append((l + m - 1) / (l - m))
            factors = [
                (-1) ** mm
                * math.sqrt(
                    (2 * l + 1)
                    / (2 * math.pi)
                    * math.factorial(l - mm)
                    / math.factorial(l + mm)
                )
                for mm in range(l + 1)
            ]
            factors[0] /= math.sqrt(2.0)
            f.append(torch.tensor(factors, dtype=torch.float64))
            reverse.append(torch.arange(l, 0, -1))
        self.q_top: list[float] = top
        # buffers in lists are not visible to .to(); keep them concatenated. Not
        # persistent: constants of max_angular, never part of a checkpoint
        self.register_buffer("a", torch.cat(a), persistent=False)
        self.register_buffer("b", torch.cat(b), persistent=False)
        self.register_buffer("factors", torch.cat(f), persistent=False)
        self.register_buffer("reverse", torch.cat(reverse), persistent=False)
        self.to(dtype or torch.get_default_dtype())

    def forward(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        """[n, 3] vectors (any length > 0) -> [Y_0 [n, 1], Y_1 [n, 3], ...]."""
        if (
            not torch.jit.is_scripting()
            and self.use_library
            and vectors.device.type == "cpu"
        ):
            values = self._library(vectors)
            if values is not None:
                return values
        return self._recurrence(vectors)

    @torch.jit.unused
    def _library(self, vectors: torch.Tensor) -> list[torch.Tensor] | None:
        calculator = _library_calculator(self.max_angular)
        if calculator is None:
            return None
        values = calculator(vectors)
        sizes = [2 * l + 1 for l in range(self.max_angular + 1)]
        return list(values.split(sizes, dim=1))

    def _recurrence(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        unit = vectors / torch.linalg.norm(vectors, dim=1, keepdim=True)
        # contiguous columns: the many elementwise products below run faster
        x, y, z = [c.unsqueeze(1) for c in unit.t().contiguous().unbind(0)]
        L = self.max_angular
        # (x + i y)^m for m = 0..L
        cos: list[torch.Tensor] = [torch.ones_like(x)]
        sin: list[torch.Tensor] = [torch.zeros_like(x)]
        for _ in range(L):
            c, s = cos[-1], sin[-1]
            cos.append(x * c - y * s)
            sin.append(x * s + y * c)
        c_all = torch.cat(cos, dim=1)
        s_all = torch.cat(sin, dim=1)

        result: list[torch.Tensor] = []
        previous = torch.ones_like(x)  # Q_{l-1}, m = 0..l-1
        before = torch.ones_like(x)  # Q_{l-2}
        ab_offset = 0
        f_offset = 0
        r_offset = 0
        for l in range(L + 1):
            if l == 0:
                q = torch.ones_like(x)
            else:
                top = torch.full_like(x, self.q_top[l])
                parts: list[torch.Tensor] = []
                if l >= 2:
                    n = l - 1
                    a = self.a[ab_offset : ab_offset + n]
                    b = self.b[ab_offset : ab_offset + n]
                    parts.append(a * z * previous[:, :n] - b * before[:, :n])
                    ab_offset += n
                parts.append(-z * top)
                parts.append(top)
                q = torch.cat(parts, dim=1)  # m = 0..l
            fq = q * self.factors[f_offset : f_offset + l + 1]
            f_offset += l + 1
            if l == 0:
                result.append(fq)
            else:
                reverse = self.reverse[r_offset : r_offset + l]
                r_offset += l
                negative = (fq[:, 1:] * s_all[:, 1 : l + 1]).index_select(
                    1, reverse - 1
                )
                positive = fq[:, 1:] * c_all[:, 1 : l + 1]
                result.append(torch.cat([negative, fq[:, :1], positive], dim=1))
            before = previous
            previous = q
        return result
