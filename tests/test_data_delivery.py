"""The data contract (CA trust, storage endpoints, the XRootD client's settings) reaches batch
jobs, pods and Dask clusters, rendered and validated as the rest of their configuration.

- Slurm and HTCondor: the shipped examples plus a ``data`` section, configured exactly as the
  hub does; the submission is recorded at the process boundary (``test_batch_secrets``'s
  ``Recorder``): ``sbatch``'s ``--export`` names the variables and the environment carries
  them; HTCondor's ``getenv`` copies that environment (parsed by the real ``htcondor2``).
- Kubernetes: KubeSpawner's own ``get_pod_manifest()`` (``_mock=True``), validated against the
  Kubernetes schema.
- Dask: the gateway's cluster environment from the same values.
Never a token: only paths, addresses and numbers.
"""

from __future__ import annotations

import kubernetes_validate
import pytest
from afhub.hub_config import apply
from afhub.hub_config import dask_section as dask
from afhub.hub_config.values import load_file
from test_batch_secrets import TOKEN, Recorder, _ready
from test_batch_translate import ALL_GROUPS as BATCH_GROUPS
from test_batch_translate import EXAMPLES, MemoryUser
from test_kubernetes_profiles import ALL_GROUPS as KUBE_GROUPS
from test_kubernetes_profiles import kube_config_file  # noqa: F401
from traitlets.config import Config

DATA = {
    "origin": "root://xrootd.example.org:1094",
    "cache": "root://xcache.example.org:1094",
    "ca_file": "/etc/grid-security/facility-ca.pem",
    "ca_dir": "/etc/grid-security/certificates",
    "audience": "https://xrootd.example.org:1094",
}
EXPECTED = {
    "AFHUB_DATA_ORIGIN": DATA["origin"],
    "AFHUB_DATA_CACHE": DATA["cache"],
    "X509_CERT_FILE": DATA["ca_file"],
    "X509_CERT_DIR": DATA["ca_dir"],
    "AFHUB_DATA_AUDIENCE": DATA["audience"],
    "AFHUB_DATA_SAMPLES": "/public/samples",
    "AFHUB_XROOTD_SESSIONS": "per-token",
}


def values_with_data(example: str) -> dict:
    values = load_file(str(EXAMPLES / f"{example}.yaml"))
    values["data"] = dict(DATA)
    # one place says what the storage token asks for: data.audience/scopes, not tokens.*
    for key in ("audience", "scope"):
        (values.get("tokens") or {}).pop(key, None)
    return values


def batch_spawner(cls_name: str, example: str):
    from afhub.spawner import batch

    c = Config()
    apply.configure(
        c,
        values_with_data(example),
        data_dir="/nonexistent",
        environ={"AFHUB_OIDC_CLIENT_SECRET": "x"},
    )
    sp = getattr(batch, cls_name)(config=c, user=MemoryUser("alice", None, groups=BATCH_GROUPS))
    sp.req_username, sp.req_homedir, sp.req_keepvars = ("alice", "/home/alice", "PATH")
    return sp


def test_values_with_data_are_valid():
    from afhub.hub_config.values import validate

    for example in ("slurm", "htcondor", "kubernetes"):
        values = values_with_data(example)
        problems = validate(values)
        assert not problems, (example, problems)


async def test_slurm_job_exports_the_data_contract():
    rec = Recorder([("sbatch", "4711")])
    sp = _ready(batch_spawner("SlurmProfileSpawner", "slurm"), {"profile": "cpu"}, rec)
    assert await sp.submit_batch_script() == "4711"
    (submit,) = rec.find("sbatch")
    (export,) = [x for x in submit["input"].splitlines() if x.startswith("#SBATCH --export=")]
    names = set(export.removeprefix("#SBATCH --export=").split(","))
    assert set(EXPECTED) | {"XRD_DATASERVERTTL", "BEARER_TOKEN_FILE"} <= names
    for name, value in EXPECTED.items():
        assert submit["env"][name] == value, name
    assert submit["env"]["XRD_DATASERVERTTL"] == "120"  # the default renewal margin
    assert TOKEN not in submit["input"] and TOKEN not in str(submit["env"])


async def test_htcondor_job_gets_the_data_contract():
    import htcondor2

    rec = Recorder([("condor_submit", "Submitting job(s).\n1 job(s) submitted to cluster 7.")])
    sp = _ready(batch_spawner("CondorProfileSpawner", "htcondor"), {"profile": "cpu"}, rec)
    assert await sp.submit_batch_script() == "7"
    (submit,) = rec.find("condor_submit")
    assert htcondor2.Submit(submit["input"])["getenv"].lower() == "true"
    for name, value in EXPECTED.items():
        assert submit["env"][name] == value, name
    assert TOKEN not in " ".join(submit["env"].values())


async def test_pod_gets_the_data_contract(kube_config_file, tmp_path):  # noqa: F811
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from kubernetes_asyncio.client import ApiClient

    c = Config()
    apply.configure(
        c,
        values_with_data("kubernetes"),
        data_dir=str(tmp_path),
        environ={"AFHUB_OIDC_CLIENT_SECRET": "x"},
        deployment="z2jh",
    )
    sp = KubeProfileSpawner(config=c, _mock=True)
    sp.afhub_apply_resolved(sp.afhub_catalogue().resolve(KUBE_GROUPS, {"profile": "cpu"}))
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await sp.get_pod_manifest())
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    for name, value in EXPECTED.items():
        assert env[name] == value, name
    assert env["XRD_DATASERVERTTL"] == "120"
    assert "BEARER_TOKEN" not in env


@pytest.mark.parametrize("example", ["local", "slurm"])
def test_dask_clusters_get_the_data_contract_and_the_token_wait(example):
    values = values_with_data(example)
    values["dask"] = {**(values.get("dask") or {}), "enabled": True}
    env = dask.cluster_environment(values)
    for name, value in EXPECTED.items():
        assert env[name] == value, name
    assert env["AFHUB_DASK_TOKEN_WAIT"] == "30"


def test_no_data_section_no_contract_but_the_token_wait():
    values = load_file(str(EXAMPLES / "slurm.yaml"))
    values.pop("data", None)
    env = dask.cluster_environment(values)
    assert env == {"AFHUB_DASK_TOKEN_WAIT": "30"}


def test_kubernetes_dask_chart_gives_clusters_the_data_contract():
    from afhub.hub_config.dask_chart import chart_values
    from afhub.hub_config.z2jh import chart_problems

    values = values_with_data("kubernetes")
    values["dask"] = {**(values.get("dask") or {}), "enabled": True}
    chart = chart_values(values)
    assert chart_problems(chart, "dask-gateway") == []
    env = chart["gateway"]["backend"]["environment"]  # schedulers and workers
    for name, value in EXPECTED.items():
        assert env[name] == value, name
    assert env["AFHUB_DASK_TOKEN_WAIT"] == "30"
