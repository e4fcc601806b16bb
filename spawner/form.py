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
import html
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
from markupsafe import Markup

from .options import UNLISTED_SENTINEL, field_name
from .profiles import (
    DEFAULT_ARCHS,
    UNLISTED_SUFFIX,
    Image,
    OptionsError,
    ProfileView,
    default_profile,
)
from .translations.units import parse_bytes

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def _archs(image: Image | None) -> str:
    return " ".join(image.archs) if image is not None else ""


#: Order of the parts of a resource summary.
PARTS = ("image", "cpu", "memory", "gpu", "arch")
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE])(i?)$")


def cpu_label(cpu: float) -> str:
    """``2`` -> ``"2 CPU cores"``, ``1`` -> ``"1 CPU core"``, ``0.5`` -> ``"0.5 CPU cores"``."""
    return f"{cpu:g} CPU core" + ("" if cpu == 1 else "s")


def size_label(text: str) -> str:
    """A values-file quantity in words: ``4G`` -> ``4 GB``, ``16Gi`` -> ``16 GiB``; plain bytes
    -> GB. Decimal and binary units stay what the operator wrote (4G is not 4 GiB)."""
    text = str(text).strip()
    m = _SIZE.match(text)
    if m:
        return f"{m.group(1)} {m.group(2)}{'i' if m.group(3) else ''}B"
    try:
        return f"{parse_bytes(text) / 1e9:.3g} GB"
    except ValueError:
        return text


def gpu_label(gpu: Mapping[str, Any]) -> str:
    """``{"count": 1, "type": "a100", "memory": "80G"}`` -> ``"1 GPU (a100, 80 GB)"``; ``""``
    without GPUs. The type is said even when it is "any", so nobody guesses."""
    count = int(gpu.get("count") or 0)
    if not count:
        return ""
    details = [gpu.get("type") or "any model"]
    if gpu.get("memory"):
        details.append(size_label(gpu["memory"]) + (" each" if count > 1 else ""))
    return f"{count} GPU{'s' if count > 1 else ''} ({', '.join(details)})"


def arch_label(archs: Iterable[str]) -> str:
    """``["x86_64", "aarch64"]`` -> ``"runs on x86_64 or aarch64"`` (the scheduler picks one)."""
    archs = list(archs)
    if len(archs) > 1:
        return f"runs on {', '.join(archs[:-1])} or {archs[-1]}"
    return f"runs on {archs[0]}" if archs else ""


def summary_parts(resources: Mapping[str, Any] | None, image: Image | None) -> dict[str, str]:
    """The summary parts a profile or one choice sets (see :data:`PARTS`)."""
    resources = resources or {}
    parts: dict[str, str] = {}
    if image is not None:
        parts["image"] = image.display_name
        parts["arch"] = arch_label(image.archs)
    if resources.get("cpu") is not None:
        parts["cpu"] = cpu_label(resources["cpu"])
    if resources.get("memory"):
        parts["memory"] = f"{size_label(resources['memory'])} memory"
    if "gpu" in resources:
        parts["gpu"] = gpu_label(resources.get("gpu") or {})
    if resources.get("arch"):
        parts["arch"] = arch_label([resources["arch"]])
    return parts


def join_parts(parts: Mapping[str, str]) -> str:
    return " · ".join(parts[k] for k in PARTS if parts.get(k))


def hardware_summary(resources: Mapping[str, Any], image: Image | None) -> str:
    """``"HEP analysis · 4 CPU cores · 16 GiB memory · 1 GPU (a100, 80 GB) · runs on x86_64"``."""
    return join_parts(summary_parts(resources, image))


def running_text(summary: Mapping[str, Any]) -> dict[str, str]:
    """The home page's line for a running server from ``Resolved.summary()``."""
    parts = {}
    if summary.get("cpu") is not None:
        parts["cpu"] = cpu_label(summary["cpu"])
    if summary.get("memory"):
        parts["memory"] = f"{size_label(summary['memory'])} memory"
    parts["gpu"] = gpu_label(summary.get("gpu") or {})
    if summary.get("arch"):
        parts["arch"] = f"on {summary['arch']}"
    return {"display_name": str(summary.get("display_name") or ""), "summary": join_parts(parts)}


@functools.lru_cache(maxsize=8192)
def _e(value: Any) -> str:
    """HTML-escaped text for attributes and content (quotes too). The page repeats the same
    few hundred strings (names, summary parts) thousands of times, hence the cache."""
    return html.escape(str(value), quote=True)


def _parts_attr(parts: Mapping[str, str]) -> str:
    """``data-part-<name>`` attributes the page script reads to redo the summary."""
    return "".join(f' data-part-{k}="{_e(v)}"' for k, v in parts.items())


def _choice_parts(c) -> dict[str, str]:
    return summary_parts(c.resources, c.image)


def _choice_html(c, selected: bool, parts: Mapping[str, str]) -> str:
    """One ``<option>`` (escaped here once: the page's largest loop, kept out of Jinja)."""
    attrs = f' data-arch="{_e(c.arch)}"' if c.arch else ""
    if c.image is not None:
        attrs += f' data-archs="{_e(_archs(c.image))}"'
    attrs += _parts_attr(parts)
    if selected:
        attrs += " selected"
    label = _e(c.display_name)
    if c.description:
        label += " — " + _e(c.description)
    return f'<option value="{_e(c.slug)}"{attrs}>{label}</option>'


