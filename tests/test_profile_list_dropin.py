"""KubeProfileSpawner as a drop-in for KubeSpawner: the same ``profile_list``, the same starts.

Every row runs twice in the same test: against stock ``kubespawner.KubeSpawner`` (the control)
and against afhub's ``KubeProfileSpawner``, both configured only with
``c.KubeSpawner.profile_list``. Each spawner goes through JupyterHub's order for a start
(``_run_apply_user_options`` then ``load_user_options``) and renders its pod with KubeSpawner's
own ``get_pod_manifest()``. Expected: both accept or both refuse, and accepted starts give
identical pods apart from afhub's ``AFHUB_*`` environment variables.

Rows where afhub deliberately refuses more than KubeSpawner (its validation on top) are in a
separate table, so the control table stays a statement of KubeSpawner compatibility.

No Kubernetes API server can run here: the spawners are made with ``_mock=True`` (no hub, no
database record, KUBECONFIG pointing at https://127.0.0.1:1, never contacted); pods are
validated with ``kubernetes-validate``.
"""

from __future__ import annotations

import asyncio
import copy
import logging

import kubernetes_validate
import pytest
from test_kubernetes_profiles import kube_config_file  # noqa: F401
from tornado import web
from traitlets.config import Config

# kubernetes_asyncio reads KUBECONFIG when first imported, so KubeSpawner is imported only
# once the fixture has set it; the two classes are named by these strings in the tables.
pytestmark = pytest.mark.usefixtures("kube_config_file")
KubeSpawner, KubeProfileSpawner = "KubeSpawner", "KubeProfileSpawner"


def _class(name):
    if name == KubeSpawner:
        from kubespawner import KubeSpawner as cls
    else:
        from afhub.spawner.kubernetes import KubeProfileSpawner as cls
    return cls


class MockObject:
    """Attribute bag standing in for JupyterHub's user and group objects (as KubeSpawner's
    own ``_mock`` mode does)."""


# KubeSpawner's documented list form (profile_list help text), written out for these tests.
IMAGE_OPTION = {
    "display_name": "Image",
    "choices": {
        "base": {
            "display_name": "jupyter/base-notebook:latest",
            "kubespawner_override": {"image": "jupyter/base-notebook:latest"},
        },
        "minimal": {
            "display_name": "jupyter/minimal-notebook:latest",
            "default": True,
            "kubespawner_override": {"image": "jupyter/minimal-notebook:latest"},
        },
    },
    "unlisted_choice": {
        "enabled": True,
        "display_name": "Other image",
        "display_name_in_choices": "Enter image manually",
        "validation_regex": "^jupyter/.+:.+$",
        "validation_message": "Must be an image matching ^jupyter/<name>:<tag>$",
        "kubespawner_override": {
            "image": "{value}",
            # str.format_map semantics: keys are formatted too, other placeholders stay for
            # KubeSpawner's own expansion of the environment
            "environment": {"CHOSEN_IMAGE": "{value}", "FOR_{username}": "{value} {username}"},
        },
    },
}
LIST = [
    {
        "display_name": "Demo - profile_list entry 1",
        "description": "Demo description for profile_list entry 1.",
        "slug": "demo-1",
        "default": True,
        "profile_options": {"image": IMAGE_OPTION},
        "kubespawner_override": {"default_url": "/lab", "environment": {"PROFILE": "demo-1"}},
    },
    {
        "display_name": "Demo - profile_list entry 2",
        "slug": "demo-2",
        "kubespawner_override": {"extra_resource_guarantees": {"nvidia.com/gpu": "1"}},
    },
    {
        # no slug: derived from display_name ("Small / big: memory" -> "small-big-memory")
        "display_name": "Small / big: memory",
        "profile_options": {
            "memory": {
                "display_name": "Memory",
                # no default flagged: the first choice is the default
                "choices": {
                    "small": {
                        "display_name": "2 GB",
                        "kubespawner_override": {"mem_limit": "2G", "mem_guarantee": "1G"},
                    },
                    "big": {
                        "display_name": "8 GB",
                        "kubespawner_override": {
                            "mem_limit": "8G",
                            "environment": {"PROFILE": None, "BIG": "yes"},
                        },
                    },
                },
            },
            "tag": {
                "display_name": "Image tag (free text only)",
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Tag",
                    # KubeSpawner uses re.match: anchored at the start only
                    "validation_regex": "[0-9]{4}",
                    "kubespawner_override": {"image": "quay.io/jupyter/scipy-notebook:{value}"},
                },
            },
        },
        "kubespawner_override": {"environment": {"PROFILE": "small-big"}},
    },
    {
        "display_name": "Callable overrides",
        "slug": "callables",
        "kubespawner_override": {
            "extra_labels": lambda spawner: {"owner": spawner.user.name.split("@")[0]},
            "cpu_limit": lambda spawner: 2.0 if spawner.user.name.startswith("mock") else 1.0,
        },
    },
]
# The same profiles as a dict keyed by slug (newer KubeSpawner): taken in sorted key order,
# so "a-first" becomes the default when nothing is flagged.
DICT = {
    "z-last": {"display_name": "Z last", "kubespawner_override": {"cpu_limit": 3.0}},
    "a-first": {
        "display_name": "A first",
        "slug": "not-the-key",
        "kubespawner_override": {"cpu_limit": 1.0},
    },
}

