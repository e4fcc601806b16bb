"""Profile resolution (pure): what each user may see and start, for every way of starting.

Tables read as a spec: groups + user_options in, the resolved start (or the 400 field and
message) out. No hub, no mocks: ``afhub.spawner.profiles`` is pure.
"""

from __future__ import annotations

import pytest
import yaml
from afhub.hub_config import values as hub_values
from afhub.spawner.profiles import (
    Catalogue,
    OptionsError,
    image_registry_path,
    registry_allowed,
    resolve_saved,
    slugify,
)

CATALOGUE = yaml.safe_load(
    r"""
images:
  - {name: analysis, image: reg.example.org/af/analysis:2.0, archs: [x86_64, aarch64]}
  - {name: analysis-x86, image: reg.example.org/af/analysis-x86:2.0, archs: [x86_64]}
  - {name: analysis-arm, image: reg.example.org/af/analysis-arm:2.0, archs: [aarch64]}
  - {name: cuda, image: reg.example.org/af/cuda:12, archs: [x86_64], gpu: true}
  - {name: cms-img, image: reg.example.org/cms/analysis:1, allowed_groups: [cms]}
profiles:
  - display_name: CPU
    slug: cpu
    default: true
    image: analysis
    resources: {cpu: 2, memory: 4G}
  - display_name: ARM
    slug: arm
    resources: {arch: aarch64}
    profile_options:
      image:
        display_name: Image
        choices:
          analysis: {display_name: Analysis, image: analysis}
          x86only: {display_name: x86 only, image: analysis-x86}
          armonly: {display_name: ARM only, image: analysis-arm}
  - display_name: Pick architecture
    slug: multi
    profile_options:
      arch:
        display_name: Architecture
        choices:
          x86: {display_name: x86_64, resources: {arch: x86_64}}
          arm: {display_name: aarch64, resources: {arch: aarch64}}
      image:
        display_name: Image
        choices:
          analysis: {display_name: Analysis, image: analysis}
          x86only: {display_name: x86 only, image: analysis-x86}
  - display_name: GPU
    slug: gpu
    allowed_groups: [gpu-users]
    image: cuda
    profile_options:
      gpu:
        display_name: GPU
        choices:
          t4: {display_name: 1 x T4, resources: {gpu: {count: 1, type: t4}}}
          a100: {display_name: 1 x A100, allowed_groups: [a100-users], resources: {gpu: {count: 1, type: a100}}}
          a100x2: {display_name: 2 x A100, allowed_groups: [a100-users], resources: {gpu: {count: 2, type: a100}}}
  - display_name: GPU on a CPU image
    slug: gpu-wrong-image
    profile_options:
      gpu:
        display_name: GPU
        choices:
          none: {display_name: none, image: analysis}
          one: {display_name: one, image: analysis, resources: {gpu: {count: 1}}}
  - display_name: Custom image
    slug: custom
    profile_options:
      image:
        display_name: Image
        choices:
          analysis: {display_name: Analysis, image: analysis}
        unlisted_choice:
          enabled: true
          display_name: Your image
          allowed_groups: [builders]
          validation_regex: 'reg\.example\.org/[a-z0-9/_-]+:[A-Za-z0-9._-]+'
          validation_message: 'Use reg.example.org/<path>:<tag>'
          allowed_registries: [reg.example.org/users]
          image: {archs: [x86_64]}
          kubespawner_override: {image: '{value}'}
  - display_name: CMS
    slug: cms
    image: cms-img
  - display_name: Debuggable
    slug: debug
    image: analysis
    profile_options:
      debug:
        display_name: Debug mode
        allowed_groups: [admins]
        choices:
          "off": {display_name: "Off"}
          "on": {display_name: "On", kubespawner_override: {environment: {DEBUG: "1"}}}
"""
)

CAT = Catalogue(CATALOGUE["images"], CATALOGUE["profiles"])


