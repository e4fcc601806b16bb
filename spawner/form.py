"""The spawn page: a display-only model of the profiles a user may see, rendered to HTML.

:func:`form_model` is pure and copies display fields only (names, descriptions, slugs,
architectures, GPU flags) from :class:`~afhub.spawner.profiles.ProfileView` objects; override
values, environment values and anything else from the values file never reach the page.
:func:`render` fills ``templates/spawn_form.html``: a server-rendered form that works without
JavaScript (every profile's options are plain ``<select>``/``<input>`` fields) and is enhanced
by a small inline script (collapse unselected profiles, offer only images built for the chosen
architecture, show the free-text field only for "Other...").
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
from markupsafe import Markup, escape

from .options import UNLISTED_SENTINEL, field_name
from .profiles import (
    DEFAULT_ARCHS,
    UNLISTED_SUFFIX,
    Image,
    OptionsError,
    ProfileView,
    default_profile,
)

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def _archs(image: Image | None) -> str:
    return " ".join(image.archs) if image is not None else ""


def hardware_summary(resources: Mapping[str, Any], image: Image | None) -> str:
    """``"4 CPU · 16Gi memory · 1 × a100 GPU · aarch64"`` from profile-level resources."""
    parts = []
    if image is not None:
        archs = ", ".join(image.archs)
        parts.append(f"{image.display_name} ({archs}{', GPU' if image.gpu else ''})")
    if resources.get("cpu") is not None:
        parts.append(f"{resources['cpu']:g} CPU")
    if resources.get("memory"):
        parts.append(f"{resources['memory']} memory")
    gpu = resources.get("gpu") or {}
    if gpu.get("count"):
        kind = f" {gpu['type']}" if gpu.get("type") else ""
        parts.append(f"{gpu['count']} ×{kind} GPU")
    if resources.get("arch"):
        parts.append(resources["arch"])
    return " · ".join(parts)


def _choice_html(c, selected: bool) -> Markup:
    """One ``<option>`` (escaped here once: the page's largest loop, kept out of Jinja)."""
    attrs = f' data-arch="{escape(c.arch)}"' if c.arch else ""
    if c.image is not None:
        attrs += f' data-archs="{escape(_archs(c.image))}"'
    if selected:
        attrs += " selected"
    label = escape(c.display_name)
    if c.description:
        label += Markup(" — ") + escape(c.description)
    return Markup(f'<option value="{escape(c.slug)}"{attrs}>{label}</option>')


def _anchor(profile: str, key: str) -> str:
    return "afhub-" + field_name(profile, key)


def form_model(
    views: list[ProfileView],
    *,
    selected: Mapping[str, str] | None = None,
    errors: Iterable[OptionsError] = (),
    messages: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything the template shows, and nothing else. ``selected`` is ``user_options``."""
    selected = dict(selected or {})
    chosen = selected.get("profile") or (default_profile(views).slug if views else "")
    if views and not any(v.slug == chosen for v in views):
        chosen = default_profile(views).slug
    errors = list(errors)
    by_field = {e.field: e.message for e in errors}
    summary = []
    profiles = []
    for v in views:
        mine = selected if v.slug == chosen else {}
        options = []
        for o in v.options:
            ukey = o.name + UNLISTED_SUFFIX
            text = mine.get(ukey, "")
            if text or not o.choices:  # free text wins over a choice, as at start
                value = UNLISTED_SENTINEL
            else:
                value = mine.get(o.name) or o.default
            err = (by_field.get(ukey) or by_field.get(o.name)) if v.slug == chosen else None
            item = {
                "name": o.name,
                "display_name": o.display_name,
                "field": field_name(v.slug, o.name),
                "id": _anchor(v.slug, o.name),
                "error": err,
                "choices": [_choice_html(c, c.slug == value) for c in o.choices],
                "unlisted": None,
            }
            if o.unlisted is not None:
                u = o.unlisted
                item["unlisted"] = {
                    "field": field_name(v.slug, ukey),
                    "id": _anchor(v.slug, ukey),
                    "display_name": u.display_name,
                    "display_name_in_choices": u.display_name_in_choices,
                    "description_in_choices": u.description_in_choices,
                    "description": u.description,
                    "hint": u.message,
                    "value": text,
                    "selected": value == UNLISTED_SENTINEL,
                    "archs": " ".join((u.image or {}).get("archs") or DEFAULT_ARCHS)
                    if u.image
                    else "",
                }
            if err:
                target = (
                    item["unlisted"]["id"]
                    if (ukey in by_field and item["unlisted"])
                    else item["id"]
                )
                field = ukey if ukey in by_field else o.name
                summary.append(
                    {"field": field, "anchor": target, "text": f"{o.display_name}: {err}"}
                )
            options.append(item)
        profiles.append(
            {
                "slug": v.slug,
                "id": f"afhub-profile-{v.slug}",
                "display_name": v.display_name,
                "description": v.description,
                "hardware": hardware_summary(v.resources, v.image),
                "arch": (v.resources or {}).get("arch", ""),
                "archs": _archs(v.image),
                "selected": v.slug == chosen,
                "options": options,
            }
        )
    covered = {s["field"] for s in summary}
    for e in errors:
        if e.field not in covered:
            summary.append({"field": e.field, "anchor": f"afhub-profile-{chosen}", "text": str(e)})
    return {"profiles": profiles, "errors": summary, "messages": list(messages)}


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("spawn_form.html")


def render(model: Mapping[str, Any]) -> str:
    """HTML of the options form (inserted by JupyterHub into its ``spawn.html`` page)."""
    return _template().render(**model)
