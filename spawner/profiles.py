"""The profile model: image catalogue, profiles, and resolving ``user_options`` against them.

Pure functions and dataclasses only (no I/O, no JupyterHub objects). Everything the spawn page
shows and everything a start may use goes through :meth:`Catalogue.visible` (what a user's
groups allow) and :meth:`Catalogue.resolve` (one validation path for form, URL and REST
``user_options``). Backends translate a :class:`Resolved` profile; they never look at raw
``user_options``.

Profiles follow KubeSpawner's ``profile_list`` shape (``display_name, slug, description,
default, kubespawner_override, profile_options.<opt>.{display_name, choices, unlisted_choice}``)
so a z2jh ``singleuser.profileList`` loads unchanged; afhub adds ``allowed_groups`` at every
level, ``image`` (a catalogue name) and backend-neutral ``resources`` on profiles and choices.

``user_options`` use KubeSpawner's keys: ``{"profile": slug, "<option>": choice_slug}`` or
``{"<option>--unlisted-choice": text}``; when both are given the free text wins, as in
KubeSpawner (its form posts ``<option>: "unlisted-choice"`` beside the text).

A :class:`Catalogue` built with ``kubespawner=True`` serves a KubeSpawner ``profile_list``
(list, or dict keyed by slug, taken in sorted key order) with KubeSpawner's semantics where they
differ from afhub's ``profiles``: ``validation_regex`` must match at the start of the value
(``re.match``) instead of the whole value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from afhub.server_ext.contract import session_environment

from .regex_safety import backtracking_problem

ARCHS = ("x86_64", "aarch64")
DEFAULT_ARCHS = ("x86_64",)  # an image that names no architectures is built for these


def misfits(
    archs: Iterable[str], gpu: bool, *, arch: str | None = None, gpu_count: int = 0
) -> tuple[str, ...]:
    """The one image x architecture x GPU rule: what does not fit when an image built for
    ``archs`` (GPU-enabled when ``gpu``) runs on ``arch`` with ``gpu_count`` GPUs.

    ``"arch"`` when ``arch`` is given and not one of ``archs``; ``"gpu"`` when GPUs are asked
    of an image that is not GPU-enabled; empty when it fits. ``afhub check``
    (``spawn_section.py``), what the page offers (:meth:`Catalogue.visible`) and what a start
    accepts (:func:`resolve`) all decide with it."""
    out = []
    if arch and arch not in tuple(archs):
        out.append("arch")
    if gpu_count and not gpu:
        out.append("gpu")
    return tuple(out)


UNLISTED_SUFFIX = "--unlisted-choice"
MAX_TEXT = 512  # longest free-text value accepted (custom image references are far shorter)


MAX_NAME = 100  # longest option name accepted
MAX_ECHO = 60  # user text repeated in an error message or log line is cut to this


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters (saying how long it was): every user-controlled
    string that ends up in an error message or a log line goes through this."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class OptionsError(ValueError):
    """``user_options`` that cannot be started; ``field`` names the offending key (cut to
    :data:`MAX_ECHO` characters, as is the whole message to a few hundred)."""

    def __init__(self, field: str, message: str):
        self.field = clip(field)
        self.message = clip(message, 400)
        super().__init__(f"{self.field}: {self.message}" if field else self.message)


# --------------------------------------------------------------------------------------------
# catalogue entries


@dataclass(frozen=True)
class Image:
    """One entry of the image catalogue (or a user's custom image)."""

    name: str
    ref: str
    display_name: str = ""
    description: str = ""
    archs: tuple[str, ...] = DEFAULT_ARCHS
    gpu: bool = False
    allowed_groups: tuple[str, ...] = ()
    local_prefix: str | None = None
    custom: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Image:
        return cls(
            name=d["name"],
            ref=d["image"],
            display_name=d.get("display_name") or d["name"],
            description=d.get("description", ""),
            archs=tuple(d.get("archs") or DEFAULT_ARCHS),
            gpu=bool(d.get("gpu", False)),
            allowed_groups=tuple(d.get("allowed_groups") or ()),
            local_prefix=d.get("local_prefix"),
        )

    def misfits(self, *, arch: str | None = None, gpu_count: int = 0) -> tuple[str, ...]:
        """:func:`misfits` for this image."""
        return misfits(self.archs, self.gpu, arch=arch, gpu_count=gpu_count)


@dataclass(frozen=True)
class Resources:
    """Backend-neutral hardware of a resolved profile. ``None`` means "backend default"."""

    cpu: float | None = None
    cpu_guarantee: float | None = None
    memory: str | None = None
    memory_guarantee: str | None = None
    arch: str | None = None
    gpu_count: int = 0
    gpu_type: str | None = None

    def merged(self, d: Mapping[str, Any] | None) -> Resources:
        """These resources with the keys of a ``resources`` mapping laid over them."""
        if not d:
            return self
        changes: dict[str, Any] = {
            k: d[k]
            for k in ("cpu", "cpu_guarantee", "memory", "memory_guarantee", "arch")
            if k in d
        }
        gpu = d.get("gpu") or {}
        if "count" in gpu:
            changes["gpu_count"] = int(gpu["count"])
        if "type" in gpu:
            changes["gpu_type"] = gpu["type"]
        return replace(self, **changes)


def allowed(groups_required: Iterable[str], groups: Iterable[str]) -> bool:
    """Empty ``groups_required`` means everyone; otherwise any shared group."""
    required = set(groups_required or ())
    return not required or bool(required & set(groups))


_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """``"GPU: A100 (80 GB)"`` -> ``"gpu-a100-80-gb"``: the slug KubeSpawner derives.

    KubeSpawner uses python-slugify (it transliterates, ``"Größe"`` -> ``"grosse"``); it is
    used when installed (it comes with KubeSpawner), else accents are stripped the same way.
    """
    try:
        from slugify import slugify as _python_slugify
    except ImportError:  # pragma: no cover - python-slugify comes with KubeSpawner
        _python_slugify = None
    if _python_slugify is not None:
        out = _python_slugify(text)
    else:  # pragma: no cover
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        out = _SLUG_RE.sub("-", ascii_text.lower()).strip("-")
    return out or "profile"


def profile_list_entries(profile_list: Any) -> list[Any]:
    """A KubeSpawner ``profile_list`` value as a list: a dict's values in sorted key order.

    KubeSpawner does the same (``_sorted_dict_values``); the dict keys are not slugs, each
    entry's ``slug`` (or its ``display_name``) is.
    """
    if isinstance(profile_list, Mapping):
        return [profile_list[k] for k in sorted(profile_list)]
    return list(profile_list or [])


def profile_list_problems(entries: Any, root: str = "profile_list") -> list[tuple[str, str]]:
    """``(key path, message)`` for what would stop a ``profile_list`` from being served."""
    if not isinstance(entries, list):
        return [(root, f"must be a list or a dict of profiles, got {type(entries).__name__}")]
    out = []
    for i, p in enumerate(entries):
        where = f"{root}[{i}]"
        if not isinstance(p, Mapping):
            out.append((where, f"must be a mapping, got {type(p).__name__}"))
            continue
        if not isinstance(p.get("display_name"), str):
            out.append((f"{where}.display_name", "missing (KubeSpawner requires it)"))
        options = p.get("profile_options") or {}
        if not isinstance(options, Mapping):
            out.append((f"{where}.profile_options", "must be a mapping"))
            continue
        for name, opt in options.items():
            if not isinstance(opt, Mapping):
                out.append((f"{where}.profile_options.{name}", "must be a mapping"))
            elif not isinstance(opt.get("choices") or {}, Mapping):
                out.append((f"{where}.profile_options.{name}.choices", "must be a mapping"))
    return out


# --------------------------------------------------------------------------------------------
# what one user may see


@dataclass(frozen=True)
class ChoiceView:
    slug: str
    display_name: str
    description: str
    image: Image | None
    resources: Mapping[str, Any]
    override: Mapping[str, Any]
    batch: Mapping[str, str] = field(default_factory=dict)

    @property
    def arch(self) -> str | None:
        return (self.resources or {}).get("arch")


@dataclass(frozen=True)
class UnlistedView:
    display_name: str
    display_name_in_choices: str
    regex: str | None
    message: str
    allowed_registries: tuple[str, ...]
    image: Mapping[str, Any] | None  # {archs, gpu} when the text is a container image
    override: Mapping[str, Any]
    prefix_match: bool = False  # KubeSpawner's re.match instead of the whole value
    description: str = ""  # under the text field (jupyterhub-fancy-profiles)
    description_in_choices: str = ""  # with the "Other..." entry (jupyterhub-fancy-profiles)
    batch: Mapping[str, str] = field(default_factory=dict)  # "{value}" = the entered text


@dataclass(frozen=True)
class OptionView:
    name: str
    display_name: str
    choices: tuple[ChoiceView, ...]
    default: str | None  # slug of the default choice; None when only free text is offered
    unlisted: UnlistedView | None

    def choice(self, slug: str) -> ChoiceView | None:
        return next((c for c in self.choices if c.slug == slug), None)


@dataclass(frozen=True)
class ProfileView:
    slug: str
    display_name: str
    description: str
    default: bool
    image: Image | None
    resources: Mapping[str, Any]
    override: Mapping[str, Any]
    options: tuple[OptionView, ...]
    batch: Mapping[str, str] = field(default_factory=dict)

    def keys(self) -> set[str]:
        """The ``user_options`` keys this profile accepts besides ``profile``."""
        out = set()
        for o in self.options:
            if o.choices:
                out.add(o.name)
            if o.unlisted:
                out.add(o.name + UNLISTED_SUFFIX)
        return out


# --------------------------------------------------------------------------------------------
# a resolved start


@dataclass(frozen=True)
class Resolved:
    """One start: the profile, image, hardware and overrides, plus canonical ``user_options``."""

    profile: str
    display_name: str
    image: Image | None
    resources: Resources
    options: Mapping[str, str]
    overrides: tuple[Mapping[str, Any], ...] = ()
    messages: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)  # "image"/"arch" -> field that set it
    # batch-scheduler settings (slurm/htcondor backends); fields["batch.<key>"] names their field
    batch: Mapping[str, str] = field(default_factory=dict)

    @property
    def arch(self) -> str | None:
        """The architecture this start runs on, when it is known before scheduling."""
        if self.resources.arch:
            return self.resources.arch
        if self.image is not None and len(self.image.archs) == 1:
            return self.image.archs[0]
        return None

    @property
    def image_ref(self) -> str | None:
        if self.image is not None:
            return self.image.ref
        for o in reversed(self.overrides):
            for key in ("image", "image_spec"):
                if isinstance(o.get(key), str):
                    return o[key]
        return None

    def summary(self) -> dict[str, Any]:
        """Display fields only (shown to admins and the user's own server; no overrides)."""
        r = self.resources
        return {
            "profile": self.profile,
            "display_name": self.display_name,
            "image": self.image_ref,
            "image_name": self.image.name if self.image else None,
            "arch": self.arch,
            "gpu": {"count": r.gpu_count, "type": r.gpu_type},
            "cpu": r.cpu,
            "memory": r.memory,
        }

    def env(self) -> dict[str, str]:
        """The session variables (``afhub.server_ext.contract.SESSION``) of this start."""
        r = self.resources
        return session_environment(
            profile=self.profile,
            display_name=self.display_name,
            gpu_count=r.gpu_count,
            image=self.image_ref,
            image_name=self.image.name
            if self.image is not None and not self.image.custom
            else None,
            arch=self.arch,
            gpu_type=r.gpu_type,
            cpu=r.cpu,
            memory=r.memory,
        )


