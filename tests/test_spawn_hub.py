"""The spawn page and one validation path, against a running hub (real hub, proxy and IdP).

One facility per module: the embedded default (``examples/local.yaml``: alice is in
``gpu-users``, bob is not) plus one profile with options, started by ``afhub up``. Users log in
through the real OIDC flow; servers are real local processes. The server's own view of what it
runs on is read from its process environment (``/proc/<pid>/environ``).
"""

from __future__ import annotations

import copy
import html
import re
import time

import pytest
import requests
import yaml
from facility import example_values

pytestmark = pytest.mark.integration

OPTS_PROFILE = yaml.safe_load(
    """
display_name: Pick options
slug: opts
image: analysis
profile_options:
  arch:
    display_name: Architecture
    choices:
      x86: {display_name: x86_64, resources: {arch: x86_64}}
      arm: {display_name: aarch64, resources: {arch: aarch64}}
  size:
    display_name: Size
    choices:
      small: {display_name: Small, resources: {cpu: 1, memory: 2G}}
      large: {display_name: Large, allowed_groups: [gpu-users], resources: {cpu: 2, memory: 8G}}
  env:
    display_name: Environment
    choices:
      default: {display_name: afhub}
    unlisted_choice:
      enabled: true
      display_name: Environment name
      allowed_groups: [gpu-users]
      validation_regex: '[a-z]+'
      validation_message: lowercase letters only
      kubespawner_override: {environment: {SECRET_SENTINEL_OVERRIDE: '{value}'}}
"""
)


@pytest.fixture(scope="module")
def fac(start_facility):
    values = copy.deepcopy(example_values("local"))
    values["profiles"].append(OPTS_PROFILE)
    values.setdefault("singleuser", {})["env"] = {"SENTINEL_ENV_VALUE": "env-value-not-for-pages"}
    return start_facility(values, name="spawn-hub")


@pytest.fixture(scope="module")
def alice(fac):
    return fac.login("alice")


@pytest.fixture(scope="module")
def bob(fac):
    return fac.login("bob")


def server_env(fac, username: str) -> dict[str, str]:
    """The running server's environment, read from /proc (the server reports what it runs)."""
    model = fac.admin_api("GET", f"users/{username}").json()["servers"][""]
    pid = model["state"]["pid"]
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)


def no_server(session) -> bool:
    return session.server_model() is None


def checked_profile(page: str) -> str | None:
    m = re.search(r'name="profile" id="[^"]+" value="([^"]+)" checked', page)
    return m.group(1) if m else None


# ---- the page ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, shown, hidden",
    [
        ("alice", ["CPU session", "GPU session", "Pick options", "Large", "Environment name"], []),
        (
            "bob",
            ["CPU session", "Pick options", "Small"],
            ["GPU session", "Large", "Environment name"],
        ),
    ],
)
def test_page_shows_only_what_groups_allow(fac, alice, bob, user, shown, hidden):
    page = {"alice": alice, "bob": bob}[user].get("hub/spawn").text
    text = html.unescape(page)
    for s in shown:
        assert s in text
    for s in hidden:
        assert s not in text


def test_page_holds_display_fields_only(alice):
    page = alice.get("hub/spawn").text
    for secret in (
        "SECRET_SENTINEL_OVERRIDE",
        "env-value-not-for-pages",
        "kubespawner_override",
        "[a-z]+",
    ):
        assert secret not in page
    assert "afhub/analysis-gpu:latest" not in page  # image references are not display fields


def test_page_is_accessible_markup(alice):
    page = alice.get("hub/spawn").text
    ids = set(re.findall(r'id="([^"]+)"', page))
    for target in re.findall(r'<label for="([^"]+)"', page):
        assert target in ids  # every label points at a field
    for field in re.findall(r'<(?:select|input type="text") id="([^"]+)"', page):
        assert f'<label for="{field}"' in page  # every field has a label


# ---- REST and form tampering: 400 naming the field, never a started server --------------

TAMPER = [
    (
        "bob",
        {"profile": "gpu"},
        "profile: 'gpu' is not one of the profiles available to you (cpu, opts)",
    ),
    (
        "bob",
        {"profile": "does-not-exist"},
        "profile: 'does-not-exist' is not one of the profiles available to you",
    ),
    (
        "bob",
        {"profile": "opts", "size": "large"},
        "size: 'large' is not one of the choices available to you (small)",
    ),
    (
        "bob",
        {"profile": "opts", "env--unlisted-choice": "mine"},
        "env--unlisted-choice: unknown option for profile 'opts'",
    ),
    (
        "alice",
        {"profile": "opts", "env--unlisted-choice": "Mine1"},
        "env--unlisted-choice: lowercase letters only",
    ),
    (
        "alice",
        {"profile": "opts", "env--unlisted-choice": "mine\n"},
        "env--unlisted-choice: must not contain",
    ),
    ("bob", {"profile": "cpu", "cpu_limit": "64"}, "cpu_limit: unknown option for profile 'cpu'"),
    ("bob", {"profile": "cpu", "image": "analysis-gpu"}, "image: unknown option for profile 'cpu'"),
    ("bob", {"profile": 1}, "profile: must be a string, got int"),
    (
        "bob",
        {"profile": "opts", "arch": "arm"},
        "arch: this facility's machine is x86_64; aarch64 needs another backend",
    ),
]


