"""Values section owner for where and what users run: ``backend``, ``images``, ``profiles``,
``singleuser``.

``build(values, plan)`` chooses the spawner class for ``backend.type`` (:data:`SPAWNER_CLASSES`),
its timeouts, the ``backend.<type>`` settings, the image catalogue and profiles, and the
operator's ``singleuser`` settings; ``check(values)`` reports cross-key problems a JSON Schema
cannot express (a profile naming an image not in the catalogue, an architecture the image is
not built for, duplicate slugs or image names, regular expressions that do not compile, a
backend not shipped yet). Pure: no I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from afhub.hub_config.problems import Problem, did_you_mean
from afhub.server_ext.contract import LAB_NEWS

from . import profile_keys
from .env_rules import env_problem
from .profiles import DEFAULT_ARCHS, UNLISTED_SUFFIX, misfits, slugify
from .regex_safety import backtracking_problem
from .translations.apptainer import ApptainerSettings

KEYS = ("backend", "images", "profiles", "singleuser")
MIXIN = "ProfileSpawnerMixin"  # config of this base class applies to every afhub spawner

SPAWNER_CLASSES = {
    "local": "afhub-local",
    "kubernetes": "afhub-kubernetes",
    "slurm": "afhub-slurm",
    "htcondor": "afhub-htcondor",
}
BATCH = ("slurm", "htcondor")  # queued backends: a longer default start timeout
START_TIMEOUT = {"batch": 600, "other": 120}
HTTP_TIMEOUT = 60


def _problem(path: str, message: str) -> Problem:
    return Problem(path, message)


#: Hub page templates afhub adds to (the home page names the running profile).
HUB_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "hub")


def build(values: dict, plan) -> None:
    backend = values["backend"]
    kind = backend["type"]
    plan.set("JupyterHub", "spawner_class", SPAWNER_CLASSES[kind])
    default_timeout = START_TIMEOUT["batch" if kind in BATCH else "other"]
    plan.set("Spawner", "start_timeout", backend.get("start_timeout", default_timeout))
    plan.set("Spawner", "http_timeout", backend.get("http_timeout", HTTP_TIMEOUT))
    single = values["singleuser"]
    plan.set("Spawner", "default_url", single["default_url"])
    if single.get("lab_news"):
        plan.add_env(LAB_NEWS, "1")  # else the server extension turns the question off
    for name, value in (single.get("env") or {}).items():
        plan.add_env(name, value)
    paths = list(plan.get("JupyterHub", "template_paths", []) or [])
    if HUB_TEMPLATES not in paths:
        plan.set("JupyterHub", "template_paths", [*paths, HUB_TEMPLATES])
    plan.set(MIXIN, "images", list(values.get("images") or []))
    plan.set(MIXIN, "profiles", list(values.get("profiles") or []))
    if kind == "local":
        local = backend["local"]
        copy_present(local, BACKEND_TRAITS["local"], plan)
        # empty means "the spawner's own default" for these two (it depends on the host)
        for key in ("home_root", "default_prefix"):
            if local.get(key):
                plan.set("LocalProfileSpawner", key, local[key])
    elif kind == "kubernetes":
        _build_kubernetes(backend["kubernetes"], plan)
    elif kind in ("slurm", "htcondor"):
        _build_batch(kind, backend.get(kind) or {}, plan)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Copy:
    """One values key (dotted, below ``backend.<type>``) copied to one trait when present.

    The trait's own default is the one definition of the key's default: an absent key leaves
    it alone (``tests/test_defaults.py`` checks that the schema documents the same default)."""

    key: str
    cls: str
    trait: str
    convert: Callable[[Any], Any] = _same


def _traits(cls: str, pairs: dict[str, str], **convert: Callable[[Any], Any]) -> tuple:
    """``Copy`` entries of ``cls`` for ``{values key: trait}``; ``convert`` by trait name."""
    return tuple(Copy(k, cls, t, convert.get(t, _same)) for k, t in pairs.items())


BATCH_CLASSES = {"slurm": "SlurmProfileSpawner", "htcondor": "CondorProfileSpawner"}
_BATCH_COMMON = {
    "runtime": "req_runtime",
    "environment": "environment_prefix",
    "exec_prefix": "exec_prefix",
    "batch_script": "batch_script",
    "gpu_types": "gpu_types",
    "account_prefix": "account_prefix",
    "server_ip": "server_ip",
    "node_addresses": "node_addresses",
    "scheduler_timeout": "scheduler_timeout",
    "cancel_retry_interval": "cancel_retry_interval",
    "capacity.enabled": "capacity_enabled",
    "capacity.refresh_interval": "capacity_refresh_interval",
    "capacity.stale_after": "capacity_stale_after",
    "capacity.timeout": "capacity_timeout",
}
_NUMBERS = {
    k: float
    for k in (
        "scheduler_timeout",
        "cancel_retry_interval",
        "capacity_refresh_interval",
        "capacity_stale_after",
        "capacity_timeout",
    )
}
_MAPS = {k: dict for k in ("gpu_types", "node_addresses", "arch_features")}

#: backend type -> the values keys below ``backend.<type>`` copied to traits when present.
#: ``apptainer`` is read by :class:`ApptainerSettings` (shared with Dask's jobs), the
#: kubernetes home volume by :func:`_build_kubernetes`.
BACKEND_TRAITS: dict[str, tuple[Copy, ...]] = {
    "local": _traits(
        "LocalProfileSpawner",
        {"accounts": "accounts", "account_prefix": "account_prefix"},
    )
    + (Copy("delete_accounts", "LocalProfileSpawner", "delete_accounts", bool),),
    "kubernetes": _traits(
        "KubeSpawner",
        {
            "namespace": "namespace",
            "service_account": "service_account",
            "image_pull_policy": "image_pull_policy",
            "image_pull_secrets": "image_pull_secrets",
            "node_selector": "node_selector",
        },
        image_pull_secrets=list,
        node_selector=dict,
    )
    + _traits(
        "KubeProfileSpawner",
        {
            "gpu_node_selector_key": "gpu_node_selector_key",
            "gpu_tolerations": "gpu_tolerations",
            "gpu_types": "gpu_types",
        },
        gpu_tolerations=list,
        gpu_types=dict,
    ),
    "slurm": _traits(
        BATCH_CLASSES["slurm"],
        {
            **_BATCH_COMMON,
            "partition": "req_partition",
            "account": "req_account",
            "qos": "req_qos",
            "arch_features": "arch_features",
        },
        **_NUMBERS,
        **_MAPS,
    ),
    "htcondor": _traits(
        BATCH_CLASSES["htcondor"],
        {
            **_BATCH_COMMON,
            "requirements": "requirements",
            "accounting_group": "accounting_group",
            "cpu": "default_cpu",
            "memory": "default_memory",
            "capacity.pool": "capacity_pool",
        },
        default_cpu=str,
        **_NUMBERS,
        **_MAPS,
    ),
}


def copy_present(section: dict, copies: tuple[Copy, ...], plan) -> None:
    """``plan.set`` each trait whose values key is present in ``section``, converted."""
    for c in copies:
        value: Any = section
        for part in c.key.split("."):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            plan.set(c.cls, c.trait, c.convert(value))


def _build_batch(kind: str, b: dict, plan) -> None:
    P = BATCH_CLASSES[kind]
    app = ApptainerSettings.from_values(b.get("apptainer"))
    plan.set(P, "apptainer_command", app.command)
    plan.set(P, "apptainer_binds", list(app.binds))
    plan.set(P, "apptainer_extra_args", list(app.extra_args))
    copy_present(b, BACKEND_TRAITS[kind], plan)


def _build_kubernetes(k: dict, plan) -> None:
    K = "KubeSpawner"
    copy_present(k, BACKEND_TRAITS["kubernetes"], plan)
    if k.get("storage_class"):
        plan.set(K, "storage_pvc_ensure", True)
        plan.set(K, "storage_class", k["storage_class"])
        plan.set(K, "storage_capacity", k.get("storage_capacity", "10Gi"))
        plan.set(K, "pvc_name_template", "claim-{user_server}")
        plan.set(
            K, "volumes", [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
        )
        plan.set(K, "volume_mounts", [{"name": "home", "mountPath": "/home/jovyan"}])


def _unknown_image(path: str, name: str, images: dict) -> Any:
    known = ", ".join(sorted(images)) or "none"
    return _problem(path, f"unknown image {name!r}{did_you_mean(name, images)}; images: {known}")


def _check_batch(values: dict) -> list:
    """``batch`` settings of profiles/choices: keys the backend uses, values that fit."""
    from .translations.batchfields import HTCONDOR_KEYS, PATTERNS, SLURM_KEYS

    kind = (values.get("backend") or {}).get("type", "local")
    usable = {"slurm": SLURM_KEYS, "htcondor": HTCONDOR_KEYS}.get(kind, ())
    problems = []

    def one(where: str, batch: dict, free_text: bool) -> None:
        for key, value in (batch or {}).items():
            at = f"{where}.batch.{key}"
            if key not in usable:
                problems.append(
                    _problem(
                        at,
                        f"not used by the {kind} backend (batch settings: {', '.join(usable) or 'slurm and htcondor only'})",
                    )
                )
                continue
            if "{value}" in value:
                if not free_text:
                    problems.append(_problem(at, "{value} is only replaced in an unlisted_choice"))
                elif key == "requirements":
                    problems.append(
                        _problem(at, "entered text cannot become part of a ClassAd expression")
                    )
                continue
            pattern, what = PATTERNS[key]
            if not pattern.match(value):
                problems.append(_problem(at, f"{value!r} does not fit ({what})"))

    for i, p in enumerate(values.get("profiles") or []):
        where = f"profiles[{i}]"
        one(where, p.get("batch"), False)
        for name, opt in (p.get("profile_options") or {}).items():
            owhere = f"{where}.profile_options.{name}"
            for cslug, c in (opt.get("choices") or {}).items():
                one(f"{owhere}.choices.{cslug}", c.get("batch"), False)
            one(f"{owhere}.unlisted_choice", (opt.get("unlisted_choice") or {}).get("batch"), True)
    return problems


def warn(values: dict) -> list:
    """Findings that do not stop the hub: keys nobody defines inside profile entries (ignored,
    as KubeSpawner ignores them) and pasted regexes that now match the whole value."""
    profiles = values.get("profiles")
    warnings, _ = profile_keys.unknown_keys(profiles)
    warnings += profile_keys.regex_warnings(profiles)
    kind = values["backend"]["type"]
    if kind != "kubernetes":
        warnings += _not_applicable(profiles, kind)
    return [_problem(path, message) for path, message in warnings]


def _not_applicable(profiles, kind: str) -> list[tuple[str, str]]:
    """``kubespawner_override`` keys the backend cannot use: one warning per key, naming the
    first place and how many more (the hub log says the same once per key at start)."""
    from .portable import portable

    seen: dict[str, list[str]] = {}
    for where, override in profile_keys.overrides(profiles):
        found = portable([{k: v for k, v in override.items() if not callable(v)}])
        keys = list(found.ignored) + (["image"] if found.image and kind == "local" else [])
        for key in keys:
            seen.setdefault(key, []).append(where)
    out = []
    for key, places in seen.items():
        more = f" and {len(places) - 1} more" if len(places) > 1 else ""
        out.append(
            (
                f"{places[0]}.kubespawner_override",
                f"{key} does not apply to the {kind} backend and is ignored (here{more}); cpu, "
                "memory, GPU count/type, arch, environment and default_url carry over",
            )
        )
    return out


def check(values: dict) -> list[Problem]:
    problems = _check_images(values.get("images") or [])
    problems += _check_batch(values)
    for name, value in (values["singleuser"].get("env") or {}).items():
        message = env_problem(name, value)
        if message:
            problems.append(Problem(f"singleuser.env.{name}", message))
    problems += _check_profiles(values)
    from .gpu_rules import gpu_type_problems  # a type the backend's gpu_types does not name

    problems += gpu_type_problems(values)
    return problems


def _check_images(images: list) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, img in enumerate(images):
        name = img.get("name") if isinstance(img, dict) else None
        if name in seen:
            problems.append(Problem(f"images[{i}].name", f"duplicate image name {name!r}"))
        seen.add(name)
    return problems


def _check_profiles(values: dict) -> list[Problem]:
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
                else:
                    risk = backtracking_problem(u["validation_regex"])
                    if risk:
                        problems.append(
                            _problem(f"{owhere}.unlisted_choice.validation_regex", risk)
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
    archs = tuple(img.get("archs") or DEFAULT_ARCHS)
    gpu_count = (res.get("gpu") or {}).get("count") or 0
    misfit = misfits(archs, bool(img.get("gpu")), arch=res.get("arch"), gpu_count=gpu_count)
    if "arch" in misfit:
        out.append(
            _problem(
                at or f"{where}.resources.arch",
                f"image {img.get('name')!r} is built for {', '.join(archs)}, not {res['arch']}",
            )
        )
    if "gpu" in misfit:
        out.append(
            _problem(
                at or f"{where}.resources.gpu.count",
                f"image {img.get('name')!r} is not GPU-enabled (set gpu: true on it)",
            )
        )
    return out