# --------------------------------------------------------------------------------------------
# registries


def image_registry_path(ref: str) -> str:
    """A reference as ``registry/path`` (Docker Hub short names expanded), tag/digest dropped.

    ``python:3.11`` -> ``docker.io/library/python``; ``ghcr.io/a/b:1`` -> ``ghcr.io/a/b``;
    ``docker://x/y`` -> ``docker.io/x/y``.
    """
    ref = ref.removeprefix("docker://")
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1]) + last[-1].index(":")]
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{first}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def registry_allowed(ref: str, allowlist: Iterable[str]) -> bool:
    """``ref`` lies under one of ``allowlist`` (``host`` or ``host/path`` prefixes, per segment).

    An absolute path (an unpacked image such as ``/cvmfs/unpacked.cern.ch/...``, batch
    backends) is allowed only under an entry that is itself an absolute path; ``..`` never is.
    """
    if ref.startswith("/"):
        if ".." in ref.split("/"):
            return False
        return any(
            e.startswith("/") and (ref == e.rstrip("/") or ref.startswith(e.rstrip("/") + "/"))
            for e in allowlist
        )
    path = image_registry_path(ref)
    for entry in allowlist:
        entry = entry.rstrip("/")
        if path == entry or path.startswith(entry + "/"):
            return True
    return False


