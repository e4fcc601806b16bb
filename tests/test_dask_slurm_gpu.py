"""Dask workers with GPUs on their own Slurm partition (issue 26): `dask.slurm.gpu_workers`
gives GPU workers a partition, account, QOS and GPU type (a `backend.slurm.gpu_types` key, the
spawner's rule); the scheduler and CPU workers keep `dask.slurm`'s. Job scripts as tables, as
in tests/test_dask_slurm.py."""

from __future__ import annotations

import pytest
from afhub.hub_config.dask_section import gateway_settings
from afhub.hub_config.gateway.slurm import slurm_job_args
from afhub.hub_config.values import load, validate
from test_dask_slurm import owner_account, submissions  # noqa: F401  (fixture, helper)

CMD = ["sbatch", "--parsable", "--partition=milano", "--account=hep", "--cpus-per-task=2"]
GPU = {"partition": "ampere", "account": "hep:gpu", "qos": "gpu", "gres_type": "nvidia_a100"}


@pytest.mark.parametrize(
    "gpus, gpu_workers, expected",
    [
        (0, GPU, CMD),  # CPU workers and schedulers: the cluster's partition
        (
            1,
            GPU,
            ["sbatch", "--gres=gpu:nvidia_a100:1", "--partition=ampere", "--account=hep:gpu",
             "--qos=gpu", "--parsable", "--cpus-per-task=2"],
        ),
        (
            2,
            {"partition": "ampere"},
            ["sbatch", "--gres=gpu:2", "--partition=ampere", "--parsable", "--account=hep",
             "--cpus-per-task=2"],
        ),
        (1, {}, ["sbatch", "--gres=gpu:1", *CMD[1:]]),  # no gpu_workers: as before
    ],
)  # fmt: skip
def test_gpu_worker_sbatch_arguments(gpus, gpu_workers, expected):
    assert slurm_job_args(CMD, cores=2, gpus=gpus, gpu_workers=gpu_workers) == expected


def _values(gpu_workers: dict, gpu_types: dict | None = None) -> dict:
    backend = {"type": "slurm"}
    if gpu_types is not None:
        backend["slurm"] = {"gpu_types": gpu_types}
    return {
        "backend": backend,
        "dask": {
            "enabled": True,
            "max_worker_gpus": 2,
            "slurm": {"partition": "milano", "gpu_workers": gpu_workers},
        },
    }


@pytest.mark.parametrize(
    "gpu_workers, gpu_types, gres_type",
    [
        ({"partition": "ampere", "type": "a100"}, {"a100": "nvidia_a100"}, "nvidia_a100"),
        ({"partition": "ampere", "type": "a100"}, None, "a100"),  # no map: as written
        ({"partition": "ampere"}, {"a100": "nvidia_a100"}, None),  # any type
    ],
)
def test_gpu_type_is_translated_like_the_spawners(gpu_workers, gpu_types, gres_type):
    class Plan:
        data_dir = "/nonexistent"

    values = load(_values(gpu_workers, gpu_types))
    assert gateway_settings(values, Plan())["gpu_workers"].get("gres_type") == gres_type


@pytest.mark.parametrize(
    "values, path, words",
    [
        (
            _values({"type": "A100"}, {"a100": "nvidia_a100"}),
            "dask.slurm.gpu_workers.type",
            "(did you mean 'a100'? types are case-sensitive)",
        ),
        (
            _values({"type": "h100"}, {"a100": "nvidia_a100"}),
            "dask.slurm.gpu_workers.type",
            "not a key of backend.slurm.gpu_types",
        ),
        (
            {**_values({"partition": "ampere"}), "dask": {
                "enabled": True, "slurm": {"gpu_workers": {"partition": "ampere"}}}},
            "dask.slurm.gpu_workers",
            "set dask.max_worker_gpus",
        ),
        (_values({"partition": "a b"}), "dask.slurm.gpu_workers.partition", ""),
    ],
)  # fmt: skip
def test_gpu_worker_settings_are_checked(values, path, words):
    problems = validate(values)
    assert any(p.path == path and words in p.message for p in problems), problems


@pytest.fixture
def gpu_settings(tmp_path):
    values = load(
        {
            "backend": {"type": "slurm", "slurm": {"gpu_types": {"a100": "nvidia_a100"}}},
            "dask": {
                "enabled": True,
                "max_worker_gpus": 2,
                "slurm": {
                    "partition": "milano",
                    "account": "hep",
                    "staging_directory": str(tmp_path) + "/{username}/dg",
                    "gpu_workers": {"partition": "ampere", "qos": "gpu", "type": "a100"},
                },
            },
        }
    )

    class Plan:
        data_dir = str(tmp_path)

    s = gateway_settings(values, Plan())
    s.update(port=1, scheduler_port=2, server_check_interval=0, accounts="system")
    return s


@pytest.mark.parametrize(
    "options, scheduler, worker",
    [
        (
            {"worker_gpus": 1},
            {"--partition=milano", "--account=hep"},
            {"--partition=ampere", "--account=hep", "--qos=gpu", "--gres=gpu:nvidia_a100:1"},
        ),
        (
            {"worker_gpus": 0},
            {"--partition=milano", "--account=hep"},
            {"--partition=milano", "--account=hep"},
        ),
    ],
)
def test_job_scripts_of_a_gpu_cluster(gpu_settings, options, scheduler, worker):
    (s_cmd, _, _), (w_cmd, _, w_script) = submissions(gpu_settings, options)
    assert scheduler <= set(s_cmd) and not any(a.startswith("--gres") for a in s_cmd)
    assert "--partition=ampere" not in s_cmd
    assert worker <= set(w_cmd)
    if not options["worker_gpus"]:
        assert not any(a.startswith(("--gres", "--qos")) for a in w_cmd)
