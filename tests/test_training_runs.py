"""alchem-train as a user runs it: interrupts, divergence, progress, summary, errors.

Every test runs the real command in a subprocess (signals, terminals and exit
statuses are those of a real process).
"""

import fcntl
import logging
import os
import pty
import select
import shlex
import signal
import struct
import subprocess
import termios
import time

import pytest
import torch
from alchem.training import load_checkpoint
from alchem.training.progress import LINE_INTERVAL, TrainingProgress
from conftest import BIN, run_cli, write_options

pytestmark = pytest.mark.slow  # trains models (alchem-train) in its fixtures

# 8 batches of 4 per epoch: a signal lands inside an epoch most of the time
TRAINING = {"num_epochs": 3, "batch_size": 4, "log_interval": 3}


@pytest.fixture(scope="module")
def uninterrupted(emt_dir, tmp_path_factory) -> dict:
    """The reference: the same options trained without interruption."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    os.symlink(os.path.join(emt_dir, "train.xyz"), folder / "train.xyz")
    write_options(str(folder / "o.yaml"), "soap_bpnn", training=TRAINING)
    run_cli("alchem-train", "o.yaml", "--run-dir", "run", cwd=str(folder))
    return load_checkpoint(str(folder / "model.ckpt"))


def _rows(path: str) -> int:
    try:
        with open(path) as handle:
            return len(handle.read().splitlines()) - 1
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "number, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_signal_saves_the_run_and_resume_is_exact(
    number, status, uninterrupted, emt_dir, tmp_path
):
    os.symlink(os.path.join(emt_dir, "train.xyz"), tmp_path / "train.xyz")
    write_options(str(tmp_path / "o.yaml"), "soap_bpnn", training=TRAINING)
    process = subprocess.Popen(
        [os.path.join(BIN, "alchem-train"), "o.yaml", "--run-dir", "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # after the first epoch: the signal lands in the second one (mid-epoch, as a
    # rule: its 8 batches take most of its time)
    deadline = time.time() + 120
    while _rows(str(tmp_path / "run" / "metrics.csv")) < 1:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(number)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == status, output
    assert f"stopped by {signal.Signals(number).name}" in output
    # the best model so far and the state of the run were written
    assert (tmp_path / "model.pt").stat().st_size > 0
    saved = load_checkpoint(str(tmp_path / "model.ckpt"))
    assert saved["best_epoch"] >= 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    command = output.split("To go on:")[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[0] == "alchem-train" and "--restart" in words
    resumed = subprocess.run(
        [os.path.join(BIN, words[0]), *words[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = load_checkpoint(str(tmp_path / "model.ckpt"))
    assert final["epoch"] == uninterrupted["epoch"] == TRAINING["num_epochs"]
    for key, value in uninterrupted["model_state"].items():
        torch.testing.assert_close(final["model_state"][key], value, rtol=0, atol=0)
    for key, value in uninterrupted["best_state"].items():
        torch.testing.assert_close(final["best_state"][key], value, rtol=0, atol=0)
    # learning rate, training and validation losses of every epoch
    assert [line.split(",")[:4] for line in final["csv_lines"]] == [
        line.split(",")[:4] for line in uninterrupted["csv_lines"]
    ]
    assert final["best_epoch"] == uninterrupted["best_epoch"]


def test_diverging_run_stops_with_a_message_and_exports_nothing(emt_dir, tmp_path):
    os.symlink(os.path.join(emt_dir, "train.xyz"), tmp_path / "train.xyz")
    training = {"num_epochs": 3, "learning_rate": 1e30}
    write_options(str(tmp_path / "o.yaml"), "soap_bpnn", training=training)
    result = run_cli(
        "alchem-train", "o.yaml", "--run-dir", "run", cwd=str(tmp_path), check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: training diverged: the training loss is nan")
    assert "at epoch 1, batch" in lines[0] and "smaller learning_rate" in lines[0]
    assert not (tmp_path / "model.pt").exists()
    assert not (tmp_path / "model.ckpt").exists()
    assert "training diverged" in (tmp_path / "run" / "train.log").read_text()


def test_input_error_leaves_no_run_folder(emt_dir, tmp_path):
    write_options(str(tmp_path / "o.yaml"), "soap_bpnn", training_set="missing.xyz")
    result = run_cli("alchem-train", "o.yaml", cwd=str(tmp_path), check=False)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert not (tmp_path / "outputs").exists()
    # a checkpoint that is not one: checked before the run folder too
    os.symlink(os.path.join(emt_dir, "train.xyz"), tmp_path / "train.xyz")
    write_options(str(tmp_path / "p.yaml"), "soap_bpnn")
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    result = run_cli(
        "alchem-train",
        "p.yaml",
        "--restart",
        "bad.ckpt",
        cwd=str(tmp_path),
        check=False,
    )
    assert result.returncode == 2 and "bad.ckpt" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_closing_summary_says_where_everything_is(trained):
    log = trained["log"]
    assert "done in " in log and "best validation loss" in log
    summary = log[log.index("done in ") :]
    for text in (
        "model.pt",
        "model.ckpt",
        os.path.join("run", "train.log"),
        os.path.join("run", "metrics.csv"),
        "alchem-eval model.pt",
        "pair_style alchemical model.pt",
        "pair_coeff * * Ni Cu Pt",
    ):
        assert text in summary, text
    # everything printed, the lines before the run folder existed too, is in train.log
    train_log = open(os.path.join(trained["dir"], "run", "train.log")).read()
    assert "training_set" in train_log and "pair_coeff * * Ni Cu Pt" in train_log


@pytest.mark.slow
def test_progress_bar_on_a_terminal_keeps_log_lines_apart(emt_dir, tmp_path):
    """In a pseudo-terminal: a bar per batch with an ETA; log lines never on it."""
    os.symlink(os.path.join(emt_dir, "train.xyz"), tmp_path / "train.xyz")
    training = {"num_epochs": 2, "batch_size": 4, "log_interval": 1}
    write_options(str(tmp_path / "o.yaml"), "soap_bpnn", training=training)
    leader, follower = pty.openpty()
    # 40 rows, 160 columns (a new pseudo-terminal has 0 x 0: no room for a bar)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        [os.path.join(BIN, "alchem-train"), "o.yaml", "--run-dir", "run"],
        cwd=tmp_path,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        assert ready, "no output for 300 s"
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    # every redraw of the bar starts with a carriage return
    pieces = [p for line in screen.split("\n") for p in line.split("\r")]
    bars = [p for p in pieces if "batches [" in p and "ETA" in p]
    assert any("epoch 1/2" in b for b in bars) and any("epoch 2/2" in b for b in bars)
    assert any("8/16 batches" in b for b in bars)  # per batch, not per epoch
    logged = [p for p in pieces if "| lr " in p]
    assert len(logged) == 2
    for piece in logged:
        assert "batches [" not in piece and piece.lstrip("\x1b[A").startswith("epoch")


def test_progress_lines_without_a_terminal(caplog):
    """A line at the end of each epoch, and within an epoch at least every 30 s."""
    now = [0.0]
    progress = TrainingProgress(1, 2, 4, terminal=False, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="alchem"):
        for batch in range(4):  # 10 s per batch: a line after 30 s, mid-epoch
            now[0] += 10.0
            progress.batch(1, batch, 1.0)
        progress.epoch(1, 1.0, 2.0, logged=False)
        for batch in range(4):  # 1 s per batch: no line within the epoch
            now[0] += 1.0
            progress.batch(2, batch, 1.0)
        progress.epoch(2, 1.0, 2.0, logged=True)  # its detailed line is enough
    lines = [record.getMessage() for record in caplog.records]
    assert LINE_INTERVAL == 30.0
    assert lines == [
        "epoch 1/2: batch 3/4, loss 1.0000e+00, elapsed 30.0 s, ETA 50.0 s",
        "epoch 1/2: loss 1.0000e+00 / 2.0000e+00 (train / validation), "
        "elapsed 40.0 s, ETA 40.0 s",
    ]
