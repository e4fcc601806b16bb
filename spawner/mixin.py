"""``ProfileSpawnerMixin``: the spawn page and one validation path, shared by every backend.

Glue between JupyterHub and the pure modules: it reads the user's groups, renders
:mod:`.form`, parses with :mod:`.options`, resolves with :mod:`.profiles` in
``apply_user_options`` (form, ``/hub/spawn?...`` and REST starts all pass through it) and hands
the :class:`~afhub.spawner.profiles.Resolved` profile to the backend subclass's
``afhub_translate`` / ``afhub_apply_backend``. Every start first restores the traits a previous
start changed, so nothing leaks between starts.

Profiles come from one of two sources (see :meth:`ProfileSpawnerMixin.afhub_profile_source`):
afhub's ``profiles`` (the values file) or, when that is empty, KubeSpawner's ``profile_list``
(a list, a dict keyed by slug, or a callable / async callable of the spawner, called once per
start and once per page). When both are set ``profiles`` wins and the hub log says so once.
Nothing here needs a database record: a spawner made by a test or another tool
(``KubeSpawner(_mock=True)`` style) resolves and renders the same way.

The last successful choice is kept in the spawner state (it survives stops and hub restarts)
and preselected on the page; the running profile's display summary is in the state too, which
admins see in the hub API (``GET /hub/api/users/<name>?include_stopped_servers`` with
``admin:server_state``) and the admin page.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from afhub.hub_config.logs import into_hub_log
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Callable, Dict, List, Union, default
from traitlets.config import LoggingConfigurable

from . import form
from .backend import SpawnerState
from .options import options_from_form, query_to_prefill
from .portable import portable
from .profiles import (
    Catalogue,
    Image,
    OptionsError,
    Resolved,
    profile_list_entries,
    profile_list_problems,
    resolve,
    resolve_saved,
)

_DEFAULT_PROFILE = {"display_name": "Default", "slug": "default"}


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
    return OptionsRejected(400, str(e))


_RECENT_USER_ERRORS: collections.deque[str] = collections.deque(maxlen=64)


class UserError(web.HTTPError):
    """An HTTP error for a user's mistake or a refusal, which the spawner has logged as one
    warning line: ``jupyterhub_message`` reaches the user (REST JSON and the page); no other
    log record repeats it (no tornado ``log_message``, and JupyterHub's records of it are
    dropped by :class:`_PrefillLogFilter`)."""

    afhub_logged = True

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.jupyterhub_message = message
        _RECENT_USER_ERRORS.append(str(self))

    def __str__(self) -> str:
        return f"{super().__str__()} ({self.jupyterhub_message})"


class OptionsRejected(UserError, ValueError):
    """``user_options`` refused: HTTP 400 for JupyterHub, and a ``ValueError`` for code written
    for KubeSpawner, which raises ``ValueError`` for options it cannot load (e.g. an unlisted
    choice failing its ``validation_regex``)."""


def user_error(status: int, message: str) -> web.HTTPError:
    return UserError(status, message)


def misconfigured(log: logging.Logger, detail: str) -> web.HTTPError:
    """An operator's configuration error met at start: the detail goes to the hub log, the
    user gets HTTP 500 saying to tell the admins (never the configuration itself)."""
    log.error("%s", detail)
    err = web.HTTPError(500, "profile configuration error")
    err.jupyterhub_message = (
        "The facility's profile list is misconfigured; please tell the facility admins."
    )
    return err


def _default_apply_user_options(spawner, user_options):
    return spawner.afhub_apply_user_options(user_options)


class _PrefillLogFilter(logging.Filter):
    """JupyterHub logs every failed query-argument spawn with a traceback; a prefill link is
    not a failure, so that record becomes one informational line. It also logs every rejected
    ``user_options`` with an ERROR traceback: a user's mistake afhub already logged as one
    warning line (errors marked ``afhub_logged``), so that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if getattr(exc, "afhub_logged", False):
            return False
        if record.levelno == logging.ERROR and str(record.msg).startswith("Error starting "):
            text = record.getMessage()
            for seen in list(_RECENT_USER_ERRORS):
                if text.endswith(f"server: {seen}"):
                    _RECENT_USER_ERRORS.remove(seen)
                    return False  # JupyterHub's line for a UserError, already logged by afhub
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
    """On the spawner's logger and on tornado's application logger (JupyterHub's ``User``
    logs failed starts there)."""
    for target in (log, logging.getLogger("tornado.application")):
        if _PREFILL_FILTER not in target.filters:
            target.addFilter(_PREFILL_FILTER)


