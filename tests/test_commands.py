"""The commands as a user meets them: --version, `alchem`, --help, alchem-info, and
alchem-eval / alchem-export given the wrong file, device or keys."""

import importlib.metadata
import os
import re
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
from alchem.cli.main import COMMANDS as SUBCOMMANDS
from alchem.data.emt import write_emt_dataset
from alchem.errors import ConfigError
from alchem.model_files import (
    CHECKPOINT,
    EXPORTED,
    file_kind,
    require_checkpoint,
    require_exported_model,
)
from alchem.training import model_from_checkpoint
from conftest import run_cli

COMMANDS = [
    "alchem",
    "alchem-train",
    "alchem-eval",
    "alchem-export",
    "alchem-info",
    "alchem-lammps",
    "alchem-validate",
    "alchem-uncertainty",
]
# the session's small SOAP-BPNN of conftest.trained (Cu, Ni, Pt)
SOAP_BPNN = pytest.mark.parametrize("trained", ["soap_bpnn"], indirect=True)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command failed with exit status 2 and one line on stderr."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("error: ")
    return message


def test_every_command_prints_its_version(tmp_path):
    version = importlib.metadata.version("alchem")
    for command in COMMANDS:
        result = run_cli(command, "--version", cwd=str(tmp_path))
        assert result.stdout.strip() == f"{command} {version}"
    result = subprocess.run(
        [sys.executable, "-m", "alchem", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"alchem {version}"


def test_python_m_alchem_lists_the_commands_and_runs_them(tmp_path):
    listing = subprocess.run(
        [sys.executable, "-m", "alchem"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("train", "eval", "export", "info", "lammps", "uncertainty"):
        line = next(
            line for line in listing.splitlines() if line.startswith(f"  {name} ")
        )
        assert len(line.split()) > 2  # the command and what it does
    assert run_cli("alchem", cwd=str(tmp_path)).stdout == listing
    # alchem COMMAND is alchem-COMMAND
    result = run_cli("alchem", "info", "--help", cwd=str(tmp_path))
    assert result.stdout.startswith("usage: alchem-info")
    message = one_line_error(run_cli("alchem", "trian", cwd=str(tmp_path), check=False))
    assert message == (
        "error: unknown command 'trian'; did you mean 'train'? "
        f"(commands: {', '.join(SUBCOMMANDS)})"
    )


def help_entries(text: str) -> dict[str, str]:
    """Each argument of an argparse --help text and its description."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith("  "):
            current = None
            continue
        head = re.match(r"^  (\S.*?)(?:\s{2,}(\S.*))?$", line)
        if head and not line.startswith("    "):
            current = head.group(1)
            entries[current] = head.group(2) or ""
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_help_describes_every_option(command, tmp_path):
    text = run_cli(command, "--help", cwd=str(tmp_path)).stdout
    entries = help_entries(text)
    assert len(entries) >= 3, text
    for argument, description in entries.items():
        assert description.strip(), f"{command}: {argument} has no description"
    for argument, description in entries.items():
        if argument.startswith("-o") or re.match(r"--\w+-key", argument):
            assert "default:" in description, (argument, description)


@pytest.mark.slow
@SOAP_BPNN
def test_alchem_info_describes_model_and_checkpoint(trained):
    model, _ = model_from_checkpoint(trained["checkpoint"])
    n_parameters = sum(p.numel() for p in model.parameters())
    for path, kind in (
        (trained["model"], "exported model"),
        (trained["checkpoint"], "checkpoint"),
    ):
        lines = run_cli("alchem-info", path, cwd=trained["dir"]).stdout.splitlines()
        fields = {
            line.split()[0]: line.split(None, 1)[1] for line in lines if line[0] != " "
        }
        assert kind in fields["file"]
        assert fields["architecture"] == "soap_bpnn"
        assert fields["elements"] == "Ni Cu Pt"
        assert fields["cutoff"] == "4.5 Å"
        assert fields["parameters"] == f"{n_parameters:,}"
        assert fields["dtype"] == "float64"
        # 40 structures, validation_set: 0.2
        assert any(
            re.match(
                r"  training +32 structures \(Ni Cu Pt\): energy 32, forces 32, stress 32",
                line,
            )
            for line in lines
        ), lines
        assert any(line.startswith("  validation   8 structures") for line in lines)
        assert re.match(
            r"\d+ \(validation loss \d\.\d+e[-+]\d+\)", fields["best"].split(None, 1)[1]
        )
        assert any("energy RMSE" in line and "forces RMSE" in line for line in lines)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("eval")
    write_emt_dataset(str(folder / "au.xyz"), 1, elements=("Cu", "Au"), seed=3)
    write_emt_dataset(str(folder / "cuni.xyz"), 3, elements=("Cu", "Ni"), seed=4)
    text = open(folder / "cuni.xyz").read()
    (folder / "truncated.xyz").write_text(text[: len(text) // 2])
    (folder / "garbage.pt").write_text("not a model\n")
    frames = ase.io.read(folder / "cuni.xyz", ":")
    for atoms in frames:  # DFT-style names instead of energy/forces/stress
        atoms.info["dft_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.info["dft_stress"] = atoms.get_stress()
        atoms.calc = None
    ase.io.write(folder / "dft.xyz", frames, format="extxyz")
    return str(folder)


EVAL_MISTAKES = [
    (
        "checkpoint",
        ["{ckpt}", "cuni.xyz"],
        "{ckpt}: this is a checkpoint; export it with `alchem-export {ckpt} -o model.pt`",
    ),
    (
        "truncated model",
        ["truncated.pt", "cuni.xyz"],
        "truncated.pt: not a model or checkpoint (the file is truncated",
    ),
    (
        "unknown element",
        ["{model}", "au.xyz"],
        "au.xyz, structure 0: element Au is not in this model (Cu Ni Pt)",
    ),
    ("truncated data", ["{model}", "truncated.xyz"], "truncated.xyz: cannot read ("),
]


@SOAP_BPNN
@pytest.mark.parametrize(
    "name, arguments, expected", EVAL_MISTAKES, ids=[m[0] for m in EVAL_MISTAKES]
)
@pytest.mark.slow  # needs the trained models
def test_alchem_eval_mistakes_are_one_line(
    trained, data_dir, name, arguments, expected
):
    with open(trained["model"], "rb") as source:
        (open(os.path.join(data_dir, "truncated.pt"), "wb")).write(
            source.read()[:20000]
        )
    names = {"model": trained["model"], "ckpt": trained["checkpoint"]}
    arguments = [a.format(**names) for a in arguments]
    result = run_cli(
        "alchem-eval", *arguments, "-o", "p.xyz", cwd=data_dir, check=False
    )
    assert expected.format(**names) in one_line_error(result)
    assert not os.path.exists(os.path.join(data_dir, "p.xyz"))


@SOAP_BPNN
@pytest.mark.slow  # needs the trained models
def test_model_files_are_told_apart(trained, data_dir):
    """What alchem-eval, alchem-export, alchem-info and --restart are told about the
    file they were given (in process: the same function serves them all)."""
    assert file_kind(trained["model"]) == EXPORTED
    assert file_kind(trained["checkpoint"]) == CHECKPOINT
    for name in ("garbage.pt", "truncated.xyz"):
        with pytest.raises(ConfigError, match="not a model or checkpoint"):
            file_kind(os.path.join(data_dir, name))
    with pytest.raises(ConfigError, match="this is a checkpoint; export it"):
        require_exported_model(trained["checkpoint"])
    with pytest.raises(ConfigError, match="this is an exported model, not a checkp"):
        require_checkpoint(trained["model"])


@SOAP_BPNN
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.slow  # needs the trained models
def test_alchem_eval_cuda_without_a_gpu(trained, data_dir):
    result = run_cli(
        "alchem-eval",
        trained["model"],
        "cuni.xyz",
        "--device",
        "cuda",
        cwd=data_dir,
        check=False,
    )
    assert one_line_error(result) == (
        "error: --device cuda: this torch sees no CUDA device; use --device cpu or "
        "leave --device out"
    )


@pytest.mark.slow
@SOAP_BPNN
def test_alchem_eval_names_missing_keys_and_keeps_references(
    trained, data_dir, tmp_path
):
    result = run_cli(
        "alchem-eval",
        trained["model"],
        os.path.join(data_dir, "dft.xyz"),
        cwd=str(tmp_path),
        check=False,
    )
    found = "keys found: REF_forces, dft_energy, dft_stress"
    for name in ("energy", "forces", "stress"):
        assert f"no structure has the {name} key '{name}'" in result.stderr
        assert f"name it with --{name}-key" in result.stderr
    assert found in result.stderr and "RMSE" not in result.stdout
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nothing to compare" in result.stderr

    result = run_cli(
        "alchem-eval",
        trained["model"],
        os.path.join(data_dir, "dft.xyz"),
        "--energy-key",
        "dft_energy",
        "--forces-key",
        "REF_forces",
        "--stress-key",
        "dft_stress",
        "-o",
        "pred.xyz",
        cwd=str(tmp_path),
    )
    assert "warning" not in result.stderr
    for name in ("energy", "forces", "stress"):
        assert re.search(rf"^{name} +RMSE.*\(3 structures\)$", result.stdout, re.M), (
            result.stdout
        )
    reference = ase.io.read(os.path.join(data_dir, "cuni.xyz"), ":")
    predicted = ase.io.read(tmp_path / "pred.xyz", ":")
    for ref, pred in zip(reference, predicted, strict=True):
        assert pred.info["ref_energy"] == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(pred.arrays["ref_forces"], ref.get_forces())
        np.testing.assert_allclose(
            np.asarray(pred.info["ref_stress"]).reshape(3, 3),
            ref.get_stress(voigt=False),
        )
        assert "dft_energy" not in pred.info and "REF_forces" not in pred.arrays
        # the file's energy/forces/stress are the model's
        assert pred.get_potential_energy() != pytest.approx(ref.get_potential_energy())
        assert pred.get_forces().shape == ref.get_forces().shape


@pytest.mark.slow
@SOAP_BPNN
def test_model_pt_is_not_a_checkpoint(trained, tmp_path):
    result = run_cli(
        "alchem-export", trained["model"], "-o", "x.pt", cwd=str(tmp_path), check=False
    )
    assert one_line_error(result) == (
        f"error: {trained['model']}: this is an exported model, not a checkpoint; "
        "give the .ckpt that alchem-train wrote beside it (default: model.ckpt)"
    )
    options = os.path.join(trained["dir"], "options.yaml")
    result = run_cli(
        "alchem-train",
        options,
        "--restart",
        trained["model"],
        "--run-dir",
        "r",
        cwd=str(tmp_path),
        check=False,
    )
    assert "exported model" in one_line_error(result)
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.slow  # needs the trained models
def test_output_into_a_missing_folder_is_one_line(trained, tmp_path):
    """-o into a folder that does not exist: said before any work, exit 2."""
    for command in (
        ["alchem-export", trained["checkpoint"], "-o", "nodir/m.pt"],
        ["alchem-train", os.path.join(trained["dir"], "options.yaml"), "-o", "no/m.pt"],
    ):
        result = run_cli(*command, cwd=str(tmp_path), check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: -o {command[3]}: the folder {tmp_path / command[3].split('/')[0]} "
            "does not exist"
        ]
    assert not (tmp_path / "outputs").exists()
