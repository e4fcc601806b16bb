"""Spawn-form parsing, the page model and backend translations (pure, table-driven)."""

from __future__ import annotations

import re

import pytest
from afhub.hub_config.apply import Plan
from afhub.hub_config.values import fill_defaults, validate
from afhub.spawner import form
from afhub.spawner.options import options_from_form, query_to_prefill
from afhub.spawner.profiles import Catalogue, OptionsError
from afhub.spawner.spawn_section import build
from afhub.spawner.translations.local import local_config
from afhub.spawner.translations.units import parse_bytes

IMAGES = [
    {
        "name": "ana",
        "image": "reg.example.org/ana:1",
        "archs": ["x86_64", "aarch64"],
        "local_prefix": "/opt/envs/ana",
    },
    {"name": "cuda", "image": "reg.example.org/cuda:1", "gpu": True},
]
PROFILES = [
    {
        "display_name": "CPU <fast>",
        "slug": "cpu",
        "image": "ana",
        "resources": {"cpu": 2, "memory": "4G"},
    },
    {
        "display_name": "GPU",
        "slug": "gpu",
        "allowed_groups": ["gpu-users"],
        "image": "cuda",
        "kubespawner_override": {"environment": {"TOKEN": "s3cr3t-override"}},
        "profile_options": {
            "gpu": {
                "display_name": "GPU type",
                "choices": {
                    "t4": {"display_name": "T4", "resources": {"gpu": {"count": 1, "type": "t4"}}},
                    "a100": {
                        "display_name": "A100",
                        "resources": {"gpu": {"count": 1, "type": "a100"}},
                    },
                },
            },
            "img": {
                "display_name": "Image",
                "choices": {"cuda": {"display_name": "CUDA", "image": "cuda"}},
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Custom",
                    "image": {"archs": ["x86_64"], "gpu": True},
                },
            },
        },
    },
    {"display_name": "ARM", "slug": "arm", "image": "ana", "resources": {"arch": "aarch64"}},
]
CAT = Catalogue(IMAGES, PROFILES)


@pytest.mark.parametrize(
    "formdata, user_options",
    [
        ({"profile": ["cpu"]}, {"profile": "cpu"}),
        (
            {
                "profile": ["gpu"],
                "profile-option-gpu--gpu": ["a100"],
                "profile-option-cpu--x": ["ignored"],
            },
            {"profile": "gpu", "gpu": "a100"},
        ),
        # free text only counts when "Other..." is selected
        (
            {
                "profile": ["gpu"],
                "profile-option-gpu--img": ["cuda"],
                "profile-option-gpu--img--unlisted-choice": ["x/y:1"],
            },
            {"profile": "gpu", "img": "cuda"},
        ),
        (
            {
                "profile": ["gpu"],
                "profile-option-gpu--img": ["--unlisted-choice"],
                "profile-option-gpu--img--unlisted-choice": ["x/y:1"],
            },
            {"profile": "gpu", "img--unlisted-choice": "x/y:1"},
        ),
        # empty text field with "Other..." selected: nothing, so validation asks for a value
        (
            {"profile": ["gpu"], "profile-option-gpu--img": ["--unlisted-choice"]},
            {"profile": "gpu"},
        ),
        # fields that are not spawn-form fields are kept, so validation rejects them by name
        (
            {"profile": ["cpu"], "cpu_limit": ["64"], "_xsrf": ["t"]},
            {"profile": "cpu", "cpu_limit": "64"},
        ),
        ({}, {}),
    ],
)
def test_options_from_form(formdata, user_options):
    assert options_from_form(formdata) == user_options


@pytest.mark.parametrize(
    "query, prefill",
    [
        ({"profile": ["gpu"], "gpu": ["a100"]}, {"profile": "gpu", "gpu": "a100"}),
        (
            {"opt-profile": ["gpu"], "opt-gpu": ["a100"], "next": ["/x"]},
            {"profile": "gpu", "gpu": "a100"},
        ),
        ({"profile": ["gpu"], "profile-option-gpu--gpu": ["t4"]}, {"profile": "gpu", "gpu": "t4"}),
    ],
)
def test_query_to_prefill(query, prefill):
    assert query_to_prefill(query) == prefill


def _page(groups, **kw):
    return form.render(form.form_model(CAT.visible(groups), **kw))


def test_page_escapes_and_holds_no_override_values():
    page = _page(["gpu-users"])
    assert "CPU &lt;fast&gt;" in page and "CPU <fast>" not in page
    assert "s3cr3t-override" not in page and "TOKEN" not in page
    assert "reg.example.org" not in page and "/opt/envs/ana" not in page