# --------------------------------------------------------------------------------------------
# the catalogue


def default_profiles(images: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One profile per image, used when the values file lists images but no profiles."""
    return [
        {
            "display_name": img.get("display_name") or img["name"],
            "slug": slugify(img["name"]),
            "description": img.get("description", ""),
            "image": img["name"],
        }
        for img in images
    ]


class Catalogue:
    """Images and profiles from the values file (``images``, ``profiles`` sections)."""

    def __init__(
        self,
        images: list[Mapping[str, Any]] | None,
        profiles: list[Mapping[str, Any]] | None,
        *,
        kubespawner: bool = False,
    ):
        self.kubespawner = kubespawner
        images = list(images or [])
        self.images: dict[str, Image] = {d["name"]: Image.from_dict(d) for d in images}
        raw = list(profiles) if profiles else default_profiles(images)
        # Shallow copies: only the top-level slug is ever set here; nothing below is mutated
        # (backends deep-copy the overrides they hand out), so the values stay the operator's.
        self.profiles: list[dict[str, Any]] = [self._init_profile(dict(p)) for p in raw]

    @staticmethod
    def _init_profile(p: dict[str, Any]) -> dict[str, Any]:
        p.setdefault("slug", slugify(p["display_name"]))
        return p

    def _image(self, name: str | None, slug: str, option: str | None = None) -> Image | None:
        if name is None:
            return None
        try:
            return self.images[name]
        except KeyError:
            where = f"profile {slug}" + (f" option {option}" if option else "")
            raise OptionsError(
                where, f"names image {name!r}, which is not in the catalogue"
            ) from None

    # ---- visibility --------------------------------------------------------------------

    def visible(self, groups: Iterable[str]) -> list[ProfileView]:
        """The profiles, options and choices ``groups`` allow, in values-file order.

        Cached per set of groups (the catalogue does not change after construction).
        """
        key = frozenset(groups)
        cache = self.__dict__.setdefault("_visible_cache", {})
        if key not in cache:
            if len(cache) > 256:
                cache.clear()
            cache[key] = self._visible(set(key))
        return list(cache[key])

    def visible_images(self, groups: Iterable[str]) -> list[Image]:
        """The catalogue images ``groups`` may run: those of the profiles and listed choices
        :meth:`visible` shows, in catalogue order. Whatever else offers catalogue images (the
        Dask gateway's ``image`` option) asks here, so an image behind a profile's, option's
        or choice's ``allowed_groups`` is offered to nobody the spawn page hides it from."""
        names = set()
        for view in self.visible(groups):
            if view.image is not None:
                names.add(view.image.name)
            for opt in view.options:
                names.update(c.image.name for c in opt.choices if c.image is not None)
        return [img for name, img in self.images.items() if name in names]

    def _visible(self, groups: set[str]) -> list[ProfileView]:
        out = []
        for p in self.profiles:
            view = self._profile_view(p, groups)
            if view is not None:
                out.append(view)
        return out

    def _profile_view(self, p: Mapping[str, Any], groups: set[str]) -> ProfileView | None:
        if not allowed(p.get("allowed_groups"), groups):
            return None
        image = self._image(p.get("image"), p["slug"])
        if image is not None and not allowed(image.allowed_groups, groups):
            return None
        resources = p.get("resources") or {}
        fixed_arch = resources.get("arch")
        options = []
        for name, opt in (p.get("profile_options") or {}).items():
            if not allowed(opt.get("allowed_groups"), groups):
                continue
            choices = []
            for slug, c in (opt.get("choices") or {}).items():
                if not allowed(c.get("allowed_groups"), groups):
                    continue
                cimg = self._image(c.get("image"), p["slug"], name)
                if cimg is not None and not allowed(cimg.allowed_groups, groups):
                    continue
                carch = (c.get("resources") or {}).get("arch")
                if fixed_arch and cimg is not None and cimg.misfits(arch=fixed_arch):
                    continue  # never offer an image not built for the profile's architecture
                if carch and image is not None and image.misfits(arch=carch):
                    continue  # nor an architecture the profile's image is not built for
                choices.append(
                    ChoiceView(
                        slug=slug,
                        display_name=c.get("display_name") or slug,
                        description=_text(c.get("description")),
                        image=cimg,
                        resources=c.get("resources") or {},
                        override=c.get("kubespawner_override") or {},
                        batch=c.get("batch") or {},
                    )
                )
            u = opt.get("unlisted_choice") or {}
            unlisted = None
            if u.get("enabled") and allowed(u.get("allowed_groups"), groups):
                unlisted = UnlistedView(
                    display_name=u.get("display_name") or opt.get("display_name") or name,
                    display_name_in_choices=u.get("display_name_in_choices") or "Other...",
                    regex=u.get("validation_regex"),
                    message=u.get("validation_message", ""),
                    allowed_registries=tuple(u.get("allowed_registries") or ()),
                    image=u.get("image"),
                    override=u.get("kubespawner_override") or {},
                    prefix_match=self.kubespawner,
                    description=_text(u.get("description")),
                    description_in_choices=_text(u.get("description_in_choices")),
                    batch=u.get("batch") or {},
                )
            if not choices and unlisted is None:
                if opt.get("choices") or u.get("enabled"):
                    # Something is configured but nothing is allowed: never start half a profile.
                    return None
                continue
            default = next(
                (c.slug for c in choices if (opt.get("choices") or {})[c.slug].get("default")),
                choices[0].slug if choices else None,
            )
            options.append(
                OptionView(
                    name=name,
                    display_name=opt.get("display_name") or name,
                    choices=tuple(choices),
                    default=default,
                    unlisted=unlisted,
                )
            )
        return ProfileView(
            slug=p["slug"],
            display_name=p["display_name"],
            description=p.get("description", ""),
            default=bool(p.get("default")),
            image=image,
            resources=resources,
            override=p.get("kubespawner_override") or {},
            options=tuple(options),
            batch=p.get("batch") or {},
        )

    # ---- resolution --------------------------------------------------------------------

    def resolve(self, groups: Iterable[str], user_options: Any) -> Resolved:
        """Resolve ``user_options`` for a user in ``groups``; raise :class:`OptionsError`.

        Unknown and forbidden inputs get the same message, so nobody learns which profiles
        exist beyond their own.
        """
        return resolve(self.visible(groups), user_options)


def _text(v: Any) -> str:
    """A display text from a pasted list (KubeSpawner ignores what it does not show)."""
    return v if isinstance(v, str) else ""


def default_profile(views: list[ProfileView]) -> ProfileView:
    return next((v for v in views if v.default), views[0])


def resolve(views: list[ProfileView], user_options: Any) -> Resolved:
    """Resolve ``user_options`` against the profiles a user may see (see Catalogue.resolve)."""
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise OptionsError("user_options", "must be a mapping of option names to strings")
    if not views:
        raise OptionsError("profile", "no profiles are available to you; ask the facility admins")
    for k, v in user_options.items():
        if not isinstance(k, str):
            raise OptionsError(clip(repr(k)), "option names must be strings")
        if len(k) > MAX_NAME:
            raise OptionsError(k, f"option names are at most {MAX_NAME} characters")
        if not isinstance(v, str):
            raise OptionsError(k, f"must be a string, got {type(v).__name__}")
        if len(v) > MAX_TEXT:
            raise OptionsError(k, f"longer than {MAX_TEXT} characters")

    slug = user_options.get("profile") or ""
    if slug:
        view = next((v for v in views if v.slug == slug), None)
        if view is None:
            names = ", ".join(v.slug for v in views)
            raise OptionsError(
                "profile", f"{clip(slug)!r} is not one of the profiles available to you ({names})"
            )
    else:
        view = default_profile(views)

    known = view.keys() | {"profile"}
    for k in user_options:
        if k not in known:
            listed = ", ".join(sorted(known))
            raise OptionsError(k, f"unknown option for profile {view.slug!r} (known: {listed})")

    image, image_field = view.image, "profile"
    resources = Resources().merged(view.resources)
    arch_field = "profile"
    overrides: list[Mapping[str, Any]] = [view.override] if view.override else []
    canonical: dict[str, str] = {"profile": view.slug}
    batch: dict[str, str] = dict(view.batch)
    fields = {"batch." + k: "profile" for k in batch}

    for opt in view.options:
        ukey = opt.name + UNLISTED_SUFFIX
        text = user_options.get(ukey, "")
        slug_given = user_options.get(opt.name, "")
        if text:  # free text wins over a choice given beside it, as in KubeSpawner
            u = opt.unlisted
            assert u is not None  # keys() only lists the unlisted key when it is offered
            _check_text(ukey, text, u)
            if u.image is not None:
                image = Image(
                    name="custom",
                    ref=text,
                    display_name=text,
                    archs=tuple(u.image.get("archs") or DEFAULT_ARCHS),
                    gpu=bool(u.image.get("gpu", False)),
                    custom=True,
                )
                image_field = ukey
            if u.override:
                overrides.append(_format_value(u.override, text))
            for k, v in _format_value(dict(u.batch), text).items():
                batch[k], fields["batch." + k] = v, ukey
            canonical[ukey] = text
            continue
        choice_slug = slug_given or opt.default
        if choice_slug is None:
            raise OptionsError(ukey, f"enter a value for {opt.display_name!r}")
        choice = opt.choice(choice_slug)
        if choice is None:
            names = ", ".join(c.slug for c in opt.choices)
            raise OptionsError(
                opt.name,
                f"{clip(choice_slug)!r} is not one of the choices available to you ({names})",
            )
        if choice.image is not None:
            image, image_field = choice.image, opt.name
        if choice.arch:
            arch_field = opt.name
        resources = resources.merged(choice.resources)
        if choice.override:
            overrides.append(choice.override)
        for k, v in choice.batch.items():
            batch[k], fields["batch." + k] = v, opt.name
        canonical[opt.name] = choice.slug

    misfit = (
        image.misfits(arch=resources.arch, gpu_count=resources.gpu_count)
        if image is not None
        else ()
    )
    if "arch" in misfit:
        where = image_field if image_field != "profile" else arch_field
        built = ", ".join(image.archs)
        raise OptionsError(
            where,
            f"image {image.display_name!r} is built for {built}, not {resources.arch}; "
            "pick an image built for that architecture",
        )
    if "gpu" in misfit:
        raise OptionsError(
            image_field,
            f"image {image.display_name!r} is not GPU-enabled; pick a GPU image or no GPU",
        )
    return Resolved(
        profile=view.slug,
        display_name=view.display_name,
        image=image,
        resources=resources,
        options=canonical,
        overrides=tuple(overrides),
        fields={**fields, "image": image_field, "arch": arch_field},
        batch=batch,
    )


def _check_text(key: str, text: str, u: UnlistedView) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text) or text != text.strip():
        raise OptionsError(key, "must not contain spaces at the ends or control characters")
    if len(text) > MAX_TEXT:  # capped before any pattern runs on it
        raise OptionsError(key, f"longer than {MAX_TEXT} characters")
    if u.regex and backtracking_problem(u.regex):
        # never run it on user input: it could stall the hub (afhub check reports it)
        raise OptionsError(
            key,
            "cannot be checked safely on this hub (its pattern is unsafe); ask the facility admins",
        )
    match = re.match if u.prefix_match else re.fullmatch
    if u.regex and not match(u.regex, text):
        raise OptionsError(key, u.message or f"must match {u.regex!r} (the whole value)")
    if u.allowed_registries and not registry_allowed(text, u.allowed_registries):
        listed = ", ".join(u.allowed_registries)
        raise OptionsError(key, f"images must come from an allowed registry ({listed})")


class _KeepMissing(dict):
    """``str.format_map`` mapping that leaves other placeholders (``{username}``) as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _format_value(obj: Any, value: str) -> Any:
    """KubeSpawner's ``{value}`` substitution in unlisted-choice overrides: ``str.format_map``
    on strings, dict keys included (``{{`` becomes ``{``), other placeholders kept. Only the
    operator's strings are format strings; the user's text is inserted, never formatted."""
    if isinstance(obj, str):
        try:
            return obj.format_map(_KeepMissing(value=value))
        except (ValueError, IndexError, AttributeError):  # not a format string KubeSpawner takes
            return obj.replace("{value}", value)
    if isinstance(obj, Mapping):
        return {_format_value(k, value): _format_value(v, value) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return type(obj)(_format_value(v, value) for v in obj)
    return obj


def resolve_saved(views: list[ProfileView], saved: Mapping[str, Any] | None) -> Resolved:
    """Resolve a saved (last successful) choice; if it went stale, fall back with a message.

    Tries the saved options, then the saved profile with its default choices, then the
    default profile. The returned :attr:`Resolved.messages` says what changed and why.
    """
    try:
        return resolve(views, saved or {})
    except OptionsError as e:
        reason = str(e)
    profile = (saved or {}).get("profile")
    for attempt in ([{"profile": profile}] if isinstance(profile, str) and profile else []) + [{}]:
        try:
            r = resolve(views, attempt)
        except OptionsError:
            continue
        msg = (
            f"Your saved choice is no longer available ({reason}); "
            f"starting {r.display_name!r} with its default options instead."
        )
        return replace(r, messages=(*r.messages, msg))
    raise OptionsError("profile", "no profiles are available to you; ask the facility admins")
