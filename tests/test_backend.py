"""The backend protocol (spawner/backend.py): the mixin runs every start's lifecycle, a backend
only translates and applies; per-start state lives in one object.

The backend under test is a stand-in over JupyterHub's own ``Spawner`` whose ``start`` records
the call instead of starting a process: the point is the order in which the mixin calls the
hooks, not a server (tests/test_up.py and test_spawn_hub.py start real ones).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from afhub.spawner.backend import ProfileBackend, SpawnerState
from afhub.spawner.local import LocalProfileSpawner
from afhub.spawner.mixin import ProfileSpawnerMixin
from afhub.spawner.profiles import OptionsError
from jupyterhub.spawner import Spawner
from test_kubernetes_profiles import kube_config_file  # noqa: F401
from tornado import web

IMAGES = [
    {"name": "py", "image": "reg.example.org/py:1"},
    {"name": "cuda", "image": "reg.example.org/cuda:1", "gpu": True},
]
PROFILES = [
    {"display_name": "CPU", "slug": "cpu", "image": "py", "default": True},
    {
        "display_name": "GPU",
        "slug": "gpu",
        "image": "cuda",
        "resources": {"gpu": {"count": 1}},
    },
]


class Recording(Spawner):
    """JupyterHub's Spawner with a start that records instead of starting a process."""

    calls: list

    async def start(self):
        self.calls.append(("base.start", list(self.cmd)))
        return ("127.0.0.1", 8888)

    async def stop(self, now=False):
        self.calls.append(("base.stop",))

    async def poll(self):
        return None


class FakeBackend(ProfileSpawnerMixin, Recording):
    refuse_gpu = False
    fail_before_start = False

    def afhub_translate(self, resolved):
        self.calls.append(("translate", resolved.profile))
        if self.refuse_gpu and resolved.resources.gpu_count:
            raise OptionsError("profile", "no GPUs on this backend")
        return {"cmd": [f"/envs/{resolved.profile}/bin/run"], "env": resolved.env()}

    def afhub_apply_backend(self, config):
        self.calls.append(("apply", config["cmd"][0]))
        self.afhub_set("cmd", config["cmd"])
        self.afhub_set_env(config["env"])

    async def afhub_before_start(self, resolved):
        self.calls.append(("before_start", resolved.profile))
        if self.fail_before_start:
            raise RuntimeError("environment missing")


def _spawner(**kw) -> FakeBackend:
    sp = FakeBackend(
        images=IMAGES,
        profiles=PROFILES,
        user=SimpleNamespace(name="alice", groups=[]),
        cmd=["/configured/bin/run"],
    )
    sp.calls = []
    for k, v in kw.items():
        setattr(sp, k, v)
    return sp


async def _apply(sp, options):
    sp.user_options = dict(options)
    await sp._run_apply_user_options(sp.user_options)


@pytest.mark.usefixtures("kube_config_file")  # kubernetes_asyncio reads it at first import
def test_shipped_backends_follow_the_protocol_and_leave_start_to_the_mixin():
    from afhub.spawner.batch import CondorProfileSpawner, SlurmProfileSpawner
    from afhub.spawner.kubernetes import KubeProfileSpawner

    shipped = (LocalProfileSpawner, KubeProfileSpawner, SlurmProfileSpawner, CondorProfileSpawner)
    for cls in (*shipped, FakeBackend):
        assert issubclass(cls, ProfileBackend), cls
        # the mixin comes before every class that could start, stop or poll on its own: only
        # afhub's hook classes (batch: account, capacity) may stand before it
        ahead = cls.mro()[1 : cls.mro().index(ProfileSpawnerMixin)]
        for k in ahead:
            assert not {"start", "stop", "poll", "progress"} & set(vars(k)), (cls, k)
        assert cls.start is ProfileSpawnerMixin.start, cls  # hooks, not a start of their own


async def test_start_runs_translate_apply_before_start_then_base_start():
    sp = _spawner()
    await _apply(sp, {"profile": "gpu"})
    assert await sp.start() == ("127.0.0.1", 8888)
    assert sp.calls == [
        ("translate", "gpu"),
        ("apply", "/envs/gpu/bin/run"),
        ("before_start", "gpu"),
        ("base.start", ["/envs/gpu/bin/run"]),
    ]
    st = sp.afhub_state
    assert isinstance(st, SpawnerState)
    assert st.last_choice == {"profile": "gpu"}
    assert st.running["profile"] == "gpu" and st.running["gpu"]["count"] == 1
    assert st.env["AFHUB_PROFILE"] == "gpu"


async def test_start_resolves_itself_when_apply_user_options_was_replaced():
    sp = _spawner()
    sp.user_options = {"profile": "cpu"}  # the operator's own apply_user_options did nothing
    await sp.start()
    assert [c[0] for c in sp.calls] == ["translate", "apply", "before_start", "base.start"]
    assert sp.calls[-1] == ("base.start", ["/envs/cpu/bin/run"])


async def test_a_refused_translation_changes_nothing():
    sp = _spawner(refuse_gpu=True)
    await _apply(sp, {"profile": "cpu"})
    with pytest.raises(web.HTTPError) as e:
        await _apply(sp, {"profile": "gpu"})
    assert e.value.status_code == 400 and "no GPUs on this backend" in str(e.value)
    assert sp.cmd == ["/envs/cpu/bin/run"]  # the previous start's settings, untouched
    assert sp.afhub_state.resolved.profile == "cpu"


async def test_a_failed_check_starts_nothing_and_records_nothing():
    sp = _spawner(fail_before_start=True)
    await _apply(sp, {"profile": "cpu"})
    with pytest.raises(RuntimeError, match="environment missing"):
        await sp.start()
    assert "base.start" not in [c[0] for c in sp.calls]
    assert sp.afhub_state.running is None and sp.afhub_state.last_choice is None


async def test_each_start_begins_from_the_configuration():
    sp = _spawner()
    await _apply(sp, {"profile": "gpu"})
    assert sp.cmd == ["/envs/gpu/bin/run"]
    assert sp.afhub_base("cmd") == ["/configured/bin/run"]
    sp.afhub_reset()
    assert sp.cmd == ["/configured/bin/run"] and sp.afhub_state.env == {}


async def test_state_survives_a_hub_restart():
    sp = _spawner()
    await _apply(sp, {"profile": "gpu"})
    await sp.start()
    saved = sp.get_state()
    fresh = _spawner()
    fresh.load_state(saved)
    assert fresh.afhub_state.last_choice == {"profile": "gpu"}
    assert fresh.afhub_state.running == sp.afhub_state.running
    fresh.clear_state()
    assert fresh.afhub_state.running is None
    assert fresh.afhub_state.last_choice == {"profile": "gpu"}  # kept for the next start
