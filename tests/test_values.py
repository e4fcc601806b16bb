"""The values file: schema, loader errors, secrets, and the ``afhub check``/``render`` CLI."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from afhub.hub_config import apply, cli, values
from afhub.hub_config.values import Problem, ValuesError
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "hub_config" / "examples").glob("*.yaml"))
BAD = sorted((REPO / "tests" / "values_corpus" / "bad").glob("*.yaml"))
NO_COMMENT_EXPECT = {"27-empty.yaml": "the file is empty"}


def expected_lines(path: Path) -> list[str]:
    """What a corpus file expects, one entry per problem, from the comment lines at its top:
    ``# expect: key.path: message`` (afhub's own wording, a substring of the line), or
    ``# expect-under: key.path`` where the layer that refuses the input is not afhub's (PyYAML
    stops deep flow nesting itself since 6.0.4): a problem located at that key or below it, with
    whatever message that layer gives. See :func:`matches`."""
    if path.name in NO_COMMENT_EXPECT:
        return [NO_COMMENT_EXPECT[path.name]]
    lines = []
    for raw in path.read_bytes().split(b"\n"):
        if not raw.startswith((b"# expect: ", b"# expect-under: ")):
            break
        lines.append(raw.decode().removeprefix("# expect: "))
    assert lines, f"{path.name} must start with '# expect: ...' lines"
    return lines


def matches(want: str, line: str) -> bool:
    """One reported problem ``line`` satisfies one expectation of :func:`expected_lines`."""
    if want.startswith("# expect-under: "):
        key = re.escape(want.removeprefix("# expect-under: "))
        return re.match(rf"({key})([.\[][^:]*)?: \S", line) is not None
    return line.startswith(want) or want in line


@pytest.mark.parametrize(
    "want, line, ok",
    [
        ("# expect-under: hub.ip", "hub.ip[0]: YAML syntax error: too deep", True),
        ("# expect-under: hub.ip", "hub.ip: nested more than 50 levels deep", True),
        ("# expect-under: hub.ip", "hub.ip[0][0].x: nested", True),
        ("# expect-under: hub.ip", "hub: nested more than 50 levels deep", False),
        ("# expect-under: hub.ip", "hub.ipx[0]: nested", False),
        ("# expect-under: hub.ip", "Traceback (most recent call last):", False),
        ("hub.port: must be", "hub.port: must be an integer", True),
        ("hub.port: must be", "hub.ip: must be a string", False),
    ],
)
def test_corpus_expectations_match_what_they_say(want, line, ok):
    assert matches(want, line) is ok


def test_corpus_is_big_enough():
    assert len(BAD) >= 60


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path, capsys):
    assert cli.main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_values_are_rejected_naming_the_key(path, capsys):
    """Every problem of the file is named (key path first), and nothing else is."""
    assert cli.main(["check", str(path)]) == 2
    got = capsys.readouterr().err.splitlines()
    expected = expected_lines(path)
    for want in expected:
        assert any(matches(want, line) for line in got), (want, got)
    assert len(got) == len(expected), got


@pytest.fixture(scope="module")
def limited_runs():
    """check and render of every corpus file, each in a child limited to 5 s CPU and 200 MB
    (tests/corpus_runner.py): an alias bomb, a hang or a blow-up dies instead of passing."""
    r = subprocess.run(
        [sys.executable, str(REPO / "tests" / "corpus_runner.py"), "5", "200", *map(str, BAD)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return {(d["command"], Path(d["file"]).name): d for d in map(json.loads, r.stdout.splitlines())}


@pytest.mark.parametrize("command", ["check", "render"])
@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_values_within_limits(limited_runs, command, path):
    run = limited_runs[(command, path.name)]
    assert run["signal"] is None, f"killed by signal {run['signal']} (CPU or memory limit)"
    assert run["rc"] == 2, run["err"][-1000:]
    assert "Traceback" not in run["err"]
    assert run["out"] == ""
    assert run["maxrss_mb"] < 200 and run["cpu_s"] < 5
    for want in expected_lines(path):
        assert any(matches(want, line) for line in run["err"].splitlines()), (want, run["err"])


def test_limits_are_real():
    """The runner's limits do stop a child: no memory to spare, or no CPU time left."""

    def first_run(cpu: str, mem: str) -> dict:
        r = subprocess.run(
            [sys.executable, str(REPO / "tests" / "corpus_runner.py"), cpu, mem, str(BAD[0])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return json.loads(r.stdout.splitlines()[0])

    starved = first_run("5", "30")
    assert starved["rc"] == 99 and "MemoryError" in starved["err"]
    assert first_run("0", "200")["signal"] in (signal.SIGXCPU, signal.SIGKILL)


def test_check_cli_never_tracebacks():
    """All bad files through the real console entry point, in one process."""
    r = subprocess.run(
        [sys.executable, "-m", "afhub.hub_config", "check", *map(str, BAD)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    for path in BAD:
        assert f"{path}: " in r.stderr, f"no problem reported for {path.name}"


def test_check_reports_every_problem_at_once(tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("hub: {port: x, prot: 1}\nculling: {every: 0}\n")
    problems = values.validate(values.load_file(f))
    assert problems == [
        Problem("culling.every", "must be >= 1, got 0"),
        Problem("hub.port", "must be an integer, got string 'x'"),
        Problem("hub.prot", "unknown key 'prot' (did you mean 'port'?)"),
    ]


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read (No such file or directory)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value, environ, expected",
    [
        ("inline", {}, "inline"),
        ({"env": "OIDC_SECRET"}, {"OIDC_SECRET": "from-env"}, "from-env"),
    ],
)
def test_secret_resolution(value, environ, expected):
    from afhub.hub_config import secrets

    assert secrets.resolve(value, "auth.client_secret", environ) == expected


def test_secret_from_file_and_errors(tmp_path):
    from afhub.hub_config import secrets

    f = tmp_path / "s"
    f.write_text("from-file\n")
    assert secrets.resolve({"file": str(f)}, "auth.client_secret", {}) == "from-file"
    with pytest.raises(
        ValuesError, match=r"auth.client_secret: environment variable NOPE is not set"
    ):
        secrets.resolve({"env": "NOPE"}, "auth.client_secret", {})
    with pytest.raises(ValuesError, match=r"auth.client_secret: cannot read secret file"):
        secrets.resolve({"file": str(tmp_path / "missing")}, "auth.client_secret", {})


def test_generated_secrets_are_private_and_stable(tmp_path):
    from afhub.hub_config import secrets

    p = tmp_path / "key"
    first = secrets.ensure_generated(str(p))
    assert len(first) == 64
    assert os.stat(p).st_mode & 0o777 == 0o600
    assert secrets.ensure_generated(str(p)) == first


GENERIC = {
    "auth": {
        "provider": "keycloak",
        "issuer": "https://kc.example.org/realms/af",
        "client_id": "afhub",
        "client_secret": {"env": "AF_SECRET"},
        "allowed_groups": ["cms"],
        "admin_groups": ["af-admins"],
    }
}


@pytest.mark.parametrize(
    "section, key, expected",
    [
        (
            "AfhubOIDCAuthenticator",
            "authorize_url",
            "https://kc.example.org/realms/af/protocol/openid-connect/auth",
        ),
        (
            "AfhubOIDCAuthenticator",
            "token_url",
            "https://kc.example.org/realms/af/protocol/openid-connect/token",
        ),
        ("AfhubOIDCAuthenticator", "allowed_groups", {"cms"}),
        ("AfhubOIDCAuthenticator", "enable_auth_state", True),
        ("JupyterHub", "authenticator_class", "afhub"),
        ("JupyterHub", "spawner_class", "afhub-local"),
        ("Spawner", "default_url", "/lab"),
    ],
)
def test_build_generic_provider(section, key, expected, tmp_path):
    plan = apply.build(GENERIC, data_dir=str(tmp_path))
    assert plan.get(section, key) == expected


@pytest.mark.parametrize(
    "grant, admin_groups, role_scopes",
    [
        # default: admin groups get afhub-admin, JupyterHub's admin scopes minus auth_state
        (None, None, "no-auth-state"),
        (False, None, "no-auth-state"),
        # explicit grant: JupyterHub's own admin role (which includes admin:auth_state)
        (True, {"af-admins"}, None),
    ],
)
def test_admins_read_auth_state_only_when_granted(grant, admin_groups, role_scopes, tmp_path):
    values = copy.deepcopy(GENERIC)
    if grant is not None:
        values["auth"]["admin_auth_state"] = grant
    plan = apply.build(values, data_dir=str(tmp_path))
    assert plan.get("AfhubOIDCAuthenticator", "admin_groups") == admin_groups
    roles = {r["name"]: r for r in plan.get("JupyterHub", "load_roles", [])}
    assert "admin" not in roles  # JupyterHub's admin role is never redefined
    if role_scopes is None:
        assert "afhub-admin" not in roles
        return
    role = roles["afhub-admin"]
    assert role["groups"] == ["af-admins"]
    assert "admin:auth_state" not in role["scopes"] and "admin:users" not in role["scopes"]
    assert {"admin-ui", "users", "admin:servers", "tokens"} <= set(role["scopes"])
    for other in roles.values():
        assert "admin:auth_state" not in other.get("scopes", []), other["name"]


def test_configure_sets_config_and_reads_secrets(tmp_path):
    c = Config()
    apply.configure(c, GENERIC, data_dir=str(tmp_path), environ={"AF_SECRET": "s3cret"})
    assert c.AfhubOIDCAuthenticator.client_secret == "s3cret"
    assert len(c.CryptKeeper["keys"]) == 1
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path}/jupyterhub.sqlite"


def test_configure_missing_secret_names_the_key(tmp_path):
    with pytest.raises(
        ValuesError, match=r"^auth.client_secret: environment variable AF_SECRET is not set$"
    ):
        apply.configure(Config(), GENERIC, data_dir=str(tmp_path), environ={})


def test_render_masks_secrets(tmp_path, capsys):
    f = tmp_path / "v.yaml"
    f.write_text(
        "hub:\n  db_url: postgresql://hub:hunter2@db/hub\n  cookie_secret: {file: /run/secrets/cookie}\n"
        "auth:\n  provider: iam\n  issuer: https://iam.example.org\n  client_id: afhub\n"
        "  client_secret: inline-secret-value\n"
    )
    assert cli.main(["render", str(f)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "inline-secret-value" not in out
    assert "c.AfhubOIDCAuthenticator.client_secret = '***'" in out
    assert "c.JupyterHub.cookie_secret = '<secret from file /run/secrets/cookie>'" in out
    assert "c.AfhubOIDCAuthenticator.client_id = 'afhub'" in out


def test_overrides_are_validated_too(tmp_path):
    with pytest.raises(ValuesError, match=r"hub.port: must be <= 65535"):
        apply.build({}, data_dir=str(tmp_path), overrides={"hub": {"port": 99999}})


def test_culling_service_and_role(tmp_path):
    plan = apply.build({"culling": {"timeout": 600, "users": True}}, data_dir=str(tmp_path))
    (svc,) = plan.get("JupyterHub", "services")
    assert svc["name"] == "idle-culler" and "--timeout=600" in svc["command"]
    assert "--cull-users" in svc["command"]
    (role,) = plan.get("JupyterHub", "load_roles")
    assert "admin:users" in role["scopes"] and role["services"] == ["idle-culler"]
    assert (
        apply.build({"culling": {"enabled": False}}, data_dir=".").get("JupyterHub", "services")
        is None
    )


def test_every_schema_key_is_documented():
    missing = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, sub in node.get("properties", {}).items():
            p = f"{path}.{key}" if path else key
            if "description" not in sub and "$ref" not in sub:
                missing.append(p)
            walk(sub, p)
        for key, sub in node.get("$defs", {}).items():
            walk(sub, f"$defs.{key}")

    walk(values.schema(), "")
    assert missing == []


MUTANTS = [None, 0, -1, 1.5, "", "x", [], [1], {}, {"a": 1}, True, ["x"], {"name": 3}]


def _mutated_examples(seed: int, count: int):
    """Deterministic mutants of the shipped examples: 1-4 values anywhere replaced by values
    of the wrong type or shape."""
    import copy
    import random

    import yaml

    rng = random.Random(seed)
    docs = [yaml.safe_load(p.read_text()) for p in EXAMPLES]

    def paths(node, p=()):
        if p:
            yield p
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for k, v in items:
            yield from paths(v, p + (k,))

    for _ in range(count):
        doc = copy.deepcopy(rng.choice(docs))
        for _ in range(rng.randint(1, 4)):
            *parents, last = rng.choice(list(paths(doc)))
            node = doc
            for k in parents:
                node = node[k]
            node[last] = copy.deepcopy(rng.choice(MUTANTS))
        yield doc


def test_check_never_raises_on_mangled_values():
    """Whatever shape a values file has, check reports problems (or passes); it never raises,
    for any target: the cross-key and target checks run on documents that fail the schema."""
    failures = []
    for i, doc in enumerate(_mutated_examples(seed=10, count=150)):
        for target in (None, "standalone", "z2jh"):
            try:
                cli.check_values(doc, target)
            except ValuesError:
                pass
            except Exception as e:  # noqa: BLE001 - the point of the test
                failures.append(f"mutant {i}, target {target}: {type(e).__name__}: {e}")
    assert failures == []


def _patterns(node, where=""):
    if isinstance(node, dict):
        if "pattern" in node:
            yield where, node
        for k, v in node.items():
            yield from _patterns(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _patterns(v, f"{where}[{i}]")


def test_every_pattern_says_what_to_write():
    """A value that does not match a pattern gets "write ..." (from the schema's x-hint),
    never the raw regular expression: every pattern in the full schema has one."""
    found = list(_patterns(values.schema()))
    assert found
    missing = [where for where, node in found if not node.get("x-hint", "").startswith("write ")]
    assert missing == []


@pytest.mark.parametrize(
    "doc, expected",
    [
        (
            {"profiles": [{"display_name": "x", "resources": {"memory": "4 GB"}}]},
            "profiles[0].resources.memory: string '4 GB' is not valid here; write a size like 4G or 4Gi",
        ),
        (
            {"hub": {"base_url": "jupyter"}},
            "hub.base_url: string 'jupyter' is not valid here; write a path",
        ),
        (
            {"images": [{"name": "Coffea!", "image": "x", "archs": ["x86_64"]}]},
            "images[0].name: string 'Coffea!' is not valid here; write lower-case",
        ),
    ],
)
def test_pattern_errors_say_what_to_write(doc, expected):
    got = [str(p) for p in values.validate(doc)]
    assert any(g.startswith(expected) for g in got), got
    assert not any("^" in g or "$'" in g for g in got), got
