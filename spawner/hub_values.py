"""Values-file hooks of the spawner component (discovered by ``afhub.hub_config.values``).

``build(values, plan)`` turns the ``images``, ``profiles``, ``backend.local`` and
``backend.kubernetes`` sections into traitlets config; ``check(values)`` reports cross-key
problems a JSON Schema cannot express (a profile naming an image not in the catalogue, an
architecture the image is not built for, duplicate slugs, regular expressions that do not
compile). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

from . import profile_keys
from .profiles import UNLISTED_SUFFIX, slugify

MIXIN = "ProfileSpawnerMixin"  # config of this base class applies to every afhub spawner


def _problem(path: str, message: str):
    from afhub.hub_config.values import Problem

    return Problem(path, message)


def build(values: dict, plan) -> None:
    plan.set(MIXIN, "images", list(values.get("images") or []))
    plan.set(MIXIN, "profiles", list(values.get("profiles") or []))
    backend = values.get("backend") or {}
    kind = backend.get("type", "local")
    if kind == "local":
        local = backend.get("local") or {}
        plan.set(
            "LocalProfileSpawner",
            "home_root",
            local.get("home_root") or os.path.join(plan.data_dir, "home"),
        )
        if local.get("default_prefix"):
            plan.set("LocalProfileSpawner", "default_prefix", local["default_prefix"])
    elif kind == "kubernetes":
        _build_kubernetes(backend.get("kubernetes") or {}, plan)


def _build_kubernetes(k: dict, plan) -> None:
    K, P = "KubeSpawner", "KubeProfileSpawner"
    if "namespace" in k:
        plan.set(K, "namespace", k["namespace"])
    if "service_account" in k:
        plan.set(K, "service_account", k["service_account"])
    plan.set(K, "image_pull_policy", k.get("image_pull_policy", "IfNotPresent"))
    if k.get("image_pull_secrets"):
        plan.set(K, "image_pull_secrets", list(k["image_pull_secrets"]))
    if k.get("node_selector"):
        plan.set(K, "node_selector", dict(k["node_selector"]))
    if k.get("storage_class"):
        plan.set(K, "storage_pvc_ensure", True)
        plan.set(K, "storage_class", k["storage_class"])
        plan.set(K, "storage_capacity", k.get("storage_capacity", "10Gi"))
        plan.set(K, "pvc_name_template", "claim-{user_server}")
        plan.set(
            K, "volumes", [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
        )
        plan.set(K, "volume_mounts", [{"name": "home", "mountPath": "/home/jovyan"}])
    if "gpu_node_selector_key" in k:
        plan.set(P, "gpu_node_selector_key", k["gpu_node_selector_key"])
    if "gpu_tolerations" in k:
        plan.set(P, "gpu_tolerations", list(k["gpu_tolerations"]))
    if k.get("gpu_types"):
        plan.set(P, "gpu_types", dict(k["gpu_types"]))


def _unknown_image(path: str, name: str, images: dict) -> Any:
    match = difflib.get_close_matches(name, sorted(images), n=1, cutoff=0.6)
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    known = ", ".join(sorted(images)) or "none"
    return _problem(path, f"unknown image {name!r}{hint}; images: {known}")


def warn(values: dict) -> list:
    """Findings that do not stop the hub: keys nobody defines inside profile entries (ignored,
    as KubeSpawner ignores them) and pasted regexes that now match the whole value."""
    profiles = values.get("profiles")
    warnings, _ = profile_keys.unknown_keys(profiles)
    warnings += profile_keys.regex_warnings(profiles)
    return [_problem(path, message) for path, message in warnings]


def check(values: dict) -> list:
    problems = [_problem(p, m) for p, m in profile_keys.unknown_keys(values.get("profiles"))[1]]
    images = {img.get("name"): img for img in values.get("images") or [] if isinstance(img, dict)}
    slugs: dict[str, int] = {}
    defaults = []
    for i, p in enumerate(values.get("profiles") or []):
        where = f"profiles[{i}]"
        slug = p.get("slug") or slugify(p.get("display_name", ""))
        if slug in slugs:
            problems.append(
                _problem(f"{where}.slug", f"duplicate slug {slug!r} (also profiles[{slugs[slug]}])")
            )
        slugs.setdefault(slug, i)
        if p.get("default"):
            defaults.append(i)
        img = None
        if "image" in p:
            img = images.get(p["image"])
            if img is None:
                problems.append(_unknown_image(f"{where}.image", p["image"], images))
        res = p.get("resources") or {}
        problems += _check_fit(where, img, res)
        for name, opt in (p.get("profile_options") or {}).items():
            owhere = f"{where}.profile_options.{name}"
            if name == "profile" or name.endswith(UNLISTED_SUFFIX):
                problems.append(_problem(owhere, f"option name {name!r} is reserved"))
            u = opt.get("unlisted_choice") or {}
            if not opt.get("choices") and not u.get("enabled"):
                problems.append(_problem(owhere, "needs choices or an enabled unlisted_choice"))
            if u.get("validation_regex") is not None:
                try:
                    re.compile(u["validation_regex"])
                except re.error as e:
                    problems.append(
                        _problem(
                            f"{owhere}.unlisted_choice.validation_regex",
                            f"not a valid regular expression: {e}",
                        )
                    )
            for cslug, c in (opt.get("choices") or {}).items():
                cwhere = f"{owhere}.choices.{cslug}"
                cimg = img
                if "image" in c:
                    cimg = images.get(c["image"])
                    if cimg is None:
                        problems.append(_unknown_image(f"{cwhere}.image", c["image"], images))
                        continue
                merged = {**res, **(c.get("resources") or {})}
                cres = c.get("resources") or {}
                if "image" in c:
                    problems += _check_fit(cwhere, cimg, merged, at=f"{cwhere}.image")
                elif "arch" in cres or "gpu" in cres:
                    problems += _check_fit(cwhere, cimg, merged)
    if len(defaults) > 1:
        problems.append(
            _problem(
                f"profiles[{defaults[1]}].default",
                f"only one profile may be the default (also profiles[{defaults[0]}])",
            )
        )
    return problems


def _check_fit(where: str, img: dict | None, res: dict, at: str | None = None) -> list:
    """Static image/arch and image/GPU mismatches (choices are checked again at start)."""
    out = []
    if img is None:
        return out
    archs = img.get("archs") or ["x86_64"]
    if res.get("arch") and res["arch"] not in archs:
        out.append(
            _problem(
                at or f"{where}.resources.arch",
                f"image {img.get('name')!r} is built for {', '.join(archs)}, not {res['arch']}",
            )
        )
    if ((res.get("gpu") or {}).get("count") or 0) > 0 and not img.get("gpu"):
        out.append(
            _problem(
                at or f"{where}.resources.gpu.count",
                f"image {img.get('name')!r} is not GPU-enabled (set gpu: true on it)",
            )
        )
    return out
