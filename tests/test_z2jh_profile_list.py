"""Migrating from Zero to JupyterHub: the chart's ``singleuser.profileList`` stays where it is.

``afhub z2jh VALUES --chart-values config.yaml`` prints the operator's chart values with afhub's
merged in, the profileList untouched, validated against the chart's own schema (shipped in the
package). The hub side is then simulated as far as it can run here: the chart's
jupyterhub_config.py maps ``singleuser.profileList`` to ``c.KubeSpawner.profile_list`` (a fixed
line of the chart), ``hub.extraConfig`` calls afhub's ``configure(..., deployment="z2jh")``,
and the spawner class that selects serves the list. No Kubernetes API server runs here: the
spawner is ``_mock=True`` and pods are validated with kubernetes-validate.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from afhub.hub_config import apply, cli, values
from afhub.hub_config.z2jh import chart_problems
from test_kubernetes_profiles import kube_config_file  # noqa: F401
from test_profile_list_dropin import _pod, _user
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent
PROFILE_LIST = yaml.safe_load((REPO / "tests/profile_lists/kubespawner-docs-list.yaml").read_text())
# an operator adds afhub's allowed_groups to one entry of the list they already had
PROFILE_LIST[1]["allowed_groups"] = ["gpu-users"]
EXISTING = {
    "singleuser": {
        "image": {"name": "jupyter/minimal-notebook", "tag": "2024-01-01"},
        "profileList": PROFILE_LIST,
        "storage": {"capacity": "20Gi"},
    },
    "hub": {
        "extraConfig": {"site": "c.JupyterHub.shutdown_on_logout = True\n"},
        "extraVolumes": [{"name": "site-certs", "secret": {"secretName": "certs"}}],
        "extraVolumeMounts": [{"name": "site-certs", "mountPath": "/etc/certs"}],
    },
    "proxy": {"https": {"enabled": True, "hosts": ["af.example.org"]}},
}
ENV = {"AFHUB_OIDC_CLIENT_SECRET": "not-a-real-secret"}


@pytest.fixture
def k8s_values():
    v = values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml")
    v.pop("profiles")  # the profiles live in the chart's profileList
    return v


def _z2jh(tmp_path, capsys, vals, existing):
    vpath, cpath = tmp_path / "values.yaml", tmp_path / "config.yaml"
    vpath.write_text(yaml.safe_dump(vals))
    cpath.write_text(yaml.safe_dump(existing))
    code = cli.main(["z2jh", str(vpath), "--chart-values", str(cpath)])
    out = capsys.readouterr()
    return code, (yaml.safe_load(out.out) if code == 0 else None), out.err


def test_profile_list_stays_in_the_chart_values(tmp_path, capsys, k8s_values):
    code, chart, err = _z2jh(tmp_path, capsys, k8s_values, EXISTING)
    assert code == 0, err
    assert chart["singleuser"]["profileList"] == PROFILE_LIST
    assert chart_problems(chart) == []
    # the operator's other settings are kept, afhub's added beside them
    assert chart["singleuser"]["image"] == EXISTING["singleuser"]["image"]
    assert chart["proxy"] == EXISTING["proxy"]
    assert set(chart["hub"]["extraConfig"]) == {"site", "afhub"}
    assert [v["name"] for v in chart["hub"]["extraVolumes"]] == ["site-certs", "afhub-values"]
    assert "note: singleuser.profileList: stays in the chart values" in err


@pytest.mark.usefixtures("kube_config_file")
async def test_the_hub_the_chart_runs_serves_the_profile_list(tmp_path, capsys, k8s_values):
    code, chart, _ = _z2jh(tmp_path, capsys, k8s_values, EXISTING)
    assert code == 0
    c = Config()
    # the two lines of the chart's jupyterhub_config.py that matter here
    c.KubeSpawner.profile_list = chart["singleuser"]["profileList"]
    image = chart["singleuser"]["image"]
    c.KubeSpawner.image = f"{image['name']}:{image['tag']}"
    apply.configure(c, k8s_values, deployment="z2jh", data_dir=str(tmp_path), environ=ENV)
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from jupyterhub.spawner import Spawner

    cls = _spawner_class(c.JupyterHub.spawner_class)
    assert issubclass(cls, KubeProfileSpawner) and issubclass(cls, Spawner)

    member = cls(config=c, _mock=True, user=_user(groups=["gpu-users"]))
    assert member.afhub_profile_source() == "profile_list"
    slugs = [v.slug for v in await member.afhub_load_views()]
    assert slugs == ["demo-1", "demo-2"]
    for user_options, image in (
        ({}, "jupyter/minimal-notebook:latest"),
        ({"profile": "demo-1", "image": "base"}, "jupyter/base-notebook:latest"),
        ({"profile": "demo-2"}, "jupyter/minimal-notebook:2024-01-01"),
    ):
        sp = cls(config=c, _mock=True, user=_user(groups=["gpu-users"]))
        sp.user_options = dict(user_options)
        await sp._run_apply_user_options(sp.user_options)
        await sp.load_user_options()
        pod = await _pod(sp)
        kubernetes_validate.validate(pod, "1.33.0", strict=True)
        assert pod["spec"]["containers"][0]["image"] == image, user_options

    # afhub's allowed_groups on top of the chart's list
    other = cls(config=c, _mock=True, user=_user(groups=["af-users"]))
    assert [v.slug for v in await other.afhub_load_views()] == ["demo-1"]
    other.user_options = {"profile": "demo-2"}
    with pytest.raises(Exception) as info:
        await other._run_apply_user_options(other.user_options)
    assert getattr(info.value, "status_code", None) == 400


def _spawner_class(name):
    """What JupyterHub loads for ``c.JupyterHub.spawner_class`` (an entry point name here)."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="jupyterhub.spawners") if e.name == name]
    return ep.load()