# (name, profile_list, user_options, accepted)
CONTROL = [
    ("defaults", LIST, {}, True),
    ("empty profile means default", LIST, {"profile": ""}, True),
    ("profile only", LIST, {"profile": "demo-2"}, True),
    ("listed choice", LIST, {"profile": "demo-1", "image": "base"}, True),
    (
        "unlisted choice",
        LIST,
        {"profile": "demo-1", "image--unlisted-choice": "jupyter/scipy-notebook:2024-01-01"},
        True,
    ),
    (
        "KubeSpawner form: choice sentinel beside the text, text wins",
        LIST,
        {
            "profile": "demo-1",
            "image": "unlisted-choice",
            "image--unlisted-choice": "jupyter/r-notebook:latest",
        },
        True,
    ),
    (
        "any choice beside the text, text wins",
        LIST,
        {"profile": "demo-1", "image": "base", "image--unlisted-choice": "jupyter/r-notebook:x"},
        True,
    ),
    ("option without profile applies to the default", LIST, {"image": "base"}, True),
    (
        "slug derived from display_name",
        LIST,
        {"profile": "small-big-memory", "tag--unlisted-choice": "2024"},
        True,
    ),
    (
        "second choice; None in an override removes a key",
        LIST,
        {"profile": "small-big-memory", "memory": "big", "tag--unlisted-choice": "2025-02-01"},
        True,
    ),
    ("callables in overrides", LIST, {"profile": "callables"}, True),
    ("dict form: default is first in key order", DICT, {}, True),
    ("dict form: slug from the entry, not the key", DICT, {"profile": "not-the-key"}, True),
    ("dict form: second entry", DICT, {"profile": "z-last"}, True),
    # refused by both
    ("unknown profile", LIST, {"profile": "gpu-huge"}, False),
    ("dict key is not a slug", DICT, {"profile": "a-first"}, False),
    ("unknown choice", LIST, {"profile": "demo-1", "image": "huge"}, False),
    ("sentinel without text", LIST, {"profile": "demo-1", "image": "unlisted-choice"}, False),
    (
        "regex refuses",
        LIST,
        {"profile": "demo-1", "image--unlisted-choice": "quay.io/evil/miner:1"},
        False,
    ),
    (
        "free text for an option without unlisted_choice",
        LIST,
        {
            "profile": "small-big-memory",
            "memory--unlisted-choice": "64G",
            "tag--unlisted-choice": "2024",
        },
        False,
    ),
    ("free-text-only option left empty", LIST, {"profile": "small-big-memory"}, False),
    (
        "prefix match only: regex must match at the start",
        LIST,
        {"profile": "small-big-memory", "tag--unlisted-choice": "v2024"},
        False,
    ),
]