def test_values_check_flags_the_static_mismatches_the_catalogue_holds_on_purpose():
    problems = [
        str(p) for p in hub_values.validate({**CATALOGUE, "backend": {"type": "kubernetes"}})
    ]
    assert problems == [
        "profiles[1].profile_options.image.choices.x86only.image: image 'analysis-x86' is built for x86_64, not aarch64",
        "profiles[4].profile_options.gpu.choices.one.image: image 'analysis' is not GPU-enabled (set gpu: true on it)",
    ]


@pytest.mark.parametrize(
    "groups, profiles",
    [
        ([], ["cpu", "arm", "multi", "gpu-wrong-image", "custom", "debug"]),
        (["gpu-users"], ["cpu", "arm", "multi", "gpu", "gpu-wrong-image", "custom", "debug"]),
        (["cms"], ["cpu", "arm", "multi", "gpu-wrong-image", "custom", "cms", "debug"]),
    ],
)
def test_profiles_visible_by_group(groups, profiles):
    assert [v.slug for v in CAT.visible(groups)] == profiles


def _choices(groups, profile, option):
    view = next(v for v in CAT.visible(groups) if v.slug == profile)
    opt = next((o for o in view.options if o.name == option), None)
    return None if opt is None else [c.slug for c in opt.choices]


@pytest.mark.parametrize(
    "groups, profile, option, choices",
    [
        (["gpu-users"], "gpu", "gpu", ["t4"]),
        (["gpu-users", "a100-users"], "gpu", "gpu", ["t4", "a100", "a100x2"]),
        ([], "arm", "image", ["analysis", "armonly"]),  # arch filter: x86-only image not offered
        ([], "multi", "image", ["analysis", "x86only"]),  # arch chosen at start: checked then
        ([], "debug", "debug", None),  # option hidden from non-admins
        (["admins"], "debug", "debug", ["off", "on"]),
    ],
)
def test_choices_visible_by_group_and_arch(groups, profile, option, choices):
    assert _choices(groups, profile, option) == choices


@pytest.mark.parametrize(
    "groups, unlisted",
    [([], False), (["builders"], True)],
)
def test_unlisted_choice_visible_by_group(groups, unlisted):
    view = next(v for v in CAT.visible(groups) if v.slug == "custom")
    assert (view.options[0].unlisted is not None) is unlisted


# (groups, user_options) -> (profile, image ref, arch, gpu count, gpu type, canonical options)
RESOLVES = [
    ([], {}, ("cpu", "reg.example.org/af/analysis:2.0", None, 0, None, {"profile": "cpu"})),
    (
        [],
        {"profile": ""},
        ("cpu", "reg.example.org/af/analysis:2.0", None, 0, None, {"profile": "cpu"}),
    ),
    (
        [],
        {"profile": "arm"},
        (
            "arm",
            "reg.example.org/af/analysis:2.0",
            "aarch64",
            0,
            None,
            {"profile": "arm", "image": "analysis"},
        ),
    ),
    (
        [],
        {"profile": "arm", "image": "armonly"},
        (
            "arm",
            "reg.example.org/af/analysis-arm:2.0",
            "aarch64",
            0,
            None,
            {"profile": "arm", "image": "armonly"},
        ),
    ),
    (
        [],
        {"profile": "multi", "arch": "arm", "image": "analysis"},
        (
            "multi",
            "reg.example.org/af/analysis:2.0",
            "aarch64",
            0,
            None,
            {"profile": "multi", "arch": "arm", "image": "analysis"},
        ),
    ),
    (
        [],
        {"profile": "multi", "arch": "x86", "image": "x86only"},
        (
            "multi",
            "reg.example.org/af/analysis-x86:2.0",
            "x86_64",
            0,
            None,
            {"profile": "multi", "arch": "x86", "image": "x86only"},
        ),
    ),
    (
        ["gpu-users"],
        {"profile": "gpu"},
        ("gpu", "reg.example.org/af/cuda:12", "x86_64", 1, "t4", {"profile": "gpu", "gpu": "t4"}),
    ),
    (
        ["gpu-users", "a100-users"],
        {"profile": "gpu", "gpu": "a100x2"},
        (
            "gpu",
            "reg.example.org/af/cuda:12",
            "x86_64",
            2,
            "a100",
            {"profile": "gpu", "gpu": "a100x2"},
        ),
    ),
    (
        ["builders"],
        {"profile": "custom", "image--unlisted-choice": "reg.example.org/users/ann/img:v1"},
        (
            "custom",
            "reg.example.org/users/ann/img:v1",
            "x86_64",
            0,
            None,
            {"profile": "custom", "image--unlisted-choice": "reg.example.org/users/ann/img:v1"},
        ),
    ),
    # a choice beside free text: the text wins (KubeSpawner's form posts both)
    (
        ["builders"],
        {
            "profile": "custom",
            "image": "analysis",
            "image--unlisted-choice": "reg.example.org/users/ann/img:v1",
        },
        (
            "custom",
            "reg.example.org/users/ann/img:v1",
            "x86_64",
            0,
            None,
            {"profile": "custom", "image--unlisted-choice": "reg.example.org/users/ann/img:v1"},
        ),
    ),
    (
        ["cms"],
        {"profile": "cms"},
        ("cms", "reg.example.org/cms/analysis:1", "x86_64", 0, None, {"profile": "cms"}),
    ),
    (
        ["admins"],
        {"profile": "debug", "debug": "on"},
        (
            "debug",
            "reg.example.org/af/analysis:2.0",
            None,
            0,
            None,
            {"profile": "debug", "debug": "on"},
        ),
    ),
]


