"""Render Zero to JupyterHub chart values for a facility described by an afhub values file.

Pure: values in, chart values (a dict) out. The chart keeps what it manages itself (proxy,
database, cookie secret, crypt key, the idle culler, which it gets from ``culling``); afhub's
own settings reach the hub through ``hub.extraConfig`` calling
``configure(c, <mounted values file>, deployment="z2jh")``. Secrets are never copied in:
``{env: VAR}`` secrets become ``secretKeyRef`` entries of a Kubernetes Secret the operator
creates, ``{file: PATH}`` secrets must be mounted at PATH by the operator.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from .targets import target_problems
from .values import Problem, ValuesError, format_path, load

# Inside the chart's hub pod: the chart mounts its helper module here and sets HELM_RELEASE_NAME.
CHART_MARKER = "/etc/jupyterhub/z2jh.py"

EXTRA_CONFIG = """\
from afhub.hub_config import configure
configure(c, {path!r}, data_dir="/srv/jupyterhub", deployment="z2jh", exit_on_error=True)
"""

SECRET_KEYS = (("hub", "db_url"), ("hub", "crypt_key"), ("auth", "client_secret"))


def env_secrets(values: dict) -> list[str]:
    """Names of the environment variables the values' ``{env: VAR}`` secrets read."""
    names = []
    for section, key in SECRET_KEYS:
        v = values.get(section, {}).get(key)
        if isinstance(v, dict) and "env" in v:
            names.append(v["env"])
    return names


def image_ref(ref: str) -> dict[str, str]:
    """``{"name": ..., "tag": ...}`` of an image reference, as the chart's ``*.image`` keys
    take it (``registry:5000/afhub/hub`` has no tag: ``latest``; a digest stays in the name)."""
    if "@" in ref:
        return {"name": ref, "tag": ""}
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return {"name": ref, "tag": "latest"}
    return {"name": name, "tag": tag}


