"""Each default is defined once: the trait's.

``spawner/spawn_section.py`` ``BACKEND_TRAITS`` is the table from a ``backend.<type>`` values key
to the class and trait it sets; the builder copies only keys that are present, so an absent key
leaves the trait's own default. These tests check that what the values schema documents as the
default (``"default"``, or ``Default `x``` in the description) is that trait default, and that
the pure translations' settings default to the same values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from afhub.spawner.spawn_section import BACKEND_TRAITS, copy_present

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "hub_config" / "values.schema.json").read_text()
)

#: keys whose default the schema describes in words (it depends on the host, the scheduler or
#: the account), with the trait default that stands for it
DESCRIBED = {
    ("kubernetes", "namespace"),
    ("kubernetes", "service_account"),
    ("kubernetes", "gpu_tolerations"),
    ("slurm", "partition"),
    ("slurm", "account"),
    ("slurm", "qos"),
    ("slurm", "environment"),
    ("slurm", "batch_script"),
    ("htcondor", "environment"),
    ("htcondor", "batch_script"),
    ("htcondor", "requirements"),
    ("htcondor", "accounting_group"),
    ("htcondor", "capacity.pool"),
}

#: keys of a class afhub does not own whose afhub default differs from the library's: defined
#: once by the schema's ``default`` (filled by ``values.load``, so always copied)
SCHEMA_FILLED = {("kubernetes", "image_pull_policy")}  # KubeSpawner: None (the cluster's rule)

#: read by ApptainerSettings.from_values rather than the table; documented the same way
APPTAINER = {
    "apptainer.command": "apptainer_command",
    "apptainer.binds": "apptainer_binds",
    "apptainer.extra_args": "apptainer_extra_args",
}


def _class(name: str):
    if name == "KubeSpawner":
        from kubespawner import KubeSpawner

        return KubeSpawner
    if name == "KubeProfileSpawner":
        from afhub.spawner.kubernetes import KubeProfileSpawner

        return KubeProfileSpawner
    if name == "LocalProfileSpawner":
        from afhub.spawner.local import LocalProfileSpawner

        return LocalProfileSpawner
    from afhub.spawner import batch

    return getattr(batch, name)


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        target = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _property(kind: str, key: str) -> dict:
    node = SCHEMA["properties"]["backend"]["properties"][kind]
    for part in key.split("."):
        node = _resolve(node)["properties"][part]
    return _resolve(node)


_LITERAL = re.compile(r"Default `([^`]*)`")


def _documented(prop: dict):
    """(found, value): the schema's ``default`` or the literal in ``Default `x```."""
    m = _LITERAL.search(prop.get("description", ""))
    if m is None:
        return ("default" in prop), prop.get("default")
    text = m.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        value = yaml.safe_load(text) if text[:1] in "[{" else text
    if "default" in prop:
        assert prop["default"] == value, f"default {prop['default']!r} but described {text!r}"
    return True, value


def _rows():
    for kind, copies in BACKEND_TRAITS.items():
        for c in copies:
            yield pytest.param(kind, c, id=f"{kind}.{c.key}")


@pytest.mark.parametrize("kind, copy", list(_rows()))
def test_documented_default_is_the_trait_default(kind, copy):
    found, value = _documented(_property(kind, copy.key))
    trait = _class(copy.cls).class_traits()[copy.trait]
    if (kind, copy.key) in DESCRIBED:
        assert not found, f"{kind}.{copy.key} has a literal default now: drop it from DESCRIBED"
        return
    assert found, f"backend.{kind}.{copy.key}: no documented default (or list it in DESCRIBED)"
    if (kind, copy.key) in SCHEMA_FILLED:
        assert _property(kind, copy.key).get("default") == value
        return
    assert copy.convert(value) == trait.default(), (
        f"backend.{kind}.{copy.key}: the schema says {value!r}, "
        f"{copy.cls}.{copy.trait} defaults to {trait.default()!r}"
    )


@pytest.mark.parametrize("kind", ["slurm", "htcondor"])
@pytest.mark.parametrize("key, trait", sorted(APPTAINER.items()))
def test_apptainer_documented_default_is_the_trait_default(kind, key, trait):
    from afhub.spawner.translations.apptainer import ApptainerSettings

    found, value = _documented(_property(kind, key))
    assert found
    default = _class({"slurm": "SlurmProfileSpawner"}.get(kind, "CondorProfileSpawner"))
    assert value == default.class_traits()[trait].default()
    settings = getattr(ApptainerSettings.from_values(None), key.split(".", 1)[1])
    assert settings == (value if isinstance(value, str) else tuple(value))


def test_described_keys_exist():
    keys = {(kind, c.key) for kind, copies in BACKEND_TRAITS.items() for c in copies}
    assert DESCRIBED <= keys


def test_translation_settings_default_to_the_traits():
    """The pure settings (used by tests and the Dask jobs) start from the same defaults."""
    from afhub.spawner.batch import CondorProfileSpawner, SlurmProfileSpawner
    from afhub.spawner.translations.htcondor import CondorSettings
    from afhub.spawner.translations.slurm import SlurmSettings

    slurm, condor = SlurmProfileSpawner.class_traits(), CondorProfileSpawner.class_traits()
    assert SlurmSettings().runtime == slurm["req_runtime"].default() == "08:00:00"
    assert CondorSettings().runtime == condor["req_runtime"].default()
    assert str(CondorSettings().cpu) == condor["default_cpu"].default()
    assert CondorSettings().memory == condor["default_memory"].default()
    for name in ("partition", "account", "qos"):
        assert getattr(SlurmSettings(), name) == slurm["req_" + name].default()


class _Plan:
    def __init__(self):
        self.sets = {}

    def set(self, section, key, value):
        self.sets[(section, key)] = value


@pytest.mark.parametrize(
    "section, expected",
    [
        ({}, {}),
        ({"runtime": "1-00:00:00"}, {("SlurmProfileSpawner", "req_runtime"): "1-00:00:00"}),
        ({"capacity": {}}, {}),
        (
            {"capacity": {"timeout": 5}, "scheduler_timeout": 7},
            {
                ("SlurmProfileSpawner", "capacity_timeout"): 5.0,
                ("SlurmProfileSpawner", "scheduler_timeout"): 7.0,
            },
        ),
        ({"capacity": {"pool": "cm:9618"}}, {}),  # HTCondor only
    ],
)
def test_builder_copies_only_what_is_present(section, expected):
    plan = _Plan()
    copy_present(section, BACKEND_TRAITS["slurm"], plan)
    assert plan.sets == expected
