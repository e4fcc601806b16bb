"""Public profileLists (z2jh docs, KubeSpawner docs and tests, jupyterhub-fancy-profiles) pasted
into afhub: they load unchanged into ``profiles``, serve as KubeSpawner's ``profile_list``, render
pods equal to stock KubeSpawner's (apart from afhub's ``AFHUB_*`` variables) that validate with
kubernetes-validate, and their descriptions reach the spawn page. Unknown keys inside profile
entries are warnings with a did-you-mean hint; elsewhere they stay errors.

The fixtures are in tests/profile_lists/ (SOURCE.md names each source). No Kubernetes API server
runs here: spawners are ``_mock=True`` with KUBECONFIG pointing at https://127.0.0.1:1.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from afhub.hub_config import cli
from afhub.hub_config.values import validate, warnings
from test_kubernetes_profiles import kube_config_file  # noqa: F401
from test_profile_list_dropin import KubeProfileSpawner, KubeSpawner, _start, _without_afhub
from traitlets.config import Config

HERE = Path(__file__).parent / "profile_lists"
FIXTURES = sorted(p.stem for p in HERE.glob("*.yaml"))
# free text tried for options that offer it: the first one the option's regex accepts
TEXTS = ("jupyter/scipy-notebook:2024-01-01", "pangeo/pangeo-notebook:2024.01.01")


def _load(name):
    return yaml.safe_load((HERE / f"{name}.yaml").read_text())


def test_there_are_fixtures_from_each_source():
    assert len(FIXTURES) >= 5
    assert {f.split("-")[0] for f in FIXTURES} >= {"z2jh", "kubespawner", "fancy"}


def _starts(profile_list):
    """user_options for every profile x choice combination, and each free-text option."""
    from afhub.spawner.profiles import slugify

    for p in profile_list:
        slug = p.get("slug") or slugify(p["display_name"])
        options = p.get("profile_options") or {}
        texts = {}
        for name, opt in options.items():
            u = opt.get("unlisted_choice") or {}
            if u.get("enabled"):
                regex = u.get("validation_regex")
                texts[name] = next(t for t in TEXTS if not regex or re.match(regex, t))
        listed = [
            [(name, c) for c in (opt.get("choices") or {})]
            for name, opt in options.items()
            if opt.get("choices")
        ]
        # options with only free text must always get text
        only_text = {
            f"{n}--unlisted-choice": t for n, t in texts.items() if not options[n].get("choices")
        }
        for combo in itertools.product(*listed):
            yield {"profile": slug, **dict(combo), **only_text}
        for name, text in texts.items():
            yield {"profile": slug, **only_text, f"{name}--unlisted-choice": text}


@pytest.mark.parametrize("name", FIXTURES)
def test_loads_unchanged_without_problems(name, tmp_path, capsys):
    values = {"backend": {"type": "kubernetes"}, "profiles": _load(name)}
    assert validate(values) == []
    assert warnings(values) == []
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr()
    assert "ok" in out.out and "warning" not in out.err


@pytest.mark.usefixtures("kube_config_file")
@pytest.mark.parametrize("name", FIXTURES)
async def test_renders_like_kubespawner_and_validates(name):
    profile_list = _load(name)
    starts = list(_starts(profile_list))
    assert starts
    for user_options in starts:
        stock = await _start(KubeSpawner, profile_list, user_options)
        assert stock[0] == "ok", (user_options, stock[1])
        ours = await _start(KubeProfileSpawner, profile_list, user_options)
        assert ours[0] == "ok", (user_options, ours[1])
        assert _without_afhub(ours[1]) == stock[1], user_options
        kubernetes_validate.validate(ours[1], "1.33.0", strict=True)
        # the same list pasted into afhub's `profiles` (the values file) starts the same pod
        pasted = await _start_with_profiles(profile_list, user_options)
        assert pasted[0] == "ok", (user_options, pasted[1])
        assert _without_afhub(pasted[1]) == stock[1], user_options


async def _start_with_profiles(profile_list, user_options):
    from afhub.spawner.kubernetes import KubeProfileSpawner as cls

    c = Config()
    c.ProfileSpawnerMixin.profiles = copy.deepcopy(profile_list)
    sp = cls(config=c, _mock=True)
    sp.user_options = copy.deepcopy(user_options)
    try:
        await sp._run_apply_user_options(sp.user_options)
        await sp.load_user_options()
    except Exception as e:  # noqa: BLE001 - reported by the caller's assertion
        return ("refused", e, sp)
    from test_profile_list_dropin import _pod

    return ("ok", await _pod(sp), sp)


@pytest.mark.usefixtures("kube_config_file")
async def test_descriptions_reach_the_page():
    from afhub.spawner.kubernetes import KubeProfileSpawner as cls

    profile_list = _load("fancy-profiles-demo")
    c = Config()
    c.ProfileSpawnerMixin.profiles = profile_list
    page = await cls(config=c, _mock=True).get_options_form()
    for text in (
        "For use with just CPU, no GPU",  # profile description
        "R image with RStudio, the tidyverse &amp; Geospatial tools",  # choice description
        "Specify an existing docker image",  # unlisted display_name_in_choices
        "Use a pre-existing docker image from a public docker registry",  # description_in_choices
    ):
        assert text in page, text


UNKNOWN = [
    # (profiles, path, warning?) -- a warning names the path; an error fails validation
    (
        [{"display_name": "A", "kubespawner_overide": {"cpu_limit": 1}}],
        "profiles[0].kubespawner_overide",
        "warning",
        "did you mean 'kubespawner_override'?",
    ),
    (
        [
            {
                "display_name": "A",
                "profile_options": {"img": {"dispaly_name": "I", "choices": {"a": {}}}},
            }
        ],
        "profiles[0].profile_options.img.dispaly_name",
        "warning",
        "did you mean 'display_name'?",
    ),
    (
        [
            {
                "display_name": "A",
                "profile_options": {
                    "img": {"choices": {"x": {"display_name": "X", "descripton": "typo"}}}
                },
            }
        ],
        "profiles[0].profile_options.img.choices.x.descripton",
        "warning",
        "did you mean 'description'?",
    ),
    (
        [
            {
                "display_name": "A",
                "profile_options": {
                    "img": {"unlisted_choice": {"enabled": True, "site_specific_flag": True}}
                },
            }
        ],
        "profiles[0].profile_options.img.unlisted_choice.site_specific_flag",
        "warning",
        "neither KubeSpawner",
    ),
    # a misspelt access rule is an error: ignoring it would open the profile to everyone
    (
        [{"display_name": "GPU", "alowed_groups": ["gpu"]}],
        "profiles[0].alowed_groups",
        "error",
        "did you mean 'allowed_groups'?",
    ),
    # outside profile entries unknown keys stay errors
    (
        [{"display_name": "A", "resources": {"cpus": 2}}],
        "profiles[0].resources.cpus",
        "error",
        "did you mean 'cpu'?",
    ),
]


@pytest.mark.parametrize("profiles, path, level, hint", UNKNOWN)
def test_unknown_keys(profiles, path, level, hint):
    values = {"profiles": profiles}
    errors = [p for p in validate(values) if p.path == path]
    found = [p for p in warnings(values) if p.path == path]
    if level == "warning":
        assert validate(values) == []
        assert len(found) == 1 and hint in found[0].message
    else:
        assert len(errors) == 1 and hint in errors[0].message
        assert found == []


def test_check_prints_warnings_and_passes(tmp_path, capsys):
    path = tmp_path / "values.yaml"
    path.write_text(
        "profiles:\n"
        "  - display_name: A\n"
        "    kubespawner_overide: {cpu_limit: 1}\n"
        "    profile_options:\n"
        "      image:\n"
        "        unlisted_choice: {enabled: true, validation_regex: '^jupyter/'}\n"
    )
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr()
    assert "warning: profiles[0].kubespawner_overide: unknown key" in out.err
    assert "warning: profiles[0].profile_options.image.unlisted_choice.validation_regex" in out.err
    assert "'^jupyter/.*'" in out.err
    assert "2 warnings" in out.out