def _user(name="mock@name", groups=()):
    user = MockObject()
    user.name, user.id, user.url = name, "mock_id", "mock_url"
    user.groups = [_group(g) for g in groups]
    return user


def _group(name):
    g = MockObject()
    g.name = name
    return g


def _spawner(cls, profile_list, user=None, **config):
    c = Config()
    c.KubeSpawner.profile_list = profile_list
    for key, value in config.items():
        setattr(c.KubeSpawner, key, value)
    kwargs = {"config": c, "_mock": True}
    if user is not None:
        kwargs["user"] = user
    return _class(cls)(**kwargs)


async def _start(cls, profile_list, user_options, user=None, **config):
    """JupyterHub's order for one start, up to the pod: ('ok', pod, spawner) or ('refused', e)."""
    sp = _spawner(cls, profile_list, user=user, **config)
    sp.user_options = copy.deepcopy(user_options)
    try:
        await sp._run_apply_user_options(sp.user_options)
        await sp.load_user_options()
    except (web.HTTPError, ValueError, KeyError, StopIteration) as e:
        return ("refused", e, sp)
    return ("ok", await _pod(sp), sp)


async def _pod(sp):
    from kubernetes_asyncio.client import ApiClient

    pod = await sp.get_pod_manifest()
    async with ApiClient() as api:
        return api.sanitize_for_serialization(pod)


def _without_afhub(pod):
    """The pod minus afhub's additions (AFHUB_* environment variables)."""
    pod = copy.deepcopy(pod)
    for container in pod["spec"]["containers"]:
        container["env"] = [
            e for e in container.get("env", []) if not e["name"].startswith("AFHUB_")
        ]
    return pod


def _env(pod):
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}


@pytest.mark.parametrize(
    "profile_list, user_options, accepted", [r[1:] for r in CONTROL], ids=[r[0] for r in CONTROL]
)
async def test_same_as_kubespawner(profile_list, user_options, accepted):
    stock = await _start(KubeSpawner, profile_list, user_options)
    ours = await _start(KubeProfileSpawner, profile_list, user_options)
    assert stock[0] == ("ok" if accepted else "refused"), stock[1]
    assert ours[0] == stock[0], ours[1]
    if not accepted:
        # afhub refuses with a 400 naming the field, never a bare KeyError
        assert isinstance(ours[1], web.HTTPError) and ours[1].status_code == 400
        return
    assert _without_afhub(ours[1]) == stock[1]
    kubernetes_validate.validate(ours[1], "1.33.0", strict=True)
    # afhub's canonical user_options (the saved choice) replay to the same pod on KubeSpawner
    replay = await _start(KubeSpawner, profile_list, ours[2].user_options)
    assert replay[0] == "ok" and replay[1] == stock[1]


async def test_rows_show_what_they_claim():
    """Spot checks that the control rows exercise the behaviour named in their ids."""
    ok = await _start(KubeProfileSpawner, LIST, {})
    c = ok[1]["spec"]["containers"][0]
    assert c["image"] == "jupyter/minimal-notebook:latest"
    assert ok[2].default_url == "/lab" and _env(ok[1])["PROFILE"] == "demo-1"
    text = await _start(
        KubeProfileSpawner, LIST, {"profile": "demo-1", "image--unlisted-choice": "jupyter/x:1"}
    )
    assert text[1]["spec"]["containers"][0]["image"] == "jupyter/x:1"
    assert _env(text[1])["CHOSEN_IMAGE"] == "jupyter/x:1"
    big = await _start(
        KubeProfileSpawner,
        LIST,
        {"profile": "small-big-memory", "memory": "big", "tag--unlisted-choice": "2025"},
    )
    env = _env(big[1])
    assert "PROFILE" not in env and env["BIG"] == "yes"
    assert big[1]["spec"]["containers"][0]["image"] == "quay.io/jupyter/scipy-notebook:2025"
    assert big[2].mem_limit == 8 * 1024**3  # JupyterHub ByteSpecification: G is 2**30
    calls = await _start(KubeProfileSpawner, LIST, {"profile": "callables"})
    assert calls[1]["metadata"]["labels"]["owner"] == "mock"
    assert calls[2].cpu_limit == 2.0
    first = await _start(KubeProfileSpawner, DICT, {})
    assert first[2].cpu_limit == 1.0