@pytest.mark.parametrize("user, user_options, message", TAMPER)
def test_rest_tampering_gives_400_naming_the_field(fac, alice, bob, user, user_options, message):
    session = {"alice": alice, "bob": bob}[user]
    r = session.spawn(user_options)
    assert r.status_code == 400, r.text
    assert r.json()["message"] == message or r.json()["message"].startswith(message)
    assert no_server(session)


def test_form_post_tampering_shows_error_summary(bob):
    r = bob.post("hub/spawn", data={"profile": "gpu"})
    assert r.status_code == 400
    assert 'id="afhub-error-summary"' in r.text and 'role="alert"' in r.text
    assert "is not one of the profiles available to you" in r.text
    assert no_server(bob)
    r = bob.post("hub/spawn", data={"profile": "opts", "profile-option-opts--size": "large"})
    assert r.status_code == 400
    assert '<a href="#afhub-profile-option-opts--size">Size:' in r.text
    assert no_server(bob)


def test_url_prefills_and_never_starts(fac, alice):
    r = alice.get("hub/spawn?profile=opts&size=large")
    assert r.status_code == 200
    assert checked_profile(r.text) == "opts"
    assert re.search(r'<option value="large"[^>]* selected>', r.text)
    time.sleep(1)
    assert no_server(alice)
    r = alice.get("hub/spawn?profile=no-such-profile")
    assert r.status_code == 200 and "cannot be used" in r.text
    assert no_server(alice)
    # a prefill link is not a failure: one info line in the hub log, no traceback
    log = fac.log_text()
    assert "Spawn page prefilled from /hub/spawn query arguments" in log
    assert "Failed to spawn single-user server with query arguments" not in log


# ---- starts ----------------------------------------------------------------------------


def test_form_start_reaches_the_server_and_is_remembered(fac, alice):
    r = alice.post(
        "hub/spawn",
        data={
            "profile": "opts",
            "profile-option-opts--arch": "x86",
            "profile-option-opts--size": "large",
        },
    )
    assert r.status_code == 200, r.text[-500:]
    alice.wait_ready()
    env = server_env(fac, "alice")
    assert {
        k: env.get(k)
        for k in ("AFHUB_PROFILE", "AFHUB_ARCH", "AFHUB_CPU", "AFHUB_MEMORY", "AFHUB_GPU")
    } == {
        "AFHUB_PROFILE": "opts",
        "AFHUB_ARCH": "x86_64",
        "AFHUB_CPU": "2",
        "AFHUB_MEMORY": "8G",
        "AFHUB_GPU": "0",
    }
    assert "SECRET_SENTINEL_OVERRIDE" not in env
    # admins see profile, image and hardware of each running server
    model = fac.admin_api("GET", "users/alice").json()["servers"][""]
    assert model["state"]["afhub"]["running"] == {
        "profile": "opts",
        "display_name": "Pick options",
        "image": "afhub/analysis:latest",
        "image_name": "analysis",
        "arch": "x86_64",
        "gpu": {"count": 0, "type": None},
        "cpu": 2,
        "memory": "8G",
    }
    assert model["user_options"] == {
        "profile": "opts",
        "arch": "x86",
        "size": "large",
        "env": "default",
    }
    alice.stop_server()
    page = alice.get("hub/spawn").text
    assert checked_profile(page) == "opts"
    assert re.search(r'<option value="large"[^>]* selected>', page)


def test_rest_start_gpu_profile_and_fresh_config(fac, alice):
    r = alice.spawn({"profile": "gpu"})
    assert r.status_code in (201, 202), r.text
    alice.wait_ready()
    env = server_env(fac, "alice")
    assert (env["AFHUB_PROFILE"], env["AFHUB_GPU"], env.get("AFHUB_CPU")) == ("gpu", "1", "4")
    alice.stop_server()
    # the next start (CPU) carries nothing over from the GPU start
    assert alice.spawn({"profile": "cpu"}).status_code in (201, 202)
    alice.wait_ready()
    env = server_env(fac, "alice")
    assert (env["AFHUB_PROFILE"], env["AFHUB_GPU"], env.get("AFHUB_CPU")) == ("cpu", "0", "2")
    alice.stop_server()