@pytest.mark.parametrize("groups, user_options, expected", RESOLVES)
def test_resolve(groups, user_options, expected):
    r = CAT.resolve(groups, user_options)
    got = (
        r.profile,
        r.image_ref,
        r.arch,
        r.resources.gpu_count,
        r.resources.gpu_type,
        dict(r.options),
    )
    assert got == expected


# (groups, user_options) -> (field, message fragment)
REJECTS = [
    # forbidden or unknown profiles look the same
    ([], {"profile": "gpu"}, "profile", "'gpu' is not one of the profiles available to you"),
    ([], {"profile": "nope"}, "profile", "'nope' is not one of the profiles available to you"),
    ([], {"profile": "cms"}, "profile", "is not one of the profiles available to you"),
    # choice level
    (
        ["gpu-users"],
        {"profile": "gpu", "gpu": "a100"},
        "gpu",
        "'a100' is not one of the choices available to you (t4)",
    ),
    (
        ["gpu-users"],
        {"profile": "gpu", "gpu": "h100"},
        "gpu",
        "'h100' is not one of the choices available to you",
    ),
    # option level: hidden option is an unknown key
    ([], {"profile": "debug", "debug": "on"}, "debug", "unknown option for profile 'debug'"),
    # unknown keys
    ([], {"profile": "cpu", "image": "analysis"}, "image", "unknown option for profile 'cpu'"),
    ([], {"cpu_limit": "64"}, "cpu_limit", "unknown option"),
    # unlisted-choice level
    (
        [],
        {"profile": "custom", "image--unlisted-choice": "reg.example.org/users/x:1"},
        "image--unlisted-choice",
        "unknown option",
    ),
    (
        ["builders"],
        {"profile": "custom", "image--unlisted-choice": "evil.org/x:1"},
        "image--unlisted-choice",
        "Use reg.example.org/<path>:<tag>",
    ),
    # full match: a valid prefix followed by junk is rejected
    (
        ["builders"],
        {"profile": "custom", "image--unlisted-choice": "reg.example.org/users/x:1;rm -rf"},
        "image--unlisted-choice",
        "Use reg.example.org",
    ),
    (
        ["builders"],
        {"profile": "custom", "image--unlisted-choice": "xreg.example.org/users/x:1"},
        "image--unlisted-choice",
        "Use reg.example.org",
    ),
    # matches the regex but outside the registry allowlist
    (
        ["builders"],
        {"profile": "custom", "image--unlisted-choice": "reg.example.org/af/x:1"},
        "image--unlisted-choice",
        "allowed registry",
    ),
    # image / arch and image / GPU mismatch
    (
        [],
        {"profile": "multi", "arch": "arm", "image": "x86only"},
        "image",
        "built for x86_64, not aarch64",
    ),
    ([], {"profile": "gpu-wrong-image", "gpu": "one"}, "gpu", "not GPU-enabled"),
    # types
    ([], {"profile": 3}, "profile", "must be a string, got int"),
    ([], {"profile": ["cpu"]}, "profile", "must be a string, got list"),
    ([], {"profile": "cpu", "x": None}, "x", "must be a string"),
    ([], "cpu", "user_options", "must be a mapping"),
    ([], {"profile": "x" * 600}, "profile", "longer than 512"),
    (
        ["builders"],
        {"profile": "custom", "image--unlisted-choice": "reg.example.org/users/x:1\n"},
        "image--unlisted-choice",
        "control characters",
    ),
]