@pytest.mark.parametrize(
    "groups, selected, checked, selected_choice",
    [
        ([], {}, "cpu", None),
        (["gpu-users"], {"profile": "gpu", "gpu": "a100"}, "gpu", "a100"),
        ([], {"profile": "gpu"}, "cpu", None),  # a forbidden preselection falls back to the default
    ],
)
def test_page_preselects(groups, selected, checked, selected_choice):
    page = _page(groups, selected=selected)
    assert f'value="{checked}" checked' in page
    if selected_choice:
        assert re.search(f'<option value="{selected_choice}"[^>]* selected>', page)


def test_page_error_summary_links_to_the_field():
    err = OptionsError("gpu", "'h100' is not one of the choices available to you (t4, a100)")
    page = _page(["gpu-users"], selected={"profile": "gpu", "gpu": "h100"}, errors=[err])
    assert '<div id="afhub-error-summary"' in page
    assert '<a href="#afhub-profile-option-gpu--gpu">GPU type: ' in page
    assert 'aria-invalid="true" aria-describedby="afhub-profile-option-gpu--gpu-error"' in page


def test_page_marks_image_archs_for_arch_filtering():
    page = _page(["gpu-users"])
    assert re.search('<option value="cuda" data-archs="x86_64"[^>]* selected>CUDA</option>', page)
    assert 'data-profile="arm" data-arch="aarch64" data-archs="x86_64 aarch64"' in page


@pytest.mark.parametrize(
    "groups, user_options, prefix, env",
    [
        (
            [],
            {},
            "/opt/envs/ana",
            {
                "AFHUB_PROFILE": "cpu",
                "AFHUB_ARCH": "x86_64",
                "AFHUB_CPU": "2",
                "AFHUB_MEMORY": "4G",
            },
        ),
        (
            ["gpu-users"],
            {"profile": "gpu", "gpu": "a100"},
            "/default",
            {"AFHUB_GPU": "1", "AFHUB_GPU_TYPE": "a100"},
        ),
    ],
)
def test_local_backend_translation(groups, user_options, prefix, env):
    cfg = local_config(
        CAT.resolve(groups, user_options), default_prefix="/default", machine_arch="x86_64"
    )
    assert cfg.prefix == prefix
    assert cfg.cmd == [prefix + "/bin/jupyterhub-singleuser"]
    assert env.items() <= cfg.env.items()
    assert "CUDA_VISIBLE_DEVICES" not in cfg.env  # no GPU is attached locally


@pytest.mark.parametrize(
    "user_options, machine, field, message",
    [
        (
            {"profile": "arm"},
            "x86_64",
            "profile",
            "this facility's machine is x86_64; aarch64 needs another backend",
        ),
        (
            {"profile": "gpu", "img--unlisted-choice": "x/y:1"},
            "x86_64",
            "img--unlisted-choice",
            "custom images need a container backend",
        ),
    ],
)
def test_local_backend_refuses_what_cannot_run_here(user_options, machine, field, message):
    with pytest.raises(OptionsError) as info:
        local_config(
            CAT.resolve(["gpu-users"], user_options), default_prefix="/d", machine_arch=machine
        )
    assert (info.value.field, message in info.value.message) == (field, True)


def test_local_backend_runs_arm_profiles_on_arm_machines():
    cfg = local_config(
        CAT.resolve([], {"profile": "arm"}), default_prefix="/d", machine_arch="arm64"
    )
    assert cfg.env["AFHUB_ARCH"] == "aarch64"