def test_second_start_with_another_unlisted_value_runs_the_second(fac, alice):
    """Start with one free-text value, stop, start with another: the second one runs."""
    seen = []
    for value in ("first", "second"):
        r = alice.spawn({"profile": "opts", "arch": "x86", "env--unlisted-choice": value})
        assert r.status_code in (201, 202), r.text
        alice.wait_ready()
        seen.append(server_env(fac, "alice").get("SECRET_SENTINEL_OVERRIDE"))
        alice.stop_server()
    assert seen == ["first", "second"]


def test_rejected_request_keeps_the_remembered_choice(alice):
    assert alice.spawn({"profile": "gpu"}).status_code in (201, 202)
    alice.wait_ready()
    alice.stop_server()
    assert alice.spawn({"profile": "opts", "env--unlisted-choice": "BAD"}).status_code == 400
    assert checked_profile(alice.get("hub/spawn").text) == "gpu"


def test_progress_reports_the_profile(alice):
    # the form start answers after 1 s while the server is still starting
    r = alice.post("hub/spawn", data={"profile": "cpu"}, allow_redirects=False)
    assert r.status_code == 302 and "spawn-pending" in r.headers["Location"]
    r = alice.api("GET", "users/alice/server/progress", stream=True, timeout=60)
    messages = []
    for line in r.iter_lines():
        if line.startswith(b"data:"):
            messages.append(line.decode())
            if b'"ready": true' in line or len(messages) > 20:
                break
    r.close()
    alice.wait_ready()
    alice.stop_server()
    # a local start takes seconds, so the stream opens while it is pending
    assert any("Profile CPU session" in m for m in messages), messages


# ---- property: no 500, no start outside the allowed set ---------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEYS = st.sampled_from(
    [
        "profile",
        "arch",
        "size",
        "env",
        "env--unlisted-choice",
        "gpu",
        "image",
        "cpu_limit",
        "",
        "profile-option-opts--size",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        ["cpu", "gpu", "opts", "x86", "arm", "small", "large", "default", "", "abc", "ABC"]
    ),
    st.text(max_size=12),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.sampled_from(["cpu", "gpu"]), max_size=2),
    st.dictionaries(st.sampled_from(["profile"]), st.sampled_from(["gpu"]), max_size=1),
)
# what bob may start: (profile, canonical options besides "profile")
BOB_ALLOWED = {
    ("cpu", ()),
    ("opts", (("arch", "x86"), ("env", "default"), ("size", "small"))),
}


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(user_options=st.dictionaries(KEYS, VALUES, max_size=4))
def test_property_no_500_and_no_start_outside_allowed_set(fac, bob, user_options):
    r = (
        bob.spawn(user_options)
        if user_options
        else bob.api("POST", "users/bob/server", json={"user_options": {}})
    )
    assert r.status_code in (201, 202, 400), (r.status_code, r.text)
    if r.status_code == 400:
        assert no_server(bob)
        return
    bob.wait_ready()
    model = fac.admin_api("GET", "users/bob").json()["servers"][""]
    opts = dict(model["user_options"])
    profile = opts.pop("profile")
    assert (profile, tuple(sorted(opts.items()))) in BOB_ALLOWED
    assert server_env(fac, "bob")["AFHUB_PROFILE"] == profile
    bob.stop_server()


# the hostile form and query of test_hostile_spawn.py (2,000 examples each, in process), here a
# sample through the real hub's routes: the wiring (deferred: that module imports this one)
# (empty arguments start the default: left to the tests above, starts cost seconds here)
HOSTILE = st.deferred(lambda: __import__("test_hostile_spawn").ARGUMENTS.filter(bool))


def hub_secrets(fac) -> dict[str, str]:
    return {
        "cookie secret": (fac.data_dir / "jupyterhub_cookie_secret").read_bytes().hex(),
        "crypt key": (fac.data_dir / "crypt_key").read_text().strip(),
        "singleuser env": "env-value-not-for-pages",
    }


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(arguments=HOSTILE, how=st.sampled_from(["form", "query"]))
def test_hostile_spawn_form_and_query_on_the_real_hub(fac, bob, arguments, how):
    from test_hostile_spawn import MARKER

    secrets = hub_secrets(fac)
    if how == "query":  # never starts: the page, prefilled or saying why not
        r = bob.get("hub/spawn", params=arguments)
        assert r.status_code < 500, (arguments, r.status_code, r.text[:300])
    else:
        r = bob.post("hub/spawn", data=arguments, allow_redirects=False)
        assert r.status_code < 500, (arguments, r.status_code, r.text[:300])
    for name, value in secrets.items():
        assert value not in r.text, (name, arguments)
    assert MARKER not in r.text, arguments
    model = bob.server_model()
    if how == "query" or r.status_code != 302:  # (a form that starts redirects to the start)
        assert model is None, (how, arguments, r.status_code)
        return
    bob.wait_ready()
    opts = dict(fac.admin_api("GET", "users/bob").json()["servers"][""]["user_options"])
    profile = opts.pop("profile")
    assert (profile, tuple(sorted(opts.items()))) in BOB_ALLOWED, arguments
    bob.stop_server()