async def test_no_state_leaks_between_starts():
    """KubeSpawner merges dict overrides into its configured dicts in place; afhub does not,
    so a second start on the same spawner object starts from the operator's configuration."""
    sp = _spawner(KubeProfileSpawner, LIST, environment={"SITE": "af"})
    sp.user_options = {
        "profile": "small-big-memory",
        "memory": "big",
        "tag--unlisted-choice": "2024",
    }
    await sp._run_apply_user_options(sp.user_options)
    await sp.load_user_options()
    assert sp.environment["BIG"] == "yes"
    sp.clear_state()
    sp.user_options = {"profile": "demo-2"}
    await sp._run_apply_user_options(sp.user_options)
    await sp.load_user_options()
    assert "BIG" not in sp.environment and sp.environment["SITE"] == "af"


PANGEO = [
    {
        "display_name": "Pangeo",
        "slug": "pangeo",
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "stable": {
                        "display_name": "pangeo/base-notebook:2024",
                        "kubespawner_override": {"image": "pangeo/base-notebook:2024"},
                    }
                },
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Other image",
                    "validation_regex": "^pangeo/.+:.+$",
                    "kubespawner_override": {"image": "{value}"},
                },
            }
        },
    }
]


@pytest.mark.parametrize("cls", [KubeSpawner, KubeProfileSpawner])
async def test_load_user_options_again_takes_the_new_options(cls):
    """Code written for KubeSpawner sets ``user_options`` on the same spawner again and calls
    ``load_user_options()`` again: the second choice is the one that runs."""
    sp = _spawner(cls, PANGEO)
    sp.user_options = {"profile": "pangeo", "image--unlisted-choice": "pangeo/test:latest"}
    await sp.load_user_options()
    assert sp.image == "pangeo/test:latest"
    sp.user_options = {"profile": "pangeo", "image--unlisted-choice": "pangeo/test:1.2.3"}
    await sp.load_user_options()
    assert sp.image == "pangeo/test:1.2.3"
    assert (await _pod(sp))["spec"]["containers"][0]["image"] == "pangeo/test:1.2.3"
    sp.user_options = {"profile": "pangeo", "image": "stable"}
    await sp.load_user_options()
    assert sp.image == "pangeo/base-notebook:2024"


async def test_hub_order_second_start_with_another_unlisted_image():
    """JupyterHub's order twice on one spawner (start, stop, start with other options)."""
    sp = _spawner(KubeProfileSpawner, PANGEO)
    images = []
    for image in ("pangeo/test:latest", "pangeo/test:1.2.3"):
        sp.user_options = {"profile": "pangeo", "image--unlisted-choice": image}
        await sp._run_apply_user_options(sp.user_options)
        await sp.load_user_options()
        images.append((await _pod(sp))["spec"]["containers"][0]["image"])
        sp.afhub_started()
        sp.clear_state()  # what the hub does when the server stops
    assert images == ["pangeo/test:latest", "pangeo/test:1.2.3"]


@pytest.mark.parametrize("cls", [KubeSpawner, KubeProfileSpawner])
async def test_unlisted_choice_failing_its_regex_is_a_value_error(cls):
    """KubeSpawner raises ValueError; afhub's refusal is the same exception to such code and
    stays an HTTP 400 naming the field for JupyterHub."""
    sp = _spawner(cls, PANGEO)
    sp.user_options = {"profile": "pangeo", "image--unlisted-choice": "quay.io/evil/miner:1"}
    with pytest.raises(ValueError) as info:
        await sp._run_apply_user_options(sp.user_options)
        await sp.load_user_options()
    if cls == KubeProfileSpawner:
        assert isinstance(info.value, web.HTTPError) and info.value.status_code == 400
        assert info.value.jupyterhub_message.startswith("image--unlisted-choice:")