def chart_values(
    values: dict,
    *,
    values_dir: str = "/etc/afhub",
    configmap: str = "afhub-values",
    secret: str = "afhub-secrets",
    hub_image: str | None = None,
) -> dict[str, Any]:
    """z2jh chart values that run this facility; raise ValuesError for what cannot run there.

    ``hub_image``: the hub image with afhub installed (images/hub/Dockerfile), set as
    ``hub.image``; without it the operator's chart values must name one.
    """
    values = load(values)  # validated, schema defaults filled
    problems = target_problems(values, "z2jh")
    if problems:
        raise ValuesError(problems)

    hub, named, cull = values["hub"], values["named_servers"], values["culling"]
    single = values["singleuser"]
    out: dict[str, Any] = {
        "hub": {
            "baseUrl": hub["base_url"],
            "concurrentSpawnLimit": hub["concurrent_spawn_limit"],
            "allowNamedServers": named["enabled"],
            "extraConfig": {"afhub": EXTRA_CONFIG.format(path=f"{values_dir}/values.yaml")},
            "extraVolumes": [{"name": "afhub-values", "configMap": {"name": configmap}}],
            "extraVolumeMounts": [
                {"name": "afhub-values", "mountPath": values_dir, "readOnly": True}
            ],
        },
        "cull": {
            "enabled": cull["enabled"],
            "timeout": cull["timeout"],
            "every": cull["every"],
            "maxAge": cull["max_age"],
            "users": cull["users"],
        },
        "singleuser": {"defaultUrl": single["default_url"]},
    }
    if hub_image:
        out["hub"]["image"] = image_ref(hub_image)
    if named["enabled"]:
        out["hub"]["namedServerLimitPerUser"] = named["limit_per_user"]
    env = {
        name: {"valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in env_secrets(values)
    }
    if env:
        out["hub"]["extraEnv"] = env
    if single.get("env"):
        out["singleuser"]["extraEnv"] = dict(single["env"])
    return out


def detect_deployment(environ=None, exists=None) -> str:
    """``"z2jh"`` inside the Zero to JupyterHub chart's hub pod, else ``"standalone"``.

    The chart's hub container has ``HELM_RELEASE_NAME`` in its environment and the chart's
    ``z2jh.py`` helper mounted at :data:`CHART_MARKER`; both must be there.
    """
    environ = os.environ if environ is None else environ
    exists = exists or os.path.exists
    return "z2jh" if environ.get("HELM_RELEASE_NAME") and exists(CHART_MARKER) else "standalone"


def _schema_file(name: str) -> Any:
    text = resources.files("afhub.hub_config").joinpath("schemas", name).read_text("utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@lru_cache(maxsize=4)
def chart_schema(chart: str = "z2jh") -> tuple[dict, dict]:
    """(JSON Schema, default values) of a chart shipped in ``schemas/`` (see SOURCE.md)."""
    return _schema_file(f"{chart}-values.schema.yaml"), _schema_file(f"{chart}-values.yaml")


def _over(base: Any, extra: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(extra, dict)):
        return copy.deepcopy(extra)
    out = dict(base)
    for k, v in extra.items():
        out[k] = _over(base.get(k), v) if k in base else copy.deepcopy(v)
    return out


def chart_problems(generated: dict, chart: str = "z2jh") -> list[Problem]:
    """Problems the chart's own schema finds in ``generated`` laid over the chart defaults,
    named ``chart:<key path>`` (an afhub bug or a values key the chart cannot take)."""
    schema, defaults = chart_schema(chart)
    validator = jsonschema.Draft7Validator(schema)
    out = []
    for error in validator.iter_errors(_over(defaults, generated)):
        where = format_path(list(error.absolute_path))
        out.append(Problem(f"chart:{where}", error.message))
    return sorted(set(out))


def merge_chart_values(existing: dict, generated: dict) -> dict[str, Any]:
    """The operator's chart values with afhub's laid over them, for migrating a running hub.

    Everything the operator has stays, ``singleuser.profileList`` included (the chart passes it
    to ``c.KubeSpawner.profile_list``, which afhub's spawner serves when the values file has no
    ``profiles``). afhub's keys replace the operator's scalars; ``hub.extraConfig`` snippets are
    merged by name; ``hub.extraVolumes``/``extraVolumeMounts`` keep the operator's entries and add
    afhub's (an entry of the same name is replaced).
    """
    out = _over(existing or {}, {k: v for k, v in generated.items() if k != "hub"})
    hub = dict(out.get("hub") or {})
    for key, value in (generated.get("hub") or {}).items():
        if key in ("extraVolumes", "extraVolumeMounts") and isinstance(hub.get(key), list):
            names = {v.get("name") for v in value if isinstance(v, dict)}
            kept = [v for v in hub[key] if not (isinstance(v, dict) and v.get("name") in names)]
            hub[key] = kept + copy.deepcopy(value)
        else:
            hub[key] = _over(hub.get(key), value) if key in hub else copy.deepcopy(value)
    out["hub"] = hub
    return out


def chart_profile_list(chart: dict) -> Any:
    return ((chart or {}).get("singleuser") or {}).get("profileList")


def profile_list_findings(values: dict, chart: dict) -> tuple[list[Problem], list[Problem]]:
    """``(notes, problems)`` about who serves profiles when the chart has a profileList.

    Notes say which source afhub's spawner serves (the documented rule: the values file's
    ``profiles`` win over ``singleuser.profileList``) and list keys nobody defines in the
    chart's list; problems are what would stop the list from being served at all.
    """
    from afhub.spawner import profile_keys
    from afhub.spawner.profiles import profile_list_entries, profile_list_problems

    root = "singleuser.profileList"
    pl = chart_profile_list(chart)
    notes: list[Problem] = []
    if not pl:
        return notes, []
    entries = profile_list_entries(pl) if isinstance(pl, (list, dict)) else pl
    problems = [Problem(f"chart:{p}", m) for p, m in profile_list_problems(entries, root)]
    profiles = values.get("profiles") or []
    if profiles:
        notes.append(
            Problem(
                root,
                f"ignored: the values file's profiles ({len(profiles)}) are served; remove "
                "`profiles` from the values file to serve the chart's list",
            )
        )
    else:
        notes.append(
            Problem(
                root,
                f"stays in the chart values; afhub's spawner serves its {len(entries)} profiles "
                "(add allowed_groups to entries to limit them)",
            )
        )
        warnings, errors = profile_keys.unknown_keys(entries, root)
        notes += [Problem(p, m) for p, m in warnings]
        problems += [Problem(p, m) for p, m in errors]
    return notes, problems


def validated_chart_values(values: dict, **kw) -> dict[str, Any]:
    """:func:`chart_values`, checked against the shipped chart schema; ValuesError otherwise."""
    out = chart_values(values, **kw)
    problems = chart_problems(out)
    if problems:
        raise ValuesError(problems)
    return out
