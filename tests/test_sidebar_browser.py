"""The JupyterLab sidebar in headless Chromium, through the real hub.

Real pieces: ``afhub up`` (JupyterHub, configurable-http-proxy, the demo OIDC provider), the
user's server under ``/user/<name>/`` with the afhub server extension and the prebuilt
``afhub-sidebar`` extension installed by pip (the server environment of ``make test``), and
Debian's Chromium. Nothing is faked. Environments are real venvs made from the server
environment's Python (servers run as per-user system accounts when the hub is root, which cannot
execute this test's Python), owned by the user's account.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from facility import example_values, wait_for
from kernels_helpers import make_user_venv, server_python

pytestmark = [pytest.mark.integration, pytest.mark.browser]

USER = "alice"
LIFETIME = 40  # s; renewal every ~27 s, so a hub logout shows within a minute


@pytest.fixture(scope="module")
def fac(start_facility):
    values = example_values("local")
    values["auth"]["dev"]["token_lifetime"] = LIFETIME
    values["culling"] = {"enabled": False}
    facility = start_facility(values, name="sidebar")
    yield facility
    facility.stop()


def login_and_spawn(browser, fac):
    """Log in at the provider's form in Chromium, start the default profile, land in Lab."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(fac.url + "hub/oauth_login")
    page.wait_for_url(re.compile(r".*/oauth2/authorize.*"))
    page.fill("input[name=sub]", USER)
    page.get_by_role("button", name="Sign in", exact=True).click()  # not a demo-user shortcut
    page.wait_for_url(re.compile(r".*/hub/.*"))
    page.goto(fac.url + "hub/spawn")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(rf".*/user/{USER}/lab.*"), timeout=120_000)
    page.locator(".jp-LauncherCard").first.wait_for(timeout=60_000)
    return page


def open_panel(page):
    panel = page.locator("#afhub-sidebar")
    if not panel.is_visible():  # the tab toggles: a second click would close it
        page.locator('.lm-TabBar-tab[data-id="afhub-sidebar"]').click()
    panel.wait_for(state="visible")
    return panel


