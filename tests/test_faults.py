"""Faults survived, with real processes: alchem-train killed with SIGKILL, restarts
with other options or data, and broken files given to every command."""

import argparse
import os
import random
import signal
import subprocess
import time

import pytest
import torch
import yaml
from alchem.data.emt import write_emt_dataset
from alchem.training import CHECKPOINT_FORMAT, load_checkpoint
from conftest import BIN, run_cli, write_options

pytestmark = pytest.mark.slow  # trains models (alchem-train) in its fixtures

# 3 batches of 4 per epoch, a checkpoint every epoch; scheduler_patience 0 makes
# the learning rate move, so that a resume that lost the scheduler's state differs
TRAINING = {
    "num_epochs": 7,
    "batch_size": 4,
    "log_interval": 7,
    "checkpoint_interval": 1,
    "scheduler_patience": 0,
}
# a tiny model trained on energies only: each of the seven processes of the SIGKILL
# test takes seconds
MODEL = {
    "soap": {"cutoff": 4.0, "max_radial": 2, "max_angular": 1},
    "bpnn": {"num_neurons_per_layer": 8},
}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("faults-data")
    write_emt_dataset(str(folder / "train.xyz"), 15, elements=("Cu", "Ni"), seed=5)
    return str(folder / "train.xyz")


def _setup(folder, data: str, **overrides) -> None:
    if not os.path.exists(folder / "train.xyz"):
        os.symlink(data, folder / "train.xyz")
    training = {**TRAINING, **overrides.pop("training", {})}
    data = {
        "systems": {"read_from": "train.xyz"},
        "targets": {"energy": {"forces": False, "stress": False}},
    }
    write_options(
        str(folder / "o.yaml"),
        "soap_bpnn",
        training=training,
        model=MODEL,
        training_set=data,
        **overrides,
    )


def _epoch_checkpoints(run_dir: str) -> list[str]:
    if not os.path.isdir(run_dir):
        return []
    names = [n for n in os.listdir(run_dir) if n.startswith("epoch_")]
    names.sort(key=lambda n: int(n[len("epoch_") : -len(".ckpt")]))
    return [os.path.join(run_dir, n) for n in names]