@pytest.mark.parametrize("groups, user_options, field, message", REJECTS)
def test_resolve_rejects(groups, user_options, field, message):
    with pytest.raises(OptionsError) as info:
        CAT.resolve(groups, user_options)
    assert info.value.field == field
    assert message in info.value.message


def test_no_profiles_for_user():
    cat = Catalogue([], [{"display_name": "Only CMS", "allowed_groups": ["cms"]}])
    with pytest.raises(OptionsError, match="no profiles are available to you"):
        cat.resolve(["atlas"], {})


def test_option_whose_every_choice_is_forbidden_hides_the_profile():
    cat = Catalogue(
        [],
        [
            {"display_name": "A", "slug": "a"},
            {
                "display_name": "B",
                "slug": "b",
                "profile_options": {
                    "gpu": {
                        "display_name": "G",
                        "choices": {"x": {"display_name": "X", "allowed_groups": ["g"]}},
                    }
                },
            },
        ],
    )
    assert [v.slug for v in cat.visible([])] == ["a"]
    assert [v.slug for v in cat.visible(["g"])] == ["a", "b"]


@pytest.mark.parametrize(
    "saved, groups, profile, options, stale",
    [
        (
            {"profile": "arm", "image": "armonly"},
            [],
            "arm",
            {"profile": "arm", "image": "armonly"},
            False,
        ),
        # choice removed from the catalogue / no longer allowed: keep the profile, default choice
        (
            {"profile": "gpu", "gpu": "a100"},
            ["gpu-users"],
            "gpu",
            {"profile": "gpu", "gpu": "t4"},
            True,
        ),
        # profile gone for this user (left the group): the default profile
        ({"profile": "gpu", "gpu": "t4"}, [], "cpu", {"profile": "cpu"}, True),
        ({"profile": "deleted-profile"}, [], "cpu", {"profile": "cpu"}, True),
        ({"profile": "cpu", "removed-option": "x"}, [], "cpu", {"profile": "cpu"}, True),
    ],
)
def test_stale_saved_options_fall_back_with_a_message(saved, groups, profile, options, stale):
    r = resolve_saved(CAT.visible(groups), saved)
    assert (r.profile, dict(r.options)) == (profile, options)
    assert bool(r.messages) is stale
    if stale:
        assert "no longer available" in r.messages[0]


@pytest.mark.parametrize(
    "ref, path",
    [
        ("python:3.11", "docker.io/library/python"),
        ("jupyter/scipy-notebook", "docker.io/jupyter/scipy-notebook"),
        ("ghcr.io/a/b:1.0", "ghcr.io/a/b"),
        ("localhost:5000/x/y:tag", "localhost:5000/x/y"),
        ("reg.example.org/a/b@sha256:abc", "reg.example.org/a/b"),
        ("docker://reg.example.org/a/b:1", "reg.example.org/a/b"),
    ],
)
def test_image_registry_path(ref, path):
    assert image_registry_path(ref) == path