def note_html(text: str, stale: bool = False) -> Markup:
    """A live line under a profile (escaped once here: the page renders it as it is)."""
    cls = "afhub-note afhub-note-stale" if stale else "afhub-note"
    return Markup(f'<p class="{cls}">{_e(text)}</p>')


def _anchor(profile: str, key: str) -> str:
    return "afhub-" + field_name(profile, key)


def form_model(
    views: list[ProfileView],
    *,
    selected: Mapping[str, str] | None = None,
    errors: Iterable[OptionsError] = (),
    messages: Iterable[str] = (),
    notes: Mapping[str, Markup] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, and nothing else. ``selected`` is ``user_options``;
    ``notes`` maps a profile slug to a live line (e.g. idle capacity) made by :func:`note_html`."""
    notes = notes or {}
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
        base = summary_parts(v.resources, v.image)
        current = dict(base)  # what this card's selected choices add up to
        fixed_arch = (v.resources or {}).get("arch")
        for o in v.options:
            ukey = o.name + UNLISTED_SUFFIX
            text = mine.get(ukey, "")
            if text or not o.choices:  # free text wins over a choice, as at start
                value = UNLISTED_SENTINEL
            else:
                value = mine.get(o.name) or o.default
            err = (by_field.get(ukey) or by_field.get(o.name)) if v.slug == chosen else None
            choices = []
            for c in o.choices:
                cparts = _choice_parts(c)
                if fixed_arch and not (c.resources or {}).get("arch"):
                    cparts.pop("arch", None)  # the profile's architecture is not the image's list
                if c.slug == value:
                    current.update(cparts)
                choices.append(_choice_html(c, c.slug == value, cparts))
            item = {
                "name": o.name,
                "display_name": o.display_name,
                "field": field_name(v.slug, o.name),
                "id": _anchor(v.slug, o.name),
                "error": err,
                "choices": choices,
                "unlisted": None,
            }
            if o.unlisted is not None:
                u = o.unlisted
                uparts = {}
                if u.image:
                    archs = u.image.get("archs") or ("x86_64",)
                    uparts = {"image": "your image"}
                    if not fixed_arch:
                        uparts["arch"] = arch_label(archs)
                if value == UNLISTED_SENTINEL:
                    current.update(uparts)
                item["unlisted"] = {
                    "parts": Markup(_parts_attr(uparts)),
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
                "hardware": join_parts(current),
                "base_parts": Markup(_parts_attr(base)),
                "arch": (v.resources or {}).get("arch", ""),
                "archs": _archs(v.image),
                "selected": v.slug == chosen,
                "options": options,
                "note": notes.get(v.slug, ""),
                "options_html": Markup("".join(_option_html(o) for o in options)),
            }
        )
    covered = {s["field"] for s in summary}
    for e in errors:
        if e.field not in covered:
            summary.append({"field": e.field, "anchor": f"afhub-profile-{chosen}", "text": str(e)})
    return {"profiles": profiles, "errors": summary, "messages": list(messages)}


def _option_html(o: Mapping[str, Any]) -> str:
    """One option's field (a ``<select>`` and/or the free-text input), escaped here: with
    hundreds of profiles this is the page's hot loop, so it is kept out of Jinja."""
    e = _e
    oid = e(o["id"])
    out = ['      <div class="afhub-field">\n']
    u = o["unlisted"]
    if o["choices"]:
        invalid = f' aria-invalid="true" aria-describedby="{oid}-error"' if o["error"] else ""
        out.append(f'        <label for="{oid}">{e(o["display_name"])}</label>\n')
        out.append(
            f'        <select id="{oid}" name="{e(o["field"])}" class="form-select" '
            f'data-option="{e(o["name"])}"{invalid}>\n'
        )
        out.extend(f"          {c}\n" for c in o["choices"])
        if u:
            archs = f' data-archs="{e(u["archs"])}"' if u["archs"] else ""
            sel = " selected" if u["selected"] else ""
            label = e(u["display_name_in_choices"])
            if u["description_in_choices"]:
                label += " — " + e(u["description_in_choices"])
            out.append(
                f'          <option value="{UNLISTED_SENTINEL}"{archs}{u["parts"]}{sel}>{label}</option>\n'
            )
        out.append("        </select>\n")
    if u:
        uid = e(u["id"])
        when = ""
        if o["choices"]:
            when = f" (when “{e(u['display_name_in_choices'])}” is chosen)"
        hint = f' aria-describedby="{uid}-hint"' if u["hint"] else ""
        out.append(f'        <div class="afhub-unlisted" data-for="{oid}">\n')
        out.append(f'          <label for="{uid}">{e(u["display_name"])}{when}</label>\n')
        out.append(
            f'          <input type="text" id="{uid}" name="{e(u["field"])}" class="form-control" '
            f'value="{e(u["value"])}" autocomplete="off" spellcheck="false"{hint}>\n'
        )
        if u["description"]:
            out.append(f'          <p class="afhub-desc">{e(u["description"])}</p>\n')
        if u["hint"]:
            out.append(f'          <p class="afhub-hint" id="{uid}-hint">{e(u["hint"])}</p>\n')
        out.append("        </div>\n")
    if o["error"]:
        out.append(f'        <p class="afhub-field-error" id="{oid}-error">{e(o["error"])}</p>\n')
    out.append("      </div>\n")
    return "".join(out)


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