@pytest.mark.parametrize(
    "text, value",
    [
        ("8G", 8 * 10**9),
        ("16Gi", 16 * 2**30),
        ("1.5Gi", 1610612736),
        ("512M", 512 * 10**6),
        ("1024", 1024),
    ],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_build_sets_profiles_on_the_shared_base_class():
    values = {
        "images": IMAGES,
        "profiles": PROFILES,
        "backend": {"type": "local", "local": {"default_prefix": "/d"}},
    }
    plan = Plan(data_dir="/data")
    build(fill_defaults(values), plan)  # as apply.build calls it: defaults filled
    assert plan.sections["ProfileSpawnerMixin"] == {"images": IMAGES, "profiles": PROFILES}
    # home_root is left to the spawner: /home/afhub with per-user accounts, <data dir>/home without
    assert plan.sections["LocalProfileSpawner"] == {
        "accounts": "auto",
        "account_prefix": "afhub-",
        "delete_accounts": False,
        "default_prefix": "/d",
    }


@pytest.mark.parametrize(
    "profiles, problem",
    [
        (
            [{"display_name": "A", "image": "anna"}],
            "profiles[0].image: unknown image 'anna' (did you mean 'ana'?); images: ana, cuda",
        ),
        (
            [{"display_name": "A"}, {"display_name": "A"}],
            "profiles[1].slug: duplicate slug 'a' (also profiles[0])",
        ),
        (
            [{"display_name": "A", "default": True}, {"display_name": "B", "default": True}],
            "profiles[1].default: only one profile may be the default (also profiles[0])",
        ),
        (
            [{"display_name": "A", "profile_options": {"x": {"display_name": "X"}}}],
            "profiles[0].profile_options.x: needs choices or an enabled unlisted_choice",
        ),
        (
            [
                {
                    "display_name": "A",
                    "profile_options": {
                        "profile": {"display_name": "X", "choices": {"a": {"display_name": "a"}}}
                    },
                }
            ],
            "profiles[0].profile_options.profile: option name 'profile' is reserved",
        ),
        (
            [
                {
                    "display_name": "A",
                    "profile_options": {
                        "x": {
                            "display_name": "X",
                            "unlisted_choice": {"enabled": True, "validation_regex": "("},
                        }
                    },
                }
            ],
            "profiles[0].profile_options.x.unlisted_choice.validation_regex: not a valid regular expression: missing ), unterminated subpattern at position 0",
        ),
        (
            [{"display_name": "A", "image": "cuda", "resources": {"arch": "aarch64"}}],
            "profiles[0].resources.arch: image 'cuda' is built for x86_64, not aarch64",
        ),
        (
            [{"display_name": "A", "image": "ana", "resources": {"gpu": {"count": 1}}}],
            "profiles[0].resources.gpu.count: image 'ana' is not GPU-enabled (set gpu: true on it)",
        ),
    ],
)
def test_values_check_names_the_key(profiles, problem):
    assert [str(p) for p in validate({"images": IMAGES, "profiles": profiles})] == [problem]


@pytest.mark.parametrize(
    "resources, image, summary",
    [
        (
            {"cpu": 2, "memory": "4G"},
            "ana",
            "ana · 2 CPU cores · 4 GB memory · runs on x86_64 or aarch64",
        ),
        ({"cpu": 1, "memory": "16Gi"}, None, "1 CPU core · 16 GiB memory"),
        ({"cpu": 0.5, "memory": "512Mi"}, None, "0.5 CPU cores · 512 MiB memory"),
        ({"memory": "4000000000"}, None, "4 GB memory"),
        ({"gpu": {"count": 1, "type": "a100", "memory": "80G"}}, None, "1 GPU (a100, 80 GB)"),
        ({"gpu": {"count": 2, "type": "t4", "memory": "16G"}}, None, "2 GPUs (t4, 16 GB each)"),
        ({"gpu": {"count": 1}}, None, "1 GPU (any model)"),
        ({"gpu": {"count": 0, "type": "a100"}}, None, ""),
        ({"arch": "aarch64"}, "ana", "ana · runs on aarch64"),
        ({}, "cuda", "cuda · runs on x86_64"),
    ],
)
def test_hardware_summary_speaks_one_set_of_units(resources, image, summary):
    assert form.hardware_summary(resources, CAT.images.get(image)) == summary


def _card(page: str, slug: str) -> str:
    start = page.index(f'data-profile="{slug}"')
    end = page.find('<div class="afhub-profile', start)
    return page[start : end if end > 0 else None]


def test_card_shows_one_summary_of_the_default_choices():
    card = _card(_page(["gpu-users"]), "gpu")
    assert card.count('class="afhub-hw"') == 1
    # the default image choice and the first (default) GPU choice, in the same words
    assert ">cuda · 1 GPU (t4) · runs on x86_64</p>" in card


def test_choices_carry_the_parts_they_change():
    card = _card(_page(["gpu-users"]), "gpu")
    assert '<option value="a100" data-part-gpu="1 GPU (a100)">' in card
    assert re.search(
        r'<option value="--unlisted-choice"[^>]* data-part-image="your image" '
        r'data-part-arch="runs on x86_64"[ >]',
        card,
    )


def test_fixed_architecture_is_not_replaced_by_an_image_list():
    card = _card(_page([]), "arm")
    assert ">ana · runs on aarch64</p>" in card