# ---- afhub's validation on top: rows where afhub refuses and KubeSpawner does not ---------

ON_TOP = [
    # (name, profile_list, user_options, groups, field in the 400)
    ("unknown key from the REST API", LIST, {"profile": "demo-2", "garbage": "x"}, (), "garbage"),
    (
        "free text not matching the regex, without a profile key",
        LIST,
        {"image--unlisted-choice": "quay.io/evil/miner:1"},
        (),
        "image--unlisted-choice",
    ),
    (
        "control characters in free text",
        LIST,
        {"profile": "demo-1", "image--unlisted-choice": "jupyter/x:1\n"},
        (),
        "image--unlisted-choice",
    ),
    (
        "profile limited by allowed_groups",
        [{"display_name": "CPU"}, {"display_name": "GPU", "allowed_groups": ["gpu"]}],
        {"profile": "gpu"},
        ("cms",),
        "profile",
    ),
    (
        "choice limited by allowed_groups",
        [
            {
                "display_name": "CPU",
                "profile_options": {
                    "size": {
                        "display_name": "Size",
                        "choices": {
                            "s": {"display_name": "S"},
                            "xl": {"display_name": "XL", "allowed_groups": ["big"]},
                        },
                    }
                },
            }
        ],
        {"profile": "cpu", "size": "xl"},
        ("cms",),
        "size",
    ),
]


@pytest.mark.parametrize(
    "profile_list, user_options, groups, field", [r[1:] for r in ON_TOP], ids=[r[0] for r in ON_TOP]
)
async def test_afhub_refuses_more(profile_list, user_options, groups, field):
    stock = await _start(KubeSpawner, profile_list, user_options, user=_user(groups=groups))
    ours = await _start(KubeProfileSpawner, profile_list, user_options, user=_user(groups=groups))
    assert stock[0] == "ok"
    assert ours[0] == "refused"
    assert ours[1].status_code == 400
    assert ours[1].jupyterhub_message.startswith(f"{field}:")


async def test_allowed_groups_members_start_like_kubespawner():
    pl = ON_TOP[3][1]
    stock = await _start(KubeSpawner, pl, {"profile": "gpu"}, user=_user(groups=["gpu"]))
    ours = await _start(KubeProfileSpawner, pl, {"profile": "gpu"}, user=_user(groups=["gpu"]))
    assert ours[0] == stock[0] == "ok"
    assert _without_afhub(ours[1]) == stock[1]


# ---- callables -----------------------------------------------------------------------------


def _by_groups(spawner):
    """A profile_list computed from the user's groups (the documented per-user use)."""
    groups = {g.name for g in spawner.user.groups}
    out = [{"display_name": "CPU", "slug": "cpu", "kubespawner_override": {"cpu_limit": 1.0}}]
    if "gpu" in groups:
        out.append(
            {
                "display_name": "GPU",
                "slug": "gpu",
                "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "1"}},
            }
        )
    return out


def counting(fn):
    """An async callable profile_list and the list of its calls (a function, since traitlets
    deep-copies config values and functions survive that as themselves)."""
    calls = []

    async def profile_list(spawner):
        calls.append(spawner.user.name)
        await asyncio.sleep(0)
        return fn(spawner)

    return profile_list, calls