def seconds(text: str) -> int:
    """`1m 05s` -> 65 (the panel's countdown format)."""
    total = 0
    for n, unit in re.findall(r"(\d+)([dhms])", text):
        total += int(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


@pytest.fixture(scope="module")
def lab(fac, browser):
    page = login_and_spawn(browser, fac)
    envs = fac.home(USER) / "envs"  # made by the user's account (make_user_venv), as the venvs
    make_user_venv(envs / "sbtest", uid=fac.uid(USER), ipykernel=True)  # the test environment
    make_user_venv(
        envs / "sbbare", uid=fac.uid(USER), ipykernel=False
    )  # not runnable, and no pip to fix it
    yield page
    page.context.close()


def test_panel_session_token_and_environment_kernel(fac, lab):
    page = lab
    panel = open_panel(page)
    session = panel.locator('[data-section="session"]')
    wait_for(lambda: "CPU session" in session.inner_text(), 30, what="profile in the panel")
    assert "Architecture" in session.inner_text()

    # the token's expiry counts down
    countdown = panel.locator("[data-countdown]")
    countdown.wait_for(timeout=30_000)
    token_section = panel.locator('[data-section="token"]')
    try:
        wait_for(lambda: seconds(countdown.inner_text()) > 0, 30, what="a token expiry")
    except AssertionError as e:
        raise AssertionError(f"{e}; the section says: {token_section.inner_text()}") from None
    first = seconds(countdown.inner_text())
    time.sleep(2.5)
    second = seconds(countdown.inner_text())
    assert 0 < second < first or second > first + 5, (first, second)  # counted down (or renewed)
    assert "Audience" in token_section.inner_text()
    token_file = re.search(r"File\s*(\S+)", token_section.inner_text()).group(1)
    secret = Path(token_file).read_text().strip()
    assert len(secret) > 20 and secret not in page.content()  # never the token itself

    # the test environment's kernel: open a notebook with it and run a cell
    env = panel.locator('[data-env-name="sbtest"]')
    env.wait_for(timeout=30_000)
    env.get_by_role("button", name=re.compile("New notebook with")).click()
    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell .cm-content").first
    cell.wait_for(timeout=60_000)
    kernel = page.locator(".jp-StatusBar-Item", has_text=re.compile(r"\[sbtest\].*Idle"))
    kernel.first.wait_for(timeout=90_000)  # the environment's kernel started
    cell.click()
    page.keyboard.type("import sys; print(sys.prefix)")
    page.keyboard.press("Shift+Enter")
    prefix = str(fac.home(USER) / "envs" / "sbtest")
    out = page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output").first
    out.wait_for(timeout=90_000)
    assert out.inner_text().strip() == prefix


def test_environment_made_in_a_terminal_reaches_the_launcher_within_5s(fac, lab):
    page = lab
    new_launcher = page.locator(".lm-TabBar-addButton:visible").first
    new_launcher.click()
    page.locator(".jp-LauncherCard:visible", has_text="Terminal").first.click()
    term = page.locator(".jp-Terminal:visible .xterm-helper-textarea")
    term.wait_for(timeout=30_000)
    home = fac.home(USER)
    target = home / "envs" / "sbfresh"
    staging = home / "sbfresh-staging"
    python, site_packages = server_python()
    site = f"{staging}/lib/python3*/site-packages"
    # as the user, in Lab's terminal: a venv with ipykernel made aside, then moved into ~/envs
    # in one step (as `mv` does)
    command = (
        f"{python} -m venv --without-pip {staging} && "
        f"echo {site_packages} > $(echo {site})/_t.pth && mv {staging} {target}"
    )
    term.focus()
    page.keyboard.type(command + "\n")
    wait_for(lambda: target.exists(), 60, interval=0.05, what="the venv made in the terminal")
    made = time.monotonic()
    new_launcher.click()
    card = page.locator(".jp-LauncherCard:visible", has_text="sbfresh").first
    card.wait_for(timeout=30_000)
    elapsed = time.monotonic() - made
    assert elapsed <= 5, f"the new environment's kernel reached the Launcher after {elapsed:.1f}s"


def test_install_action_shows_progress_and_failure(fac, lab):
    """'Install ipykernel' runs the facility's install command in the server; an environment
    without pip fails, and the panel says so with the command's output."""
    panel = open_panel(lab)
    bare = panel.locator('[data-env-name="sbbare"]')
    bare.wait_for(timeout=30_000)
    assert "not runnable: no ipykernel" in bare.inner_text()
    bare.get_by_role("button", name="Install ipykernel into sbbare").click()
    wait_for(lambda: "install failed" in bare.inner_text(), 60, what="the install's outcome")
    bare.locator("summary").click()
    assert "No module named pip" in bare.locator("pre").inner_text()
    assert bare.get_by_role("button", name="Install ipykernel into sbbare").is_enabled()


def test_dask_cluster_from_the_panel(fac, lab):
    """Create a 1-worker cluster with the facility's options, see it running, shut it down."""
    panel = open_panel(lab)
    dask = panel.locator('[data-section="dask"]')
    create = dask.get_by_role("button", name="Create Dask cluster")
    create.wait_for(timeout=60_000)
    assert dask.locator("[data-cluster]").count() == 0
    dask.locator("#afhub-dask-workers").fill("1")
    create.click()
    cluster = dask.locator("[data-cluster]").first
    wait_for(
        lambda: cluster.count() and "running · 1 worker" in cluster.inner_text(),
        240,
        what="a running 1-worker cluster in the panel",
    )
    name = cluster.get_attribute("data-cluster")
    link = cluster.get_by_role("link", name="Dashboard")  # through alice's own server
    assert link.get_attribute("href") == f"/user/{USER}/afhub/dask/clusters/{name}/status"
    with lab.context.expect_page() as opened:
        link.click()
    dashboard = opened.value
    dashboard.locator("canvas").first.wait_for(state="attached", timeout=60_000)  # Bokeh drew
    dashboard.close()
    cluster.get_by_role("button", name=re.compile("^Shut down cluster")).click()
    wait_for(
        lambda: dask.locator(f'[data-cluster="{name}"]').count() == 0,
        120,
        what="the cluster gone from the panel",
    )
    assert not dask.locator("[role=alert]").count(), dask.inner_text()


def test_status_bar_says_renewal_stopped_after_hub_logout(fac, lab):
    page = lab
    status = page.locator(".afhub-status-text")
    wait_for(lambda: "CPU session · token" in status.inner_text(), 60, what="profile and token")
    assert "renewal stopped" not in status.inner_text()
    other = page.context.new_page()
    other.goto(fac.url + "hub/logout")
    other.close()
    wait_for(
        lambda: "renewal stopped" in status.inner_text(),
        3 * LIFETIME,
        what="'renewal stopped' in the status bar",
    )
    login = page.locator(".afhub-status-login")
    assert login.is_visible() and "/hub/login" in login.get_attribute("href")
