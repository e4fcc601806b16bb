"""Hostile input on the in-process surfaces, property-based (hypothesis; the suite's profile,
``tests/conftest.py``, runs each at least 2,000 examples, ``--hypothesis-profile thorough``
more). The live surfaces (server-extension REST routes with Dask, the token broker route)
are in ``test_hostile_routes.py``.

- the gateway's cluster options (``cluster_options(settings)(user)``, the handler the real
  gateway calls, with the settings ``afhub`` writes for it): anything a client sends is either
  refused with ``ValueError``/``TypeError`` (the gateway's 4xx) or gives a cluster inside the
  user's limits, with an image the user's groups may run;
- the Dask options the server extension checks before calling the gateway
  (``check_options``, ``check_workers``): refused only with ``DaskOptionError`` (400);
- the dashboard relay's paths: the upstream URL stays on the dashboard's own host, and a
  redirect from a dashboard never leaves the user's server (as a browser resolves it).
"""

from __future__ import annotations

import json
import math
import os
from urllib.parse import urljoin, urlsplit

import pytest
from afhub.hub_config import apply
from afhub.hub_config.gateway.options import cluster_options, offered_images
from afhub.server_ext import dask_options
from afhub.server_ext.dask_dashboard import rewrite_location, upstream_url
from afhub.server_ext.dask_options import DaskOptionError, check_options, check_workers
from dask_gateway_server.models import User
from facility import example_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GROUPS = ["physicists", "gpu-users", "afhub-admins", "visitors", "big", ""]
IMAGES = [
    {"name": "analysis", "image": "a:1", "display_name": "Analysis"},
    {"name": "gpu-stack", "image": "g:1", "gpu": True},
    {"name": "ml", "image": "m:1", "allowed_groups": ["gpu-users"]},
]
PROFILES = [
    {"display_name": "CPU", "slug": "cpu", "image": "analysis"},
    {"display_name": "GPU", "slug": "gpu", "image": "gpu-stack", "allowed_groups": ["gpu-users"]},
    {"display_name": "ML", "slug": "ml", "image": "ml", "allowed_groups": ["gpu-users"]},
]
DASK = {
    "enabled": True,
    "worker_cores": 1,
    "worker_memory": 1,
    "max_worker_cores": 2,
    "max_worker_memory": 4,
    "max_workers": 8,
    "max_clusters": 2,
    "limits": [
        {"allowed_groups": ["gpu-users"], "max_workers": 16, "max_worker_gpus": 1},
        {"allowed_groups": ["big"], "max_worker_cores": 8, "max_workers": 4},
    ],
}
OPTION_NAMES = ["worker_cores", "worker_memory", "worker_gpus", "image", "environment"]
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
OPTION_VALUES = (
    ANY_JSON
    | st.sampled_from(["analysis", "gpu-stack", "ml", "orphan", "ANALYSIS", "analysis "])
    | st.sampled_from(["/home/alice/envs/x", "/home/alice/../bob", "envs/x", "/a//b", "/a/"])
    | st.floats(min_value=-1, max_value=20)
    | st.integers(min_value=-2, max_value=40)
)
REQUESTS = st.dictionaries(
    st.sampled_from(OPTION_NAMES) | st.text(max_size=12), OPTION_VALUES, max_size=5
)
PURE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gateway_settings() -> dict:
    values = example_values("local")
    values.update(images=IMAGES, profiles=PROFILES, dask=DASK)
    plan = apply.build(values, data_dir="/d")
    (gw,) = [s for s in plan.get("JupyterHub", "services") if s["name"] == "dask-gateway"]
    return json.loads(gw["environment"]["AFHUB_DASK_SETTINGS"])


SETTINGS = gateway_settings()
OPTIONS = cluster_options(SETTINGS)


def allowed_images(groups) -> set[str]:
    return {i["name"] for i in offered_images(DASK, IMAGES, groups, PROFILES)}


