"""The spawn page and the hub home page in headless Chromium (real hub, proxy and demo IdP).

- every visible text element of the spawn page meets WCAG AA contrast (4.5:1) in JupyterHub's
  light and dark themes, computed from the browser's computed styles (text colour composited
  over the nearest opaque backgrounds);
- a click anywhere on a card selects that profile, and the card's one resource summary follows
  the chosen options;
- the hub home page names the profile the running server was started with.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from facility import example_values

pytestmark = [pytest.mark.integration, pytest.mark.browser]

EXTRA = yaml.safe_load(
    """
display_name: Pick your hardware
slug: pick
description: A profile with options, to check how choices read.
image: analysis-gpu
resources: {cpu: 1, memory: 2Gi}
profile_options:
  size:
    display_name: Size
    choices:
      small: {display_name: Small, default: true, description: for a first look, resources: {cpu: 1, memory: 2Gi}}
      large: {display_name: Large, resources: {cpu: 4, memory: 16Gi}}
  gpu:
    display_name: GPU
    choices:
      none: {display_name: No GPU, default: true}
      a100: {display_name: A100, resources: {gpu: {count: 1, type: a100, memory: 80G}}}
"""
)

# Contrast of every visible text node against what is painted behind it (WCAG 2.x formula).
CONTRAST_JS = r"""
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let base = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) base = over(layers[i], base);
    return base;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => {
    const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim();
    const el = n.parentElement;
    if (!text || !el || ["SCRIPT", "STYLE", "OPTION"].includes(el.tagName)) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || el.getClientRects().length === 0) continue;
    const bg = background(el);
    const fg = over(parse(style.color), bg);
    out.push({ text: text.slice(0, 60), tag: el.tagName, cls: el.className, ratio: ratio(fg, bg) });
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def fac(start_facility):
    values = copy.deepcopy(example_values("local"))
    values["profiles"].append(EXTRA)
    return start_facility(values, name="spawn-page-browser")


def login(browser, fac, username, **context):
    page = browser.new_context(**context).new_page()
    page.goto(fac.url + "hub/oauth_login")
    page.wait_for_url(re.compile(r".*/oauth2/authorize.*"))
    page.fill("input[name=sub]", username)
    page.get_by_role("button", name="Sign in", exact=True).click()  # not a demo-user shortcut
    page.wait_for_url(re.compile(r".*/(hub|user)/.*"))  # /user/ when a server runs
    return page


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_text_meets_wcag_aa_in_both_themes(fac, browser, theme):
    page = login(browser, fac, "alice", color_scheme=theme)
    try:
        page.goto(fac.url + "hub/spawn")
        assert page.evaluate("document.documentElement.getAttribute('data-bs-theme')") == theme
        page.locator("#afhub-profile-pick").check()  # options of the selected card are shown
        texts = page.evaluate(CONTRAST_JS)
        ours = [t for t in texts if t["cls"].startswith("afhub-")]
        assert {"afhub-desc", "afhub-hw"} <= {t["cls"] for t in ours}  # the card texts are seen
        low = [t for t in texts if t["ratio"] < 4.5]
        assert low == [], f"{theme}: text below 4.5:1: {low}"
    finally:
        page.context.close()


def test_a_click_anywhere_on_a_card_selects_it(fac, browser):
    page = login(browser, fac, "alice")
    try:
        page.goto(fac.url + "hub/spawn")
        assert page.locator("#afhub-profile-cpu").is_checked()
        card = page.locator('.afhub-profile[data-profile="gpu"]')
        card.locator(".afhub-hw").click()  # the summary line, not the radio or its label
        assert page.locator("#afhub-profile-gpu").is_checked()
        assert "afhub-selected" in card.get_attribute("class")
        page.locator('.afhub-profile[data-profile="pick"] .afhub-desc').click()
        assert page.locator("#afhub-profile-pick").is_checked()
        assert not page.locator("#afhub-profile-gpu").is_checked()
        # one summary per card, in one set of units, following the chosen options
        hw = page.locator('.afhub-profile[data-profile="pick"] .afhub-hw')
        assert "1 CPU core · 2 GiB memory" in hw.inner_text()
        page.locator("#afhub-profile-option-pick--size").select_option("large")
        page.locator("#afhub-profile-option-pick--gpu").select_option("a100")
        text = hw.inner_text()
        assert "4 CPU cores · 16 GiB memory · 1 GPU (a100, 80 GB) · runs on x86_64" in text
        cpu_hw = page.locator('.afhub-profile[data-profile="cpu"] .afhub-hw').inner_text()
        assert cpu_hw.endswith("runs on x86_64 or aarch64")
        # clicking inside the options area does not re-select or reset anything
        page.locator("#afhub-profile-option-pick--size").click()
        assert page.locator("#afhub-profile-pick").is_checked()
        gpu_hw = page.locator('.afhub-profile[data-profile="gpu"] .afhub-hw').inner_text()
        assert "1 GPU (t4, 16 GB)" in gpu_hw
    finally:
        page.context.close()


def test_home_page_names_the_running_profile(fac, browser):
    alice = fac.login("alice")
    r = alice.spawn({"profile": "pick", "size": "large"})
    assert r.status_code in (201, 202), r.text
    alice.wait_ready()
    page = login(browser, fac, "alice")
    try:
        page.goto(fac.url + "hub/home")
        line = page.locator("#afhub-running-profile")
        assert line.is_visible()
        assert line.inner_text() == (
            "Your server runs Pick your hardware: 4 CPU cores · 16 GiB memory · on x86_64"
        )
    finally:
        page.context.close()
        alice.stop_server()
    page = login(browser, fac, "alice")
    try:
        page.goto(fac.url + "hub/home")
        assert page.locator("#afhub-running-profile").count() == 0  # nothing runs
    finally:
        page.context.close()
