"""Hostile input on the spawn form (``POST /hub/spawn``) and the ``/hub/spawn`` query, property-
based (the suite's profile: 2,000 examples per surface, ``--hypothesis-profile thorough`` more).

The bulk runs in this process, through the code the hub's route runs, with the spawner the hub
would make (``apply.configure`` of the embedded default plus the options profile of
``test_spawn_hub.py``; bob is in ``physicists`` only):

- the form: JupyterHub's ``SpawnHandler.post`` decodes the body into ``{name: [text, ...]}``,
  calls ``spawner.run_options_from_form`` and spawns with the result, whose first step is
  ``spawner._run_apply_user_options`` (afhub's one validation path); a refusal re-renders the
  form (``get_options_form``) with the error;
- the query: ``SpawnHandler.get`` hands the arguments to ``spawner.options_from_query`` (afhub:
  ``PrefillOnly``, never a start) and renders the form, which reads the query from
  ``spawner.handler.request``.

Asserted: never an error but an HTTP 4xx naming the problem (no 5xx, no other exception);
a start only inside bob's allowed profiles, choices and resources; no secret (the spawner's
API token, the OIDC client secret, ``singleuser.env`` values) in any page, error message or
log record; hostile markup never reaches a page unescaped. A real request costs ~20 ms and a
real start seconds, so the wiring (the real hub's routes, real starts) is sampled in
``test_spawn_hub.py`` (``test_hostile_spawn_form_and_query_on_the_real_hub``) instead.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
from types import SimpleNamespace

import pytest
from afhub.hub_config import apply
from afhub.spawner.local import LocalProfileSpawner
from afhub.spawner.mixin import PrefillOnly
from auth_helpers import MemoryUser
from facility import example_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyterhub.utils import maybe_future
from test_spawn_hub import BOB_ALLOWED, OPTS_PROFILE
from tornado import web
from traitlets.config import Config

MARKER = "<x-hostile onload=1>"  # never in a page as it was sent
API_TOKEN = secrets.token_hex(16)
CLIENT_SECRET = secrets.token_urlsafe(24)
ENV_SECRET = "env-value-not-for-pages"
SECRETS = {"server api token": API_TOKEN, "oidc client secret": CLIENT_SECRET, "env": ENV_SECRET}
# what bob's allowed starts may get at most (the CPU session: 2 CPUs, 4G)
MAX_CPU, MAX_MEM = 2, 4 * 10**9
PURE = settings(deadline=None, suppress_health_check=list(HealthCheck))

PROFILES = ["cpu", "gpu", "opts", "default", "", "CPU", "cpu ", "../gpu", "gpu\x00"]
CHOICES = ["x86", "arm", "small", "large", "default", "--unlisted-choice", "unlisted-choice"]
FIELDS = [
    "profile",
    "profile-option-opts--arch",
    "profile-option-opts--size",
    "profile-option-opts--env",
    "profile-option-opts--env--unlisted-choice",
    "profile-option-gpu--size",
    "profile-option-cpu--size",
    "profile-option-opts--",
    "_xsrf",
    "cpu_limit",
    "mem_limit",
    "image",
    "kubespawner_override",
    "env",
    "size",
    "opt-size",
    "arch",
    "next",
    "display_name",
]
TEXT = (
    st.sampled_from(PROFILES + CHOICES + [MARKER, "1000", "-1", "1e308", "NaN", "$(id)", "a" * 500])
    | st.text(max_size=12)
    | st.sampled_from(PROFILES + CHOICES).map(lambda v: v + MARKER)
)
ARGUMENTS = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8),
    st.lists(TEXT, min_size=1, max_size=2),
    max_size=4,
)


def hub_values() -> dict:
    values = copy.deepcopy(example_values("local"))
    values["profiles"].append(copy.deepcopy(OPTS_PROFILE))
    values.setdefault("singleuser", {})["env"] = {"SENTINEL_ENV_VALUE": ENV_SECRET}
    return values


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def bob():
    """The local spawner the hub makes for bob (configured as ``afhub up`` does), its log
    records collected."""
    c = Config()
    apply.configure(
        c,
        hub_values(),
        data_dir="/nonexistent",
        environ={"AFHUB_OIDC_CLIENT_SECRET": CLIENT_SECRET},
    )
    sp = LocalProfileSpawner(config=c, user=MemoryUser("bob", None, groups=("physicists",)))
    sp.api_token = API_TOKEN
    records = Records()
    for log in {sp.log, logging.getLogger()}:
        log.addHandler(records)
    sp.records = records
    sp.loop = asyncio.new_event_loop()  # one loop for every example (asyncio.run makes one each)
    yield sp
    sp.loop.close()
    for log in {sp.log, logging.getLogger()}:
        log.removeHandler(records)


def query_handler(arguments: dict[str, list[str]]):
    """What the form reads of ``spawner.handler``: a GET and its query arguments (bytes)."""
    request = SimpleNamespace(
        method="GET", query_arguments={k: [v.encode() for v in vs] for k, vs in arguments.items()}
    )
    return SimpleNamespace(request=request)


def assert_clean(text: str, where: str, *, html: bool = True) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} in {where}"
    if html:  # (a message is text: JupyterHub's page template escapes it)
        assert MARKER not in text, f"unescaped markup in {where}"


def check_started(sp) -> None:
    """A start that passed validation: only what bob may start, within his resources."""
    options = dict(sp.user_options)
    profile = options.pop("profile")
    assert (profile, tuple(sorted(options.items()))) in BOB_ALLOWED, sp.user_options
    assert 0 < (sp.cpu_limit or MAX_CPU) <= MAX_CPU, sp.cpu_limit
    assert 0 < (sp.mem_limit or MAX_MEM) <= MAX_MEM, sp.mem_limit
    assert sp.environment.get("AFHUB_PROFILE", profile) == profile


async def post_form(sp, arguments: dict[str, list[str]]) -> tuple[str, str]:
    """``SpawnHandler.post``'s path: options from the form, validated by the start's first step;
    a refusal renders the form again with the error: (message, page), empty for a start."""
    sp.handler = SimpleNamespace(request=SimpleNamespace(method="POST", query_arguments={}))
    try:
        options = await maybe_future(sp.run_options_from_form(arguments))
        sp.user_options = options
        await sp._run_apply_user_options(options)
    except web.HTTPError as e:
        assert 400 <= e.status_code < 500, (arguments, e)
        message = getattr(e, "jupyterhub_message", None) or e.log_message or ""
        assert message, (arguments, e)
        return message, await sp.get_options_form()
    check_started(sp)
    return "", ""


@PURE
@given(arguments=ARGUMENTS)
def test_spawn_form_posts(bob, arguments):
    before = len(bob.records.lines)
    message, page = bob.loop.run_until_complete(post_form(bob, arguments))
    assert_clean(message, f"the error for {arguments!r}", html=False)
    assert_clean(page, f"the page for {arguments!r}")
    log = "\n".join(bob.records.lines[before:])
    assert_clean(log, f"the log for {arguments!r}", html=False)
    del bob.records.lines[:]


async def get_page(sp, arguments: dict[str, list[str]]) -> str:
    """``SpawnHandler.get``'s path: the query never starts, the form reads it."""
    sp.handler = query_handler(arguments)
    query = {k: v for k, v in arguments.items() if k not in ("next", "display_name")}
    if query:  # (JupyterHub first strips an ``opt-`` prefix; names do not matter here)
        with pytest.raises(PrefillOnly):
            await maybe_future(sp.options_from_query(query))
    return await sp.get_options_form()


@PURE
@given(arguments=ARGUMENTS)
def test_spawn_query(bob, arguments):
    before = len(bob.records.lines)
    started = dict(bob.user_options or {})
    page = bob.loop.run_until_complete(get_page(bob, arguments))
    assert "afhub-profile" in page or "profile" in page, page[:300]
    assert_clean(page, f"the page for ?{arguments!r}")
    log = "\n".join(bob.records.lines[before:])
    assert_clean(log, f"the log for ?{arguments!r}", html=False)
    assert dict(bob.user_options or {}) == started  # nothing chosen, nothing started
    del bob.records.lines[:]