CALLABLE_ROWS = [
    # (groups, user_options, accepted)
    (["gpu"], {"profile": "gpu"}, True),
    (["gpu"], {}, True),
    ([], {"profile": "cpu"}, True),
    ([], {"profile": "gpu"}, False),
]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("groups, user_options, accepted", CALLABLE_ROWS)
async def test_callable_profile_list_depends_on_groups(kind, groups, user_options, accepted):
    results = []
    for cls in (KubeSpawner, KubeProfileSpawner):
        pl, calls = (_by_groups, None) if kind == "sync" else counting(_by_groups)
        r = await _start(cls, pl, user_options, user=_user(groups=groups))
        results.append(r)
        if kind == "async":
            assert len(calls) == 1, f"{cls} called the profile_list {len(calls)} times"
    stock, ours = results
    assert stock[0] == ("ok" if accepted else "refused")
    assert ours[0] == stock[0]
    if accepted:
        assert _without_afhub(ours[1]) == stock[1]


async def test_callable_form_shows_the_users_profiles():
    pl, calls = counting(_by_groups)
    sp = _spawner(KubeProfileSpawner, pl, user=_user(groups=["gpu"]))
    page = await sp.get_options_form()
    assert 'value="gpu"' in page and 'value="cpu"' in page
    sp = _spawner(KubeProfileSpawner, pl, user=_user(groups=[]))
    page = await sp.get_options_form()
    assert 'value="gpu"' not in page and 'value="cpu"' in page
    assert len(calls) == 2


async def test_callable_returning_nothing_starts_defaults_like_kubespawner():
    stock = await _start(KubeSpawner, lambda sp: [], {})
    ours = await _start(KubeProfileSpawner, lambda sp: [], {})
    assert stock[0] == ours[0] == "ok"
    assert _without_afhub(ours[1]) == stock[1]


async def test_broken_profile_list_is_a_clear_error(caplog):
    caplog.set_level(logging.ERROR)
    ours = await _start(KubeProfileSpawner, [{"slug": "no-name"}], {})
    assert ours[0] == "refused" and ours[1].status_code == 500
    assert "misconfigured" in ours[1].jupyterhub_message
    assert "profile_list[0].display_name" in caplog.text


async def test_async_override_callable_is_refused_clearly(caplog):
    async def later(spawner):
        return 2.0

    caplog.set_level(logging.ERROR)
    pl = [{"display_name": "A", "kubespawner_override": {"cpu_limit": later}}]
    ours = await _start(KubeProfileSpawner, pl, {})
    assert ours[0] == "refused" and ours[1].status_code == 500
    assert "misconfigured" in ours[1].jupyterhub_message
    assert "kubespawner_override.cpu_limit" in caplog.text


# ---- which source wins ---------------------------------------------------------------------


async def test_profiles_win_over_profile_list_and_the_log_says_so(caplog):
    caplog.set_level(logging.WARNING)
    c = Config()
    c.KubeSpawner.profile_list = LIST
    c.ProfileSpawnerMixin.profiles = [{"display_name": "Values file", "slug": "values"}]

    class Both(_class(KubeProfileSpawner)):  # a fresh class: the warning is logged once per class
        pass

    sp = Both(config=c, _mock=True)
    assert sp.afhub_profile_source() == "profiles"
    sp.user_options = {}
    await sp._run_apply_user_options({})
    assert sp.user_options == {"profile": "values"}
    assert "`profile_list` is ignored because both are set" in caplog.text
    sp.afhub_profile_source()
    assert caplog.text.count("is ignored because both are set") == 1


# ---- the form: KubeSpawner's field names mean the same ------------------------------------

FORMS = [
    {"profile": ["demo-1"], "profile-option-demo-1--image": ["base"]},
    {
        "profile": ["demo-1"],
        "profile-option-demo-1--image": ["unlisted-choice"],
        "profile-option-demo-1--image--unlisted-choice": ["jupyter/datascience-notebook:2024"],
    },
    {
        "profile": ["small-big-memory"],
        "profile-option-small-big-memory--memory": ["big"],
        "profile-option-small-big-memory--tag--unlisted-choice": ["2024"],
        # fields of another profile on the same page are ignored
        "profile-option-demo-1--image": ["base"],
    },
]


