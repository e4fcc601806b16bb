"""What an operator writing a values file from the docs is told (issue 25), as tables.

Each row is a values file as an operator types it and the message ``afhub check`` (or
``afhub dask-chart``) must give: where the problem is, and what to write instead; hints that
would mislead (a "did you mean" for an unrelated key) must not appear.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from afhub.hub_config import cli, values
from afhub.hub_config.dask_chart import chart_values
from afhub.hub_config.problems import close_match
from afhub.hub_config.values import ValuesError

EXAMPLES = Path(__file__).resolve().parent.parent / "hub_config" / "examples"

SLURM = "backend:\n  type: slurm\n  slurm:\n    runtime: {}\n"


def problems_of(text: str) -> list[str]:
    try:
        data = values.parse_text(text, "v.yaml")
    except ValuesError as e:
        return [str(p) for p in values.all_problems(e)]
    return [str(p) for p in values.validate(data)]


@pytest.mark.parametrize(
    "text, expected, absent",
    [
        # YAML 1.1 reads an unquoted 12:00:00 as the base-60 number 43200
        (
            SLURM.format("12:00:00"),
            "backend.slurm.runtime: must be a string, got number 43200 (YAML reads an unquoted "
            '12:00:00 as a base-60 number); quote it: "12:00:00"',
            None,
        ),
        (
            SLURM.format("30:00"),
            "backend.slurm.runtime: must be a string, got number 1800 (YAML reads an unquoted "
            '30:00 as a base-60 number); quote it: "0:30:00"',
            None,
        ),
        (SLURM.format('"12:00:00"'), None, "backend.slurm.runtime"),
        # a number where no time is expected gets no time hint
        ("hub:\n  base_url: 8000\n", "hub.base_url: must be a string, got number 8000", "quote"),
        # did-you-mean only for close matches
        ("hub:\n  public_url: https://af.example.org\n", "hub.public_url: unknown key", "did you"),
        ("hub:\n  prot: 8000\n", "hub.prot: unknown key 'prot' (did you mean 'port'?)", None),
        # a syntax error in the second profile is reported at profiles[1], which exists
        (
            "profiles:\n  - display_name: CPU\n  - display_name: GPU\n    slug: gpu\n"
            "   bad: indentation\n",
            "profiles[1]: YAML syntax error at line 5",
            "profiles[2]",
        ),
        (
            "profiles:\n  - display_name: CPU\n  - display_name: GPU\n    resources:\n"
            "      cpu: 2\n     memory: 4G\n",
            "profiles[1]: YAML syntax error at line 6",
            "profiles[2]",
        ),
        # ... while an error in a new item or inside a flow list stays where it is
        ('allowed:\n  - a\n  - "b\n', "allowed[1]: YAML syntax error", None),
        ("a: [1\n", "a[1]: YAML syntax error at line 2", None),
    ],
)
def test_check_messages(text, expected, absent):
    got = problems_of(text)
    if expected is not None:
        assert any(line.startswith(expected) for line in got), got
    if absent is not None:
        assert not any(absent in line for line in got), got


@pytest.mark.parametrize(
    "word, candidates, expected",
    [
        ("prot", ["port", "ip", "db_url"], "port"),
        ("public_url", ["port", "ip", "db_url", "base_url", "cookie_secret"], None),
        ("max_wrokers", ["max_workers", "max_clusters"], "max_workers"),
        ("coffee", ["coffea", "ml"], "coffea"),
        ("kubespawner_overide", ["kubespawner_override"], "kubespawner_override"),
        ("Port", ["port"], "port"),
        ("url", ["db_url"], None),
        ("gpu", ["cpu", "gpu_types"], "cpu"),
    ],
)
def test_close_match(word, candidates, expected):
    assert close_match(word, candidates) == expected


# ---- afhub dask-chart -------------------------------------------------------------------


def test_dask_chart_refuses_a_slurm_file_with_cvmfs_images(capsys):
    assert cli.main(["dask-chart", str(EXAMPLES / "slurm.yaml")]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no chart values printed
    lines = out.err.splitlines()
    assert any(
        line.startswith("backend.type:") and "runs on slurm, not Kubernetes" in line
        for line in lines
    ), lines
    cvmfs = [line for line in lines if "/cvmfs/" in line]
    assert cvmfs and cvmfs[0].startswith("images[2].image: ") and "registry reference" in cvmfs[0]


K8S = {
    "auth": {"provider": "generic", "client_id": "x", "issuer": "https://idp.example.org"},
    "backend": {"type": "kubernetes"},
    "dask": {"enabled": True, "worker_memory": 4},
}


@pytest.mark.parametrize(
    "image, refused",
    [
        ("reg.example.org/af/coffea:1", False),
        ("docker://reg.example.org/af/coffea:1", False),  # Apptainer's spelling of the same
        ("/cvmfs/unpacked.cern.ch/registry.hub.docker.com/coffeateam/coffea:latest", True),
        ("/sdf/images/coffea.sif", True),
        ("oras://reg.example.org/af/coffea-sif:1", True),
    ],
)
def test_dask_chart_takes_only_container_images(tmp_path, capsys, image, refused):
    import yaml

    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump({**K8S, "images": [{"name": "coffea", "image": image}]}))
    assert cli.main(["dask-chart", str(f)]) == (2 if refused else 0)
    out = capsys.readouterr()
    if refused:
        assert out.err.startswith("images[0].image: "), out.err
    else:
        chart = yaml.safe_load(out.out)
        assert chart["gateway"]["backend"]["image"] == {
            "name": "reg.example.org/af/coffea",
            "tag": "1",
        }


@pytest.mark.parametrize("gib", [4, 2.5, 0.5])
def test_dask_chart_memory_is_exactly_what_was_asked(gib):
    """The chart hands ``gateway.backend.worker.memory`` to dask-gateway's
    ``KubeClusterConfig.worker_memory`` / ``worker_memory_limit`` (its gateway configmap), traits
    of type ``MemoryLimit`` whose units are binary (``M`` = MiB); the pod gets that many bytes.
    A Kubernetes-style ``4Gi`` would be refused there, so the check is on the bytes the gateway
    configures. (``MemoryLimit`` on a small class: importing the Kubernetes backend here would
    load kubernetes_asyncio before the KUBECONFIG fixture of other modules.)"""
    from dask_gateway_server.traitlets import MemoryLimit
    from traitlets import HasTraits

    class Worker(HasTraits):  # the two KubeClusterConfig traits the chart sets
        worker_memory = MemoryLimit()
        worker_memory_limit = MemoryLimit()

    chart = chart_values(values.load({**K8S, "dask": {**K8S["dask"], "worker_memory": gib}}))
    memory = chart["gateway"]["backend"]["worker"]["memory"]
    w = Worker(worker_memory=memory["request"], worker_memory_limit=memory["limit"])
    assert w.worker_memory == w.worker_memory_limit == int(gib * 2**30)