@pytest.mark.parametrize(
    "ref, allowlist, ok",
    [
        ("reg.example.org/users/x:1", ["reg.example.org"], True),
        ("reg.example.org/users/x:1", ["reg.example.org/users"], True),
        ("reg.example.org/usersevil/x:1", ["reg.example.org/users"], False),
        ("reg.example.org.evil.com/x:1", ["reg.example.org"], False),
        ("python:3.11", ["docker.io/library"], True),
        ("python:3.11", ["reg.example.org"], False),
    ],
)
def test_registry_allowlist(ref, allowlist, ok):
    assert registry_allowed(ref, allowlist) is ok


@pytest.mark.parametrize(
    "text, slug",
    [("GPU: A100 (80 GB)", "gpu-a100-80-gb"), ("CPU session", "cpu-session"), ("***", "profile")],
)
def test_slugify(text, slug):
    assert slugify(text) == slug


Z2JH_PROFILE_LIST = yaml.safe_load(
    """
- display_name: "Default: Shared, 8 CPU cores"
  description: "Your code will run on a shared machine with CPU only."
  default: True
- display_name: "Personal, 4 CPU cores & 26GB RAM, 1 NVIDIA Tesla K80 GPU"
  slug: personal-gpu
  description: "Your code will run a personal machine with a GPU."
  kubespawner_override:
    extra_resource_limits:
      nvidia.com/gpu: "1"
- display_name: "Choose image"
  profile_options:
    image:
      display_name: Image
      choices:
        pangeo:
          display_name: Pangeo Notebook Image
          kubespawner_override:
            image: pangeo/pangeo-notebook:2023.09.11
        scipy:
          display_name: Jupyter SciPy Notebook
          default: true
          kubespawner_override:
            image: jupyter/scipy-notebook:2023-06-27
      unlisted_choice:
        enabled: True
        display_name: "Custom image"
        validation_regex: "^.+:.+$"
        validation_message: "Must be an image and tag"
        display_name_in_choices: "Other image"
        kubespawner_override:
          image: "{value}"
"""
)


def test_z2jh_profile_list_loads_unchanged():
    assert (
        hub_values.validate({"backend": {"type": "kubernetes"}, "profiles": Z2JH_PROFILE_LIST})
        == []
    )
    cat = Catalogue([], Z2JH_PROFILE_LIST)
    assert [v.slug for v in cat.visible([])] == [
        "default-shared-8-cpu-cores",
        "personal-gpu",
        "choose-image",
    ]
    r = cat.resolve([], {"profile": "choose-image"})
    assert (dict(r.options), r.image_ref) == (
        {"profile": "choose-image", "image": "scipy"},
        "jupyter/scipy-notebook:2023-06-27",
    )
    r = cat.resolve([], {"profile": "choose-image", "image--unlisted-choice": "my/img:1"})
    assert r.overrides == ({"image": "my/img:1"},)
    assert r.image_ref == "my/img:1"
    with pytest.raises(OptionsError, match="Must be an image and tag"):
        cat.resolve([], {"profile": "choose-image", "image--unlisted-choice": "noversion"})


def test_resolved_env_describes_the_server():
    r = CAT.resolve(["gpu-users", "a100-users"], {"profile": "gpu", "gpu": "a100x2"})
    assert r.env() == {
        "AFHUB_PROFILE": "gpu",
        "AFHUB_PROFILE_DISPLAY_NAME": "GPU",
        "AFHUB_IMAGE": "reg.example.org/af/cuda:12",
        "AFHUB_IMAGE_NAME": "cuda",
        "AFHUB_ARCH": "x86_64",
        "AFHUB_GPU": "2",
        "AFHUB_GPU_TYPE": "a100",
    }
    r = CAT.resolve([], {})
    assert r.env() == {
        "AFHUB_PROFILE": "cpu",
        "AFHUB_PROFILE_DISPLAY_NAME": "CPU",
        "AFHUB_IMAGE": "reg.example.org/af/analysis:2.0",
        "AFHUB_IMAGE_NAME": "analysis",
        "AFHUB_GPU": "0",
        "AFHUB_CPU": "2",
        "AFHUB_MEMORY": "4G",
    }