class ProfileSpawnerMixin(LoggingConfigurable):
    """Profiles from the values file on the spawn page, enforced for every way of starting.

    Mix in before a Spawner class: ``class X(ProfileSpawnerMixin, SomeSpawner)``. Subclasses
    follow the backend protocol (``backend.py``): ``afhub_translate(resolved)`` (pure, may raise
    OptionsError), ``afhub_apply_backend(config)`` (``afhub_set``, ``afhub_set_env``) and
    optionally ``afhub_before_start(resolved)``; the mixin runs the lifecycle.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        into_hub_log()  # afhub.* lines (capacity, batch) in the hub's log

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

    profile_list = Union(
        [List(Dict()), Callable(), Dict()],
        config=True,
        help="""KubeSpawner's ``profile_list``, served when ``profiles`` is empty: a list of
        profiles, a dict of them (taken in sorted key order, as KubeSpawner does), or a callable
        (may be async) receiving the spawner and returning either, called once per start and
        once per spawn page. Entries use KubeSpawner's keys plus afhub's ``allowed_groups`` at
        every level. ``c.KubeSpawner.profile_list`` (what the Zero to JupyterHub chart sets from
        ``singleuser.profileList``) is honoured by every afhub spawner, not only on Kubernetes.
        Default: empty.""",
    )

    # ---- state kept per spawner ------------------------------------------------------------

    @property
    def afhub_state(self) -> SpawnerState:
        """What afhub keeps on this spawner (one object, created on first use)."""
        state = self.__dict__.get("_afhub_state")
        if state is None:
            state = self.__dict__["_afhub_state"] = SpawnerState()
        return state

    def afhub_profile_list(self) -> Any:
        """This spawner's ``profile_list``, else ``c.KubeSpawner.profile_list`` from the config."""
        if self.profile_list:
            return self.profile_list
        section = self.config.get("KubeSpawner") if self.config else None
        return (section or {}).get("profile_list") or []

    def afhub_profile_source(self) -> str:
        """``"profiles"`` (afhub's, the values file), ``"profile_list"`` (KubeSpawner's) or
        ``"default"`` (one profile per image, or one "Default" profile).

        afhub's ``profiles`` wins when both are set; the hub log says so once per class.
        """
        if self.profiles:
            if self.afhub_profile_list():
                _log_once(
                    self.log,
                    ("both", type(self).__name__),
                    "%s: afhub `profiles` (%d) are served; KubeSpawner `profile_list` is ignored "
                    "because both are set (remove `profiles` from the values file to serve "
                    "profile_list)",
                    type(self).__name__,
                    len(self.profiles),
                )
            return "profiles"
        if self.afhub_profile_list():
            _log_once(
                self.log,
                ("profile_list", type(self).__name__),
                "%s: serving KubeSpawner's profile_list (afhub `profiles` is empty)",
                type(self).__name__,
                level=logging.INFO,
            )
            return "profile_list"
        return "default"

    def afhub_catalogue(self) -> Catalogue:
        """The catalogue for this spawner; a callable ``profile_list`` needs
        :meth:`afhub_load_catalogue` (it may be async)."""
        source = self.afhub_profile_source()
        if source == "profile_list":
            pl = self.afhub_profile_list()
            if callable(pl):
                raise TypeError("a callable profile_list needs afhub_load_catalogue()")
            return self._afhub_list_catalogue(pl)
        key = (id(self.images), id(self.profiles))
        st = self.afhub_state
        if st.catalogue_key != key:
            profiles = self.profiles or ([] if self.images else [_DEFAULT_PROFILE])
            st.catalogue = Catalogue(self.images, profiles)
            st.catalogue_key = key
        return st.catalogue

    def _afhub_list_catalogue(self, profile_list: Any, cache: bool = True) -> Catalogue:
        key = ("profile_list", id(self.images), id(profile_list))
        st = self.afhub_state
        if cache and st.catalogue_key == key:
            return st.catalogue
        entries = (
            profile_list_entries(profile_list)
            if isinstance(profile_list, (list, dict))
            else profile_list
        )
        problems = profile_list_problems(entries)
        if problems:
            detail = "; ".join(f"{path}: {message}" for path, message in problems)
            raise misconfigured(self.log, "The profile_list cannot be served: " + detail)
        try:
            catalogue = Catalogue(self.images, entries, kubespawner=True)
        except OptionsError as e:
            self.log.error("The profile_list cannot be served: %s", e)
            raise options_http_error(e) from None
        if cache:
            st.catalogue_key, st.catalogue = key, catalogue
        return catalogue

    async def afhub_load_catalogue(self) -> Catalogue:
        """The catalogue for one start or one page, calling a callable ``profile_list`` once."""
        if self.afhub_profile_source() == "profile_list":
            pl = self.afhub_profile_list()
            if callable(pl):
                result = await maybe_future(pl(self))
                if isinstance(result, (list, dict)) and not result:
                    # KubeSpawner starts its configured defaults when the callable returns nothing
                    return Catalogue(self.images, [] if self.images else [_DEFAULT_PROFILE])
                return self._afhub_list_catalogue(result, cache=False)
        return self.afhub_catalogue()

    def afhub_groups(self) -> list[str]:
        return sorted(g.name for g in (getattr(self.user, "groups", None) or []))

    def afhub_views(self):
        return self.afhub_catalogue().visible(self.afhub_groups())

    async def afhub_load_views(self):
        return (await self.afhub_load_catalogue()).visible(self.afhub_groups())

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

    async def afhub_render_form_async(self) -> str:
        for trait in ("profile_form_template", "additional_profile_form_template_paths"):
            if getattr(self, trait, None):  # KubeSpawner's own page (e.g. fancy-profiles' setup_ui)
                _log_once(
                    self.log,
                    ("form template", type(self).__name__, trait),
                    "%s: KubeSpawner.%s is set but not used: afhub renders its own spawn page "
                    "(the profile list itself is served)",
                    type(self).__name__,
                    trait,
                )
        return self.afhub_render_form(await self.afhub_load_views())

    def afhub_render_form(self, views=None) -> str:
        if views is None:
            views = self.afhub_views()
        errors: list[OptionsError] = []
        messages: list[str] = []
        selected: dict[str, str] = {}
        st = self.afhub_state
        failed, st.failed = st.failed, None
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
        elif st.last_choice:
            try:
                selected = dict(resolve_saved(views, st.last_choice).options)
            except OptionsError:
                selected = {}
            else:
                try:
                    resolve(views, st.last_choice)
                except OptionsError as e:
                    messages.append(
                        f"Your last choice is no longer available ({e}); the defaults are preselected."
                    )
        if not views:
            messages.append("No profiles are available to you; ask the facility admins.")
        messages = self.afhub_page_notices() + messages
        model = form.form_model(
            views,
            selected=selected,
            errors=errors,
            messages=messages,
            notes=self.afhub_profile_notes(views),
        )
        return form.render(model)

    def afhub_page_notices(self) -> list[str]:
        """Backend notices shown first on the spawn page (e.g. an unsafe isolation mode)."""
        return []

    def afhub_profile_notes(self, views) -> dict:
        """Live lines under profiles (``slug -> form.note_html(text, stale)``); batch backends
        show idle capacity here. Must not wait for anything: the page renders from what is at
        hand."""
        return {}

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
        views = await self.afhub_load_views()
        st = self.afhub_state
        saved = st.last_choice
        try:
            if (
                saved
                and isinstance(user_options, Mapping)
                and dict(user_options) == saved
                and not self._afhub_named_over_rest()
            ):
                resolved = resolve_saved(views, saved)
            else:
                resolved = resolve(views, user_options)
            self.afhub_apply_resolved(resolved)
        except OptionsError as e:
            submitted = dict(user_options) if isinstance(user_options, Mapping) else {}
            st.failed = ({k: v for k, v in submitted.items() if isinstance(v, str)}, e)
            # a rejected request must not replace the remembered choice
            self._afhub_set_user_options(dict(saved or {}))
            install_prefill_log_filter(self.log)
            self.log.warning("Rejected user_options for %s: %s", self._log_name, e)
            raise options_http_error(e) from None
        self._afhub_set_user_options(dict(resolved.options))
        for m in resolved.messages:
            self.log.warning("%s: %s", self._log_name, m)
        self.log.info("%s: starting profile %s", self._log_name, resolved.summary())
        return resolved

    def _afhub_set_user_options(self, options: dict) -> None:
        self.user_options = options
        orm = getattr(self, "orm_spawner", None)  # None for spawners made outside a hub
        if orm is not None:
            orm.user_options = dict(options)

    def _afhub_named_over_rest(self) -> bool:
        """True when this start is a REST request whose body names the options itself (then a
        profile the user may no longer use is a 400, as for any other request). A REST start
        without options, the form and the home page's start button reuse the saved choice, which
        falls back to the default with a message when it went stale."""
        handler = getattr(self, "handler", None)
        if handler is None or not isinstance(handler, APIHandler):
            return False
        try:
            body = json.loads(handler.request.body or b"null")
        except ValueError:
            return False
        if not isinstance(body, dict):
            return False
        if "user_options" in body:  # JupyterHub's current body shape
            return bool(body["user_options"])
        # older shape: the body is the options (unless it only names the server)
        return bool({k: v for k, v in body.items() if k not in ("name", "display_name")})

    # ---- fresh configuration per start -----------------------------------------------

    # KubeSpawner applies ``kubespawner_override`` itself; every other backend gets its portable
    # part (spawner/portable.py: hardware, environment, default_url) and a report of the rest.
    afhub_kubespawner_overrides = False
    # Backends that run container images (batch with Apptainer) take an override's ``image``.
    afhub_runs_images = False

    def afhub_apply_resolved(self, resolved: Resolved) -> None:
        """Translate (may raise OptionsError, changing nothing), then reset and apply."""
        traits: dict[str, Any] = {}
        if resolved.overrides and not self.afhub_kubespawner_overrides:
            resolved, traits = self._afhub_portable(resolved)
        config = self.afhub_translate(resolved)
        self.afhub_reset()
        self.afhub_apply_backend(config)
        for name, value in traits.items():
            if name == "environment":
                env = self.afhub_base("environment")
                for key, v in value.items():
                    if v is None:
                        env.pop(key, None)
                    else:
                        env[key] = v
                value = env
            self.afhub_set(name, value)
        self.afhub_state.resolved = resolved

    def _afhub_portable(self, resolved: Resolved) -> tuple[Resolved, dict[str, Any]]:
        """A profile written for KubeSpawner on this backend: hardware from the overrides, the
        keys that do not apply here reported once per spawner class (hub log)."""
        overrides = [
            {k: (v(self) if callable(v) else v) for k, v in o.items()} for o in resolved.overrides
        ]
        found = portable(overrides)
        ignored = list(found.ignored)
        image = resolved.image
        if found.image:
            if self.afhub_runs_images:
                image = Image(name="custom", ref=found.image, display_name=found.image, custom=True)
            else:
                ignored.append("image")
        kind = type(self).__name__
        for key in ignored:
            _log_once(
                self.log,
                ("not applicable", kind, key),
                "%s: kubespawner_override %s (profile %r) does not apply to this backend and is "
                "ignored (logged once)",
                kind,
                key,
                resolved.profile,
            )
        resolved = replace(
            resolved, resources=resolved.resources.merged(found.resources), image=image
        )
        return resolved, found.traits

    def afhub_set(self, name: str, value: Any) -> None:
        """Set a trait for this start, remembering its configured value for the next start."""
        baseline = self.afhub_state.baseline
        if name not in baseline:
            baseline[name] = copy.deepcopy(getattr(self, name))
        setattr(self, name, value)

    def afhub_set_env(self, env: Mapping[str, str]) -> None:
        """The server's extra environment for this start (on top of ``Spawner.environment``)."""
        self.afhub_state.env = dict(env)

    def afhub_base(self, name: str) -> Any:
        """The configured value of a trait (before any start changed it)."""
        baseline = self.afhub_state.baseline
        if name in baseline:
            return copy.deepcopy(baseline[name])
        return copy.deepcopy(getattr(self, name))

    def afhub_reset(self) -> None:
        st = self.afhub_state
        for name, value in st.baseline.items():
            setattr(self, name, copy.deepcopy(value))
        st.env = {}

    # the backend protocol (backend.py): afhub_translate and afhub_apply_backend are the
    # backend's; afhub_before_start may be

    def afhub_translate(self, resolved: Resolved) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def afhub_apply_backend(self, config: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def afhub_before_start(self, resolved: Resolved) -> None:
        """Checks that need I/O right before the base spawner starts (default: none)."""

    # ---- start, env, progress, state -----------------------------------------------------

    async def start(self):
        """Every backend's start: resolve (if not done), the backend's check, the base
        spawner's start, then remember what runs."""
        resolved = await self.afhub_ensure_resolved()
        await self.afhub_before_start(resolved)
        url = await super().start()
        self.afhub_started()
        return url

    async def afhub_ensure_resolved(self) -> Resolved:
        """Resolve at start if the operator replaced ``apply_user_options`` (still enforced),
        and again whenever ``user_options`` changed since the last resolution: code written for
        KubeSpawner sets ``user_options`` on the same spawner and calls ``load_user_options()``
        again, expecting the new choice to run."""
        st = self.afhub_state
        current = self.user_options if isinstance(self.user_options, Mapping) else None
        if st.resolved is None or current is None or dict(current) != dict(st.resolved.options):
            await self.afhub_apply_user_options(self.user_options or {})
        return st.resolved

    def afhub_started(self) -> None:
        st = self.afhub_state
        if st.resolved is not None:
            st.last_choice = dict(st.resolved.options)
            st.running = st.resolved.summary()

    def get_env(self):
        env = super().get_env()
        env.update(self.afhub_state.env)
        return env

    async def progress(self):
        resolved = self.afhub_state.resolved
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

    def afhub_running_text(self) -> dict | None:
        """``{"display_name", "summary"}`` of the running server's profile, for the hub's home
        page (display fields only); None when nothing runs."""
        if not self.afhub_state.running:
            return None
        return form.running_text(self.afhub_state.running)

    def afhub_server_token_id(self) -> int | None:
        """Database id of the API token the hub issued to this spawner's current server.

        The token broker accepts a server's request only with this token (see
        ``afhub.authenticator.handlers``). Kept in the state, so it survives a hub restart;
        forgotten when the server stops, so a previous server's token is never accepted.
        """
        st = self.afhub_state
        if st.server_token_id is None and getattr(self, "api_token", None):
            from jupyterhub import orm

            db = getattr(self.user, "db", None)
            found = orm.APIToken.find(db, self.api_token) if db is not None else None
            if found is not None and found.user_id == getattr(self.user, "id", None):
                st.server_token_id = found.id
        return st.server_token_id

    def get_state(self):
        state = super().get_state()
        afhub = {}
        st = self.afhub_state
        token_id = self.afhub_server_token_id() if getattr(self, "active", False) else None
        if token_id is not None:
            afhub["server_token_id"] = token_id
        if st.last_choice:
            afhub["last_choice"] = st.last_choice
        if st.running:
            afhub["running"] = st.running
        if afhub:
            state["afhub"] = afhub
        return state

    def load_state(self, state):
        super().load_state(state)
        afhub = (state or {}).get("afhub") or {}
        if isinstance(afhub.get("last_choice"), dict):
            self.afhub_state.last_choice = afhub["last_choice"]
        self.afhub_state.running = afhub.get("running")
        if isinstance(afhub.get("server_token_id"), int):
            self.afhub_state.server_token_id = afhub["server_token_id"]

    def clear_state(self):
        """Forget the running profile; keep the last successful choice for the next start."""
        super().clear_state()
        self.afhub_state.running = None
        self.afhub_state.resolved = None
        self.afhub_state.server_token_id = None


def _render_options_form(spawner):
    """JupyterHub awaits what a callable ``options_form`` returns (``get_options_form``)."""
    return spawner.afhub_render_form_async()


_LOGGED: set = set()


def _log_once(
    log: logging.Logger, key: Any, msg: str, *args: Any, level: int = logging.WARNING
) -> None:
    """A configuration finding that applies to every spawner: logged once per hub process."""
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.log(level, msg, *args)
