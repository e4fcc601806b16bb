"""A new user's first JupyterLab load on the embedded default, in headless Chromium.

Real pieces as in test_sidebar_browser.py (``afhub up``, the demo provider, the user's server
from the server environment with the afhub extension and sidebar installed by pip). A fresh
facility, so the account is fresh: no JupyterLab settings of its own, no environments.

What a new user must (not) meet: JupyterLab's "Would you like to get notified about official
Jupyter news?" question (a facility decides that; values ``singleuser.lab_news``); the new-cluster
form's units; the worker image select readable at the panel's default width, in the light and
the dark theme; the facility's environment named as such (kernel and sidebar) instead of
"Python 3 (ipykernel)" and "No environments found.".
"""

from __future__ import annotations

import re
import time

import pytest
from facility import example_values, wait_for
from test_sidebar_browser import login_and_spawn, open_panel

pytestmark = [pytest.mark.integration, pytest.mark.browser]

USER = "alice"  # gpu-users: two worker images to choose from
NEWS = "Would you like to get notified about official Jupyter news?"
FACILITY_KERNEL = "Python 3 (facility: analysis)"

# The select's text against its width, and its colours' contrast (WCAG ratio), in the page.
MEASURE = """(sel) => {
  const cs = getComputedStyle(sel);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = cs.font;
  const widest = Math.max(...[...sel.options].map(o => ctx.measureText(o.text).width));
  const inner = sel.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  let bg = [0, 0, 0, 0], el = sel;
  while (el && (bg.length < 3 || bg[3] === 0)) {
    bg = rgb(getComputedStyle(el).backgroundColor);
    if (bg.length === 3) bg.push(1);
    el = el.parentElement;
  }
  const lum = c => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [a, b] = [lum(rgb(cs.color)), lum(bg)].sort((x, y) => y - x);
  const panel = sel.closest('#afhub-sidebar').getBoundingClientRect();
  const box = sel.getBoundingClientRect();
  return {
    widest, inner, contrast: (a + 0.05) / (b + 0.05),
    inside: box.left >= panel.left - 0.5 && box.right <= panel.right + 0.5,
    options: [...sel.options].map(o => o.text)
  };
}"""


@pytest.fixture(scope="module")
def fac(start_facility):
    values = example_values("local")
    values["culling"] = {"enabled": False}
    facility = start_facility(values, name="first-load")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def lab(fac, browser):
    page = login_and_spawn(browser, fac)
    yield page
    page.context.close()


def check_form(panel, theme: str) -> None:
    dask = panel.locator('[data-section="dask"]')
    dask.get_by_role("button", name="Create Dask cluster").wait_for(timeout=60_000)
    unit = dask.get_by_text("Worker memory (GiB)")
    assert unit.is_visible(), dask.inner_text()
    select = dask.locator("select#afhub-dask-opt-image")
    select.wait_for()
    m = select.evaluate(MEASURE)
    assert len(m["options"]) >= 2, m
    assert m["widest"] <= m["inner"] - 12, (theme, m)  # room for the arrow too
    assert m["inside"], (theme, m)
    assert m["contrast"] >= 4.5, (theme, m)


def test_first_load(fac, lab):
    page = lab
    panel = open_panel(page)
    envs = panel.locator('[data-section="environments"]')
    row = envs.locator('[data-env-name="analysis"]')
    row.wait_for(timeout=30_000)
    assert "facility environment" in row.inner_text()
    assert "No environments found." not in envs.inner_text()
    assert row.get_by_role("button", name=f"New notebook with {FACILITY_KERNEL}").is_visible()
    # the Launcher names the facility's kernel, not "Python 3 (ipykernel)"
    launcher = page.locator(".jp-Launcher-body")
    assert launcher.get_by_text(FACILITY_KERNEL).first.is_visible()
    assert "Python 3 (ipykernel)" not in launcher.inner_text()

    check_form(panel, "light")

    # JupyterLab asks a few moments after it restored; the panel has loaded well after that
    time.sleep(5)
    assert page.get_by_text(NEWS).count() == 0
    r = page.request.get(
        f"{fac.url}user/{USER}/lab/api/settings/@jupyterlab/apputils-extension:notification"
    )
    assert r.ok, r.status
    default = r.json()["schema"]["properties"]["fetchNews"]["default"]
    assert default == "false"

    # the dark theme
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Settings$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Theme$")).hover()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^JupyterLab Dark$")).click()
    wait_for(
        lambda: page.evaluate("document.body.dataset.jpThemeLight") == "false",
        30,
        what="the dark theme",
    )
    time.sleep(1)  # the theme's stylesheet applied
    check_form(open_panel(page), "dark")
    assert page.get_by_text(NEWS).count() == 0
