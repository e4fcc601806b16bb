"""The one image x architecture x GPU rule (``profiles.misfits``) and the three places that use
it: ``afhub check`` (spawner/spawn_section.py), what the spawn page offers (visibility) and what a
start accepts (resolve). Every combination is decided the same way by all three."""

from __future__ import annotations

import itertools

import pytest
from afhub.hub_config.values import fill_defaults
from afhub.spawner import spawn_section
from afhub.spawner.profiles import Catalogue, OptionsError, misfits


@pytest.mark.parametrize(
    "archs, gpu, arch, gpu_count, expected",
    [
        (("x86_64",), False, None, 0, ()),
        (("x86_64",), False, "x86_64", 0, ()),
        (("x86_64",), False, "aarch64", 0, ("arch",)),
        (("x86_64", "aarch64"), False, "aarch64", 0, ()),
        (("x86_64",), False, None, 1, ("gpu",)),
        (("x86_64",), True, None, 2, ()),
        (("aarch64",), False, "x86_64", 1, ("arch", "gpu")),
    ],
)
def test_misfits(archs, gpu, arch, gpu_count, expected):
    assert misfits(archs, gpu, arch=arch, gpu_count=gpu_count) == expected


GRID = list(
    itertools.product(
        [("x86_64",), ("x86_64", "aarch64"), ("aarch64",)],  # image archs
        [False, True],  # image gpu
        [None, "x86_64", "aarch64"],  # requested arch
        [0, 1],  # requested GPUs
    )
)


@pytest.mark.parametrize("archs, gpu, arch, gpu_count", GRID)
def test_check_resolve_and_page_decide_alike(archs, gpu, arch, gpu_count):
    rule = misfits(archs, gpu, arch=arch, gpu_count=gpu_count)
    resources = {"gpu": {"count": gpu_count}}
    if arch:
        resources["arch"] = arch
    images = [
        {"name": "img", "image": "reg.example.org/img:1", "archs": list(archs), "gpu": gpu},
        {"name": "base", "image": "reg.example.org/base:1"},
    ]
    fixed = {"display_name": "Fixed", "slug": "fixed", "image": "img", "resources": resources}
    # the same facts as a choice of a profile whose architecture is fixed
    chooser = {
        "display_name": "Chooser",
        "slug": "chooser",
        "image": "base",
        "resources": {"arch": arch} if arch else {},
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {"img": {"display_name": "I", "image": "img"}},
            }
        },
    }
    values = fill_defaults({"images": images, "profiles": [fixed, chooser]})

    # afhub check
    paths = {p.path for p in spawn_section.check(values) if p.path.startswith("profiles[0]")}
    expected_paths = set()
    if "arch" in rule:
        expected_paths.add("profiles[0].resources.arch")
    if "gpu" in rule:
        expected_paths.add("profiles[0].resources.gpu.count")
    assert paths == expected_paths

    # a start
    catalogue = Catalogue(images, [fixed, chooser])
    if rule:
        with pytest.raises(OptionsError):
            catalogue.resolve([], {"profile": "fixed"})
    else:
        assert catalogue.resolve([], {"profile": "fixed"}).image.name == "img"

    # the page: the choice is offered unless its image does not fit the fixed architecture
    views = {v.slug: v for v in catalogue.visible([])}
    offered = (
        [c.slug for o in views["chooser"].options for c in o.choices] if "chooser" in views else []
    )
    assert ("img" in offered) == ("arch" not in misfits(archs, gpu, arch=arch))
