"""alchem-train --fine-tune: trained weights, a fresh run, new elements (real runs)."""

import os

import ase.io
import numpy as np
import pytest
import torch
from alchem.calculator import load_calculator
from alchem.data.emt import write_emt_dataset
from alchem.training import load_checkpoint
from conftest import run_cli, write_options

pytestmark = pytest.mark.slow  # trains models (alchem-train) in its fixtures

CU, NI, PT = 29, 28, 78
TRAINING = {"num_epochs": 2, "batch_size": 4, "log_interval": 1}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A folder with an Alchemical Model trained on Cu/Ni only, and Cu/Ni/Pt data."""
    folder = tmp_path_factory.mktemp("fine-tune")
    write_emt_dataset(str(folder / "cuni.xyz"), 16, elements=("Cu", "Ni"), seed=1)
    write_emt_dataset(str(folder / "pt.xyz"), 10, elements=("Cu", "Ni", "Pt"), seed=2)
    for name in ("alchemical_model", "soap_bpnn"):
        write_options(
            str(folder / f"{name}.yaml"),
            name,
            training_set="cuni.xyz",
            training=TRAINING,
        )
        write_options(
            str(folder / f"{name}-pt.yaml"),
            name,
            training_set="pt.xyz",
            training=TRAINING,
        )
    run_cli(
        "alchem-train",
        "alchemical_model.yaml",
        "-o",
        "base.pt",
        "--run-dir",
        "base",
        cwd=str(folder),
    )
    return str(folder)


@pytest.mark.slow
@pytest.mark.parametrize("composition", ["keep", "refit"])
def test_fine_tune_adds_an_element_to_the_alchemical_model(base, composition):
    output = f"tuned-{composition}.pt"
    result = run_cli(
        "alchem-train",
        "alchemical_model-pt.yaml",
        "-o",
        output,
        "--run-dir",
        f"run-{composition}",
        "--fine-tune",
        "base.ckpt",
        "--composition",
        composition,
        cwd=base,
    )
    assert "new elements Pt" in result.stdout
    before = load_checkpoint(os.path.join(base, "base.ckpt"))
    after = load_checkpoint(os.path.join(base, output.replace(".pt", ".ckpt")))
    assert before["dataset_info"]["atomic_types"] == [NI, CU]
    assert after["dataset_info"]["atomic_types"] == [NI, CU, PT]
    # a new run: its own epochs, best loss and optimizer steps (10 structures, 2
    # for validation: 2 batches of 4 per epoch)
    assert len(after["csv_lines"]) == 1 + TRAINING["num_epochs"]
    assert after["csv_lines"][1].startswith("1,") and after["best_epoch"] >= 1
    steps = after["optimizer"]["state"][0]["step"]
    assert int(steps) == 2 * TRAINING["num_epochs"]
    old = before["best_state"]["composition"]
    new = after["best_state"]["composition"]
    if composition == "keep":  # Ni, Cu as they were; Pt fitted
        torch.testing.assert_close(new[:2], old, rtol=0, atol=0)
    else:
        assert not torch.equal(new[:2], old)
    assert torch.isfinite(new[2]) and new[2] != 0
    # W: one more column; the old ones start from the checkpoint's
    assert after["best_state"]["architecture.compression"].shape[1] == 3
    # the exported model computes Pt through ASE
    atoms = ase.io.read(os.path.join(base, "pt.xyz"), "0")
    assert PT in atoms.numbers
    atoms.calc = load_calculator(os.path.join(base, output))
    assert np.isfinite(atoms.get_potential_energy())


@pytest.mark.slow
def test_fine_tune_refuses_what_it_can_not_do(base):
    run_cli(
        "alchem-train",
        "soap_bpnn.yaml",
        "-o",
        "soap.pt",
        "--run-dir",
        "soap",
        cwd=base,
    )
    cases = [
        (
            ["soap_bpnn-pt.yaml", "--fine-tune", "soap.ckpt"],
            "error: --fine-tune soap.ckpt: the training set has elements the "
            "checkpoint never saw (Pt; it knows Ni Cu): soap_bpnn has weights per "
            "element pair and can not add elements; train it from scratch, or use "
            "alchemical_model",
        ),
        (
            ["soap_bpnn-pt.yaml", "--fine-tune", "base.ckpt"],
            "error: --fine-tune base.ckpt: the checkpoint's architecture is "
            "alchemical_model but the options ask for soap_bpnn",
        ),
        (
            ["alchemical_model-pt.yaml", "--fine-tune", "base.pt"],
            "error: base.pt: this is an exported model, not a checkpoint",
        ),
        (
            ["alchemical_model-pt.yaml", "--fine-tune", "nothing.ckpt"],
            "error: --fine-tune nothing.ckpt: checkpoint not found",
        ),
        (
            ["soap_bpnn.yaml", "--fine-tune", "soap.ckpt", "--restart", "soap.ckpt"],
            "error: give either --restart (go on with a run) or --fine-tune",
        ),
        (
            ["soap_bpnn.yaml", "--composition", "refit"],
            "error: --composition refit applies to --fine-tune only",
        ),
    ]
    for args, message in cases:
        result = run_cli("alchem-train", *args, "-o", "x.pt", cwd=base, check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith(message), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert not os.path.exists(os.path.join(base, "x.pt"))


def test_new_element_leaves_the_known_ones_unchanged(base):
    """Before any step, the model with Pt added predicts what the checkpoint does on
    structures of the elements it knew: the new column of W and the new composition
    energy touch only Pt."""
    from alchem.data import DatasetInfo, read_structures
    from alchem.training import build_model, evaluate, model_from_checkpoint
    from alchem.training.finetune import transfer_weights

    state = load_checkpoint(os.path.join(base, "base.ckpt"))
    known, options = model_from_checkpoint(os.path.join(base, "base.ckpt"))
    info = DatasetInfo(
        atomic_types=[NI, CU, PT],
        mean_num_neighbors=state["dataset_info"]["mean_num_neighbors"],
    )
    extended = build_model(options, info)
    transfer_weights(
        extended, state["best_state"], state["dataset_info"]["atomic_types"]
    )
    extended.eval()
    section = {
        "systems": {
            "read_from": os.path.join(base, "cuni.xyz"),
            "reader": None,
            "length_unit": "angstrom",
        },
        "targets": options["training_set"]["targets"],
    }
    structures = read_structures(section, 4.5, "cuni.xyz")[:4]
    targets = {"energy": True, "forces": True, "virial": False}
    cpu = torch.device("cpu")
    before = evaluate(known, structures, targets, 4, torch.float64, cpu)
    after = evaluate(extended, structures, targets, 4, torch.float64, cpu)
    for key in ("energy", "forces"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    column = extended.architecture.compression[:, 2]
    torch.testing.assert_close(column, known.architecture.compression.mean(1))