def test_hostile_sample_left_no_secret_in_the_log(fac):
    log = fac.log_text()
    for name, value in hub_secrets(fac).items():
        assert value not in log, name


# ---- headless Chromium ----------------------------------------------------------------


def browser_login(browser, fac, username):
    """Log in through the hub's login button and the provider's own form, in Chromium."""
    page = browser.new_context().new_page()
    page.goto(fac.url + "hub/oauth_login")
    page.wait_for_url(re.compile(r".*/oauth2/authorize.*"))
    page.fill("input[name=sub]", username)
    page.get_by_role("button", name="Sign in", exact=True).click()  # not a demo-user shortcut
    page.wait_for_url(re.compile(r".*/hub/.*"))
    return page


@pytest.mark.browser
def test_browser_gpu_user_picks_gpu_profile(fac, browser):
    page = browser_login(browser, fac, "alice")
    page.goto(fac.url + "hub/spawn")
    page.get_by_label("GPU session").check()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90_000)
    assert server_env(fac, "alice")["AFHUB_PROFILE"] == "gpu"
    model = fac.admin_api("GET", "users/alice").json()["servers"][""]
    assert model["state"]["afhub"]["running"]["profile"] == "gpu"
    fac.admin_api("DELETE", "users/alice/server")
    page.context.close()


@pytest.mark.browser
def test_browser_user_outside_group_does_not_see_gpu(fac, browser):
    page = browser_login(browser, fac, "bob")
    page.goto(fac.url + "hub/spawn")
    assert page.get_by_label("CPU session").is_visible()
    assert page.get_by_label("GPU session").count() == 0
    # enhanced with JavaScript: options of unselected profiles collapse, and "Other..." text
    # fields only appear for the "Other..." choice
    assert not page.locator("#afhub-profile-opts-options").is_visible()
    page.get_by_label("Pick options").check()
    assert page.locator("#afhub-profile-opts-options").is_visible()
    page.context.close()


# ---- stale saved choice: a user leaves the GPU group -------------------------------------


def set_idp_groups(fac, username, groups):
    claims = {"preferred_username": username, "email": f"{username}@example.org", "groups": groups}
    r = requests.put(fac.idp_url.rstrip("/") + f"/users/{username}", json=claims, timeout=10)
    assert r.status_code == 204, r.text


def left_gpu_group_after_a_gpu_start(fac, username):
    """``username`` started the GPU profile once (saved choice), then left gpu-users at the
    provider; groups are mirrored at the next login, whose session this returns."""
    set_idp_groups(fac, username, ["physicists", "gpu-users"])
    session = fac.login(username)
    assert session.spawn({"profile": "gpu"}).status_code in (201, 202)
    session.wait_ready()
    session.stop_server()
    set_idp_groups(fac, username, ["physicists"])
    return fac.login(username)


def test_stale_saved_choice_falls_back_to_default_with_a_message(fac):
    dave = left_gpu_group_after_a_gpu_start(fac, "dave")
    page = dave.get("hub/spawn").text
    assert "Your last choice is no longer available" in page
    assert checked_profile(page) == "cpu"
    # a start without options uses the saved choice: stale, so the default starts, not a 400
    r = dave.api("POST", "users/dave/server")
    assert r.status_code in (201, 202), r.text
    dave.wait_ready()
    assert server_env(fac, "dave")["AFHUB_PROFILE"] == "cpu"
    assert "Your saved choice is no longer available" in fac.log_text()
    dave.stop_server()


def test_rest_start_naming_a_profile_no_longer_allowed_is_refused(fac):
    erin = left_gpu_group_after_a_gpu_start(fac, "erin")
    # the saved choice, named again over REST (both body shapes): refused like any other request
    for body in ({"profile": "gpu"}, {"user_options": {"profile": "gpu"}}):
        r = erin.api("POST", "users/erin/server", json=body)
        assert r.status_code == 400, r.text
        assert "'gpu' is not one of the profiles available to you" in r.json()["message"]
        assert no_server(erin)
    # the form keeps today's fallback: the page preselects the default and says why
    page = erin.get("hub/spawn").text
    assert "Your last choice is no longer available" in page
    assert checked_profile(page) == "cpu"
