"""``ProfileSpawnerMixin``: the spawn page and one validation path, shared by every backend.

Glue between JupyterHub and the pure modules: it reads the user's groups, renders
:mod:`.form`, parses with :mod:`.options`, resolves with :mod:`.profiles` in
``apply_user_options`` (form, ``/hub/spawn?...`` and REST starts all pass through it) and hands
the :class:`~afhub.spawner.profiles.Resolved` profile to the backend subclass's
``afhub_translate`` / ``afhub_apply_backend``. Every start first restores the traits a previous
start changed, so nothing leaks between starts.

The last successful choice is kept in the spawner state (it survives stops and hub restarts)
and preselected on the page; the running profile's display summary is in the state too, which
admins see in the hub API (``GET /hub/api/users/<name>?include_stopped_servers`` with
``admin:server_state``) and the admin page.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from tornado import web
from traitlets import Dict, List, default
from traitlets.config import LoggingConfigurable

from . import form
from .options import options_from_form, query_to_prefill
from .profiles import Catalogue, OptionsError, Resolved, resolve, resolve_saved


class PrefillOnly(Exception):
    """Raised by ``options_from_query``: ``/hub/spawn?...`` prefills the page, never starts.

    JupyterHub then renders the options form (which reads the query) instead of spawning;
    ``jupyterhub_message`` is empty so no error is shown.
    """

    jupyterhub_message = ""

    def __init__(self):
        super().__init__(
            "/hub/spawn query arguments prefill the spawn page; they never start a server"
        )


def options_http_error(e: OptionsError) -> web.HTTPError:
    """HTTP 400 whose message (REST JSON body and the page's error line) names the field."""
    err = web.HTTPError(400, "%s", str(e))
    err.jupyterhub_message = str(e)
    return err


def _default_apply_user_options(spawner, user_options):
    return spawner.afhub_apply_user_options(user_options)


class _PrefillLogFilter(logging.Filter):
    """JupyterHub logs every failed query-argument spawn with a traceback; a prefill link is
    not a failure, so that record becomes one informational line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PrefillOnly):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "Spawn page prefilled from /hub/spawn query arguments",
                (),
                None,
                None,
            )
        return True


_PREFILL_FILTER = _PrefillLogFilter()


def install_prefill_log_filter(log: logging.Logger) -> None:
    if _PREFILL_FILTER not in log.filters:
        log.addFilter(_PREFILL_FILTER)


class ProfileSpawnerMixin(LoggingConfigurable):
    """Profiles from the values file on the spawn page, enforced for every way of starting.

    Mix in before a Spawner class: ``class X(ProfileSpawnerMixin, SomeSpawner)``. Subclasses
    implement ``afhub_translate(resolved)`` (pure, may raise OptionsError) and
    ``afhub_apply_backend(config)`` (set traits with ``afhub_set``).
    """

    images = List(
        Dict(),
        config=True,
        help="""Image catalogue (the values file's ``images``): dicts with ``name, image,
        display_name, description, archs, gpu, allowed_groups, local_prefix``. Default ``[]``.""",
    )

    profiles = List(
        Dict(),
        config=True,
        help="""Profiles (the values file's ``profiles``; KubeSpawner ``profile_list`` entries
        plus ``allowed_groups``, ``image``, ``resources``). Default ``[]``: one profile per image,
        or a single unnamed "Default" profile when there are no images either.""",
    )

    # ---- state kept per spawner ------------------------------------------------------------

    _afhub_last_choice: dict | None = None
    _afhub_running: dict | None = None
    _afhub_resolved: Resolved | None = None
    _afhub_failed: tuple[dict, OptionsError] | None = None
    _afhub_baseline: dict | None = None
    _afhub_env: dict | None = None
    _afhub_catalogue_key: Any = None
    _afhub_catalogue_value: Catalogue | None = None

    def afhub_catalogue(self) -> Catalogue:
        key = (id(self.images), id(self.profiles))
        if self._afhub_catalogue_key != key:
            profiles = self.profiles or (
                [] if self.images else [{"display_name": "Default", "slug": "default"}]
            )
            self._afhub_catalogue_value = Catalogue(self.images, profiles)
            self._afhub_catalogue_key = key
        return self._afhub_catalogue_value

    def afhub_groups(self) -> list[str]:
        return sorted(g.name for g in (getattr(self.user, "groups", None) or []))

    def afhub_views(self):
        return self.afhub_catalogue().visible(self.afhub_groups())

    # ---- spawn page --------------------------------------------------------------------

    @default("options_form")
    def _afhub_options_form_default(self):
        return _render_options_form

    @default("options_from_form")
    def _afhub_options_from_form_default(self):
        return options_from_form

    def options_from_query(self, query_data):
        install_prefill_log_filter(self.log)
        raise PrefillOnly()

    def afhub_render_form(self) -> str:
        views = self.afhub_views()
        errors: list[OptionsError] = []
        messages: list[str] = []
        selected: dict[str, str] = {}
        failed, self._afhub_failed = self._afhub_failed, None
        query = self._afhub_query()
        if failed is not None:
            selected, err = failed
            errors.append(err)
        elif query:
            selected = query_to_prefill(query)
            try:
                resolve(views, selected)
            except OptionsError as e:
                messages.append(
                    f"The link's options cannot be used: {e}. Please check the choices below."
                )
        elif self._afhub_last_choice:
            try:
                selected = dict(resolve_saved(views, self._afhub_last_choice).options)
            except OptionsError:
                selected = {}
            else:
                try:
                    resolve(views, self._afhub_last_choice)
                except OptionsError as e:
                    messages.append(
                        f"Your last choice is no longer available ({e}); the defaults are preselected."
                    )
        if not views:
            messages.append("No profiles are available to you; ask the facility admins.")
        model = form.form_model(views, selected=selected, errors=errors, messages=messages)
        return form.render(model)

    def _afhub_query(self) -> dict[str, list[str]]:
        handler = getattr(self, "handler", None)
        request = getattr(handler, "request", None)
        if request is None or request.method != "GET":
            return {}
        return {
            k: [b.decode("utf-8", "replace") for b in v] for k, v in request.query_arguments.items()
        }

    # ---- one validation path ---------------------------------------------------------

    @default("apply_user_options")
    def _afhub_apply_user_options_default(self):
        return _default_apply_user_options

    async def afhub_apply_user_options(self, user_options: Any) -> Resolved:
        """Resolve and apply ``user_options`` for this start; HTTP 400 naming the field if not."""
        views = self.afhub_views()
        saved = self._afhub_last_choice
        try:
            if saved and isinstance(user_options, Mapping) and dict(user_options) == saved:
                resolved = resolve_saved(views, saved)
            else:
                resolved = resolve(views, user_options)
            self.afhub_apply_resolved(resolved)
        except OptionsError as e:
            submitted = dict(user_options) if isinstance(user_options, Mapping) else {}
            self._afhub_failed = ({k: v for k, v in submitted.items() if isinstance(v, str)}, e)
            # a rejected request must not replace the remembered choice
            self.user_options = dict(saved or {})
            self.orm_spawner.user_options = dict(saved or {})
            self.log.warning("Rejected user_options for %s: %s", self._log_name, e)
            raise options_http_error(e) from None
        self.user_options = dict(resolved.options)
        self.orm_spawner.user_options = dict(resolved.options)
        for m in resolved.messages:
            self.log.warning("%s: %s", self._log_name, m)
        self.log.info("%s: starting profile %s", self._log_name, resolved.summary())
        return resolved

    # ---- fresh configuration per start -----------------------------------------------

    def afhub_apply_resolved(self, resolved: Resolved) -> None:
        """Translate (may raise OptionsError, changing nothing), then reset and apply."""
        config = self.afhub_translate(resolved)
        self.afhub_reset()
        self.afhub_apply_backend(config)
        self._afhub_resolved = resolved

    def afhub_set(self, name: str, value: Any) -> None:
        """Set a trait for this start, remembering its configured value for the next start."""
        if self._afhub_baseline is None:
            self._afhub_baseline = {}
        if name not in self._afhub_baseline:
            self._afhub_baseline[name] = copy.deepcopy(getattr(self, name))
        setattr(self, name, value)

    def afhub_base(self, name: str) -> Any:
        """The configured value of a trait (before any start changed it)."""
        if self._afhub_baseline and name in self._afhub_baseline:
            return copy.deepcopy(self._afhub_baseline[name])
        return copy.deepcopy(getattr(self, name))

    def afhub_reset(self) -> None:
        for name, value in (self._afhub_baseline or {}).items():
            setattr(self, name, copy.deepcopy(value))
        self._afhub_env = {}

    def afhub_translate(self, resolved: Resolved) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def afhub_apply_backend(self, config: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- start, env, progress, state -----------------------------------------------------

    async def afhub_ensure_resolved(self) -> Resolved:
        """Resolve at start if the operator replaced ``apply_user_options`` (still enforced)."""
        if self._afhub_resolved is None:
            await self.afhub_apply_user_options(self.user_options or {})
        return self._afhub_resolved

    def afhub_started(self) -> None:
        resolved = self._afhub_resolved
        if resolved is not None:
            self._afhub_last_choice = dict(resolved.options)
            self._afhub_running = resolved.summary()

    def get_env(self):
        env = super().get_env()
        env.update(self._afhub_env or {})
        return env

    async def progress(self):
        resolved = self._afhub_resolved
        if resolved is not None:
            s = resolved.summary()
            hw = [f"image {s['image']}" if s["image"] else None, s["arch"]]
            if s["gpu"]["count"]:
                hw.append(f"{s['gpu']['count']} × {s['gpu']['type'] or ''} GPU".replace("  ", " "))
            detail = ", ".join(h for h in hw if h)
            yield {
                "progress": 10,
                "message": f"Profile {resolved.display_name}" + (f": {detail}" if detail else ""),
            }
            for m in resolved.messages:
                yield {"progress": 10, "message": m}
        async for event in super().progress():
            yield event

    def get_state(self):
        state = super().get_state()
        afhub = {}
        if self._afhub_last_choice:
            afhub["last_choice"] = self._afhub_last_choice
        if self._afhub_running:
            afhub["running"] = self._afhub_running
        if afhub:
            state["afhub"] = afhub
        return state

    def load_state(self, state):
        super().load_state(state)
        afhub = (state or {}).get("afhub") or {}
        if isinstance(afhub.get("last_choice"), dict):
            self._afhub_last_choice = afhub["last_choice"]
        self._afhub_running = afhub.get("running")

    def clear_state(self):
        """Forget the running profile; keep the last successful choice for the next start."""
        super().clear_state()
        self._afhub_running = None
        self._afhub_resolved = None


def _render_options_form(spawner) -> str:
    return spawner.afhub_render_form()
