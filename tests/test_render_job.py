"""`afhub render --job PROFILE [--option NAME=CHOICE]` prints the job a start of that profile
submits (issue 26), built by the hub's own spawner class and configuration: an operator sees
`--gres=gpu:a100:1` before any user tries. Nothing is submitted."""

from __future__ import annotations

import pathlib

import pytest
from afhub.hub_config import cli

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "hub_config" / "examples"


@pytest.mark.parametrize(
    "example, argv, lines",
    [
        (
            "slurm",
            ["--job", "gpu-a100"],
            ["#SBATCH --partition=ampere", "#SBATCH --gres=gpu:a100:1",
             "#SBATCH --cpus-per-task=8", "#SBATCH --mem=65536M", "#SBATCH --time=12:00:00"],
        ),
        (
            "slurm",
            ["--job", "gpu-a100", "--option", "gpus=4"],  # a choice behind af-gpu-large
            ["#SBATCH --gres=gpu:a100:4", "#SBATCH --cpus-per-task=32"],
        ),
        (
            "slurm",
            ["--job", "cpu", "--option", "runtime=2d"],
            ["#SBATCH --partition=milano", "#SBATCH --time=2-00:00:00", "#SBATCH --qos=long"],
        ),
        ("htcondor", ["--job", "gpu"], ["request_gpus = 1", 'require_gpus = DeviceName == "Tesla T4"']),
    ],
)  # fmt: skip
def test_render_job_prints_the_profiles_job(example, argv, lines, capsys):
    assert cli.main(["render", *argv, str(EXAMPLES / f"{example}.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    for line in lines:
        assert line in out, out
    if example == "slurm":
        assert not any("gres" in ln for ln in out) or "gpu" in argv[1]


@pytest.mark.parametrize(
    "example, argv, words",
    [
        ("slurm", ["--job", "gpu-a10"], "--job profile: 'gpu-a10' is not one of the profiles"),
        ("slurm", ["--job", "gpu-a100", "--option", "gpus=8"], "--job gpus"),
        ("slurm", ["--job", "cpu", "--option", "size"], "--option: write NAME=CHOICE"),
        ("local", ["--job", "cpu"], "backend.type: --job shows batch jobs"),
    ],
)
def test_render_job_refuses_by_name(example, argv, words, capsys):
    assert cli.main(["render", *argv, str(EXAMPLES / f"{example}.yaml")]) == 2
    assert words in capsys.readouterr().err