def test_values_profiles_win_and_z2jh_says_so(tmp_path, capsys, k8s_values):
    with_profiles = values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml")
    code, chart, err = _z2jh(tmp_path, capsys, with_profiles, EXISTING)
    assert code == 0
    assert chart["singleuser"]["profileList"] == PROFILE_LIST  # still not touched
    n = len(with_profiles["profiles"])
    assert f"note: singleuser.profileList: ignored: the values file's profiles ({n})" in err


@pytest.mark.usefixtures("kube_config_file")
async def test_values_profiles_win_in_the_hub_log(tmp_path, caplog):
    with_profiles = values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml")
    c = Config()
    c.KubeSpawner.profile_list = PROFILE_LIST
    apply.configure(c, with_profiles, deployment="z2jh", data_dir=str(tmp_path), environ=ENV)

    class Fresh(_spawner_class(c.JupyterHub.spawner_class)):  # logs once per class
        pass

    caplog.set_level(logging.WARNING)
    sp = Fresh(config=c, _mock=True)
    assert sp.afhub_profile_source() == "profiles"
    assert "`profile_list` is ignored because both are set" in caplog.text


def test_broken_chart_profile_list_is_reported(tmp_path, capsys, k8s_values):
    existing = copy.deepcopy(EXISTING)
    existing["singleuser"]["profileList"].append({"slug": "no-name"})
    existing["singleuser"]["profileList"][0]["kubespawner_overide"] = {}
    code, _, err = _z2jh(tmp_path, capsys, k8s_values, existing)
    assert code == 2
    assert "chart:singleuser.profileList[2].display_name: missing" in err
    assert "singleuser.profileList[0].kubespawner_overide: unknown key" in err
    assert "Traceback" not in err


def test_check_with_chart_values_says_which_is_served(tmp_path, capsys, k8s_values):
    vpath, cpath = tmp_path / "values.yaml", tmp_path / "config.yaml"
    cpath.write_text(yaml.safe_dump(EXISTING))
    vpath.write_text(yaml.safe_dump(k8s_values))
    assert cli.main(["check", str(vpath), "--chart-values", str(cpath)]) == 0
    assert "singleuser.profileList: stays in the chart values" in capsys.readouterr().err
    with_profiles = values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml")
    vpath.write_text(yaml.safe_dump(with_profiles))
    assert cli.main(["check", str(vpath), "--chart-values", str(cpath)]) == 0
    assert "singleuser.profileList: ignored: the values file's profiles" in capsys.readouterr().err