@PURE
@given(groups=st.lists(st.sampled_from(GROUPS), max_size=3, unique=True), request=REQUESTS)
def test_gateway_options_refuse_or_stay_inside_the_users_limits(groups, request):
    user = User("alice", groups=groups)
    limits = dask_options.limits_for(DASK, groups)
    options = OPTIONS(user)
    try:
        parsed = options.parse_options(request)
    except (ValueError, TypeError):
        return  # the gateway's 422, naming the option
    config = options.get_configuration(parsed, user)
    assert 0 < config["worker_cores"] <= limits.max_worker_cores
    assert 0 < config["worker_memory"] <= limits.max_worker_memory * 2**30
    assert config["cluster_max_workers"] == limits.max_workers
    assert math.isfinite(config["worker_cores"])
    if "image" in parsed:
        assert parsed["image"] in allowed_images(groups)
    if parsed.get("environment"):  # the backend walks it; only a clean absolute path gets there
        env = parsed["environment"]
        assert env.startswith("/") and os.path.normpath(env) == env and "\0" not in env
    assert parsed.get("worker_gpus", 0) <= limits.max_worker_gpus


@PURE
@given(
    groups=st.lists(st.sampled_from(GROUPS), max_size=3, unique=True),
    request=REQUESTS | ANY_JSON,
    workers=OPTION_VALUES,
)
def test_server_side_checks_refuse_with_a_named_400_only(groups, request, workers):
    limits = dask_options.limits_for(DASK, groups)
    fields = dask_options.option_fields(DASK, limits, offered_images(DASK, IMAGES, groups))
    try:
        checked = check_options(fields, request if isinstance(request, dict) else {"x": request})
    except DaskOptionError as e:
        assert str(e)
    else:
        assert set(checked) == {f.name for f in fields}
        assert checked["worker_cores"] <= limits.max_worker_cores
        assert checked["worker_memory"] <= limits.max_worker_memory
    try:
        n = check_workers(workers, limits)
    except DaskOptionError as e:
        assert e.option == "workers"
    else:
        assert 0 <= n <= limits.max_workers


DASHBOARD = "http://127.0.0.1:8787"
PREFIX = "/user/alice/afhub/dask/clusters/abc123/"
PATH_TEXT = st.lists(
    st.sampled_from(list("/\\.:@?#%&=;~ab09") + ["..", "//", "%2e", "%2f", "\t", "\n", "é"]),
    max_size=20,
).map("".join)


@PURE
@given(path=PATH_TEXT | st.text(max_size=40), query=PATH_TEXT | st.text(max_size=20))
def test_the_upstream_url_stays_on_the_dashboards_host(path, query):
    url = upstream_url(DASHBOARD, path, query.replace("#", ""))
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "127.0.0.1:8787"), url


def browser_resolve(base: str, location: str) -> str:
    """How a browser resolves a Location header of an http page (WHATWG URL): tabs and
    newlines removed, backslashes read as slashes, then the usual relative resolution."""
    cleaned = "".join(c for c in location if c not in "\t\n\r").strip(" \x00-\x1f")
    return urljoin(base, cleaned.replace("\\", "/"))


@PURE
@given(
    location=PATH_TEXT
    | st.text(max_size=40)
    | st.builds(lambda a, b: a + b, st.sampled_from(["http://evil.example", "//evil", "/\\"]), PATH_TEXT)
)
def test_a_dashboard_redirect_never_leaves_the_users_server(location):
    base = "https://hub.example" + PREFIX + "status"
    try:
        resolved = browser_resolve(base, rewrite_location(location, PREFIX))
    except ValueError:
        return  # urljoin refuses it: so does the browser
    assert urlsplit(resolved).netloc == "hub.example", (location, resolved)


@pytest.mark.parametrize("location", ["\\\\evil.example/x", "\t//evil.example", "/\\evil.example"])
def test_backslash_and_whitespace_redirects_stay_under_the_prefix(location):
    out = rewrite_location(location, PREFIX)
    assert browser_resolve("https://hub.example" + PREFIX + "status", out).startswith(
        "https://hub.example" + PREFIX.rstrip("/")
    ), out
