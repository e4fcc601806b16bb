"""The command a batch job runs: the single-user server, inside an Apptainer image or not.

Pure: image reference, bind paths and executables are arguments; the result is an argv list
that the batch spawners shell-quote into the operator's script template. Nothing here reads
the file system, so an image path is checked for its shape only (absolute, no ``..``), and the
job itself reports a missing image.

Image forms (see :func:`image_source`):

- ``docker://registry/repo:tag`` or a bare ``registry/repo:tag`` -> ``docker://...``;
- ``oras://...`` (an OCI artifact holding a SIF);
- an absolute path: a ``.sif`` file, or a directory such as an unpacked
  ``/cvmfs/unpacked.cern.ch/registry.hub.docker.com/...:tag`` tree.

Host environment variables pass into the container (no ``--cleanenv``): the server needs the
``JUPYTERHUB_*`` variables, and kernel discovery reads ``AFHUB_*`` there, so an image's
``/opt/conda/envs`` style prefixes show up as kernels without extra steps.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..profiles import OptionsError, Resolved

# Characters an image reference, path or argument may hold. Anything else (whitespace, quotes,
# ``$``, backticks, ``;|&<>()``, ``#``, newlines) is refused before it reaches a batch script.
SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:@%+=,-]+$")
_REF = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[0-9]+)?(/[A-Za-z0-9._-]+)*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?"
    r"(@sha256:[0-9a-f]{64})?$"
)
_PATH = re.compile(r"^/[A-Za-z0-9._/:@+-]+$")
SCHEMES = ("docker://", "oras://")
DEFAULT_BINDS = ("/cvmfs",)


@dataclass(frozen=True)
class ApptainerSettings:
    """The values file's ``backend.<slurm|htcondor>.apptainer``."""

    command: str = "apptainer"
    binds: tuple[str, ...] = DEFAULT_BINDS
    extra_args: tuple[str, ...] = ()

    @classmethod
    def from_values(cls, section: dict | None) -> ApptainerSettings:
        """From the values' ``apptainer`` mapping (or its JSON copy); absent keys get the
        defaults above. The one reading for the servers' spawner and Dask's jobs."""
        app = section or {}
        return cls(
            command=app.get("command", cls.command),
            binds=tuple(app.get("binds", DEFAULT_BINDS)),
            extra_args=tuple(app.get("extra_args", ())),
        )


def image_source(ref: str, *, field: str = "image") -> str:
    """The ``apptainer exec`` image argument for an image reference; OptionsError if unsafe."""
    text = ref.strip()
    if text != ref or not text:
        raise OptionsError(field, "an image reference must not be empty or have spaces at the ends")
    if text.startswith("/"):
        parts = text.split("/")
        if not _PATH.match(text) or ".." in parts or "" in parts[1:]:
            raise OptionsError(
                field,
                f"{ref!r} is not a usable image path (an absolute path to a .sif file or an "
                "unpacked image directory, letters, digits and ._-+:@/ only)",
            )
        return posixpath.normpath(text)
    for scheme in SCHEMES:
        if text.startswith(scheme):
            rest = text[len(scheme) :]
            break
    else:
        if "://" in text:
            raise OptionsError(
                field, f"{ref!r}: only docker://, oras:// or an absolute path can be run"
            )
        scheme, rest = "docker://", text
    if not _REF.match(rest) or {".", ".."} & set(rest.split("/")):
        raise OptionsError(
            field,
            f"{ref!r} is not a container image reference (registry/repository:tag)",
        )
    return scheme + rest


def checked_args(args: Sequence[str], field: str) -> list[str]:
    """``args`` if every one is made of safe characters (see :data:`SAFE_ARG`)."""
    for i, a in enumerate(args):
        if not isinstance(a, str) or not SAFE_ARG.match(a):
            raise OptionsError(
                f"{field}[{i}]",
                f"{a!r} contains characters a batch script cannot carry safely",
            )
    return list(args)


def server_command(
    *,
    singleuser: Sequence[str],
    image: str | None,
    gpu: bool,
    apptainer: ApptainerSettings = ApptainerSettings(),
    prefix: str | None = None,
    wrapper: str = "batchspawner-singleuser",
    image_field: str = "image",
) -> list[str]:
    """argv that starts the server in the job.

    With ``image``: ``apptainer exec [--nv] [--bind b]... [extra] <image> <wrapper> <singleuser>``
    (the wrapper, which reports the server's port to the hub, must be installed in the image).
    Without: ``<prefix>/bin/<wrapper> <prefix>/bin/<singleuser[0]> ...`` when a configured
    environment ``prefix`` is given, else the commands as found on the job's ``PATH``.
    """
    cmd = checked_args(list(singleuser), "cmd")
    if not cmd:
        raise ValueError("singleuser command is empty")
    if image is None:
        if prefix:
            checked_args([prefix], "environment")
            bindir = posixpath.join(prefix, "bin")
            if "/" not in wrapper:
                wrapper = posixpath.join(bindir, wrapper)
            if "/" not in cmd[0]:
                cmd = [posixpath.join(bindir, cmd[0]), *cmd[1:]]
        return [*checked_args([wrapper], "wrapper"), *cmd]
    out = checked_args([apptainer.command], "apptainer.command") + ["exec"]
    if gpu:
        out.append("--nv")
    for b in checked_args(list(apptainer.binds), "apptainer.binds"):
        out += ["--bind", b]
    out += checked_args(list(apptainer.extra_args), "apptainer.extra_args")
    out.append(image_source(image, field=image_field))
    return out + checked_args([wrapper], "wrapper") + cmd


def profile_command(
    resolved: Resolved,
    *,
    apptainer: ApptainerSettings,
    prefix: str | None,
    singleuser: Sequence[str],
) -> list[str]:
    """:func:`server_command` for a resolved profile: its image (if any), ``--nv`` with GPUs."""
    return server_command(
        singleuser=singleuser,
        image=resolved.image.ref if resolved.image is not None else None,
        gpu=resolved.resources.gpu_count > 0,
        apptainer=apptainer,
        prefix=prefix,
        image_field=resolved.fields.get("image", "profile"),
    )
