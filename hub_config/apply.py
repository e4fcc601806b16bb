"""Turn validated values into JupyterHub configuration.

``build(values, data_dir=...)`` is pure: it returns a :class:`Plan` — a nested mapping of
``Section -> trait -> value`` — in which secrets are still :class:`SecretRef` placeholders.
``configure(c, values)`` resolves those (environment, files, generated keys in the data dir)
and sets them on a traitlets ``Config``; ``render_plan`` prints a plan with secrets masked.
The plan is built by the section owners listed in ``sections.SECTIONS``, in that order; each
writes only its own entries (``plan.py``).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from typing import Any

from . import secrets, sections
from .hub_section import public_url
from .plan import Plan, PlanConflict, SecretRef
from .values import load

__all__ = ["Plan", "PlanConflict", "SecretRef", "build", "configure", "public_url", "render_plan"]


def merge_values(base: dict, extra: dict) -> dict:
    """``extra`` laid over ``base``, mappings merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


DEPLOYMENTS = ("standalone", "z2jh")


def build(
    values: dict,
    *,
    data_dir: str | None = None,
    overrides: dict | None = None,
    deployment: str = "standalone",
) -> Plan:
    """Validate ``values`` (merged with ``overrides``) and build the config plan. No I/O.

    ``deployment="z2jh"`` leaves to the Zero to JupyterHub chart what it manages itself
    (addresses, proxy, database, cookie secret, idle culler).
    """
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"deployment must be one of {', '.join(DEPLOYMENTS)}, got {deployment!r}")
    merged = load(merge_values(values, overrides or {}))  # validated, defaults filled
    plan = Plan(data_dir=os.path.abspath(data_dir or "."), deployment=deployment)
    for owner in sections.owners():
        plan.owner = owner.__name__
        owner.build(merged, plan)
    return plan


def _resolve(ref: SecretRef, data_dir: str, environ) -> Any:
    if ref.generated:
        text = secrets.ensure_generated(os.path.join(data_dir, ref.generated))
    else:
        text = secrets.resolve(ref.value, ref.path, environ)
    if ref.transform == "hex-bytes":
        return bytes.fromhex(text)
    if ref.transform == "key-list":
        return [k for k in text.split(";") if k.strip()]
    return text


def apply_plan(c, plan: Plan, environ=None) -> None:
    """Set every entry of ``plan`` on Config ``c``, reading secrets as needed."""
    os.makedirs(plan.data_dir, mode=0o700, exist_ok=True)
    for section, traits in plan.sections.items():
        for key, value in traits.items():
            if isinstance(value, SecretRef):
                value = _resolve(value, plan.data_dir, environ)
            setattr(c[section], key, value)


def configure(
    c,
    path_or_values,
    *,
    data_dir: str | None = None,
    overrides: dict | None = None,
    environ=None,
    deployment: str | None = None,
    exit_on_error: bool = False,
):
    """Validate a values file (path or dict) and apply it to traitlets Config ``c``.

    This is the one entry point for every deployment: ``afhub up`` writes a config that calls
    it, Zero to JupyterHub's ``hub.extraConfig`` and batch sites' ``jupyterhub_config.py`` call
    it directly. ``deployment`` is ``"standalone"`` or ``"z2jh"``; by default it is detected
    (``"z2jh"`` inside the chart's hub pod, see ``z2jh.detect_deployment``). Raises
    :class:`afhub.hub_config.values.ValuesError` naming each bad key; with
    ``exit_on_error=True`` (what ``jupyterhub_config.py`` files use) it prints them instead, one
    ``key.path: message`` line each, and exits with code 2: the hub stops without a traceback.
    """
    if exit_on_error:
        from .problems import ValuesError

        try:
            return configure(
                c,
                path_or_values,
                data_dir=data_dir,
                overrides=overrides,
                environ=environ,
                deployment=deployment,
            )
        except ValuesError as e:
            source = path_or_values if not isinstance(path_or_values, dict) else "values"
            lines = [f"afhub: {source} cannot be used:"] + [f"  {p}" for p in e.problems]
            print("\n".join(lines), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    values = path_or_values if isinstance(path_or_values, dict) else None
    if values is None:
        from .values import ValuesError, all_problems, load_file

        try:
            values = load_file(path_or_values)
        except ValuesError as e:
            raise ValuesError(all_problems(e), e.source) from None
    environ = os.environ if environ is None else environ
    if deployment is None:
        from .z2jh import detect_deployment

        deployment = detect_deployment(environ)
    data_dir = data_dir or environ.get("AFHUB_DATA_DIR") or os.getcwd()
    plan = build(values, data_dir=data_dir, overrides=overrides, deployment=deployment)
    from .values import warnings

    for w in warnings(values):  # the hub's log (stderr while its config loads)
        logging.getLogger("afhub").warning("values: %s", w)
    apply_plan(c, plan, environ)
    return plan


def _py(value: Any) -> str:
    if isinstance(value, SecretRef):
        return repr(value.describe())
    if isinstance(value, set):
        return repr(sorted(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    return repr(value)


def render_plan(plan: Plan) -> str:
    """The plan as ``c.Section.trait = value`` lines, secrets masked."""
    lines = [f"# afhub effective configuration (data dir: {plan.data_dir})"]
    for section in sorted(plan.sections):
        for key in sorted(plan.sections[section]):
            lines.append(f"c.{section}.{key} = {_py(plan.sections[section][key])}")
    return "\n".join(lines) + "\n"