def _checkpoint_being_written(run_dir: str) -> bool:
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return False
    return any(n.startswith(".tmp-") and n.endswith(".ckpt") for n in names)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restart_equals_uninterrupted(
    small_data, tmp_path
):
    """Five SIGKILLs (some while a checkpoint is being written): the latest
    checkpoint always loads, and restarting from it ends with the weights of a
    run that was never interrupted, exactly."""
    reference = tmp_path / "reference"
    reference.mkdir()
    _setup(reference, small_data)
    run_cli("alchem-train", "o.yaml", "--run-dir", "run", cwd=str(reference))
    expected = load_checkpoint(str(reference / "model.ckpt"))

    folder = tmp_path / "killed"
    folder.mkdir()
    _setup(folder, small_data)
    run_dir = str(folder / "run")
    rng = random.Random(16)
    kills, during_write = 0, 0
    while kills < 5:
        latest = _epoch_checkpoints(run_dir)
        restart = ["--restart", latest[-1]] if latest else []
        done_before = len(latest)
        command = [os.path.join(BIN, "alchem-train"), "o.yaml", "--run-dir", "run"]
        process = subprocess.Popen(
            command + restart,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # odd kills while a checkpoint is being written (the temporary file is
        # there), even ones at a random moment after at least one more epoch
        in_write = kills % 2 == 1
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:
            if in_write and _checkpoint_being_written(run_dir):
                break
            if not in_write and len(_epoch_checkpoints(run_dir)) > done_before:
                time.sleep(rng.uniform(0.0, 0.1))
                break
            if not in_write:
                time.sleep(0.005)
        assert process.poll() is None, "the run ended before it was killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
        kills += 1
        during_write += _checkpoint_being_written(run_dir)
        # whatever the moment, the latest checkpoint is whole
        latest = _epoch_checkpoints(run_dir)
        if latest:
            state = load_checkpoint(latest[-1])
            assert state["format"] == CHECKPOINT_FORMAT
            assert latest[-1].endswith(f"epoch_{state['epoch']}.ckpt")
    assert during_write >= 1, "no kill landed during a checkpoint write"

    latest = _epoch_checkpoints(run_dir)
    assert latest, "no epoch was checkpointed in five runs"
    run_cli(
        "alchem-train",
        "o.yaml",
        "--run-dir",
        "run",
        "--restart",
        latest[-1],
        cwd=str(folder),
    )
    final = load_checkpoint(str(folder / "model.ckpt"))
    assert final["epoch"] == expected["epoch"] == TRAINING["num_epochs"]
    for name in ("model_state", "best_state"):
        for key, value in expected[name].items():
            torch.testing.assert_close(final[name][key], value, rtol=0, atol=0)
    assert [line.split(",")[:4] for line in final["csv_lines"]] == [
        line.split(",")[:4] for line in expected["csv_lines"]
    ]


@pytest.fixture(scope="module")
def two_epochs(small_data, tmp_path_factory) -> str:
    """A folder with o.yaml and the checkpoint of its 2-epoch run (model.ckpt)."""
    folder = tmp_path_factory.mktemp("two-epochs")
    _setup(folder, small_data, training={"num_epochs": 2})
    run_cli("alchem-train", "o.yaml", "--run-dir", "run", cwd=str(folder))
    return str(folder)


def _restart(folder: str, options: dict, *extra: str) -> subprocess.CompletedProcess:
    with open(os.path.join(folder, "changed.yaml"), "w") as handle:
        yaml.safe_dump(options, handle)
    return run_cli(
        "alchem-train",
        "changed.yaml",
        "-o",
        "resumed.pt",
        "--run-dir",
        "resumed",
        "--restart",
        "model.ckpt",
        *extra,
        cwd=folder,
        check=False,
    )


def _options(folder: str) -> dict:
    with open(os.path.join(folder, "o.yaml")) as handle:
        return yaml.safe_load(handle)


def test_restart_with_changed_options_lists_the_differences(two_epochs):
    options = _options(two_epochs)
    options["seed"] = 4
    options["architecture"]["training"]["learning_rate"] = 0.01
    options["architecture"]["training"]["num_epochs"] = 3  # always allowed
    result = _restart(two_epochs, options)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    message = lines[0]
    assert message.startswith(
        "error: --restart model.ckpt: the options or data differ from the "
        "checkpoint's run: "
    )
    assert "architecture.training.learning_rate: 0.001 in the checkpoint, 0.01 now" in (
        message
    )
    assert "seed: 3 in the checkpoint, 4 now" in message
    # another seed splits the data differently: said too
    assert "training_set: its structures or labels differ" in message
    assert "num_epochs" not in message.split("--allow-change")[0]
    assert message.endswith(
        "--allow-change architecture.training.learning_rate,seed,training_set,"
        "validation_set"
    )
    assert not os.path.exists(os.path.join(two_epochs, "resumed"))


def test_restart_with_changed_data_is_refused(two_epochs, tmp_path):
    options = _options(two_epochs)
    other = tmp_path / "other.xyz"
    write_emt_dataset(str(other), 15, elements=("Cu", "Ni"), seed=6)
    options["training_set"]["systems"]["read_from"] = str(other)
    result = _restart(two_epochs, options)
    assert result.returncode == 2
    assert "training_set.systems.read_from: " in result.stderr
    assert "training_set: its structures or labels differ" in result.stderr


def test_allow_change_learning_rate(two_epochs):
    """A deliberate change: the new learning rate is the optimizer's from the
    first resumed epoch on; more epochs need no permission."""
    options = _options(two_epochs)
    options["architecture"]["training"]["learning_rate"] = 0.0123
    options["architecture"]["training"]["num_epochs"] = 3
    options["architecture"]["training"]["scheduler_patience"] = 10
    result = _restart(
        two_epochs, options, "--allow-change", "learning_rate,scheduler_patience"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = load_checkpoint(os.path.join(two_epochs, "resumed.ckpt"))
    assert state["epoch"] == 3
    assert float(state["csv_lines"][-1].split(",")[1]) == 0.0123
    assert state["scheduler"]["patience"] == 10


def test_allow_change_needs_restart(two_epochs):
    result = run_cli(
        "alchem-train",
        "o.yaml",
        "--allow-change",
        "learning_rate",
        cwd=two_epochs,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --allow-change learning_rate applies to --restart only (a new run or "
        "a fine-tuning takes the options file as it is)"
    )


def test_checkpoint_with_code_is_refused(tmp_path):
    """Checkpoints load with weights_only: a pickled object is refused, not run."""
    path = tmp_path / "evil.ckpt"
    torch.save({"format": CHECKPOINT_FORMAT, "x": argparse.Namespace(a=1)}, path)
    result = run_cli(
        "alchem-export", str(path), "-o", "m.pt", cwd=str(tmp_path), check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"error: {path}: the checkpoint holds an object (argparse.Namespace) other than "
        "tensors, numbers, strings, lists and dicts, which an alchem checkpoint never "
        "does; not loaded, since loading it could run code"
    )
    assert not (tmp_path / "m.pt").exists()


def test_checkpoint_saves_every_random_state(two_epochs):
    state = load_checkpoint(os.path.join(two_epochs, "model.ckpt"))
    assert set(state["rng"]) == {"torch", "shuffle", "cuda"}
    assert set(state["data_fingerprint"]) == {
        "training_set",
        "validation_set",
        "test_set",
    }


BROKEN_FILE = (
    "not a model or checkpoint (the file is truncated or not a torch archive); "
    "write it again with alchem-train or alchem-export"
)


@pytest.fixture(scope="module")
def broken(two_epochs) -> str:
    """Truncated and garbage models, checkpoints, data and options beside a run."""
    folder = two_epochs
    for name in ("model.pt", "model.ckpt", "train.xyz"):
        data = open(os.path.join(folder, name), "rb").read()
        suffix = os.path.splitext(name)[1]
        with open(os.path.join(folder, f"truncated{suffix}"), "wb") as handle:
            handle.write(data[: len(data) // 2])
    for name in ("garbage.pt", "garbage.ckpt"):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"garbage garbage")
    with open(os.path.join(folder, "garbage.xyz"), "wb") as handle:
        handle.write(b"not\x00 an xyz file\n")
    with open(os.path.join(folder, "garbage.yaml"), "w") as handle:
        handle.write("a: [1, 2\n")
    options = _options(folder)
    options["training_set"]["systems"]["read_from"] = "truncated.xyz"
    with open(os.path.join(folder, "truncated-data.yaml"), "w") as handle:
        yaml.safe_dump(options, handle)
    return folder


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("alchem-eval truncated.pt train.xyz", f"truncated.pt: {BROKEN_FILE}"),
        ("alchem-eval garbage.pt train.xyz", f"garbage.pt: {BROKEN_FILE}"),
        ("alchem-eval model.pt truncated.xyz", "truncated.xyz: cannot read"),
        ("alchem-eval model.pt garbage.xyz", "garbage.xyz: cannot read"),
        ("alchem-export truncated.ckpt -o x.pt", f"truncated.ckpt: {BROKEN_FILE}"),
        ("alchem-export garbage.ckpt -o x.pt", f"garbage.ckpt: {BROKEN_FILE}"),
        ("alchem-info truncated.pt", f"truncated.pt: {BROKEN_FILE}"),
        ("alchem-info truncated.ckpt", f"truncated.ckpt: {BROKEN_FILE}"),
        (
            "alchem-validate truncated.pt --reference ase.calculators.emt:EMT",
            f"truncated.pt: {BROKEN_FILE}",
        ),
        (
            "alchem-train o.yaml --restart truncated.ckpt",
            f"truncated.ckpt: {BROKEN_FILE}",
        ),
        (
            "alchem-train o.yaml --fine-tune garbage.ckpt",
            f"garbage.ckpt: {BROKEN_FILE}",
        ),
        (
            "alchem-train garbage.yaml",
            "garbage.yaml: not valid YAML: expected ',' or ']', but got '<stream end>' "
            "at line 2, column 1",
        ),
        ("alchem-train truncated-data.yaml", "training_set: cannot read"),
    ],
)
def test_broken_files_in_every_command(broken, command, message):
    """One line naming the file, exit status 2, no traceback, nothing written."""
    before = set(os.listdir(broken))
    result = run_cli(*command.split(), cwd=broken, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert set(os.listdir(broken)) == before