@pytest.mark.parametrize("formdata", FORMS)
async def test_kubespawner_form_posts_start_the_same_pod(formdata):
    pods = []
    for cls in (KubeSpawner, KubeProfileSpawner):
        sp = _spawner(cls, LIST)
        user_options = sp.options_from_form(formdata)
        pods.append(await _start(cls, LIST, user_options))
    stock, ours = pods
    assert stock[0] == ours[0] == "ok"
    assert _without_afhub(ours[1]) == stock[1]


async def test_kubespawner_form_template_is_reported_not_silently_ignored(caplog):
    caplog.set_level(logging.WARNING)

    class Fresh(_class(KubeProfileSpawner)):  # logged once per class
        pass

    c = Config()
    c.KubeSpawner.profile_list = LIST
    c.KubeSpawner.profile_form_template = "<p>fancy</p>"
    sp = Fresh(config=c, _mock=True)
    page = await sp.get_options_form()
    assert "fancy" not in page and 'value="demo-1"' in page
    assert "KubeSpawner.profile_form_template is set but not used" in caplog.text


@pytest.mark.parametrize(
    "override, text, expected",
    [
        ({"image": "{value}"}, "jupyter/x:1", {"image": "jupyter/x:1"}),
        ({"labels": {"tag-{value}": "{value}"}}, "v1", {"labels": {"tag-v1": "v1"}}),
        ({"args": ["--x={value}", "{username}"]}, "a", {"args": ["--x=a", "{username}"]}),
        ({"env": "{{literal}} {value}"}, "a", {"env": "{literal} a"}),
        # the user's text is inserted, never itself formatted
        ({"image": "{value}"}, "{username}{0}", {"image": "{username}{0}"}),
    ],
)
def test_unlisted_value_substitution_matches_kubespawner(override, text, expected):
    from afhub.spawner.profiles import _format_value
    from kubespawner.utils import recursive_format

    assert _format_value(override, text) == expected
    assert {k: recursive_format(v, value=text) for k, v in override.items()} == expected


# ---- afhub's image catalogue on top of a profile_list ---------------------------------------

CATALOGUE = [
    {"name": "coffea", "image": "registry.example.org/coffea:1", "archs": ["x86_64", "aarch64"]},
    {"name": "cuda", "image": "registry.example.org/cuda:1", "gpu": True},
]
CATALOGUE_LIST = [
    {"display_name": "ARM", "slug": "arm", "image": "coffea", "resources": {"arch": "aarch64"}},
    {
        "display_name": "GPU",
        "slug": "gpu",
        "image": "cuda",
        "resources": {"gpu": {"count": 1}},
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "cuda": {"display_name": "CUDA", "image": "cuda"},
                    "coffea": {"display_name": "Coffea (no GPU)", "image": "coffea"},
                },
            }
        },
    },
]


@pytest.mark.parametrize(
    "user_options, outcome",
    [
        ({"profile": "arm"}, ("registry.example.org/coffea:1", "arm64", None)),
        ({"profile": "gpu"}, ("registry.example.org/cuda:1", "amd64", "1")),
        ({"profile": "gpu", "image": "coffea"}, "image: image 'coffea' is not GPU-enabled"),
    ],
)
async def test_catalogue_applies_to_profile_list_entries(user_options, outcome):
    c = Config()
    c.KubeSpawner.profile_list = CATALOGUE_LIST
    c.ProfileSpawnerMixin.images = CATALOGUE
    sp = _class(KubeProfileSpawner)(config=c, _mock=True)
    assert sp.afhub_profile_source() == "profile_list"
    sp.user_options = dict(user_options)
    try:
        await sp._run_apply_user_options(sp.user_options)
    except web.HTTPError as e:
        assert e.status_code == 400 and isinstance(outcome, str)
        assert e.jupyterhub_message.startswith(outcome)
        return
    pod = await _pod(sp)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    container = pod["spec"]["containers"][0]
    limits = container["resources"].get("limits", {})
    got = (
        container["image"],
        pod["spec"]["nodeSelector"].get("kubernetes.io/arch"),
        limits.get("nvidia.com/gpu"),
    )
    assert got == outcome
