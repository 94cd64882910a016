# ruff: noqa: UP006, UP035, UP045
# (TorchScript needs typing.List, Dict and Optional)
"""A hand-written metatomic model of ASE's Morse potential, for exact comparisons.

The same pair energy and smooth cutoff as ``ase.calculators.morse.MorsePotential``,
written as a TorchScript module and saved as an ``AtomisticModel`` (as
python/alchem/export.py does for the trained models); engines get forces and stress
by autograd.
"""

from typing import Dict, List, Optional

import torch
from alchem.export import declared_libraries
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
)


class MorsePair(torch.nn.Module):
    def __init__(
        self, epsilon: float, r0: float, rho0: float, rcut1: float, rcut2: float
    ):
        super().__init__()
        self.epsilon = epsilon
        self.r0 = r0
        self.rho0 = rho0
        self.inner = rcut1 * r0
        self.outer = rcut2 * r0
        self.options = NeighborListOptions(
            cutoff=self.outer, full_list=True, strict=True, requestor="morse"
        )

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.options]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        energies: List[torch.Tensor] = []
        for system in systems:
            pairs = system.get_neighbor_list(self.options)
            distances = torch.linalg.vector_norm(pairs.values.reshape(-1, 3), dim=1)
            expf = torch.exp(self.rho0 * (1.0 - distances / self.r0))
            pair = self.epsilon * expf * (expf - 2.0)
            s = 1.0 - (distances - self.inner) / (self.outer - self.inner)
            inside = (s > 0.0) & (s < 1.0)
            smooth = torch.where(inside, 6.0 * s**5 - 15.0 * s**4 + 10.0 * s**3, 0.0)
            cutoff = torch.where(s >= 1.0, torch.ones_like(s), smooth)
            # a full list counts every pair twice
            energies.append(0.5 * torch.sum(pair * cutoff))
        device = systems[0].positions.device
        block = TensorBlock(
            values=torch.stack(energies).reshape(-1, 1),
            samples=Labels(
                "system", torch.arange(len(systems), device=device).reshape(-1, 1)
            ),
            components=[],
            properties=Labels("energy", torch.tensor([[0]], device=device)),
        )
        return {
            "energy": TensorMap(
                Labels("_", torch.tensor([[0]], device=device)), [block]
            )
        }


def save_morse_model(path: str, atomic_type: int, **parameters: float) -> None:
    """``path``: the Morse potential of ``parameters`` (MorsePotential's names) for
    atoms of ``atomic_type``, in eV and Å, float64."""
    module = MorsePair(**parameters)
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")},
        atomic_types=[atomic_type],
        interaction_range=module.outer,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    metadata = ModelMetadata(name="Morse", description="ASE's Morse potential")
    # the module calls no extension, whatever this process loaded (sphericart-torch)
    with declared_libraries([]):
        AtomisticModel(module.eval(), metadata, capabilities).save(path)
