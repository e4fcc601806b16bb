"""The values-section registry (``hub_config/sections.py``), the Plan's additive operations
(``hub_config/plan.py``) and schema defaults filled once by ``values.load``.

Index: registry refusals (unlisted module, key owned twice, no owner, missing hooks); a fake
section listed in SECTIONS reaching ``afhub check``, ``render`` and ``docs``; the Plan refusing
duplicates; builders independent of section order; defaults; import-cycle freedom.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from afhub.hub_config import apply, cli, problems, sections, values
from afhub.hub_config.plan import Plan, PlanConflict


@pytest.fixture
def registry(monkeypatch):
    """Change SECTIONS for one test; caches are cleared before and after."""

    def use(names):
        monkeypatch.setattr(sections, "SECTIONS", tuple(names))
        sections.clear_caches()

    yield use
    monkeypatch.undo()
    sections.clear_caches()


# ------------------------------------------------------------------ the registry refuses


def test_registry_refuses_an_unlisted_section_module(registry):
    registry(m for m in sections.SECTIONS if m != "afhub.hub_config.kernels_section")
    with pytest.raises(sections.RegistryError) as e:
        values.validate({})
    msg = str(e.value)
    assert "afhub.hub_config.kernels_section looks like a values section but is not listed" in msg
    assert "values key 'kernels' has no section owner" in msg


def test_registry_finds_an_owner_whatever_its_file_name(tmp_path, monkeypatch):
    pkg = tmp_path / "afhub_fake_component"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "telescope_rules.py").write_text(
        "KEYS = ('telescope',)\ndef check(values):\n    return []\ndef build(values, plan):\n    pass\n"
    )
    (pkg / "helpers.py").write_text("KEYS = ('x',)  # a KEYS alone is no owner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sections.owner_modules(("afhub_fake_component",)) == [
        "afhub_fake_component.sub.telescope_rules"
    ]


def test_every_shipped_owner_is_listed_and_none_is_called_hub_values():
    assert sorted(sections.owner_modules()) == sorted(sections.SECTIONS)
    assert not [m for m in sections.SECTIONS if m.endswith(".hub_values")]


def test_registry_refuses_a_key_owned_twice(registry, monkeypatch):
    import fake_section

    monkeypatch.setattr(fake_section, "KEYS", ("telescope", "kernels"))
    registry([*sections.SECTIONS, "fake_section"])
    with pytest.raises(sections.RegistryError, match="'kernels' is owned by afhub.hub_config.kernels_section"):
        sections.owners()


def test_registry_refuses_an_owner_without_build(registry, monkeypatch):
    import fake_section

    monkeypatch.delattr(fake_section, "build")
    registry([*sections.SECTIONS, "fake_section"])
    with pytest.raises(sections.RegistryError, match="section module fake_section has no build"):
        sections.owners()


def test_registry_refuses_a_schema_clash_and_a_key_without_schema(registry, monkeypatch):
    import fake_section

    monkeypatch.setattr(fake_section, "KEYS", ("telescope", "observatory"))
    registry([*sections.SECTIONS, "fake_section"])
    with pytest.raises(sections.RegistryError, match="'observatory' .* has no schema"):
        sections.owners()


def test_shipped_registry_owns_every_schema_key():
    owned = [k for m in sections.owners() for k in m.KEYS]
    assert sorted(owned) == sorted(values.file_schema()["properties"])
    assert len(owned) == len(set(owned))


# ------------------------------------------------------------------ one place to touch


def _run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_listed_fake_section_reaches_check_render_and_docs(registry, tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"telescope": {"site": "La Palma"}}))
    moon = tmp_path / "moon.yaml"
    moon.write_text(yaml.safe_dump({"telescope": {"site": "moon", "aperture": 0}}))

    # not listed: an unknown key, not rendered, not documented
    code, _, err = _run(["check", str(good)], capsys)
    assert code == 2 and "telescope: unknown key 'telescope'" in err
    assert "telescope" not in _run(["docs"], capsys)[1]

    registry([*sections.SECTIONS, "fake_section"])  # the one place to touch
    code, out, err = _run(["check", str(good)], capsys)
    assert (code, err) == (0, "") and "ok" in out
    code, _, err = _run(["check", str(moon)], capsys)
    assert code == 2
    assert "telescope.aperture: must be >= 1, got 0" in err  # its schema
    code, _, err = _run(["check", str(tmp_path / "moon.yaml")], capsys)
    moon.write_text(yaml.safe_dump({"telescope": {"site": "moon"}}))
    code, _, err = _run(["check", str(moon)], capsys)
    assert code == 2 and "telescope.site: no telescopes on the moon yet" in err  # its check

    code, out, err = _run(["render", str(good), "--data-dir", str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert "c.Telescope.aperture = 2\n" in out  # its build, with its schema default filled
    assert "'TELESCOPE_SITE': 'La Palma'" in out

    code, doc, _ = _run(["docs"], capsys)
    assert "## `telescope`" in doc
    assert "| `telescope.aperture` | integer | Aperture in metres. Default `2`. |" in doc


# ------------------------------------------------------------------ the plan


def test_plan_refuses_duplicates():
    plan = Plan()
    plan.owner = "a"
    plan.set("JupyterHub", "port", 8000)
    plan.add_env("X", "1")
    plan.add_arg("--flag")
    plan.add_service({"name": "svc", "command": ["true"]})
    plan.add_role({"name": "svc-role", "scopes": ["read:users"], "services": ["svc"]})
    plan.grant("user", "custom:x!user")
    plan.add_custom_scope("custom:x", "X")
    plan.add_server_token_scope("custom:x!user")
    plan.owner = "b"
    refusals = [
        (
            lambda: plan.set("JupyterHub", "port", 8001),
            "JupyterHub.port is written by both a and b",
        ),
        (lambda: plan.add_env("X", "2"), "Spawner.environment['X'] is written by both a and b"),
        (lambda: plan.add_arg("--flag"), "Spawner.args '--flag' is written by both a and b"),
        (lambda: plan.add_service({"name": "svc"}), "service 'svc' is written by both a and b"),
        (lambda: plan.add_role({"name": "svc-role"}), "role 'svc-role' is written by both"),
        (lambda: plan.grant("user", "custom:x!user"), "scope 'custom:x!user' of role 'user'"),
        (lambda: plan.add_custom_scope("custom:x", "Y"), "custom scope 'custom:x' is written"),
        (lambda: plan.add_server_token_scope("custom:x!user"), "server token scope"),
        (
            lambda: plan.set("Spawner", "environment", {}),
            "Spawner.environment is added to by other owners; b cannot set it",
        ),
        (lambda: plan.grant("nobody", "s"), "grants 's' to unknown role 'nobody'"),
    ]
    for attempt, message in refusals:
        with pytest.raises(PlanConflict, match=message.replace("[", r"\[").replace("]", r"\]")):
            attempt()
    # nothing refused was written
    assert plan.get("Spawner", "environment") == {"X": "1"}
    assert plan.get("JupyterHub", "port") == 8000
    assert plan.get("JupyterHub", "load_roles") == [
        {"name": "svc-role", "scopes": ["read:users"], "services": ["svc"]},
        {
            "name": "user",
            "description": "Standard user privileges",
            "scopes": ["self", "custom:x!user"],
        },
    ]
    assert plan.get("Spawner", "server_token_scopes") == [
        "users:activity!user",
        "access:servers!server",
        "custom:x!user",
    ]


def test_plan_refuses_adding_to_a_trait_set_whole():
    plan = Plan(owner="a")
    plan.set("Spawner", "args", ["--x"])
    plan.owner = "b"
    with pytest.raises(PlanConflict, match="Spawner.args is set by a; b cannot add to it"):
        plan.add_arg("--y")


FULL = {
    "auth": {"provider": "dev", "dev": {"users": [{"name": "alice", "groups": ["g"]}]}},
    "culling": {"users": True},
    "singleuser": {"env": {"EXPERIMENT": "atlas"}},
    "kernels": {"roots": ["/srv/envs"]},
    "named_servers": {"enabled": True},
}


def _comparable(plan: Plan) -> dict:
    out = {}
    for section, traits in plan.sections.items():
        for key, value in traits.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = sorted(value, key=lambda d: d["name"])
            out[(section, key)] = value
    return out


def test_builders_do_not_depend_on_section_order(registry):
    forward = apply.build(FULL, data_dir="/tmp/afhub-test-sections")
    registry(reversed(sections.SECTIONS))
    backward = apply.build(FULL, data_dir="/tmp/afhub-test-sections")
    assert _comparable(backward) == _comparable(forward)
    env = forward.get("Spawner", "environment")
    assert env["EXPERIMENT"] == "atlas" and env["AFHUB_KERNEL_ROOTS"] == "/srv/envs"
    roles = {r["name"] for r in forward.get("JupyterHub", "load_roles")}
    assert roles == {"idle-culler", "user"}


def test_singleuser_env_may_not_set_what_afhub_sets():
    assert values.validate({"singleuser": {"env": {"BEARER_TOKEN_FILE": "/tmp/t"}}}) == [
        problems.Problem(
            "singleuser.env.BEARER_TOKEN_FILE",
            "the hub sets this variable itself for every server (tokens, kernels, the profile, "
            "the user's account); remove it here",
        )
    ]


# ------------------------------------------------------------------ defaults, filled once


def test_load_fills_schema_defaults_once():
    loaded = values.load({"hub": {"port": 9000}, "auth": {"provider": "dev"}})
    assert loaded["hub"]["port"] == 9000  # given wins
    assert (loaded["hub"]["ip"], loaded["hub"]["base_url"]) == ("127.0.0.1", "/")
    assert loaded["tokens"]["refresh_margin"] == 120
    assert loaded["culling"] == {
        "enabled": True,
        "timeout": 3600,
        "every": 300,
        "max_age": 0,
        "users": False,
    }
    assert loaded["auth"]["username_claim"] == "preferred_username"
    assert "dev" not in loaded["auth"]  # its presence means something: not created
    assert "slurm" not in loaded["backend"]
    assert values.load(loaded) == loaded  # idempotent, and still valid
    assert "auth" not in values.load({})


def test_defaults_of_an_absent_mapping():
    assert values.defaults("auth.dev") == {"port": 9400, "token_lifetime": 3600}


# ------------------------------------------------------------------ imports


def test_problems_module_imports_nothing():
    tree = ast.parse(Path(problems.__file__).read_text("utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("module", sections.SECTIONS)
def test_each_section_owner_imports_first_without_a_cycle(module):
    code = f"import {module} as m; assert m.KEYS and m.check and m.build"
    subprocess.run([sys.executable, "-c", code], check=True)
