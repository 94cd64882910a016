"""Every user error of `pair_style alchemical` stops LAMMPS with a message that
says what to fix (through LAMMPS' MPI-safe error calls, never a crash)."""

import re
from typing import Dict, List, Optional  # noqa: UP035 (metatomic checks these)

import numpy as np
import pytest
import torch
from lammps_support import (
    ModelSpec,
    ase_single_point,
    export_model,
    fcc_alloy,
    lammps_finite_differences,
    lammps_single_point,
    plugin_built,
    relative_error,
    run_lammps,
    write_data,
)
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
)

pytestmark = [
    pytest.mark.slow,  # LAMMPS runs (subprocesses) on trained or written models
    pytest.mark.skipif(
        not plugin_built(), reason="LAMMPS plugin not built: run `make plugin` first"
    ),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    export_model(folder / "model.pt", ModelSpec(types=[28, 29]))
    export_model(folder / "total-only.pt", ModelSpec(types=[28, 29], per_atom=False))
    export_model(folder / "failing.pt", ModelSpec(types=[28, 29], fail=True))
    (folder / "garbage.pt").write_bytes(b"this is not a TorchScript archive")
    atoms = fcc_alloy((2, 2, 2), 3.6, [28, 29], seed=1)
    write_data(folder / "structure.data", atoms, [28, 29])
    return folder


def _script(
    pair_style: str = "alchemical model.pt",
    pair_coeff: str = "* * Ni Cu",
    units: str = "metal",
    before: str = "",
    after: str = "",
) -> str:
    return f"""
units {units}
{before}
atom_style atomic
read_data structure.data
pair_style {pair_style}
pair_coeff {pair_coeff}
{after}
run 0
"""


def _fails_with(folder, script: str, *messages: str) -> str:
    result = run_lammps(folder, script, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    error = [line for line in output.splitlines() if "ERROR" in line]
    assert error, output[-2000:]
    for message in messages:
        assert message in output, f"{message!r} not in:\n" + "\n".join(error)
    # no C++ exception escaped: LAMMPS reported it
    assert "terminate called" not in output
    return "\n".join(error)


def test_valid_input_runs(folder):
    result = run_lammps(folder, _script())
    assert "Loop time" in result.stdout


def test_missing_model(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical missing.pt"),
        "cannot read the model file 'missing.pt'",
    )


def test_unreadable_model(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical garbage.pt"),
        "could not load the metatomic model 'garbage.pt'",
    )


def test_missing_model_argument(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical"),
        "expected: pair_style alchemical <model.pt>",
    )


def test_element_count_differs_from_types(folder):
    _fails_with(
        folder,
        _script(pair_coeff="* * Ni Cu Ni"),
        "needs one element per atom type: the box has 2 atom type(s) but 3",
    )
    _fails_with(
        folder,
        _script(pair_coeff="* * Ni"),
        "the box has 2 atom type(s) but 1 element(s)",
    )


def test_pair_coeff_not_star_star(folder):
    # LAMMPS itself checks this for pair styles with one_coeff set
    _fails_with(
        folder,
        _script(pair_coeff="1 1 Ni Cu"),
        "Pair_coeff must start with * * for pair style alchemical",
    )


def test_element_not_in_model(folder):
    _fails_with(
        folder,
        _script(pair_coeff="* * Ni Au"),
        "element Au (atom type 2) is not supported by the model",
        "which knows: Ni Cu",
    )


def test_not_an_element(folder):
    _fails_with(
        folder,
        _script(pair_coeff="* * Ni cu"),
        "'cu' (atom type 2) is not an element symbol",
    )


@pytest.mark.parametrize("units", ["lj", "cgs"])
def test_units_without_conversion(folder, units):
    _fails_with(
        folder,
        _script(units=units),
        f"does not support `units {units}`",
        "use `units metal`",
    )


def test_newton_pair_off(folder):
    _fails_with(
        folder,
        _script(before="newton off"),
        "requires newton_pair on",
    )


def test_unknown_keyword(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt devcie cpu"),
        "unknown keyword 'devcie'",
        "valid keywords are device, extensions, check_consistency and threads",
    )


def test_keyword_without_value(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt device"),
        "missing value after keyword 'device'",
    )


def test_invalid_device(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt device gpu"),
        "invalid device 'gpu', expected cpu, cuda or cuda:N",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt device cuda"),
        "device cuda requested, but the torch this plugin runs with",
        "use `device cpu`",
    )


def test_missing_extensions_folder(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt extensions nowhere"),
        "extensions folder 'nowhere' does not exist",
    )


def test_per_atom_energy_from_total_energy_model(folder):
    _fails_with(
        folder,
        _script(
            pair_style="alchemical total-only.pt",
            after="compute pe all pe/atom\ndump d all custom 1 d.dump id c_pe",
        ),
        "per-atom energies were requested",
        "only computes the total energy",
    )


def test_total_energy_model_runs_without_per_atom(folder):
    result = run_lammps(folder, _script(pair_style="alchemical total-only.pt"))
    assert "Loop time" in result.stdout


def test_model_error_stops_the_run(folder):
    """An exception inside the model is an error of LAMMPS, with its message."""
    _fails_with(
        folder,
        _script(pair_style="alchemical failing.pt"),
        "pair_style alchemical: the model failed",
        "this test model always fails",
    )


def test_errors_under_mpi(folder):
    """With several ranks the error is reported and every rank stops."""
    result = run_lammps(folder, _script(pair_coeff="* * Ni Au"), nprocs=2, check=False)
    assert result.returncode != 0
    assert "element Au (atom type 2) is not supported" in result.stdout


class SolidHarmonicsModel(torch.nn.Module):
    """E = sum over pairs of fc(r) sum_m S_1m(r_ij)^2, with sphericart-torch's solid
    harmonics: a custom operator from a TorchScript extension."""

    def __init__(self) -> None:
        super().__init__()
        import sphericart.torch

        self.harmonics = sphericart.torch.SolidHarmonics(1)
        self.options = NeighborListOptions(cutoff=4.0, full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:  # noqa: UP006
        return [self.options]

    def forward(
        self,
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[Labels] = None,  # noqa: UP045
    ) -> Dict[str, TensorMap]:  # noqa: UP006
        values: List[torch.Tensor] = []  # noqa: UP006
        samples: List[torch.Tensor] = []  # noqa: UP006
        per_atom = outputs["energy"].sample_kind == "atom"
        for s, system in enumerate(systems):
            neighbors = system.get_neighbor_list(self.options)
            first = neighbors.samples.column("first_atom").to(torch.long)
            vectors = neighbors.values.reshape(-1, 3)
            r = torch.linalg.vector_norm(vectors, dim=1)
            cutoff = (1.0 - r / 4.0) ** 3
            solid = self.harmonics(vectors)
            pair = cutoff * torch.sum(solid[:, 1:] ** 2, dim=1)
            energy = torch.zeros(len(system), dtype=pair.dtype).index_add(
                0, first, pair
            )
            atoms = torch.arange(len(system))
            if selected_atoms is not None:
                mask = selected_atoms.column("system") == s
                atoms = selected_atoms.column("atom")[mask].to(torch.long)
            if per_atom:
                values.append(energy[atoms].reshape(-1, 1))
                samples.append(torch.stack([torch.full_like(atoms, s), atoms], dim=1))
            else:
                values.append(energy[atoms].sum().reshape(1, 1))
                samples.append(torch.tensor([[s]]))
        names = ["system", "atom"] if per_atom else ["system"]
        block = TensorBlock(
            values=torch.cat(values),
            samples=Labels(names, torch.cat(samples).to(torch.int32)),
            components=[],
            properties=Labels("energy", torch.tensor([[0]])),
        )
        return {"energy": TensorMap(Labels("_", torch.tensor([[0]])), [block])}


def test_custom_operator_without_cpp_autograd(tmp_path):
    """sphericart-torch 2.0 registers its gradients from Python only: without the
    plugin's own C++ autograd for it (disabled here), torch would treat its
    operator as constant and the forces would be wrong: the plugin refuses."""
    sphericart = pytest.importorskip("sphericart.torch")
    export_sphericart_model(tmp_path, sphericart)
    env = {"ALCHEM_NO_SPHERICART_AUTOGRAD": "1"}
    result = run_lammps(tmp_path, _script(), check=False, env=env)
    assert result.returncode != 0
    assert "the model's forces would be wrong" in result.stdout
    assert "sphericart_torch::" in result.stdout
    assert "has no autograd kernel registered in C++" in result.stdout


def test_sphericart_model_forces(tmp_path):
    """With the plugin's C++ autograd for sphericart-torch, the forces are the
    derivatives of the energy, and match ASE in a process where sphericart's
    Python registration is active."""
    sphericart = pytest.importorskip("sphericart.torch")
    model = export_sphericart_model(tmp_path, sphericart)
    atoms = fcc_alloy((2, 2, 2), 3.6, [28, 29], seed=5)
    fd = lammps_finite_differences(tmp_path / "fd", atoms, model, [28, 29], [0, 3])
    assert relative_error(fd.numeric_forces, fd.forces) < 1e-6
    assert relative_error(fd.numeric_virial, fd.virial) < 1e-6
    assert np.abs(fd.forces).max() > 1e-2

    lammps = lammps_single_point(tmp_path / "sp", atoms, model, [28, 29], nprocs=2)
    reference = ase_single_point(atoms, model)
    assert relative_error(lammps.energy, reference.energy) < 1e-8
    assert relative_error(lammps.forces, reference.forces) < 1e-8
    assert relative_error(lammps.virial, reference.virial) < 1e-8


def export_sphericart_model(folder, sphericart) -> str:
    """SolidHarmonicsModel as folder/model.pt, its extensions in folder/extensions
    (and folder/structure.data for _script)."""
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=[28, 29],
        interaction_range=4.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    model = AtomisticModel(
        SolidHarmonicsModel().eval(), ModelMetadata(name="sphericart"), capabilities
    )
    path = str(folder / "model.pt")
    model.save(path, collect_extensions=str(folder / "extensions"))
    atoms = fcc_alloy((2, 2, 2), 3.6, [28, 29], seed=5)
    write_data(folder / "structure.data", atoms, [28, 29])
    return path


@pytest.mark.parametrize("value", ["0", "-4"])
def test_invalid_chunk(folder, value):
    _fails_with(
        folder,
        _script(pair_style=f"alchemical model.pt chunk {value}"),
        f"invalid value '{value}' for keyword 'chunk'",
        "expected a number of atoms N >= 1",
        "or 'all'",
    )


@pytest.mark.parametrize("value", ["many", "2.5", "1e3"])
def test_chunk_not_an_integer(folder, value):
    """LAMMPS' own parser (utils::inumeric) reads the keywords' numbers."""
    _fails_with(
        folder,
        _script(pair_style=f"alchemical model.pt chunk {value}"),
        f"Expected integer parameter instead of '{value}'",
    )


def test_invalid_malloc_reuse(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt malloc_reuse always"),
        "Expected boolean parameter instead of 'always'",
    )


@pytest.mark.parametrize("value", ["yes", "true", "on", "no", "off", "false"])
def test_malloc_reuse_takes_lammps_booleans(folder, value):
    result = run_lammps(
        folder, _script(pair_style=f"alchemical model.pt malloc_reuse {value}")
    )
    assert "Loop time" in result.stdout


def test_invalid_pair_ops(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt pair_ops numpy"),
        "invalid value 'numpy' for keyword 'pair_ops', expected loops (CPU only) or torch",
    )


def test_invalid_profile(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt profile sometimes"),
        "Expected boolean parameter instead of 'sometimes'",
    )


@pytest.mark.parametrize("value", ["on", "off"])
def test_profile(folder, value):
    """`profile on` prints, at the end of the run, where a step's time went."""
    result = run_lammps(
        folder, _script(pair_style=f"alchemical model.pt profile {value}")
    )
    assert "Loop time" in result.stdout
    printed = "pair_style alchemical on rank 0:" in result.stdout
    assert printed == (value == "on")
    if printed:
        assert re.search(
            r"ms per evaluation: pairs [\d.]+, inputs [\d.]+", result.stdout
        )


def test_truncated_model(folder):
    data = (folder / "model.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    _fails_with(
        folder,
        _script(pair_style="alchemical truncated.pt"),
        "could not load the metatomic model 'truncated.pt'",
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("alchem.chunk", "lots", "alchem.chunk = 'lots', expected a number of atoms"),
        ("alchem.chunk", "0", "alchem.chunk = '0', expected a number of atoms N >= 1"),
        (
            "alchem.pairs_of_selected_atoms",
            "second_atom",
            "alchem.pairs_of_selected_atoms = 'second_atom', expected 'first_atom'",
        ),
        (
            "alchem.shortest_distances",
            '{"Ni-Cu": -1.0}',
            "alchem.shortest_distances has an entry 'Ni-Cu' that is not 'A-B': distance",
        ),
        ("alchem.shortest_distances", "[1, 2", "alchem.shortest_distances is not JSON"),
    ],
)
def test_invalid_plugin_metadata(folder, key, value, message):
    """The metadata the exporter writes for the plugin is checked when read: a bad
    value is an error naming the key, never a silent default."""
    name = f"bad-{key.split('.')[1]}-{abs(hash(value))}.pt"
    export_model(folder / name, ModelSpec(types=[28, 29], extra={key: value}))
    _fails_with(folder, _script(pair_style=f"alchemical {name}"), message)


@pytest.mark.parametrize("nprocs", [1, 2])
def test_non_finite_forces_stop_the_run(tmp_path, nprocs):
    """A model giving NaN (here for pairs closer than 2 Angstrom) stops LAMMPS at
    that step, naming one of the two atoms involved; no NaN reaches the MD."""
    atoms = fcc_alloy((2, 2, 2), 3.6, [28, 29], seed=1, rattle=0.0)
    atoms.positions[1] = atoms.positions[0] + [1.5, 0.0, 0.0]  # tags 1 and 2
    write_data(tmp_path / "structure.data", atoms, [28, 29])
    export_model(tmp_path / "nan.pt", ModelSpec(types=[28, 29], nan_below=2.0))
    script = _script(pair_style="alchemical nan.pt")
    result = run_lammps(tmp_path, script, nprocs=nprocs, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "terminate called" not in output
    assert "gave a non-finite force (NaN or inf) at step 0 for atom " in output, output[
        -2000:
    ]
    named = {part.split()[0] for part in output.split("at step 0 for atom ")[1:]}
    if nprocs == 1:
        assert named <= {"1", "2"}, output[-2000:]
    else:
        # the first rank to stop reports: the NaN pair gradient also reaches the
        # forces of other atoms through ghosts, which another rank may own
        assert named and named <= {str(i) for i in range(1, len(atoms) + 1)}
    assert "Loop time" not in output


def test_non_finite_energy_in_md(tmp_path):
    """Two atoms flying at each other: the run goes on until the model breaks
    down, then stops at that step (not step 0)."""
    atoms = fcc_alloy((2, 2, 2), 3.6, [28, 29], seed=1, rattle=0.0)
    write_data(tmp_path / "structure.data", atoms, [28, 29])
    export_model(tmp_path / "nan.pt", ModelSpec(types=[28, 29], nan_below=2.2))
    script = _script(
        pair_style="alchemical nan.pt",
        after="velocity all create 3000.0 1 loop geom\nfix 1 all nve",
    ).replace("run 0", "run 200")
    result = run_lammps(tmp_path, script, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    message = output.split("gave a non-finite ")[1]
    step = int(message.split("at step ")[1].split()[0])
    assert 0 < step < 200


def test_chunk_without_value(folder):
    _fails_with(
        folder,
        _script(pair_style="alchemical model.pt threads 1 chunk"),
        "missing value after keyword 'chunk'",
    )
